"""The LIF scan and the network's layer-at-once evaluation equal snntorch's Leaky
stepped one time step at a time."""

import pytest
import snntorch as snn
import torch

import g2g.snn.kernels
from g2g.models.network import SpikingNetwork
from g2g.snn.encoders import CurrentEncoder, RateEncoder
from g2g.snn.kernels import LIFScan, SpikeLinear, spike_linear
from g2g.snn.neurons import LIF
from g2g.snn.surrogate import Surrogate, atan_input_gradient


def _snntorch_sequence(leaky: snn.Leaky, current: torch.Tensor):
    mem = leaky.reset_mem()
    spikes, membranes = [], []
    for step in current:
        spike, mem = leaky(step, mem)
        spikes.append(spike)
        membranes.append(mem)
    return torch.stack(spikes), torch.stack(membranes)


@pytest.mark.parametrize("beta, threshold", [(0.9, 1.0), (0.5, 0.7), (1.0, 1.3)])
def test_lif_matches_snntorch_leaky_forward_and_gradients(beta, threshold):
    torch.manual_seed(0)
    current = (torch.randn(20, 8, 16) * 0.8 + 0.4)
    current_ours = current.clone().requires_grad_(True)
    current_ref = current.clone().requires_grad_(True)
    ours = LIF(beta, threshold, learn_beta=True, learn_threshold=True)
    reference = snn.Leaky(beta=beta, threshold=threshold, learn_beta=True, learn_threshold=True,
                          spike_grad=snn.surrogate.atan(alpha=2.0))

    spikes, membrane = LIFScan.apply(current_ours, ours.beta.clamp(0, 1), ours.threshold, ours.surrogate,
                                     ours.surrogate_slope)  # the LIF layer's kernel, with its membrane
    assert torch.equal(ours(current), spikes)
    spikes_ref, membrane_ref = _snntorch_sequence(reference, current_ref)
    assert spikes.sum() > 0, "the test input must make neurons fire"
    torch.testing.assert_close(spikes, spikes_ref, rtol=0, atol=0)
    torch.testing.assert_close(membrane, membrane_ref, rtol=1e-6, atol=1e-6)

    weights = torch.randn_like(spikes)  # a loss that depends on every spike and membrane
    ((spikes * weights).sum() + membrane.pow(2).sum() * 0.01).backward()
    ((spikes_ref * weights).sum() + membrane_ref.pow(2).sum() * 0.01).backward()
    torch.testing.assert_close(current_ours.grad, current_ref.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.beta.grad, reference.beta.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.threshold.grad, reference.threshold.grad, rtol=1e-4, atol=1e-5)


class _PerStepReference(torch.nn.Module):
    """The original scripts' way: per time step, masked linear then snntorch.Leaky(init_hidden)."""

    def __init__(self, net: SpikingNetwork):
        super().__init__()
        self.net = net
        self.leaky = torch.nn.ModuleList(
            snn.Leaky(beta=0.9, threshold=1.0, learn_beta=True, learn_threshold=True,
                      init_hidden=True, spike_grad=snn.surrogate.atan(alpha=2.0)) for _ in range(3))

    def forward(self, inputs):
        for leaky in self.leaky:
            leaky.reset_mem()
        counts = 0
        for x in inputs:
            spike = x
            for layer, leaky in zip(self.net.masked_layers().values(), self.leaky):
                spike = leaky(layer(spike))
            counts = counts + spike
        return counts


