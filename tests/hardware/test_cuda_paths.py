"""What would go wrong or be slow on CUDA, shown on the CPU or on torch's ``meta`` device
(tensors without data: any read of a value back to the host raises there): no host
syncs in the LIF scan, the optimizer state loaded as a fresh optimizer has it, only the
run's GPU generator saved, DST ties broken the same on every device, strict deterministic
mode without NaN-filled allocations, and a feature cache per device arithmetic.
benchmarks/README.md lists what only a GPU can check."""

from __future__ import annotations

import pytest
import torch

from g2g.build import random_streams
from g2g.data.features import arithmetic_tag
from g2g.hardware.device import configure
from g2g.lifecycle import checkpoint as ckpt
from g2g.snn import kernels
from g2g.snn.neurons import LIF
from g2g.sparse.dst.adam_restart import AdamRestart
from g2g.sparse.dst.rules import highest, lowest
from g2g.sparse.layers import MaskedLinear

META = torch.device("meta")


def test_the_lif_scan_reads_nothing_back_to_the_host_off_the_cpu():
    layer = LIF().to(META)
    current = torch.empty(5, 3, 4, device=META, requires_grad=True)
    spikes = layer(current)  # a float() of decay or threshold would raise on meta
    spikes.sum().backward()
    assert current.grad.shape == (5, 3, 4) and layer.beta.grad.device == META


def test_the_lif_scan_with_device_scalars_equals_the_cpu_scan(monkeypatch):
    torch.manual_seed(0)
    current = torch.randn(20, 8, 16) * 0.8 + 0.5
    weights = torch.randn(20, 8, 16)

    def run():
        layer = LIF(beta=0.85, threshold=1.0)
        source = current.clone().requires_grad_(True)
        spikes = layer(source)
        (spikes * weights).sum().backward()
        return spikes, source.grad, layer.beta.grad, layer.threshold.grad

    expected = run()
    monkeypatch.setattr(kernels, "_scalar", lambda value: value)  # the path every non-CPU device takes
    got = run()
    assert torch.equal(got[0], expected[0])  # the same spikes
    for actual, wanted in zip(got[1:], expected[1:]):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6)


def test_a_resumed_optimizer_keeps_adams_step_on_the_cpu_as_a_fresh_one(tmp_path):
    cpu_layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(cpu_layer.parameters())
    cpu_layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint.pth"
    writer = ckpt.CheckpointWriter(path, "hash", {}, "run", device="meta")
    writer.save({"model": cpu_layer.state_dict(), "optimizer": optimizer.state_dict(), "step_callbacks": [],
                 "shuffle_rng": torch.get_rng_state(), "global_step": 1}, {"torch": torch.get_rng_state()},
                epoch=1, epoch_progress=None, history=[])
    state = ckpt.load_checkpoint(path, "hash", device=META)
    assert state["model"]["weight"].device == META  # the weights go to the device
    meta_layer = torch.nn.Linear(3, 2, device=META)
    resumed = torch.optim.Adam(meta_layer.parameters())
    resumed.load_state_dict(state["optimizer"])
    for parameter_state in resumed.state.values():
        assert parameter_state["step"].device.type == "cpu"  # as in a fresh Adam: no sync per step
        assert parameter_state["exp_avg"].device == META
    # what moving the optimizer state first did: Adam's step on the device
    moved = torch.optim.Adam(torch.nn.Linear(3, 2, device=META).parameters())
    moved.load_state_dict(ckpt._to_device(optimizer.state_dict(), META))
    assert all(s["step"].device == META for s in moved.state.values())


class _FakeCuda:
    """Records which CUDA generator calls g2g makes (no GPU needed)."""

    def __init__(self):
        self.calls = []

    def get_rng_state(self, device="cuda"):
        self.calls.append(("get", str(device)))
        return torch.tensor([7], dtype=torch.uint8)

    def get_rng_state_all(self):
        raise AssertionError("every GPU's generator state was read")

    def set_rng_state(self, state, device="cuda"):
        self.calls.append(("set", str(device), int(state[0])))

    def set_rng_state_all(self, states):
        raise AssertionError("every GPU's generator state was set")


