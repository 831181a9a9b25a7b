"""Cost of the trainer's finiteness check (NaN or infinite parameters, gradients, LIF
membranes, loss) per training step.

Two copies of the same network (same weights, masks, batch) train side by side in one
process, interleaved (so machine noise hits both alike): one with the check as the
trainer runs it (``Trainer.check_finite`` after the backward, and the LIF layers'
largest |membrane| of the last time step in the forward, ``peak_magnitude``), one without either
(the LIF forward as it was before the check). Prints the median step times and their
ratio, and, more precisely, the median time of the check's own work (the reductions
and the one host sync, timed alone many times) as a share of a step.

    python benchmarks/finite_check.py --threads 1                        # small setting
    python benchmarks/finite_check.py --hidden 2048 --num-steps 50 --batch 256 --threads 1   # seed defaults
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from g2g.models.network import SpikingNetwork
from g2g.snn.encoders import CurrentEncoder
from g2g.snn.kernels import LIFScan, peak_magnitude
from g2g.snn.neurons import LIF
from g2g.training.trainer import Trainer


class UncheckedLIF(LIF):
    """The LIF forward without the membrane reduction (as before the check)."""

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        spikes, _ = LIFScan.apply(current, self.beta.clamp(0, 1), self.threshold, self.surrogate,
                                  self.surrogate_slope)
        return spikes


def _step(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, check: bool) -> None:
    """One training step as ``Trainer.train_epoch`` runs it, with or without the check."""
    output = trainer.model(trainer.encoder(x))
    loss = F.cross_entropy(output.counts, y)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if check:
        trainer.check_finite({"training loss": loss}, "batch 1 of 1")
    trainer.optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="dense,mixer", help="comma-separated: dense,index,random,mixer")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--num-steps", type=int, default=25, help="time steps T")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--check-repeats", type=int, default=50, help="timings of the check alone")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 784, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    print(f"hidden={args.hidden} T={args.num_steps} batch={args.batch} device={args.device} "
          f"threads={torch.get_num_threads()} repeats={args.repeats} torch={torch.__version__}")
    print("| model | without s/step | with s/step | ratio with/without | check alone ms | check % of a step |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        trainers = {}
        for check in (False, True):
            net = SpikingNetwork(784, args.hidden, 10, connectivity=model, mask_seed=0)
            if check:
                net.load_state_dict(trainers[False].model.state_dict())
            else:
                for lif in (net.lif1, net.lif2, net.lif3):
                    lif.__class__ = UncheckedLIF
            net.to(args.device)
            trainers[check] = Trainer(net, torch.optim.Adam(net.parameters(), lr=5e-4),
                                      CurrentEncoder(args.num_steps), args.batch, progress=False)
        for check, trainer in trainers.items():  # warm-up
            _step(trainer, x, y, check)
        times = {False: [], True: []}
        for _ in range(args.repeats):
            for check, trainer in trainers.items():
                started = time.perf_counter()
                _step(trainer, x, y, check)
                times[check].append(time.perf_counter() - started)
        without, with_check = statistics.median(times[False]), statistics.median(times[True])

        checked = trainers[True]  # the check alone: after a forward and backward, as in a step
        output = checked.model(checked.encoder(x))
        loss = F.cross_entropy(output.counts, y)
        loss.backward()
        lifs = (checked.model.lif1, checked.model.lif2, checked.model.lif3)
        membranes = [torch.randn(args.batch, lif_size, device=args.device)
                     for lif_size in (args.hidden, args.hidden, 10)]  # the last step's membrane, [B, N]

        def check_alone(lifs=lifs, membranes=membranes, checked=checked, loss=loss) -> None:
            for lif, membrane in zip(lifs, membranes):
                lif.last_membrane_peak = peak_magnitude(membrane)
            checked.check_finite({"training loss": loss}, "batch 1 of 1")

        check_s = _median_seconds(check_alone, args.check_repeats)
        print(f"| {model} | {without:.4f} | {with_check:.4f} | {with_check / without:.4f} | "
              f"{1000 * check_s:.2f} | {100 * check_s / without:.3f}% |")


if __name__ == "__main__":
    main()
