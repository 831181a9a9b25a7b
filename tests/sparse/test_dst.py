"""Dynamic sparse training: the invariants of every prune x grow rule on every
sparse model, the rules on hand-made cases, and exact resume."""

import copy
import re

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import compose_config
from g2g.build.objects import build, load_data
from g2g.config.validation import ConfigError
from g2g.lifecycle import checkpoint as ckpt
from g2g.models.network import SpikingNetwork
from g2g.run.job import run_job
from g2g.snn.encoders import CurrentEncoder, RateEncoder
from g2g.sparse.dst import DynamicSparsity, HebbianTrace, float64_device, prune_count

PAIRS = [(prune, grow) for prune in ("set", "random", "hebb") for grow in ("hebb", "random")]


def _trained_steps(model_name, prune, grow, steps=12, interval=3, seed=0):
    """Train a small network with DST; check the invariants after every step."""
    torch.manual_seed(seed)
    net = SpikingNetwork(40, 32, 10, connectivity=model_name, p_inter=0.2, mask_seed=seed)
    with torch.no_grad():
        for layer in net.masked_layers().values():
            layer.weight.mul_(3.0)  # make every layer fire so Hebbian scores are informative
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    dst = DynamicSparsity(net, optimizer, prune=prune, grow=grow, update_interval=interval,
                          prune_fraction=0.2, seed=seed)
    encoder = RateEncoder(6)
    initial_counts = {name: int(layer.mask.sum()) for name, layer in net.masked_layers().items()}
    initial_masks = {name: layer.mask.clone() for name, layer in net.masked_layers().items()}
    for step in range(1, steps + 1):
        inputs = encoder(torch.rand(8, 40))
        output = net(inputs)
        loss = torch.nn.functional.cross_entropy(output.counts, torch.randint(0, 10, (8,)))
        optimizer.zero_grad()
        loss.backward()
        dst.adam_restart.step()
        before = {name: layer.mask.clone() for name, layer in net.masked_layers().items()}
        dst.adam_restart.restart(dst(step, output, inputs))
        for name, layer in net.masked_layers().items():
            assert int(layer.mask.sum()) == initial_counts[name], "active count changed"
            assert torch.all(layer.weight[layer.mask == 0] == 0), "a masked weight is not zero"
            grown = (layer.mask == 1) & (before[name] == 0)
            pruned = (layer.mask == 0) & (before[name] == 1)
            if step % interval == 0:
                assert grown.sum() == pruned.sum() == initial_counts[name] * 2 // 10
                changed = grown | pruned
                state = optimizer.state[layer.weight]
                assert torch.all(state["exp_avg"][changed] == 0)
                assert torch.all(state["exp_avg_sq"][changed] == 0)
            else:
                assert not grown.any() and not pruned.any(), "mask changed between updates"
    return net, dst, initial_masks


@pytest.mark.parametrize("model_name", ["index", "random", "mixer"])
@pytest.mark.parametrize("prune, grow", PAIRS)
def test_dst_keeps_every_invariant(model_name, prune, grow):
    net, dst, initial = _trained_steps(model_name, prune, grow)
    assert dst.update_count == 4
    for name, layer in net.masked_layers().items():
        assert not torch.equal(layer.mask, initial[name]), f"{name} mask never changed"
    assert {r.layer for r in dst.records} == {"fc1", "fc2", "fc3"}


def test_no_update_at_step_zero_and_only_on_the_interval():
    net = SpikingNetwork(10, 16, 4, connectivity="index", mask_seed=0)
    dst = DynamicSparsity(net, torch.optim.Adam(net.parameters()), prune="random", grow="random",
                          update_interval=5)
    output = net(CurrentEncoder(3)(torch.rand(2, 10)))
    for step in (0, 1, 4, 6):
        dst(step, output, None)
    assert dst.update_count == 0
    dst(10, output, None)
    assert dst.update_count == 1


def test_set_prunes_exactly_k_with_tied_magnitudes():
    net = SpikingNetwork(16, 16, 16, connectivity="index", p_inter=0.5, mask_seed=1)
    optimizer = torch.optim.Adam(net.parameters())
    with torch.no_grad():
        for layer in net.masked_layers().values():
            layer.weight.copy_(layer.mask * 0.5)  # every active weight has the same |w|
    dst = DynamicSparsity(net, optimizer, prune="set", grow="random", prune_fraction=0.3)
    before = {n: layer.mask.clone() for n, layer in net.masked_layers().items()}
    dst.update(1)
    for record, (name, layer) in zip(dst.records, net.masked_layers().items()):
        k = int(before[name].sum()) * 3 // 10
        assert record.pruned == k
        assert int(((before[name] == 1) & (layer.mask == 0)).sum()) == k