def test_only_the_run_devices_cuda_generator_is_saved_and_restored(monkeypatch):
    fake = _FakeCuda()
    for name in ("get_rng_state", "get_rng_state_all", "set_rng_state", "set_rng_state_all"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "cuda" not in random_streams.rng_state(torch.device("cpu"))  # a CPU run saves no GPU's
    state = random_streams.rng_state(torch.device("cuda:1"))
    assert fake.calls == [("get", "cuda:1")] and int(state["cuda"][0]) == 7
    random_streams.set_rng_state(state, torch.device("cuda:0"))  # restored on whichever GPU the run has now
    older = {**state, "cuda": [torch.tensor([5], dtype=torch.uint8), torch.tensor([6], dtype=torch.uint8)]}
    random_streams.set_rng_state(older, torch.device("cuda:1"))  # an older checkpoint's list of every GPU's
    assert fake.calls[1:] == [("set", "cuda:0", 7), ("set", "cuda:1", 6)]


def test_dst_ties_go_to_the_lower_index_in_score_then_index_order():
    scores = torch.tensor([[0.5, 0.1, 0.1], [0.3, 0.1, 0.5]])
    allowed = torch.tensor([[True, True, False], [True, True, True]])
    # lowest allowed: 0.1 at 1 and 4 (2 is not allowed), then 0.3 at 3, then 0.5 at 0 and 5
    assert lowest(scores, allowed, 4).tolist() == [1, 4, 3, 0]
    # highest allowed: 0.5 at 0 and 5, then 0.3 at 3
    assert highest(scores, allowed, 3).tolist() == [0, 5, 3]
    many = torch.zeros(1000)
    assert lowest(many, torch.ones(1000, dtype=torch.bool), 5).tolist() == [0, 1, 2, 3, 4]
    assert highest(many, torch.ones(1000, dtype=torch.bool), 5).tolist() == [0, 1, 2, 3, 4]


@pytest.fixture
def restore_deterministic():
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.use_deterministic_algorithms(False)
    torch.utils.deterministic.fill_uninitialized_memory = fill


def test_deterministic_mode_raises_on_a_nondeterministic_op_and_does_not_fill_allocations(restore_deterministic):
    configure(None, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()  # an error, not a warning nobody reads
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert not torch.isnan(torch.empty(1000)).all()  # torch.empty is not NaN-filled (a pass over memory)


def test_the_feature_cache_names_the_devices_arithmetic():
    assert arithmetic_tag(torch.device("cpu")) == ""  # every earlier cache's name
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        assert arithmetic_tag(torch.device("cuda")) == "_cuda"
        torch.backends.cudnn.allow_tf32 = True  # torch's default for convolutions
        assert arithmetic_tag(torch.device("cuda")) == "_cuda-tf32"
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_adam_restart_steps_on_the_device_without_reading_values_back():
    layer = torch.nn.Linear(4, 3, device=META)
    optimizer = torch.optim.Adam(layer.parameters())
    restart = AdamRestart(optimizer, {"weight": layer.weight})
    layer(torch.empty(2, 4, device=META)).sum().backward()
    optimizer.step()
    restart.restart_steps["weight"] = torch.ones(3, 4, dtype=torch.int32)  # (meta has no values to find them by)
    restart._restarted["weight"] = (torch.arange(3, device=META), torch.zeros(3, dtype=torch.long, device=META),
                                    torch.ones(1, dtype=torch.int64, device=META))
    restart.step()  # host-built corrections would need a copy; a read of a device value would raise
    assert layer.weight.device == META


def test_auto_spike_products_are_dense_under_mixed_precision():
    layer = MaskedLinear(8, 4, spike_matmul="auto")
    spikes = (torch.rand(6, 8) < 0.05).float()
    calls = []
    original = kernels.SpikeLinear.apply
    try:
        kernels.SpikeLinear.apply = lambda *args: calls.append(args) or original(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(spikes, binary=True).dtype == torch.bfloat16
        assert calls == []
        layer(spikes, binary=True)  # float32 on the CPU at 5%: the sparse product
        assert len(calls) == 1
    finally:
        kernels.SpikeLinear.apply = original


def test_the_compiled_lif_scan_equals_the_loop():
    torch.manual_seed(0)
    current = torch.randn(3, 4, 5) * 0.8 + 0.6
    weights = torch.randn(3, 4, 5)

    def run(scan):
        layer = LIF(beta=0.85, threshold=1.0, scan=scan)
        source = current.clone().requires_grad_(True)
        spikes = layer(source)
        (spikes * weights).sum().backward()
        return spikes, source.grad, layer.beta.grad, layer.threshold.grad

    expected, got = run("loop"), run("compiled")
    assert torch.equal(got[0], expected[0]) and expected[0].sum() > 0  # the same spikes
    for actual, wanted in zip(got[1:], expected[1:]):
        torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-6)


def test_an_unknown_lif_scan_is_refused():
    with pytest.raises(ValueError, match=r"model.lif_scan='fast' is unknown; allowed: loop, compiled"):
        LIF(scan="fast")
