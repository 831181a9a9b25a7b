import math

import pytest
import torch

from g2g.sparse.connectivity import g2g_mask, group_labels, layer_connectivity
from g2g.models.network import SpikingNetwork


@pytest.mark.parametrize(
    "num_groups, p_intra, p_inter",
    [(8, 1.0, 0.15), (8, 1.0, 0.0), (4, 0.5, 0.25), (8, 0.8, 1.0), (2, 1.0, 0.05)],
)
def test_mask_density_matches_formula_within_three_sigma(num_groups, p_intra, p_inter):
    n_in, n_out = 512, 256
    generator = torch.Generator().manual_seed(1)
    mask = g2g_mask(group_labels(n_in, num_groups, "index"), group_labels(n_out, num_groups, "index"),
                    p_intra, p_inter, generator)
    intra_fraction = 1.0 / num_groups  # equal groups: a fraction 1/G of the pairs is in one group
    expected = intra_fraction * p_intra + (1 - intra_fraction) * p_inter
    # variance of a sum of independent Bernoullis, one per connection
    variance = n_in * n_out * (intra_fraction * p_intra * (1 - p_intra)
                               + (1 - intra_fraction) * p_inter * (1 - p_inter))
    sigma = math.sqrt(variance) / (n_in * n_out)
    assert abs(mask.mean().item() - expected) <= 3 * sigma + 1e-12
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_intra_group_connections_are_full_when_p_intra_is_one():
    groups_in, groups_out = group_labels(64, 8, "index"), group_labels(32, 8, "index")
    mask = g2g_mask(groups_in, groups_out, 1.0, 0.0, torch.Generator().manual_seed(0))
    same = groups_out[:, None] == groups_in[None, :]
    assert torch.equal(mask.bool(), same)


def test_index_groups_are_contiguous_equal_blocks():
    labels = group_labels(2048, 8, "index")
    assert torch.equal(labels, torch.arange(8).repeat_interleave(256))


def test_uneven_groups_cover_every_group_with_near_equal_sizes():
    labels = group_labels(10, 8, "index")
    counts = torch.bincount(labels, minlength=8)
    assert counts.sum() == 10 and counts.min() >= 1 and counts.max() <= 2
    assert torch.all(labels[1:] >= labels[:-1])  # still contiguous
    mask = g2g_mask(group_labels(100, 8, "index"), labels, 1.0, 0.0, torch.Generator().manual_seed(0))
    assert mask.shape == (10, 100) and torch.all(mask.sum(1) > 0)


def test_interleaved_groups_are_position_mod_groups():
    assert group_labels(20, 8, "interleaved").tolist() == [i % 8 for i in range(20)]


def test_mixer_middle_layer_is_interleaved_and_outer_layers_are_index():
    masks = [layer.mask for layer in layer_connectivity([64, 32, 32, 16], "mixer", 8, 1.0, 0.0, seed=3)]
    index_64, index_32, index_16 = (group_labels(n, 8, "index") for n in (64, 32, 16))
    interleaved_32 = group_labels(32, 8, "interleaved")
    assert torch.equal(masks[0].bool(), index_32[:, None] == index_64[None, :])
    assert torch.equal(masks[1].bool(), interleaved_32[:, None] == interleaved_32[None, :])
    assert torch.equal(masks[2].bool(), index_16[:, None] == index_32[None, :])


def test_random_groupings_are_permutations_that_differ_between_layers():
    generator = torch.Generator().manual_seed(0)
    first = group_labels(64, 8, "random", generator)
    second = group_labels(64, 8, "random", generator)
    index = group_labels(64, 8, "index")
    assert torch.equal(first.sort().values, index) and torch.equal(second.sort().values, index)
    assert not torch.equal(first, second) and not torch.equal(first, index)
    layers = layer_connectivity([64, 64, 64, 8], "random", 8, 1.0, 0.0, seed=0)
    assert not torch.equal(layers[0].mask, layers[1].mask)
    assert not torch.equal(layers[0].out_groups, layers[1].out_groups)


@pytest.mark.parametrize("model", ["index", "random", "mixer"])
def test_masks_are_reproducible_from_the_seed(model):
    first = SpikingNetwork(30, 24, 10, connectivity=model, mask_seed=7)
    again = SpikingNetwork(30, 24, 10, connectivity=model, mask_seed=7)
    other = SpikingNetwork(30, 24, 10, connectivity=model, mask_seed=8)
    for name in ("fc1", "fc2", "fc3"):
        assert torch.equal(getattr(first, name).mask, getattr(again, name).mask)
    assert any(not torch.equal(getattr(first, n).mask, getattr(other, n).mask) for n in ("fc1", "fc2", "fc3"))


def test_masked_weights_are_zero_and_get_no_gradient():
    net = SpikingNetwork(30, 24, 10, connectivity="index", p_inter=0.1, mask_seed=0)
    for layer in net.masked_layers().values():
        assert torch.all(layer.weight[layer.mask == 0] == 0)
    out = net(torch.rand(5, 3, 30) * 3)
    (out.counts.sum() + sum(s.sum() for s in out.spikes)).backward()
    for layer in net.masked_layers().values():
        assert torch.all(layer.weight.grad[layer.mask == 0] == 0)


def test_bad_probability_is_refused():
    with pytest.raises(ValueError, match="p_inter=1.5"):
        g2g_mask(torch.zeros(3, dtype=torch.long), torch.zeros(2, dtype=torch.long), 1.0, 1.5)


def test_synops_count_spikes_times_active_fanout_and_energy():
    from g2g.training.synops import ENERGY_PER_AC_PJ, ENERGY_PER_MAC_PJ, SynOpsCounter

    net = SpikingNetwork(4, 8, 2, connectivity="index", num_groups=2, p_intra=1.0, p_inter=0.0, mask_seed=0)
    counter = SynOpsCounter(net.masked_layers(), analog_input=True)
    inputs = torch.rand(3, 5, 4)  # analog: fc1 counts T x active connections as MACs
    spikes1 = torch.zeros(3, 5, 8)
    spikes1[0, :, 0] = 1  # one spike per example from hidden neuron 0 (group 0: 4 outgoing connections)
    spikes2 = torch.zeros(3, 5, 8)
    counter.add((inputs, spikes1, spikes2))
    metrics = counter.metrics()
    assert metrics["macs_fc1"] == 3 * net.fc1.mask.sum().item() == 3 * 16
    assert metrics["synops_fc2"] == 4.0 and metrics["synops_fc3"] == 0.0
    assert metrics["ops_dense_equivalent"] == 3 * (4 * 8 + 8 * 8 + 8 * 2)
    assert metrics["energy_nj"] == pytest.approx((4.0 * ENERGY_PER_AC_PJ + 48 * ENERGY_PER_MAC_PJ) / 1000)
