"""Training-step throughput: g2g's network against the per-time-step snntorch loop.

The reference is the network as an snntorch user (and the original scripts) write
it: for each of the T time steps, every layer computes ``x @ (W * M)^T + b`` with the
masked weight recomputed at every step, then ``snntorch.Leaky(init_hidden=True)``;
output spikes are summed over time, cross-entropy on the counts, Adam. g2g's network
runs each layer over all T steps at once (fc1 once per batch for current input, W * M
once per step, a fused LIF scan with a hand-written backward).

Both start from identical weights, masks and batches in one process; the script checks
that the first step's loss and gradients agree, then times steps alternately (so
machine noise hits both alike) and prints samples per second, the ratio, peak memory
the activation memory each keeps for the backward, and the achieved FLOP/s against the
machine's measured dense matmul rate.

    python benchmarks/train_step.py --preset small
    python benchmarks/train_step.py --preset seed --repeats 3        # hidden 2048, T 50, batch 256
    python benchmarks/train_step.py --preset seed --sparsity dynamic --models mixer
    python benchmarks/train_step.py --preset small --spike-matmul dense  # no sparse spike products
    python benchmarks/train_step.py --preset seed --precision 32,bf16-mixed   # a row per precision
    python benchmarks/train_step.py --device cuda --precision 32,tf32,bf16-mixed,16-mixed

``--precision`` takes ``train.precision`` values and ``tf32`` (float32 with TF32 matmuls,
``train.tf32=true``, CUDA only); each gets a row, with its ratio against the snntorch
loop (always float32) and against g2g in float32, timed alternately in the same process.
On CUDA each step is timed with CUDA events after a synchronisation.
"""

from __future__ import annotations

import argparse
import statistics
import time

import snntorch as snn
import torch
from torch.nn import functional as F

from g2g.hardware.precision import AUTOCAST_DTYPES, check_precision, gradient_scaler, set_tf32
from g2g.models.network import NetworkOutput, SpikingNetwork
from g2g.snn.encoders import CurrentEncoder, RateEncoder
from g2g.sparse.dst import DynamicSparsity

#: the default device of the timings
CPU = torch.device("cpu")
PRESETS = {"tiny": dict(hidden=32, num_steps=4, batch=16), "small": dict(hidden=512, num_steps=25, batch=128),
           "seed": dict(hidden=2048, num_steps=50, batch=256)}


class StepTimer:
    """Wall time of a piece of work on ``device``: ``time.perf_counter`` on the CPU; on
    CUDA a pair of CUDA events after a synchronisation (queued kernels would otherwise be
    charged to whatever synchronises next)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1000
        else:
            self.seconds = time.perf_counter() - self.started


class PerStepReference(torch.nn.Module):
    """The original scripts' formulation, sharing ``net``'s parameters (weights, masks, beta, threshold)."""

    def __init__(self, net: SpikingNetwork) -> None:
        super().__init__()
        self.net = net
        self.leaky = torch.nn.ModuleList(
            snn.Leaky(beta=lif.beta.item(), threshold=lif.threshold.item(), learn_beta=True,
                      learn_threshold=True, init_hidden=True, spike_grad=snn.surrogate.atan(alpha=2.0))
            for lif in (net.lif1, net.lif2, net.lif3))

    def forward(self, inputs: torch.Tensor) -> NetworkOutput:
        for leaky in self.leaky:
            leaky.reset_mem()
        counts = 0
        recorded = [[], [], []]
        for x in inputs:
            spike = x
            for layer, leaky, record in zip(self.net.masked_layers().values(), self.leaky, recorded):
                weight = layer.weight if layer.mask is None else layer.weight * layer.mask
                spike = leaky(F.linear(spike, weight, layer.bias))
                record.append(spike)
            counts = counts + spike
        return NetworkOutput(counts, tuple(torch.stack(r) for r in recorded))


def saved_activation_mib(forward) -> float:
    """MiB of distinct tensor storage autograd keeps for the backward of ``forward()``
    (the activation memory a training step needs on top of weights and optimizer)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = forward()
    del output
    return sum(storages.values()) / 2**20


def matmul_rate(m: int, k: int, n: int, repeats: int = 5, device: torch.device = CPU) -> float:
    """Dense fp32 matmul rate of ``device`` in GFLOP/s for an [m, k] x [k, n] product."""
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        with StepTimer(device) as timer:
            a @ b
        times.append(timer.seconds)
    return 2 * m * k * n / min(times) / 1e9