@pytest.mark.parametrize("model", ["dense", "mixer"])
@pytest.mark.parametrize("encoder", [CurrentEncoder(12, scale=2.0), RateEncoder(12)])
def test_network_equals_per_step_snntorch_network(model, encoder):
    torch.manual_seed(1)
    net = SpikingNetwork(20, 32, 5, connectivity=model, p_inter=0.3, mask_seed=0)
    with torch.no_grad():
        for layer in net.masked_layers().values():
            layer.weight.mul_(4.0)  # make every layer fire
    reference = _PerStepReference(net)
    inputs = encoder(torch.rand(6, 20))
    counts = net(inputs).counts
    counts_ref = reference(inputs)
    assert counts.sum() > 0
    torch.testing.assert_close(counts, counts_ref, rtol=0, atol=0)

    counts.pow(2).sum().backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if "lif" not in name}
    net.zero_grad()
    counts_ref.pow(2).sum().backward()
    for name, p in net.named_parameters():
        if "lif" not in name:
            # float32 sums in another order (one matmul over T*B vs T of them)
            scale = p.grad.abs().max().item()
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5 * max(scale, 1.0),
                                       msg=lambda m, name=name: f"{name}: {m}")


def test_atan_surrogate_gradient_equals_snntorch_atan():
    over_threshold = torch.linspace(-3, 3, 101, requires_grad=True)
    grad_spikes = torch.randn(101)
    snn.surrogate.atan(alpha=2.0)(over_threshold).backward(grad_spikes)
    ours = atan_input_gradient(grad_spikes, over_threshold.detach().clone(), 2.0)
    torch.testing.assert_close(ours, over_threshold.grad, rtol=1e-6, atol=1e-7)


def test_unknown_surrogate_is_refused_listing_the_registered_ones():
    with pytest.raises(ValueError, match="surrogate='sigmoid' is unknown; allowed: atan"):
        LIF(surrogate="sigmoid")


def _sigmoid_spike(over_threshold, slope):
    return torch.sigmoid(slope * over_threshold)


def _sigmoid_input_gradient(grad_spikes, over_threshold, slope):
    sigmoid = torch.sigmoid(slope * over_threshold)
    return grad_spikes * slope * sigmoid * (1 - sigmoid)


#: test-only: a smooth spike function whose derivative is exactly the surrogate's, so
#: the kernel's backward must equal the numerical gradient
SMOOTH_SIGMOID = Surrogate(_sigmoid_spike, _sigmoid_input_gradient)


