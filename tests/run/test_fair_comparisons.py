"""Fair comparisons: independent random streams, initialisation, readout, the
parameter-matched dense baseline, the validation split and best-epoch metrics."""

import math

import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from conftest import compose_config
from g2g.build.objects import build
from g2g.build.random_streams import STREAMS, seed_everything, stream_seed
from g2g.config.validation import ConfigError, validate
from g2g.data.datasets import DataSplits
from g2g.data.folds import hold_out_validation
from g2g.models.network import SpikingNetwork, parameter_matched_dense
from g2g.run.job import run_job
from g2g.run.loop import best_epoch
from g2g.sparse.layers import MaskedLinear


def _fake_data(input_dim: int = 784, num_classes: int = 10) -> DataSplits:
    x, y = torch.zeros(4, input_dim), torch.arange(4) % num_classes
    return DataSplits(x, y, x, y, [str(c) for c in range(num_classes)])


# ------------------------------------------------------------- random streams

@pytest.mark.parametrize("model", ["index", "random", "mixer"])
@pytest.mark.parametrize("seed", [42, 43, 44])
def test_initial_weights_are_independent_of_the_mask(model, seed):
    """A between-group fc1 connection is kept by the mask draw; its initial weight must
    not depend on that draw: half of the active ones negative (26k of them: +-0.003
    standard error), and their mean near 0 against the bound 1/sqrt(784). Built as a
    run builds it: global generators seeded first."""
    cfg = compose_config([f"model={model}", "model.hidden_dim=256", "model.p_inter=0.15", f"seed={seed}"])
    seed_everything(seed)
    fc1 = build(cfg, _fake_data(), torch.device("cpu")).model.fc1
    between_group = fc1.mask.bool() & ~fc1.same_group()
    weights = fc1.weight.detach()[between_group]
    assert weights.numel() > 20_000
    assert abs(float((weights < 0).float().mean()) - 0.5) < 0.03
    assert abs(float(weights.mean())) * math.sqrt(784) < 0.03


def test_every_stream_is_its_own_and_a_pure_function_of_the_seed():
    seeds = {(seed, stream): stream_seed(seed, stream) for seed in (0, 1, 42, 43) for stream in STREAMS}
    assert len(set(seeds.values())) == len(seeds)  # no two consumers (or seeds) share a stream
    assert all(0 <= value < 2**63 for value in seeds.values())
    assert stream_seed(42, "masks") == seeds[(42, "masks")]
    with pytest.raises(ValueError, match="'noise' is unknown; allowed: masks"):
        stream_seed(42, "noise")


def test_the_build_hands_each_consumer_its_stream():
    cfg = compose_config(["model=mixer", "sparsity=dynamic", "seed=7"])
    objects = build(cfg, _fake_data(), torch.device("cpu"))
    expected_masks = SpikingNetwork(784, 16, 10, connectivity="mixer", mask_seed=stream_seed(7, "masks"),
                                    init_seed=stream_seed(7, "weight_init"))
    for name, layer in objects.model.masked_layers().items():
        assert torch.equal(layer.mask, expected_masks.masked_layers()[name].mask), name
        assert torch.equal(layer.weight, expected_masks.masked_layers()[name].weight), name
    shuffle = torch.Generator().manual_seed(stream_seed(7, "shuffle"))
    assert torch.equal(objects.trainer.shuffle_generator.get_state(), shuffle.get_state())
    dst = torch.Generator().manual_seed(stream_seed(7, "dst"))
    assert torch.equal(objects.sparsity.generator.get_state(), dst.get_state())


def test_changing_the_masks_seed_leaves_the_initial_weights_of_a_dense_layer_alone():
    a = SpikingNetwork(20, 16, 3, connectivity="index", readout="dense", mask_seed=1, init_seed=5)
    b = SpikingNetwork(20, 16, 3, connectivity="index", readout="dense", mask_seed=2, init_seed=5)
    assert not torch.equal(a.fc1.mask, b.fc1.mask)
    assert torch.equal(a.fc3.weight, b.fc3.weight)