def test_prune_count_is_the_floor_of_the_exact_product_for_every_fraction():
    # every decimal fraction with up to 3 digits against integer arithmetic on its digits,
    # e.g. 0.57 of 100 is 57 (the binary float product 0.57 * 100 is 56.99...)
    counts = list(range(0, 1200)) + [10**6 + 1, 123456789]
    wrong = [(f"0.{digits:03d}", count) for digits in range(1, 1000) for count in counts[::7] + [100]
             if prune_count(float(f"0.{digits:03d}"), count) != digits * count // 1000]
    assert not wrong, wrong[:10]
    assert prune_count(0.57, 100) == 57 and int(0.57 * 100) == 56
    assert [prune_count(f, 100) for f in (0.29, 0.58, 0.07, 1e-2, 5.7e-1)] == [29, 58, 7, 1, 57]
    assert prune_count(0.1 + 0.2, 10**17) == 30000000000000004  # the float as written: 0.30000000000000004


def test_dst_prunes_and_grows_0_57_of_100_active_connections_as_57():
    net = SpikingNetwork(4, 16, 4, connectivity="index", p_intra=1.0, p_inter=0.0, num_groups=1, mask_seed=0)
    layer = net.fc2  # 16 x 16; 100 active connections, 156 inactive
    layer.mask.zero_().view(-1)[:100] = 1
    with torch.no_grad():
        layer.weight.mul_(layer.mask)
    dst = DynamicSparsity(net, torch.optim.Adam(net.parameters()), prune="set", grow="random",
                          prune_fraction=0.57)
    record, changed = dst.update_layer("fc2", layer, 1)
    assert record.pruned == record.grown == 57 and changed.numel() == 114
    assert int(layer.mask.sum()) == 100


def test_set_prunes_the_smallest_magnitudes():
    net = SpikingNetwork(4, 8, 8, connectivity="index", p_intra=1.0, p_inter=0.0, num_groups=1, mask_seed=0)
    layer = net.fc2  # one group, fully connected 8x8
    with torch.no_grad():
        layer.weight.copy_(torch.arange(64.0).view(8, 8) - 10.0)  # |w| smallest at values near 0
    dst = DynamicSparsity(net, torch.optim.Adam(net.parameters()), prune="set", grow="random",
                          prune_fraction=0.05)
    layer.mask.view(-1)[[60, 61, 62]] = 0  # room to grow
    with torch.no_grad():
        layer.weight.view(-1)[[60, 61, 62]] = 0
    dst.update_layer("fc2", layer, 1)
    k = 61 * 5 // 100
    pruned = ((layer.mask == 0).view(-1)).nonzero().flatten().tolist()
    smallest = sorted(set(range(64)) - {60, 61, 62}, key=lambda i: abs(i - 10.0))[:k]
    assert set(smallest) <= set(pruned)


def _hand_made_layer():
    """fc2 of a 1-group network: 4 inputs x 4 outputs, half of the pairs active."""
    net = SpikingNetwork(4, 4, 4, connectivity="index", p_intra=1.0, p_inter=0.0, num_groups=1, mask_seed=0)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1.0]])
    net.fc2.mask.copy_(mask)
    with torch.no_grad():
        net.fc2.weight.mul_(mask)
    return net


def test_hebbian_growth_picks_the_most_correlated_inactive_pairs():
    net = _hand_made_layer()
    dst = DynamicSparsity(net, torch.optim.Adam(net.parameters()), prune="random", grow="hebb",
                          prune_fraction=0.25)
    # input neuron 2 fires exactly when output neuron 0 fires, input 3 with output 1:
    # the inactive pairs (0, 2) and (1, 3) have cosine score 1, every other inactive pair 0.
    pre = torch.zeros(6, 4)
    post = torch.zeros(6, 4)
    pre[0:3, 2] = post[0:3, 0] = 1
    pre[3:6, 3] = post[3:6, 1] = 1
    dst.traces["fc2"].accumulate_counts(pre, post)
    before = net.fc2.mask.clone()
    dst.update_layer("fc2", net.fc2, 1)  # k = floor(0.25 * 8) = 2
    grown = ((net.fc2.mask == 1) & (before == 0)).nonzero().tolist()
    assert sorted(grown) == [[0, 2], [1, 3]]


