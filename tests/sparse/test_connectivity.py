import math

import pytest
import torch

from g2g.models.network import SpikingNetwork
from g2g.sparse.connectivity import g2g_mask, group_labels, layer_connectivity


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


def test_synops_constant_current_input_computes_fc1_once_and_injects_it_every_step():
    from g2g.snn.encoders import CurrentEncoder
    from g2g.training.synops import SynOpsCounter

    # 4 -> 8 -> 8 -> 2 in 2 groups, intra-group only: fc1 has 2 x (2 x 4) = 16 connections,
    # each hidden neuron of fc2 fans out to its 4 group mates, of fc3 to its 1 class
    net = SpikingNetwork(4, 8, 2, connectivity="index", num_groups=2, p_intra=1.0, p_inter=0.0, mask_seed=0)
    assert net.fc1.mask.sum() == 16
    assert net.fc2.mask.sum(0).tolist() == [4.0] * 8 and net.fc3.mask.sum(0).tolist() == [1.0] * 8
    counter = SynOpsCounter(net.masked_layers(), analog_input=True)
    inputs = CurrentEncoder(3)(torch.rand(5, 4))  # T = 3, B = 5, the same current at every step
    spikes1 = torch.zeros(3, 5, 8)
    spikes1[0, :, 0] = 1  # 5 spikes x fan-out 4
    spikes1[1:, 0, 5] = 1  # 2 spikes x fan-out 4
    spikes2 = torch.zeros(3, 5, 8)
    spikes2[2, :2, 7] = 1  # 2 spikes x fan-out 1
    counter.add((inputs, spikes1, spikes2))
    assert counter.metrics() == pytest.approx({
        "macs_fc1": 16.0,  # fc1's current, once
        "synops_fc1_injection": 3 * 8.0,  # added to the 8 hidden neurons at each of 3 steps
        "synops_fc2": (5 * 4 + 2 * 4) / 5,  # 5.6 per example
        "synops_fc3": 2 * 1 / 5,  # 0.4
        "synops_total": 24 + 5.6 + 0.4,  # 30 ACs
        "macs_total": 16.0,
        "lif_updates": 3 * (8 + 8 + 2.0),  # 54
        "ann_macs": 4 * 8 + 8 * 8 + 8 * 2.0,  # 112: one pass, fully connected
        "energy_nj": (30 * 0.9 + (16 + 54) * 4.6) / 1000,  # 0.349
        "energy_ann_nj": 112 * 4.6 / 1000,  # 0.5152
    }, rel=1e-12)


def test_synops_spike_input_counts_spikes_times_fanout_over_all_batches():
    from g2g.training.synops import SynOpsCounter

    net = SpikingNetwork(4, 8, 2, connectivity="dense")  # fan-out: fc1 8, fc2 8, fc3 2
    counter = SynOpsCounter(net.masked_layers(), analog_input=False)
    for batch in range(2):  # T = 3, B = 2: 4 examples in all
        inputs, spikes1, spikes2 = torch.zeros(3, 2, 4), torch.zeros(3, 2, 8), torch.zeros(3, 2, 8)
        if batch == 0:
            inputs[:2, 0, 0] = 1  # 2 spikes
            inputs[2, 1, 3] = 1  # 1 spike
            spikes1[0, 0, 2] = 1  # 1 spike
        else:
            inputs[0, 0, 1] = 1  # 1 spike
            spikes2[1, :, 6] = 1  # 2 spikes
        counter.add((inputs, spikes1, spikes2))
    assert counter.metrics() == pytest.approx({
        "synops_fc1": 4 * 8 / 4,  # 8 per example
        "synops_fc2": 1 * 8 / 4,  # 2
        "synops_fc3": 2 * 2 / 4,  # 1
        "synops_total": 11.0,
        "macs_total": 0.0,
        "lif_updates": 3 * (8 + 8 + 2.0),  # 54
        "ann_macs": 112.0,
        "energy_nj": (11 * 0.9 + 54 * 4.6) / 1000,  # 0.2583
        "energy_ann_nj": 112 * 4.6 / 1000,
    }, rel=1e-12)