# ------------------------------------------------------------- initialisation

def test_uniform_init_is_nn_linear_default():
    torch.manual_seed(3)
    reference = nn.Linear(30, 20)
    layer = MaskedLinear(30, 20)
    layer.initialize("uniform", torch.Generator().manual_seed(3))
    assert torch.equal(layer.weight, reference.weight)
    assert torch.allclose(layer.bias, reference.bias, atol=1e-7)


def test_fan_in_init_bounds_each_row_by_its_active_inputs():
    mask = torch.zeros(3, 100)
    mask[0, :4] = 1  # 4 active inputs: bound 1/2
    mask[1, :100] = 1  # 100: bound 1/10
    mask[2, 7] = 1  # 1: bound 1
    layer = MaskedLinear(100, 3, (mask, torch.zeros(100, dtype=torch.long), torch.zeros(3, dtype=torch.long)))
    generator = torch.Generator().manual_seed(0)
    rows = {0: [], 1: [], 2: []}
    biases = {0: [], 1: [], 2: []}
    for _ in range(300):
        layer.initialize("fan_in", generator)
        for row in rows:
            rows[row].append(layer.weight[row][mask[row].bool()].detach())
            biases[row].append(layer.bias[row].detach().clone())
        assert torch.equal(layer.weight * (1 - mask), torch.zeros_like(layer.weight))
    for row, bound in ((0, 0.5), (1, 0.1), (2, 1.0)):
        weights, bias = torch.cat(rows[row]), torch.stack(biases[row])
        assert float(weights.abs().max()) <= bound and float(weights.abs().max()) > 0.95 * bound, row
        assert float(bias.abs().max()) <= bound and float(bias.abs().max()) > 0.9 * bound, row
    layer.initialize("uniform", generator)
    assert float(layer.weight.detach().abs().max()) <= 1 / math.sqrt(100)


def test_unknown_weight_init_and_readout_are_refused_with_the_key():
    for override, message in (("model.weight_init=xavier",
                               "model.weight_init='xavier': must be one of: uniform, fan_in"),
                              ("model.readout=half", "model.readout='half': must be one of: masked, dense")):
        with pytest.raises(ConfigError, match=message):
            validate(compose_config(["model=index", override]))


# ------------------------------------------------------------- readout

def test_dense_readout_keeps_the_last_layer_fully_connected_and_dst_rewires_the_others():
    net = SpikingNetwork(40, 16, 3, connectivity="index", p_inter=0.0, readout="dense", mask_seed=1)
    assert net.fc3.mask is None and net.fc3.num_connections() == 48
    masked = SpikingNetwork(40, 16, 3, connectivity="index", p_inter=0.0, mask_seed=1)
    # at p_inter 0 a masked readout lets each class hear one group only (2 of 16 neurons)
    assert masked.fc3.num_connections() < 48
    cfg = compose_config(["model=index", "model.readout=dense", "sparsity=dynamic", "sparsity.prune=hebb",
                          "sparsity.update_interval=1"])
    objects = build(cfg, _fake_data(40, 3), torch.device("cpu"))
    inputs = torch.rand(4, 2, 40)
    objects.sparsity(1, objects.model(inputs), inputs)
    assert set(objects.sparsity.layers) == {"fc1", "fc2"}
    assert {record.layer for record in objects.sparsity.records} == {"fc1", "fc2"}


# ------------------------------------------------------------- parameter-matched dense

@pytest.mark.parametrize("p_inter", [0.0, 0.05, 0.15, 0.25])
@pytest.mark.parametrize("readout", ["masked", "dense"])
def test_dense_matched_has_the_g2g_parameter_count_within_one_percent(p_inter, readout):
    matched = parameter_matched_dense(784, 512, 10, p_inter=p_inter, readout=readout, mask_seed=3)
    assert matched.connectivity == "dense"
    count = matched.parameter_counts()["parameters_total"]
    for model in ("index", "random", "mixer"):
        sparse = SpikingNetwork(784, 512, 10, connectivity=model, p_inter=p_inter, readout=readout, mask_seed=3)
        target = sparse.parameter_counts()["parameters_total"]
        assert abs(count - target) <= 0.01 * target, (model, count, target)