def test_hebbian_pruning_drops_the_least_correlated_active_pairs():
    net = _hand_made_layer()
    dst = DynamicSparsity(net, torch.optim.Adam(net.parameters()), prune="hebb", grow="random",
                          prune_fraction=0.25)
    # every active pair fires together except (2, 3) and (3, 2), which are anti-correlated
    pre = torch.zeros(4, 4)
    post = torch.zeros(4, 4)
    pre[0, 0] = pre[0, 1] = post[0, 0] = post[0, 1] = 1
    pre[1, 2] = post[1, 2] = 1
    pre[2, 3] = post[2, 3] = 1
    pre[3, 2] = pre[3, 3] = post[3, 2] = post[3, 3] = 0.0
    dst.traces["fc2"].accumulate_counts(pre, post)
    score = dst.traces["fc2"].score()
    assert score[2, 3] == 0 and score[3, 2] == 0 and score[2, 2] > 0
    before = net.fc2.mask.clone()
    dst.update_layer("fc2", net.fc2, 1)
    pruned = ((net.fc2.mask == 0) & (before == 1)).nonzero().tolist()
    assert sorted(pruned) == [[2, 3], [3, 2]]


def test_hebbian_trace_is_cosine_of_spike_counts_and_accumulates_over_steps():
    trace = HebbianTrace(3, 2)
    pre_a, post_a = torch.rand(5, 4, 2).round(), torch.rand(5, 4, 3).round()
    pre_b, post_b = torch.rand(5, 4, 2).round(), torch.rand(5, 4, 3).round()
    trace.accumulate_counts(pre_a.sum(0), post_a.sum(0))
    trace.accumulate_counts(pre_b.sum(0), post_b.sum(0))
    pre = torch.cat([pre_a.sum(0), pre_b.sum(0)])  # [8, 2] counts of both batches
    post = torch.cat([post_a.sum(0), post_b.sum(0)])
    expected = torch.nn.functional.cosine_similarity(post.T[:, None, :], pre.T[None, :, :], dim=-1)
    torch.testing.assert_close(trace.score(), expected)


def test_dense_model_with_dynamic_sparsity_is_refused():
    net = SpikingNetwork(4, 8, 2, connectivity="dense")
    with pytest.raises(ValueError, match="nothing to rewire"):
        DynamicSparsity(net, torch.optim.Adam(net.parameters()))
    with pytest.raises(ConfigError, match="model='dense'.*nothing to rewire"):
        run_job(compose_config(["sparsity=dynamic"]))


@pytest.mark.parametrize("override, message", [
    ("sparsity.prune=magnitude", "sparsity.prune='magnitude': must be one of: set, random, hebb"),
    ("sparsity.grow=set", "sparsity.grow='set': must be one of: hebb, random"),
    ("sparsity.update_interval=0", "sparsity.update_interval=0: must be a positive integer"),
    ("sparsity.prune_fraction=1.0", "sparsity.prune_fraction=1.0: must be a fraction in the open interval (0, 1)"),
    ("sparsity.grow_init=ones", "sparsity.grow_init='ones': must be one of: zero, uniform"),
    ("sparsity.stop_fraction=1.5", "sparsity.stop_fraction=1.5: must be a fraction in (0, 1]"),
    ("sparsity.stop_fraction=0", "sparsity.stop_fraction=0.0: must be a fraction in (0, 1]"),
    ("sparsity.fraction_schedule=linear", "sparsity.fraction_schedule='linear': must be one of: constant, cosine"),
])
def test_bad_dst_values_are_refused(override, message):
    with pytest.raises(ConfigError) as error:
        run_job(compose_config(["model=mixer", "sparsity=dynamic", override]))
    assert message in str(error.value)


DST_RUN = ["model=mixer", "sparsity=dynamic", "sparsity.prune=hebb", "sparsity.grow=hebb",
           "sparsity.update_interval=3", "encoder=rate", "train.epochs=3"]


