"""The LIF scan and the network's layer-at-once evaluation equal snntorch's Leaky
stepped one time step at a time."""

import pytest
import snntorch as snn
import torch

from g2g.snn.encoders import CurrentEncoder, RateEncoder
from g2g.models.network import SpikingNetwork
from g2g.snn.neurons import LIF


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

    spikes, membrane = ours(current_ours, return_membrane=True)
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
    """The seed's way: per time step, masked linear then snntorch.Leaky(init_hidden)."""

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
    net = SpikingNetwork(20, 32, 5, name=model, p_inter=0.3, mask_seed=0)
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
                                       msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("density", [0.03, 0.13, 0.4])  # both sparse paths, sparse forward only, dense
def test_spike_linear_equals_dense_linear_forward_and_gradients(density):
    from g2g.snn.kernels import SpikeLinear

    torch.manual_seed(0)
    spikes = (torch.rand(300, 64) < density).float().requires_grad_(True)
    weight = torch.randn(48, 64, requires_grad=True)
    bias = torch.randn(48, requires_grad=True)
    out = SpikeLinear.apply(spikes, weight, bias)
    reference_inputs = [t.detach().clone().requires_grad_(True) for t in (spikes, weight, bias)]
    reference = torch.nn.functional.linear(*reference_inputs)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    reference.backward(grad)
    for ours, theirs in zip((spikes, weight, bias), reference_inputs):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-4)


def test_sparse_spike_path_is_used_for_hidden_layers_on_cpu(monkeypatch):
    import g2g.snn.kernels

    calls = []
    real_apply = g2g.snn.kernels.SpikeLinear.apply
    monkeypatch.setattr(g2g.snn.kernels.SpikeLinear, "apply", lambda *a: calls.append(a[0].shape) or real_apply(*a))
    net = SpikingNetwork(20, 32, 5, name="mixer", mask_seed=0)
    net(CurrentEncoder(4)(torch.rand(3, 20)))
    assert calls == [(12, 32), (12, 32)]  # fc2 and fc3 over [T*B, N]; fc1 takes the analog input