def test_dense_matched_width_at_hidden_512_p015():
    # 784 w + w^2 + 10 w + 2 w + 10 + 6 = 172,237 (index masks of seed 0): w = 177.4
    assert parameter_matched_dense(784, 512, 10, p_inter=0.15).parameter_counts()["hidden_dim"] == 177


def test_dense_matched_run_logs_its_width_and_refuses_dst(tmp_path, tiny_data_root):
    cfg = compose_config(["model=dense_matched", "model.hidden_dim=256", "train.epochs=1"], tmp_path,
                         data_root=tiny_data_root)
    summary = run_job(cfg)
    client = MlflowClient(summary["tracking_uri"])
    width = client.get_run(summary["run_id"]).data.metrics["hidden_dim"]
    assert 40 <= width < 256
    with pytest.raises(ConfigError, match="sparsity=dynamic with model='dense_matched'"):
        validate(compose_config(["model=dense_matched", "sparsity=dynamic"]))


# ------------------------------------------------------------- validation split, best epoch

def test_validation_split_is_stratified_seeded_and_disjoint():
    y = torch.arange(1000) % 10
    x = torch.arange(1000, dtype=torch.float32)[:, None]
    data = DataSplits(x, y, x[:5], y[:5], [str(c) for c in range(10)])
    split = hold_out_validation(data, 0.1, seed=11)
    assert len(split.val_y) == 100 and len(split.train_y) == 900
    assert torch.bincount(split.val_y).tolist() == [10] * 10
    assert set(split.val_x.flatten().tolist()).isdisjoint(split.train_x.flatten().tolist())
    assert torch.equal(split.test_x, data.test_x)
    assert torch.equal(hold_out_validation(data, 0.1, seed=11).val_x, split.val_x)
    assert not torch.equal(hold_out_validation(data, 0.1, seed=12).val_x, split.val_x)
    assert hold_out_validation(data, 0.0, seed=11) is data
    with pytest.raises(ConfigError, match=r"protocol.validation_fraction=1.0: must be a fraction in \[0, 1\)"):
        validate(compose_config(["protocol.validation_fraction=1.0"]))


@pytest.mark.integration
def test_holdout_with_validation_split_logs_val_test_and_best_epoch(tmp_path, tiny_data_root):
    cfg = compose_config(["model=index", "protocol.validation_fraction=0.25", "train.epochs=3"], tmp_path,
                         data_root=tiny_data_root)
    summary = run_job(cfg)
    client = MlflowClient(summary["tracking_uri"])
    history = {name: [m.value for m in client.get_metric_history(summary["run_id"], name)]
               for name in ("val_accuracy", "test_accuracy", "best_val_accuracy", "best_test_accuracy",
                            "best_test_epoch")}
    assert len(history["val_accuracy"]) == 3 and len(history["test_accuracy"]) == 3
    assert history["best_val_accuracy"] == [max(history["val_accuracy"][: i + 1]) for i in range(3)]
    assert history["best_test_accuracy"][-1] == max(history["test_accuracy"])
    best = history["test_accuracy"].index(max(history["test_accuracy"])) + 1
    assert history["best_test_epoch"][-1] == best
    assert summary["val_accuracy"] == history["val_accuracy"][-1]


def test_best_epoch_takes_the_earliest_of_ties():
    history = [{"epoch": 1, "test_accuracy": 0.5}, {"epoch": 2, "test_accuracy": 0.7}]
    assert best_epoch(history, {"epoch": 3, "test_accuracy": 0.7}, "test") == {
        "best_test_accuracy": 0.7, "best_test_epoch": 2}
    assert best_epoch(history, {"epoch": 3, "test_accuracy": 0.8}, "test")["best_test_epoch"] == 3