@pytest.mark.integration
@pytest.mark.parametrize("score", ["cosine", "correlation"])
def test_dynamic_run_logs_rewiring_and_resumes_exactly(tmp_path, tiny_data_root, monkeypatch, score):
    run = [*DST_RUN, f"sparsity.hebbian_score={score}"]
    straight = run_job(compose_config(run, tmp_path / "straight", data_root=tiny_data_root))
    cfg = compose_config(run, tmp_path / "resumed", data_root=tiny_data_root)
    real_save = ckpt.save_checkpoint

    def save_then_interrupt(state, path):
        real_save(state, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(ckpt, "save_checkpoint", save_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_job(cfg)
    resumed = run_job(cfg)

    final_straight = torch.load(straight["checkpoint"], weights_only=True)
    final_resumed = torch.load(resumed["checkpoint"], weights_only=True)
    for key, value in final_straight["model"].items():
        assert torch.equal(value, final_resumed["model"][key]), key
    assert final_straight["sparsity"]["update_count"] == final_resumed["sparsity"]["update_count"] > 0
    for layer, trace in final_straight["sparsity"]["traces"].items():
        assert sorted(trace) == sorted(final_resumed["sparsity"]["traces"][layer])
        assert ("pre_sum" in trace) is (score == "correlation")
        for name, value in trace.items():
            resumed_value = final_resumed["sparsity"]["traces"][layer][name]
            assert torch.equal(value, resumed_value) if torch.is_tensor(value) else value == resumed_value, name
    for layer, steps in final_straight["sparsity"]["restart_steps"].items():
        assert torch.equal(steps, final_resumed["sparsity"]["restart_steps"][layer]), layer
        assert set(steps.unique().tolist()) == {0, 3, 6, 9, 12}, "every update restarted entries"

    client = MlflowClient(f"sqlite:///{tmp_path / 'resumed' / 'mlflow.db'}")
    history = client.get_metric_history(resumed["run_id"], "dst_fc2_grown")
    # 64 examples / batch 16 = 4 steps per epoch, 12 steps, an update every 3 steps
    assert [m.step for m in history] == [3, 6, 9, 12]
    for name in ("dst_fc1_pruned", "dst_fc3_grown_inter_fraction", "dst_fc2_density_intra",
                 "dst_fc2_density_inter", "dst_fc1_density"):
        assert len(client.get_metric_history(resumed["run_id"], name)) == 4, name
    plots = {a.path for a in client.list_artifacts(resumed["run_id"], "plots")}
    assert plots == {"plots/learning_curves.png", "plots/mask_structure.png", "plots/dst_history.png"}


# ------------------------------------------------------------ stop step and prune-fraction schedule

def _schedule_dst(**options):
    """fc2 of a 1-group network fully connected on its first 128 of 256 entries (16 x 16):
    room to grow at any fraction, so every update prunes exactly floor(f * 128)."""
    net = SpikingNetwork(4, 16, 4, connectivity="index", p_intra=1.0, p_inter=0.0, num_groups=1, mask_seed=0)
    for layer in net.masked_layers().values():
        layer.mask.zero_().view(-1)[: layer.mask.numel() // 2] = 1
        with torch.no_grad():
            layer.weight.mul_(layer.mask)
    return net, DynamicSparsity(net, torch.optim.Adam(net.parameters()), prune="random", grow="random", **options)


def test_cosine_schedule_decays_the_fraction_to_the_stop_step_and_stops_there():
    net, dst = _schedule_dst(update_interval=100, prune_fraction=0.1, stop_fraction=0.75,
                             fraction_schedule="cosine", total_steps=1000)
    for step in range(1, 1001):
        dst(step, None, None)
    fc2 = [record for record in dst.records if record.layer == "fc2"]
    # T_end = 0.75 * 1000 = 750: updates at 100, ..., 700; none at 800, 900, 1000.
    # f(t) = 0.1 / 2 * (1 + cos(pi t / 750)), by hand: cos(24 deg) = 0.9135455, cos(48) = 0.6691306,
    # cos(72) = 0.3090170, cos(96) = -0.1045285, cos(120) = -0.5, cos(144) = -0.8090170, cos(168) = -0.9781476
    expected = [0.09567727, 0.08345653, 0.06545085, 0.04477358, 0.025, 0.00954915, 0.00109262]
    assert [record.step for record in fc2] == [100, 200, 300, 400, 500, 600, 700]
    assert [record.prune_fraction for record in fc2] == pytest.approx(expected, abs=1e-8)
    # fc2 has 128 active connections: floor(f * 128)
    assert [record.pruned for record in fc2] == [12, 10, 8, 5, 3, 1, 0]
    assert fc2[0].metrics()["dst_fc2_prune_fraction"] == fc2[0].prune_fraction
    assert dst.fraction_at(750) == 0.0 and dst.fraction_at(900) == 0.0 and dst.fraction_at(0) == 0.1
    assert dst.updates_at(700) and not dst.updates_at(800) and not dst.updates_at(0)


def test_no_update_and_no_hebbian_accumulation_after_the_stop_step():
    net = SpikingNetwork(10, 16, 4, connectivity="index", mask_seed=0)
    dst = DynamicSparsity(net, torch.optim.Adam(net.parameters()), prune="hebb", grow="hebb",
                          update_interval=5, stop_fraction=0.5, total_steps=23)  # T_end = 11.5
    inputs = CurrentEncoder(3)(torch.rand(2, 10))
    output = net(inputs)
    for step in range(1, 24):
        dst(step, output, inputs)
        if step == 11:
            accumulated = {name: trace.correlation.clone() for name, trace in dst.traces.items()}
    assert [record.step for record in dst.records if record.layer == "fc1"] == [5, 10]
    assert all(record.prune_fraction == 0.1 for record in dst.records)
    for name, trace in dst.traces.items():  # steps 12-23 added nothing
        assert torch.equal(trace.correlation, accumulated[name])


def test_constant_schedule_with_stop_fraction_one_is_the_schedule_of_before():
    """Defaults: an update at every multiple of update_interval through the last step,
    each replacing floor(prune_fraction * active), as without a total step count."""
    with_total, with_total_dst = _schedule_dst(update_interval=3, prune_fraction=0.2, total_steps=12, seed=4)
    without, without_dst = _schedule_dst(update_interval=3, prune_fraction=0.2, seed=4)
    assert (with_total_dst.stop_fraction, with_total_dst.fraction_schedule) == (1.0, "constant")
    for step in range(1, 13):
        with_total_dst(step, None, None)
        without_dst(step, None, None)
    assert [r.step for r in with_total_dst.records if r.layer == "fc2"] == [3, 6, 9, 12]
    assert [r.pruned for r in with_total_dst.records if r.layer == "fc2"] == [25] * 4  # floor(0.2 * 128)
    assert [vars(r) for r in with_total_dst.records] == [vars(r) for r in without_dst.records]
    for key, value in with_total.state_dict().items():
        assert torch.equal(value, without.state_dict()[key]), key


@pytest.mark.parametrize("options, message", [
    ({"stop_fraction": 0.5}, "needs the run's total optimizer steps"),
    ({"fraction_schedule": "cosine"}, "needs the run's total optimizer steps"),
    ({"fraction_schedule": "linear", "total_steps": 10}, "sparsity.fraction_schedule='linear' is unknown"),
    ({"stop_fraction": 0.0, "total_steps": 10}, "sparsity.stop_fraction=0.0: must be a fraction in (0, 1]"),
])
def test_bad_schedules_are_refused(options, message):
    net = SpikingNetwork(4, 8, 2, connectivity="index", mask_seed=0)
    with pytest.raises(ValueError, match=re.escape(message)):
        DynamicSparsity(net, torch.optim.Adam(net.parameters()), **options)


def test_a_run_stops_its_updates_at_the_stop_step_with_the_cosine_fraction(tmp_path, tiny_data_root, caplog):
    cfg = compose_config([*DST_RUN, "sparsity.stop_fraction=0.5", "sparsity.fraction_schedule=cosine"],
                         tmp_path, data_root=tiny_data_root)
    with caplog.at_level("INFO", logger="g2g.run.protocols"):
        summary = run_job(cfg)
    assert ("the schedule of sparsity.stop_fraction=0.5 and sparsity.fraction_schedule=cosine spans the total "
            "epochs") in caplog.text
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    history = client.get_metric_history(summary["run_id"], "dst_fc2_prune_fraction")
    # 4 steps per epoch x 3 epochs = 12 steps, T_end = 6: updates at 3 and 6 only, with
    # f(3) = 0.1 / 2 * (1 + cos(pi / 2)) = 0.05 and f(6) = 0.1 / 2 * (1 + cos(pi)) = 0
    assert sorted((m.step, m.value) for m in history) == [(3, pytest.approx(0.05)), (6, 0.0)]
    grown = sorted((m.step, m.value) for m in client.get_metric_history(summary["run_id"], "dst_fc2_grown"))
    assert grown[0][1] > 0 and grown[1] == (6, 0)


@pytest.mark.parametrize("protocol, epochs", [(["train.epochs=3"], 3),
                                              (["protocol=crossval", "protocol.k_folds=2", "protocol.epochs=5"], 5)])
def test_build_gives_dst_the_runs_total_optimizer_steps(tmp_path, tiny_data_root, protocol, epochs):
    cfg = compose_config(["model=mixer", "sparsity=dynamic", "train.batch_size=24", *protocol],
                         tmp_path, data_root=tiny_data_root)
    data = load_data(cfg, torch.device("cpu"))
    assert len(data.train_y) == 64
    objects = build(cfg, data, torch.device("cpu"))
    assert objects.sparsity.total_steps == epochs * 3  # 64 examples in batches of 24: 24 + 24 + 16


# ------------------------------------------------------------ optimizer state of restarted entries

def _masked_gradients(net, generator):
    """Gradients ~ N(0, 1) on every masked layer's active entries, 0 on masked ones (what
    the loss gives W * M), set as the weights' .grad."""
    for layer in net.masked_layers().values():
        layer.weight.grad = torch.randn(layer.weight.shape, generator=generator) * layer.mask


def test_a_regrown_entry_takes_a_fresh_adam_parameters_steps_and_other_entries_plain_adams():
    torch.manual_seed(0)
    net = SpikingNetwork(6, 12, 5, connectivity="index", p_inter=0.3, num_groups=2, mask_seed=0)
    hyper = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}  # L2 decay inside m, v
    optimizer = torch.optim.Adam(net.parameters(), **hyper)
    dst = DynamicSparsity(net, optimizer, prune="random", grow="random", prune_fraction=0.3, grow_init="uniform")
    generator = torch.Generator().manual_seed(1)
    trained = 3000  # Adam's step count of every tensor when fc2 is rewired
    for _ in range(trained):
        _masked_gradients(net, generator)
        dst.adam_restart.step()
    assert dst.adam_restart.restarted_entries() == 0  # nothing restarted yet: torch's update alone
    _, changed = dst.update_layer("fc2", net.fc2, trained)
    dst.adam_restart.restart({"fc2": changed})
    restarted = (dst.restart_steps["fc2"] > 0) & (net.fc2.mask == 1)
    assert int(restarted.sum()) > 0 and set(dst.restart_steps["fc2"].unique().tolist()) == {0, trained}
    grown = restarted.view(-1).nonzero().squeeze(1)

    # the same network and optimizer state under plain Adam (no AdamRestart.step): the zeroing only
    plain = SpikingNetwork(6, 12, 5, connectivity="index", p_inter=0.3, num_groups=2, mask_seed=0)
    plain.load_state_dict(net.state_dict())
    plain_optimizer = torch.optim.Adam(plain.parameters(), **hyper)
    plain_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # it would share the moments
    # each regrown entry as a fresh parameter, starting from its grown value
    fresh = torch.nn.Parameter(net.fc2.weight.detach().view(-1)[grown].clone())
    fresh_optimizer = torch.optim.Adam([fresh], **hyper)

    before = net.fc2.weight.detach().view(-1)[grown].clone()
    for step in range(1, 7):
        _masked_gradients(net, generator)
        for name, layer in plain.masked_layers().items():
            layer.weight.grad = net.masked_layers()[name].weight.grad.clone()
        fresh.grad = net.fc2.weight.grad.view(-1)[grown].clone()
        for step_of in (dst.adam_restart.step, plain_optimizer.step, fresh_optimizer.step):
            step_of()
        torch.testing.assert_close(net.fc2.weight.detach().view(-1)[grown], fresh.detach(), rtol=1e-6, atol=1e-9)
        if step == 1:
            corrected = net.fc2.weight.detach().view(-1)[grown] - before
            uncorrected = plain.fc2.weight.detach().view(-1)[grown] - before
            ratio = (uncorrected.abs() / corrected.abs()).median().item()
    # without the restart the first step is corrected for t = 3001 steps instead of 1:
    # (1 - beta1) / (1 - beta1^t) / sqrt((1 - beta2) / (1 - beta2^t)) = 0.1 / sqrt(0.001 / (1 - 0.999^3001))
    assert ratio == pytest.approx(0.1 / (0.001 / (1 - 0.999 ** 3001)) ** 0.5, rel=1e-3)
    assert 3.0 < ratio < 3.2
    # never-restarted entries and layers: torch's own update, bit for bit
    for name, layer in net.masked_layers().items():
        never = dst.restart_steps[name] == 0
        assert torch.equal(layer.weight[never], plain.masked_layers()[name].weight[never]), name
        assert torch.all(layer.weight[layer.mask == 0] == 0), f"a masked {name} weight moved"
    assert torch.equal(net.fc1.weight, plain.fc1.weight) and torch.equal(net.fc3.weight, plain.fc3.weight)


def test_other_optimizers_get_their_state_zeroed_with_a_warning(caplog):
    net = SpikingNetwork(6, 12, 5, connectivity="index", p_inter=0.3, num_groups=2, mask_seed=0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with caplog.at_level("WARNING", logger="g2g.sparse.dst"):
        dst = DynamicSparsity(net, optimizer, prune="random", grow="random", prune_fraction=0.3)
    assert "SGD is not torch.optim.Adam" in caplog.text and "cannot be restarted" in caplog.text
    assert not dst.restarts_optimizer_state
    _masked_gradients(net, torch.Generator().manual_seed(0))
    dst.adam_restart.step()  # the optimizer's own step
    before = net.fc2.mask.clone()
    dst.adam_restart.restart({"fc2": dst.update_layer("fc2", net.fc2, 1)[1]})
    changed = net.fc2.mask != before
    assert torch.all(optimizer.state[net.fc2.weight]["momentum_buffer"][changed] == 0)
    amsgrad = DynamicSparsity(net, torch.optim.Adam(net.parameters(), amsgrad=True))
    assert not amsgrad.restarts_optimizer_state


def test_restart_steps_resume_and_older_states_load_as_never_restarted():
    def rewired():
        net = SpikingNetwork(6, 12, 5, connectivity="index", p_inter=0.3, num_groups=2, mask_seed=0)
        optimizer = torch.optim.Adam(net.parameters())
        return net, optimizer, DynamicSparsity(net, optimizer, prune="random", grow="random", prune_fraction=0.3)

    net, optimizer, dst = rewired()
    for step in range(1, 4):
        _masked_gradients(net, torch.Generator().manual_seed(step))
        dst.adam_restart.step()
        dst.adam_restart.restart(dst.update(step))
    state = dst.state_dict()
    assert set(state["restart_steps"]["fc1"].unique().tolist()) == {0, 1, 2, 3}
    other_net, _, other = rewired()
    other_net.load_state_dict(net.state_dict())
    other.load_state_dict(state)
    for name in dst.restart_steps:
        assert torch.equal(other.restart_steps[name], dst.restart_steps[name])
        indices, _, steps = other.adam_restart._restarted[name]
        expected_indices, _, expected_steps = dst.adam_restart._restarted[name]
        assert torch.equal(indices, expected_indices) and torch.equal(steps, expected_steps)
    older = {key: value for key, value in state.items() if key != "restart_steps"}
    older["records"] = [{key: value for key, value in record.items() if key != "prune_fraction"}
                        for record in state["records"]]
    other.load_state_dict(older)
    assert all(int(steps.count_nonzero()) == 0 for steps in other.restart_steps.values())
    assert other.adam_restart.restarted_entries() == 0
    assert all(record.prune_fraction is None and "dst_fc1_prune_fraction" not in record.metrics()
               for record in other.records)


# ------------------------------------------------------------ Hebbian score: cosine or correlation

def test_correlation_score_centres_the_counts_where_cosine_does_not():
    # 4 examples in two steps of 2. pre 0 fires 2 spikes on every example (always active), pre 1 = post 0,
    # pre 2 varies; pre 3 is an analog input constant at 0.3 (not exact in binary); post 2 never fires.
    pre = torch.tensor([[2, 1, 3, 0.3], [2, 0, 1, 0.3], [2, 1, 2, 0.3], [2, 0, 0, 0.3]])
    post = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0.0]])
    traces = {score: HebbianTrace(3, 4, score=score) for score in ("cosine", "correlation")}
    for trace in traces.values():
        trace.accumulate_counts(pre[:2], post[:2])
        trace.accumulate_counts(pre[2:], post[2:])
    # by hand. cosine: post 0 . pre 0 = 4, norms sqrt(2), 4 -> 1/sqrt(2); post 0 . pre 2 = 5, norms sqrt(2),
    # sqrt(14) -> 5/sqrt(28); post 1 . pre 2 = 1 -> 1/sqrt(28); post 0 . pre 3 = 0.6, norms sqrt(2), 0.6 -> 1/sqrt(2)
    s2, s28 = 2 ** 0.5, 28 ** 0.5
    cosine = torch.tensor([[1 / s2, 1, 5 / s28, 1 / s2], [1 / s2, 0, 1 / s28, 1 / s2], [0, 0, 0, 0]])
    # correlation: centred post 0 = (.5, -.5, .5, -.5), post 1 = -post 0, pre 2 - 1.5 = (1.5, -.5, .5, -1.5):
    # covariance sum 2, variance sums 1 and 5 -> 2/sqrt(5); pre 0, pre 3 and post 2 never vary -> 0
    r = 2 / 5 ** 0.5
    correlation = torch.tensor([[0, 1, r, 0], [0, -1, -r, 0], [0, 0, 0, 0.0]])
    torch.testing.assert_close(traces["cosine"].score(), cosine)
    torch.testing.assert_close(traces["correlation"].score(), correlation, rtol=0, atol=1e-12)
    assert traces["correlation"].score()[:, 3].eq(0).all(), "a constant analog input scores exactly 0"
    numpy_r = np.corrcoef(post[:, :2].T.double().numpy(), pre[:, 1:3].T.double().numpy())[:2, 2:]  # varying pairs
    np.testing.assert_allclose(traces["correlation"].score()[:2, 1:3].double().numpy(), numpy_r, atol=1e-7)