def step_flops(net: SpikingNetwork, num_steps: int, batch: int, constant_input: bool) -> float:
    """Multiply-add FLOPs of one training step of g2g's network (forward + backward,
    dense matmuls, 2 FLOPs per multiply-add): forward, input gradient and weight
    gradient of every layer; fc1 once per batch when the input is constant."""
    total = 0
    for name, layer in net.masked_layers().items():
        rows = batch if (name == "fc1" and constant_input) else batch * num_steps
        per_pass = 2 * rows * layer.in_features * layer.out_features
        total += per_pass * (2 if name == "fc1" else 3)  # fc1 needs no input gradient
    return total


def _train_step(module, optimizer, inputs, labels, precision: str = "32", scaler=None):
    """One step as the trainer takes it: the forward under autocast for a mixed precision
    (``tf32`` and ``32``: none), the loss in float32, a gradient scaler for ``16-mixed``."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        output = module(inputs)
    else:
        with torch.autocast(inputs.device.type, dtype=dtype):
            output = module(inputs)
    loss = F.cross_entropy(output.counts, labels)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss, output


def run_case(model: str, sparsity: str, encoding: str, *, hidden: int, num_steps: int, batch: int,
             repeats: int, spike_matmul: str = "auto", device: torch.device = CPU,
             precisions: tuple[str, ...] = ("32",), lif_scan: str = "loop") -> dict:
    """Time the snntorch loop (float32) and g2g in each of ``precisions`` alternately;
    ``32`` is always timed too (the ratios' reference). Returns the first step's agreement
    and per variant (``reference``, ``g2g 32``, ``g2g bf16-mixed``, ...) its step time."""
    torch.manual_seed(0)
    precisions = tuple(dict.fromkeys(("32", *precisions)))
    net = SpikingNetwork(784, hidden, 10, connectivity=model, mask_seed=0, spike_matmul=spike_matmul).to(device)
    reference_net = SpikingNetwork(784, hidden, 10, connectivity=model, mask_seed=0).to(device)
    reference_net.load_state_dict(net.state_dict())
    reference = PerStepReference(reference_net)
    encoder = CurrentEncoder(num_steps) if encoding == "current" else RateEncoder(num_steps)
    copies = {"reference": (reference, reference_net)}
    for precision in precisions:  # each precision trains its own copy from the same weights
        copy = SpikingNetwork(784, hidden, 10, connectivity=model, mask_seed=0, spike_matmul=spike_matmul,
                              lif_scan=lif_scan).to(device)
        copy.load_state_dict(net.state_dict())
        copies[f"g2g {precision}"] = (copy, copy)
    optimizers = {name: torch.optim.Adam(module.parameters(), lr=5e-4) for name, (module, _) in copies.items()}
    scalers = {f"g2g {p}": gradient_scaler(device, p) for p in precisions}
    callbacks = {name: None for name in copies}
    if sparsity == "dynamic":  # the same Hebbian accumulation on all (no update inside the timing)
        callbacks = {name: DynamicSparsity(network, optimizers[name], prune="hebb", grow="hebb")
                     for name, (_, network) in copies.items()}
    images = torch.rand(batch, 784, device=device)
    labels = torch.randint(0, 10, (batch,), device=device)
    inputs = encoder(images)  # the same spikes for both (rate coding draws randomness here)

    # agreement on the first step: same loss and gradients, before any optimizer step
    out = net(inputs)
    loss = F.cross_entropy(out.counts, labels)
    loss.backward()
    loss_reference = F.cross_entropy(reference(inputs).counts, labels)
    loss_reference.backward()
    pairs = [(layer.weight, ref.weight) for layer, ref in
             zip(net.masked_layers().values(), reference_net.masked_layers().values())]
    pairs += [(layer.bias, ref.bias) for layer, ref in
              zip(net.masked_layers().values(), reference_net.masked_layers().values())]
    for lif, leaky in zip((net.lif1, net.lif2, net.lif3), reference.leaky):
        pairs += [(lif.beta, leaky.beta), (lif.threshold, leaky.threshold)]
    max_gradient_error = 0.0
    for p, q in pairs:  # error relative to the largest gradient entry of that tensor
        scale = max(q.grad.abs().max().item(), 1e-12)
        max_gradient_error = max(max_gradient_error, (p.grad - q.grad).abs().max().item() / scale)
    agreement = {"loss": loss.item(), "loss_reference": loss_reference.item(),
                 "max_relative_gradient_error": max_gradient_error}
    net.zero_grad(), reference.zero_grad()

    memory = {"reference": saved_activation_mib(lambda: reference(inputs))}
    for precision in precisions:
        dtype, network = AUTOCAST_DTYPES.get(precision), copies[f"g2g {precision}"][0]
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            memory[f"g2g {precision}"] = saved_activation_mib(lambda network=network: network(inputs))
    times = {name: [] for name in copies}
    for repeat in range(repeats + 1):  # the first round warms up
        for name, (module, _) in copies.items():
            precision = name.removeprefix("g2g ") if name != "reference" else "32"
            set_tf32(precision == "tf32")
            with StepTimer(device) as timer:
                _, output = _train_step(module, optimizers[name], inputs, labels, precision, scalers.get(name))
                if callbacks[name] is not None:
                    callbacks[name](1, output, inputs)
            if repeat > 0:
                times[name].append(timer.seconds)
    set_tf32(False)
    result = {name: statistics.median(values) for name, values in times.items()}
    # data loading as the trainer does it: an index slice of the whole split held in memory
    dataset = torch.rand(60000, 784, device=device)
    order = torch.randperm(60000, device=device)
    with StepTimer(device) as timer:
        for start in range(0, 20 * batch, batch):
            encoder(dataset[order[start:start + batch]])
    loading = timer.seconds / 20
    flops = step_flops(net, num_steps, batch, encoding == "current")
    return {**agreement, "step_s": result, "samples_per_s": {k: batch / v for k, v in result.items()},
            "speedup": {p: result["reference"] / result[f"g2g {p}"] for p in precisions},
            "over_g2g_32": {p: result["g2g 32"] / result[f"g2g {p}"] for p in precisions},
            "activation_mib": memory, "precisions": precisions,
            "gflops_achieved": {p: flops / result[f"g2g {p}"] / 1e9 for p in precisions},
            "data_loading_fraction": loading / result["g2g 32"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--models", default="dense,mixer")
    parser.add_argument("--sparsity", default="static", help="static, dynamic or static,dynamic")
    parser.add_argument("--encoding", default="current", choices=["current", "rate"])
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--spike-matmul", default="auto", choices=["auto", "dense", "sparse"],
                        help="g2g's spike products (model.spike_matmul)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--precision", default="32",
                        help="comma-separated train.precision values, and tf32 (CUDA): 32,tf32,bf16-mixed,16-mixed")
    parser.add_argument("--lif-scan", default="loop", choices=["loop", "compiled"],
                        help="g2g's LIF scan (model.lif_scan); compiled: torch.compile, compiled in the warm-up")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precisions = tuple(args.precision.split(","))
    for precision in precisions:  # refuse what the device cannot run, before any timing
        check_precision(device, "32" if precision == "tf32" else precision, tf32=precision == "tf32")
    size = PRESETS[args.preset]
    rate = matmul_rate(size["batch"] * size["num_steps"], size["hidden"], size["hidden"], device=device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"threads={torch.get_num_threads()}"
    print(f"preset={args.preset} {size} encoding={args.encoding} spike_matmul={args.spike_matmul} "
          f"lif_scan={args.lif_scan} "
          f"device={device} {where} torch {torch.__version__} "
          f"repeats={args.repeats}; dense fp32 matmul rate here: {rate:.1f} GFLOP/s")
    print(f"{'model':<7} {'sparsity':<8} {'precision':<10} {'ref s/step':>10} {'g2g s/step':>10} {'ref samp/s':>10} "
          f"{'g2g samp/s':>10} {'speedup':>8} {'vs g2g 32':>9} {'ref act MiB':>11} {'g2g act MiB':>11} "
          f"{'g2g GFLOP/s':>11} {'of peak':>7} {'loss diff':>9} {'grad err':>9} {'data %':>6}")
    for model in args.models.split(","):
        for sparsity in args.sparsity.split(","):
            if model == "dense" and sparsity == "dynamic":
                continue
            r = run_case(model, sparsity, args.encoding, hidden=size["hidden"], num_steps=size["num_steps"],
                         batch=size["batch"], repeats=args.repeats, spike_matmul=args.spike_matmul, device=device,
                         precisions=precisions, lif_scan=args.lif_scan)
            for p in r["precisions"]:
                if p not in precisions:
                    continue  # timed as the reference of the ratios only
                g2g = f"g2g {p}"
                print(f"{model:<7} {sparsity:<8} {p:<10} {r['step_s']['reference']:>10.3f} {r['step_s'][g2g]:>10.3f} "
                      f"{r['samples_per_s']['reference']:>10.1f} {r['samples_per_s'][g2g]:>10.1f} "
                      f"{r['speedup'][p]:>7.2f}x {r['over_g2g_32'][p]:>8.2f}x "
                      f"{r['activation_mib']['reference']:>11.0f} {r['activation_mib'][g2g]:>11.0f} "
                      f"{r['gflops_achieved'][p]:>11.1f} {100 * r['gflops_achieved'][p] / rate:>6.0f}% "
                      f"{abs(r['loss'] - r['loss_reference']):>9.1e} {r['max_relative_gradient_error']:>9.1e} "
                      f"{100 * r['data_loading_fraction']:>5.2f}%",
                      flush=True)


if __name__ == "__main__":
    main()
