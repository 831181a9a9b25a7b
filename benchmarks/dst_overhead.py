"""Cost of dynamic sparse training per training step: the Hebbian accumulation and the
Adam step-count restart of regrown entries.

Runs, in one process and interleaved (so machine noise hits all alike), training
steps of the same sparse network with static masks, with
``sparsity=dynamic prune=hebb grow=hebb`` before any update (accumulation on every
step, no restarted entry), and with the same after ``--updates`` updates (so
``AdamRestart.step`` recomputes the restarted entries' Adam update on every step; the
update itself runs once per ``update_interval`` steps and is timed separately), then
prints the step-time ratios. The restart alone: ``dst.adam_restart.step()`` of the last
variant against plain Adam on a copy of its parameters, gradients and state.

    python benchmarks/dst_overhead.py                       # small setting
    python benchmarks/dst_overhead.py --hidden 2048 --num-steps 50 --batch 256 --repeats 3   # seed defaults
    python benchmarks/dst_overhead.py --device cuda --precision bf16-mixed   # on a GPU, in bfloat16

On CUDA every timed piece is timed with CUDA events after a synchronisation
(``train_step.StepTimer``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

from g2g.hardware.precision import AUTOCAST_DTYPES, check_precision
from g2g.models.network import SpikingNetwork
from g2g.snn.encoders import CurrentEncoder
from g2g.sparse.dst import DynamicSparsity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import StepTimer

#: the autocast dtype of the forward passes (``--precision``), None: float32
AUTOCAST: list = [None]


def _step(net, optimizer, encoder, x, y, dst=None):
    """One training step as the trainer takes it (with a DST: through its Adam restart)."""
    inputs = encoder(x)
    dtype = AUTOCAST[0]
    with torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
        output = net(inputs)
    loss = F.cross_entropy(output.counts, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if dst is None:
        optimizer.step()
    else:
        dst.adam_restart.step()
        dst.adam_restart.restart(dst(1, output, inputs))  # step 1: accumulate only, never an update


def _optimizer_step_times(net, optimizer, dst, repeats):
    """Median time of ``dst.adam_restart.step()`` (``optimizer.step()`` with the restarted
    entries recomputed) and of plain Adam's step on a copy of its parameters, gradients
    and state, interleaved."""
    twin = copy.deepcopy(net)
    for parameter, copied in zip(net.parameters(), twin.parameters()):
        copied.grad = None if parameter.grad is None else parameter.grad.clone()
    plain = torch.optim.Adam(twin.parameters(), lr=5e-4)
    plain.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    times = {dst.adam_restart.step: [], plain.step: []}
    device = next(net.parameters()).device
    for _ in range(repeats):
        for step in times:
            with StepTimer(device) as timer:
                step()
            times[step].append(timer.seconds)
    return statistics.median(times[dst.adam_restart.step]), statistics.median(times[plain.step])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mixer", choices=["index", "random", "mixer"])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--num-steps", type=int, default=25, help="time steps T")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--updates", type=int, default=5,
                        help="DST updates before timing the 'restarted' variant "
                             "(each restarts 10%% of the active entries)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--precision", default="32", help="train.precision of the forward passes (32, bf16-mixed)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.precision == "16-mixed":
        parser.error("--precision 16-mixed needs a gradient scaler, which this benchmark does not model; "
                     "use 32 or bf16-mixed")
    check_precision(device, args.precision)
    AUTOCAST[0] = AUTOCAST_DTYPES.get(args.precision)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 784, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    encoder = CurrentEncoder(args.num_steps)
    variants = {}
    for name in ("static", "dynamic hebb/hebb", "dynamic, restarted"):
        net = SpikingNetwork(784, args.hidden, 10, connectivity=args.model, mask_seed=0).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=5e-4)
        dst = DynamicSparsity(net, optimizer, prune="hebb", grow="hebb") if name != "static" else None
        variants[name] = (net, optimizer, dst)
    for net, optimizer, dst in variants.values():  # warm-up
        _step(net, optimizer, encoder, x, y, dst)
    net, optimizer, dst = variants["dynamic, restarted"]
    for update in range(args.updates):
        _step(net, optimizer, encoder, x, y, dst)
        dst.adam_restart.restart(dst.update(update + 1))
    restarted = dst.adam_restart.restarted_entries()
    active = sum(int(layer.mask.sum()) for layer in dst.layers.values())
    times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, (net, optimizer, dst) in variants.items():
            with StepTimer(device) as timer:
                _step(net, optimizer, encoder, x, y, dst)
            times[name].append(timer.seconds)
    restart, plain = _optimizer_step_times(*variants["dynamic, restarted"], args.repeats)
    dst = variants["dynamic hebb/hebb"][2]
    with StepTimer(device) as timer:
        dst.update(1000)
    update_time = timer.seconds

    static = statistics.median(times["static"])
    dynamic = statistics.median(times["dynamic hebb/hebb"])
    restarted_time = statistics.median(times["dynamic, restarted"])
    print(f"model={args.model} hidden={args.hidden} T={args.num_steps} batch={args.batch} device={device} "
          f"precision={args.precision} threads={torch.get_num_threads()} repeats={args.repeats}")
    print(f"restarted variant: {restarted} of {active} active entries restarted ({args.updates} updates)")
    print(f"{'variant':<20} {'median step s':>14} {'samples/s':>10}")
    for name in variants:
        median = statistics.median(times[name])
        print(f"{name:<20} {median:>14.4f} {args.batch / median:>10.1f}")
    print(f"step-time ratio dynamic/static: {dynamic / static:.3f} "
          f"(Hebbian accumulation overhead {100 * (dynamic / static - 1):+.1f}%)")
    print(f"step-time ratio restarted/static: {restarted_time / static:.3f} (accumulation, Adam restart and "
          f"the rewired network's own activity)")
    print(f"optimizer step of the restarted variant: {1000 * restart:.2f} ms with the Adam restart, "
          f"{1000 * plain:.2f} ms for plain Adam on a copy: the restart costs {1000 * (restart - plain):.2f} ms "
          f"= {100 * (restart - plain) / static:.1f}% of a static step")
    print(f"one DST update (all three layers): {update_time:.3f} s; "
          f"amortised over 1000 steps: {100 * update_time / 1000 / static:.2f}% of a step")


if __name__ == "__main__":
    main()