def test_correlation_trace_resets_and_resumes_exactly():
    generator = torch.Generator().manual_seed(3)
    batches = [(torch.randint(0, 6, (5, 7), generator=generator).float(),
                torch.randint(0, 6, (5, 4), generator=generator).float()) for _ in range(4)]
    straight, resumed = HebbianTrace(4, 7, score="correlation"), HebbianTrace(4, 7, score="correlation")
    for pre, post in batches[:2]:
        straight.accumulate_counts(pre, post)
    resumed.load_state_dict({key: value.clone() if torch.is_tensor(value) else value
                             for key, value in straight.state_dict().items()})
    for pre, post in batches[2:]:
        straight.accumulate_counts(pre, post)
        resumed.accumulate_counts(pre, post)
    assert torch.equal(straight.score(), resumed.score())
    pre, post = (torch.cat([batch[i] for batch in batches]).double().numpy() for i in (0, 1))
    expected = np.corrcoef(post.T, pre.T)[:4, 4:]
    np.testing.assert_allclose(straight.score().double().numpy(), expected, atol=1e-6)
    assert straight.correlation.dtype == torch.float64 and straight.examples == 20
    straight.reset()
    assert straight.examples == 0 and not straight.score().any()
    with pytest.raises(ValueError, match="cannot be loaded into a sparsity.hebbian_score='cosine' trace"):
        HebbianTrace(4, 7).load_state_dict(resumed.state_dict())