def test_synops_energy_constants_are_horowitz_45nm_and_names_match_tracking():
    from g2g.tracking import names
    from g2g.training import synops

    assert (synops.ENERGY_PER_AC_PJ, synops.ENERGY_PER_MAC_PJ) == (0.9, pytest.approx(0.9 + 3.7))  # add; add + mult
    assert (synops.SYNOPS_PREFIX, synops.MACS_PREFIX, synops.INJECTION_SUFFIX, synops.SYNOPS_TOTAL,
            synops.MACS_TOTAL, synops.LIF_UPDATES, synops.ANN_MACS, synops.ENERGY, synops.ENERGY_ANN) == (
        names.METRIC_SYNOPS_PREFIX, names.METRIC_MACS_PREFIX, names.METRIC_INJECTION_SUFFIX,
        names.METRIC_SYNOPS_TOTAL, names.METRIC_MACS_TOTAL, names.METRIC_LIF_UPDATES, names.METRIC_ANN_MACS,
        names.METRIC_ENERGY, names.METRIC_ENERGY_ANN)


def test_synops_refuses_an_analog_input_that_changes_over_time():
    from g2g.training.synops import SynOpsCounter

    net = SpikingNetwork(4, 8, 2, connectivity="dense")
    counter = SynOpsCounter(net.masked_layers(), analog_input=True)
    counter.add((torch.ones(3, 2, 4), torch.zeros(3, 2, 8), torch.zeros(3, 2, 8)))  # constant, not a view: fine
    with pytest.raises(ValueError, match="input of fc1 changes over time"):
        counter.add((torch.rand(3, 2, 4), torch.zeros(3, 2, 8), torch.zeros(3, 2, 8)))


@pytest.mark.parametrize("encoding", ["current", "rate"])
def test_trainer_evaluate_counts_the_model_s_own_spikes(encoding):
    from g2g.snn.encoders import CurrentEncoder, RateEncoder
    from g2g.training.trainer import Trainer

    torch.manual_seed(0)
    net = SpikingNetwork(12, 16, 3, connectivity="index", num_groups=2, p_inter=0.5, mask_seed=0)
    encoder = (CurrentEncoder if encoding == "current" else RateEncoder)(4)
    trainer = Trainer(net, torch.optim.Adam(net.parameters()), encoder, batch_size=8, progress=False)
    x = torch.rand(10, 12, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)  # the rate encoder's draws
    metrics = trainer.evaluate(x, torch.zeros(10, dtype=torch.long))
    torch.manual_seed(2)
    inputs = encoder(x)  # one evaluation batch holds all 10 examples
    with torch.no_grad():
        spikes1, spikes2, _ = net(inputs).spikes
    assert spikes1.sum() > 0 and spikes2.sum() > 0
    fanout = {name: layer.mask.sum(0) for name, layer in net.masked_layers().items()}
    assert metrics["synops_fc2"] == pytest.approx(float(spikes1.sum((0, 1)) @ fanout["fc2"]) / 10)
    assert metrics["synops_fc3"] == pytest.approx(float(spikes2.sum((0, 1)) @ fanout["fc3"]) / 10)
    assert metrics["lif_updates"] == 4 * (16 + 16 + 3)
    assert metrics["ann_macs"] == 12 * 16 + 16 * 16 + 16 * 3
    if encoding == "current":
        assert metrics["macs_fc1"] == net.fc1.num_connections() and "synops_fc1" not in metrics
        assert metrics["synops_fc1_injection"] == 4 * 16
    else:
        assert metrics["synops_fc1"] == pytest.approx(float(inputs.sum((0, 1)) @ fanout["fc1"]) / 10)
        assert metrics["macs_total"] == 0 and "macs_fc1" not in metrics