def test_lif_scan_backward_equals_numerical_gradient_for_current_decay_and_threshold():
    torch.manual_seed(0)
    current = (torch.randn(8, 3, 5, dtype=torch.float64) * 0.8 + 0.6).requires_grad_(True)
    decay = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    threshold = torch.tensor(1.1, dtype=torch.float64, requires_grad=True)
    _, membrane = LIFScan.apply(current, decay, threshold, SMOOTH_SIGMOID, 3.0)
    # the detached reset H(U - U_thr) must fire somewhere, and no membrane may sit so
    # close to the threshold that the finite differences flip a reset
    assert (membrane > threshold).any()
    assert (membrane - threshold).abs().min() > 1e-3
    assert torch.autograd.gradcheck(
        lambda c, d, t: LIFScan.apply(c, d, t, SMOOTH_SIGMOID, 3.0), (current, decay, threshold),
        atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("density", [0.03, 0.13, 0.4])  # both sparse paths, sparse forward only, dense
def test_spike_linear_equals_dense_linear_forward_and_gradients(density):
    torch.manual_seed(0)
    spikes = (torch.rand(300, 64) < density).float().requires_grad_(True)
    weight = torch.randn(48, 64, requires_grad=True)
    bias = torch.randn(48, requires_grad=True)
    out = spike_linear(spikes, weight, bias)
    reference_inputs = [t.detach().clone().requires_grad_(True) for t in (spikes, weight, bias)]
    reference = torch.nn.functional.linear(*reference_inputs)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    reference.backward(grad)
    for ours, theirs in zip((spikes, weight, bias), reference_inputs):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("spike_matmul, sparse_products", [("auto", 2), ("dense", 0), ("sparse", 2)])
def test_spike_matmul_selects_the_products_of_the_hidden_layers(monkeypatch, spike_matmul, sparse_products):
    calls = []
    real_apply = SpikeLinear.apply
    monkeypatch.setattr(SpikeLinear, "apply", lambda *a: calls.append(a[0].shape) or real_apply(*a))
    net = SpikingNetwork(20, 32, 5, connectivity="mixer", mask_seed=0, spike_matmul=spike_matmul)
    net(CurrentEncoder(4)(torch.rand(3, 20)))
    assert calls == [(12, 32)] * sparse_products  # fc2 and fc3 over [T*B, N]; fc1 takes the analog input


@pytest.mark.parametrize("spike_matmul, conversions_expected", [("auto", 0), ("sparse", 1)])
def test_sparse_spike_matmul_uses_sparse_products_at_any_density(monkeypatch, spike_matmul, conversions_expected):
    from g2g.sparse.layers import MaskedLinear

    conversions = []
    real_to_sparse_csr = g2g.snn.kernels._to_sparse_csr
    monkeypatch.setattr(g2g.snn.kernels, "_to_sparse_csr",
                        lambda spikes: conversions.append(spikes.shape) or real_to_sparse_csr(spikes))
    layer = MaskedLinear(32, 5, spike_matmul=spike_matmul)
    spikes = (torch.rand(4, 6, 32) < 0.5).float()  # far above the auto thresholds
    out = layer(spikes, binary=True)
    assert len(conversions) == conversions_expected
    torch.testing.assert_close(out, torch.nn.functional.linear(spikes, layer.weight, layer.bias))


def _outputs_and_gradients(spike_matmul, connectivity, encoder, device="cpu"):
    torch.manual_seed(2)
    net = SpikingNetwork(20, 48, 5, connectivity=connectivity, p_inter=0.3, spike_matmul=spike_matmul)
    with torch.no_grad():
        for layer in net.masked_layers().values():
            layer.weight.mul_(3.0)  # hidden firing rates 3-30%: both sides of the auto thresholds
    net.to(device)
    output = net(encoder(torch.rand(6, 20)).to(device))
    (output.counts.pow(2).sum() + sum(s.sum() for s in output.spikes[:2])).backward()
    return output, {name: p.grad for name, p in net.named_parameters()}


def _assert_spike_matmul_modes_agree(modes, connectivity, encoder, device="cpu"):
    (reference, reference_grads), *others = (
        _outputs_and_gradients(mode, connectivity, encoder, device) for mode in modes)
    assert reference.counts.sum() > 0
    for output, grads in others:
        for spikes, spikes_ref in zip(output.spikes, reference.spikes):
            torch.testing.assert_close(spikes, spikes_ref, rtol=0, atol=0)
        for name, grad in grads.items():
            # float32 sums in another order
            scale = max(reference_grads[name].abs().max().item(), 1.0)
            torch.testing.assert_close(grad, reference_grads[name], rtol=1e-5, atol=1e-5 * scale,
                                       msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("connectivity", ["dense", "mixer"])
@pytest.mark.parametrize("encoder", [CurrentEncoder(10, scale=2.0), RateEncoder(10)])
def test_spike_matmul_dense_sparse_and_auto_agree(connectivity, encoder):
    _assert_spike_matmul_modes_agree(("dense", "sparse", "auto"), connectivity, encoder)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sparse_spike_matmul_on_cuda_equals_dense():
    _assert_spike_matmul_modes_agree(("dense", "sparse", "auto"), "mixer", RateEncoder(10), device="cuda")


def test_unknown_spike_matmul_is_refused_naming_key_value_and_choices():
    with pytest.raises(ValueError, match="model.spike_matmul='csr' is unknown; allowed: auto, dense, sparse"):
        SpikingNetwork(4, 8, 2, spike_matmul="csr")


def test_connectivity_decides_the_masks_and_name_is_only_a_label():
    labelled = SpikingNetwork(4, 8, 2, connectivity="index", name="dense_matched", mask_seed=0)
    assert (labelled.name, labelled.connectivity) == ("dense_matched", "index")
    assert labelled.fc2.mask is not None
    assert SpikingNetwork(4, 8, 2, connectivity="mixer").name == "mixer"
    with pytest.raises(ValueError, match="model.connectivity='g2g' is unknown; allowed: dense, index, random, mixer"):
        SpikingNetwork(4, 8, 2, connectivity="g2g")