@pytest.mark.parametrize("score, expected", [("cosine", [[0, 2]]), ("correlation", [[0, 3]])])
def test_dst_grows_by_the_hebbian_score_asked_for(score, expected):
    net = _hand_made_layer()  # inactive pairs: outputs 0, 1 x inputs 2, 3 and outputs 2, 3 x inputs 0, 1
    dst = DynamicSparsity(net, torch.optim.Adam(net.parameters()), prune="random", grow="hebb",
                          prune_fraction=0.125, hebbian_score=score)  # k = floor(0.125 * 8) = 1
    # input 2 fires on every example, input 3 on examples 0 and 2; output 0 on 0-2, output 1 on 3
    pre = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 0.0]])
    post = torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0.0]])
    dst.traces["fc2"].accumulate_counts(pre, post)
    # cosine: (0, 2) = 3 / (sqrt(3) * 2) = 0.866 beats (0, 3) = 2 / (sqrt(3) * sqrt(2)) = 0.816;
    # correlation: (0, 2) = 0 (input 2 never varies), (0, 3) = 0.5 / sqrt(0.75) = 0.577, (1, 3) = -0.577
    before = net.fc2.mask.clone()
    dst.update_layer("fc2", net.fc2, 1)
    assert ((net.fc2.mask == 1) & (before == 0)).nonzero().tolist() == expected


def test_float64_sums_stay_on_the_device_unless_it_has_no_float64():
    assert float64_device("cpu") == torch.device("cpu")
    assert float64_device("cuda:1") == torch.device("cuda:1")
    assert float64_device("mps") == torch.device("cpu")
    assert float64_device(torch.device("privateuseone", 0)) == torch.device("cpu")
