"""k-fold cross-validation, the firing-rate regulariser and frozen ResNet-32
features, each end to end on tiny data in the real formats."""

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, compose_config, write_fashion_mnist
from g2g.data import features
from g2g.data.folds import stratified_folds
from g2g.lifecycle import checkpoint as ckpt
from g2g.run.job import run_job
from g2g.training.regularizer import FiringRateRegularizer


def _client(tmp_path):
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _runs(tmp_path):
    client = _client(tmp_path)
    return client.search_runs([client.get_experiment_by_name("g2g").experiment_id])


# ---------------------------------------------------------------- regulariser

def test_regularizer_schedule_values():
    # E = 5, W = 2: progress (e - W) / (E - W) = 1/3, 2/3, 1 in epochs 3, 4, 5
    schedule = FiringRateRegularizer(warmup_epochs=2, lambda_start=0.1, lambda_end=0.4,
                                     target_start=0.4, target_end=0.1).schedule
    assert [schedule(epoch, 5) for epoch in range(1, 6)] == [
        (0.0, 0.4), (0.0, 0.4), pytest.approx((0.2, 0.3)), pytest.approx((0.3, 0.2)), pytest.approx((0.4, 0.1))]
    assert schedule(3, 3) == pytest.approx((0.4, 0.1))  # a single epoch after warm-up: the end values
    with pytest.raises(ValueError, match="epoch=6 is outside 1..5"):
        schedule(6, 5)
    # the defaults at E = 20, W = 10, as in the public code (docs/fidelity.md)
    defaults = FiringRateRegularizer(warmup_epochs=10, lambda_start=1e-4, lambda_end=1e-2,
                                     target_start=0.25, target_end=0.09).schedule
    assert defaults(10, 20) == (0.0, 0.25)
    assert defaults(11, 20) == pytest.approx((1.09e-3, 0.234))
    assert defaults(12, 20) == pytest.approx((2.08e-3, 0.218))
    assert defaults(20, 20) == pytest.approx((1e-2, 0.09))


def test_regularizer_warns_only_when_the_warm_up_covers_every_epoch(caplog):
    caplog.set_level("WARNING", logger="g2g")
    regularizer = FiringRateRegularizer(warmup_epochs=3)
    regularizer.warn_if_never_active(4)  # epoch 4 is active (with the end values)
    assert not caplog.records
    regularizer.warn_if_never_active(3)
    assert "never acts" in caplog.text


def test_regularizer_loss_term_is_lambda_times_squared_rate_error():
    regularizer = FiringRateRegularizer(warmup_epochs=0, lambda_start=0.5, lambda_end=0.5,
                                        target_start=0.25, target_end=0.25)
    regularizer.start_epoch(1, 1)
    spikes = torch.zeros(4, 2, 3)
    spikes[:, :, 0] = 1  # neuron 0 always fires, the others never
    expected = 0.5 * ((1 - 0.25) ** 2 + 2 * 0.25 ** 2)
    assert regularizer((spikes, spikes)).item() == pytest.approx(2 * expected)


@pytest.mark.integration
def test_regularizer_lowers_the_firing_rate_and_logs_its_schedule(tmp_path, tiny_data_root):
    common = ["model=index", "model.hidden_dim=32", "train.epochs=3", "train.lr=0.005"]
    plain = run_job(compose_config(common, tmp_path / "plain", data_root=tiny_data_root))
    regularized = run_job(compose_config(common + [
        "regularizer=firing_rate", "regularizer.warmup_epochs=0", "regularizer.lambda_start=0.05",
        "regularizer.lambda_end=0.05", "regularizer.target_start=0.0", "regularizer.target_end=0.0",
    ], tmp_path / "regularized", data_root=tiny_data_root))
    rate = lambda s: (s["train_firing_rate_lif1"] + s["train_firing_rate_lif2"]) / 2  # noqa: E731
    assert rate(regularized) < rate(plain)
    client = _client(tmp_path / "regularized")
    for name in ("regularizer_lambda", "regularizer_target", "train_regularizer_loss"):
        assert [m.step for m in client.get_metric_history(regularized["run_id"], name)] == [1, 2, 3], name


def test_run_shorter_than_the_warmup_says_so_once(tmp_path, tiny_data_root, caplog):
    caplog.set_level("WARNING", logger="g2g")
    run_job(compose_config(["regularizer=firing_rate", "train.epochs=2"], tmp_path))
    assert caplog.text.count("never acts") == 1


# ------------------------------------------------------------ cross-validation

def test_stratified_folds_partition_every_class_evenly():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    folds = stratified_folds(labels, 3, seed=0)
    assert sorted(torch.cat(folds).tolist()) == list(range(20))
    for label in range(3):
        counts = [int((labels[fold] == label).sum()) for fold in folds]
        assert max(counts) - min(counts) <= 1
    assert [f.tolist() for f in folds] == [f.tolist() for f in stratified_folds(labels, 3, seed=0)]
    assert [f.tolist() for f in folds] != [f.tolist() for f in stratified_folds(labels, 3, seed=1)]


@pytest.mark.integration
def test_crossval_logs_parent_with_summary_and_one_child_per_fold(tmp_path, tiny_data_root):
    summary = run_job(compose_config(["model=mixer", "protocol=crossval", "protocol.k_folds=3",
                                  "protocol.epochs=2"], tmp_path))
    client = _client(tmp_path)
    parent = client.get_run(summary["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["cv_val_accuracy_mean"] == pytest.approx(summary["cv_val_accuracy_mean"])
    assert "cv_val_accuracy_std" in parent.data.metrics and parent.data.params["protocol.k_folds"] == "3"
    history = client.get_metric_history(summary["run_id"], "fold_val_accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    children = [r for r in _runs(tmp_path) if r.data.tags.get("mlflow.parentRunId") == summary["run_id"]]
    assert sorted(r.info.run_name for r in children) == ["fold 1/3", "fold 2/3", "fold 3/3"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")] == [1, 2]
    values = [m.value for m in history]
    assert summary["cv_val_accuracy_mean"] == pytest.approx(sum(values) / 3)


@pytest.mark.integration
def test_crossval_resumes_with_the_first_unfinished_fold(tmp_path, tiny_data_root, monkeypatch):
    cfg = compose_config(["model=index", "protocol=crossval", "protocol.k_folds=3", "protocol.epochs=1"], tmp_path)
    real_save = ckpt.save_checkpoint
    saves = []

    def interrupt_in_fold_two(state, path):
        saves.append(path)
        if Path(path).parent.name == "fold2":
            raise KeyboardInterrupt
        real_save(state, path)

    with monkeypatch.context() as patch:
        patch.setattr(ckpt, "save_checkpoint", interrupt_in_fold_two)
        with pytest.raises(KeyboardInterrupt):
            run_job(cfg)
    record = ckpt.run_record(cfg, cfg.checkpoint.dir)
    fold_one = record.fold(1).path
    assert record.fold(1).read().status == "FINISHED" and record.fold(2).read().status == "KILLED"
    finished_at = fold_one.stat().st_mtime_ns
    summary = run_job(cfg)
    assert fold_one.stat().st_mtime_ns == finished_at, "fold 1 was not trained again"
    parents = [r for r in _runs(tmp_path) if r.data.tags.get("g2g.protocol") == "crossval"]
    assert [p.info.run_id for p in parents] == [summary["run_id"]]
    assert parents[0].info.status == "FINISHED"
    assert len(summary["fold_val_accuracy"]) == 3
    assert record.read().status == "FINISHED" and record.read().run_id == summary["run_id"]


@pytest.mark.integration
def test_crossval_inside_a_sweep(tmp_path):
    write_fashion_mnist(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), "-m", "protocol=crossval", "model=index,mixer",
         "protocol.k_folds=2", "protocol.epochs=1", "model.hidden_dim=16", "encoder.num_steps=4",
         "train.batch_size=16", "train.progress=false", "hardware=cpu", "dataset.download=false",
         f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _runs(tmp_path)
    (sweep,) = [r for r in runs if r.data.tags.get("g2g.sweep") == "true"]
    crossvals = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep.info.run_id]
    assert len(crossvals) == 2 and all("cv_val_accuracy_mean" in r.data.metrics for r in crossvals)
    for crossval in crossvals:
        folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == crossval.info.run_id]
        assert len(folds) == 2


# ----------------------------------------------------------- ResNet-32 features

@pytest.fixture
def resnet_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "resnet32_cifar10.pt"
    torch.save(features.CifarResNet32(10).state_dict(), path)
    return path


def test_resnet32_matches_the_public_checkpoint_layout():
    state = features.CifarResNet32(10).state_dict()
    assert "layer2.0.downsample.0.weight" in state and "layer3.4.bn2.running_var" in state
    assert "layer1.0.downsample.0.weight" not in state  # same shape in stage 1: no projection
    # ResNet-32 with 1x1-conv projection shortcuts (as the public checkpoints): 464,154 weights of
    # He et al.'s ResNet-32 plus 2 x (conv 1x1 + BN) = 576 + 2,176
    assert sum(p.numel() for p in features.CifarResNet32(10).parameters()) == 464154 + 576 + 2176
    assert state["fc.weight"].shape == (10, 64)


def test_extractor_gives_512_frozen_features(resnet_weights):
    extractor, _ = features.build_extractor(str(resnet_weights), "cifar10", 10)
    out = extractor(torch.rand(5, 3072))
    assert out.shape == (5, features.FEATURE_DIM) and not out.requires_grad
    assert all(not p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.network.training, "stays in eval mode (BatchNorm running statistics)"


def test_minmax_per_sample_maps_each_row_onto_0_1():
    rows = torch.tensor([[1.0, 3.0, 5.0], [2.0, 2.0, 2.0], [-4.0, 0.0, 4.0]])
    expected = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0], [0.0, 0.5, 1.0]])
    assert torch.allclose(features.minmax_per_sample(rows), expected, atol=1e-7)
    assert features.minmax_per_sample(rows.double())[0, 2] == 4 / (4 + 1e-8)  # epsilon in the denominator


def test_extractor_features_are_each_image_s_pooled_features_min_max_normalised(resnet_weights):
    extractor, _ = features.build_extractor(str(resnet_weights), "cifar10", 10)
    pixels = torch.rand(5, 3072, generator=torch.Generator().manual_seed(3))
    out = extractor(pixels)
    with torch.no_grad():
        images = (pixels.view(-1, 3, 32, 32) - extractor.mean) / extractor.std
        raw = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(extractor.network.stage2_features(images), 4), 1)
    assert raw.max() > 1, "the unnormalised features are unbounded (this test needs them above 1)"
    low, high = raw.min(1, keepdim=True).values, raw.max(1, keepdim=True).values
    assert torch.allclose(out, (raw - low) / (high - low + 1e-8))
    assert torch.equal(out.min(1).values, torch.zeros(5))
    assert torch.allclose(out.max(1).values, torch.ones(5))


def test_feature_cache_of_an_earlier_version_is_not_read(tmp_path, resnet_weights):
    extractor, weights_hash = features.build_extractor(str(resnet_weights), "cifar10", 10)
    pixels = torch.rand(4, 3072, generator=torch.Generator().manual_seed(4))
    images_hash = features._images_hash(pixels)
    stale = tmp_path / f"resnet32_{weights_hash}_{images_hash}.pt"  # version 1's name: unnormalised
    torch.save(torch.full((4, features.FEATURE_DIM), 7.0), stale)
    out = features.extract(extractor, pixels, cache_dir=tmp_path, weights_hash=weights_hash)
    assert torch.equal(out, extractor(pixels)) and out.max() <= 1
    current = tmp_path / f"resnet32_v{features.CACHE_VERSION}_{weights_hash}_{images_hash}.pt"
    assert features.CACHE_VERSION == 2 and torch.equal(torch.load(current, weights_only=True), out)
    torch.save(out + 1, current)  # a current-version file is what a later run reads
    assert torch.equal(features.extract(extractor, pixels, cache_dir=tmp_path, weights_hash=weights_hash), out + 1)


@pytest.mark.integration
def test_resnet_run_extracts_once_caches_and_leaves_the_extractor_unchanged(
    tmp_path, tiny_data_root, trust_tiny_cifar, resnet_weights, monkeypatch
):
    calls = []
    real_forward = features.ResNet32Features.forward
    states = []

    def counting_forward(self, pixels):
        calls.append(len(pixels))
        if not states:
            states.append({k: v.clone() for k, v in self.state_dict().items()})
        return real_forward(self, pixels)

    monkeypatch.setattr(features.ResNet32Features, "forward", counting_forward)
    overrides = ["dataset=cifar10", "model=mixer", "features=resnet32", f"features.weights={resnet_weights}",
                 "train.epochs=2"]
    first = run_job(compose_config(overrides, tmp_path))
    assert sum(calls) == 50 + 20, "every image once, not once per epoch"
    assert first["skipped"] is False
    client = _client(tmp_path)
    assert client.get_run(first["run_id"]).data.params["features.name"] == "resnet32"
    model = torch.load(first["checkpoint"], weights_only=True)["model"]
    assert model["fc1.weight"].shape[1] == features.FEATURE_DIM
    assert ckpt.run_label(compose_config(overrides, tmp_path)).startswith("resnet_cifar10_mixer_")
    # a second experiment on the same images and weights reads the on-disk cache
    calls.clear()
    run_job(compose_config(overrides + ["model.p_inter=0.2"], tmp_path))
    assert calls == []
    assert list((tmp_path / "data" / "features").glob("resnet32_*.pt"))


def test_hub_weights_load_through_torch_hub(tmp_path, resnet_weights, monkeypatch):
    # torch.hub's real loader finds a checkpoint already in its cache folder and never downloads
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / features.HUB_WEIGHTS["cifar10"].rsplit("/", 1)[1]).write_bytes(resnet_weights.read_bytes())
    extractor, digest = features.build_extractor("hub", "cifar10", 10)
    reference = features.CifarResNet32(10)
    reference.load_state_dict(torch.load(resnet_weights, weights_only=True))
    assert torch.equal(extractor.network.conv1.weight, reference.conv1.weight)


def test_hub_without_internet_says_how_to_train_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable (simulated)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(features.FeaturesUnavailableError, match="python -m g2g.data.features train"):
        features.load_weights("hub", "cifar100")


def test_train_command_saves_weights_the_run_can_use(tmp_path, tiny_data_root, trust_tiny_cifar):
    out = tmp_path / "trained.pt"
    assert features.main(["train", "--dataset", "cifar10", "--root", str(tiny_data_root), "--epochs", "1",
                          "--batch-size", "16", "--out", str(out), "--device", "cpu"]) == 0
    summary = run_job(compose_config(["dataset=cifar10", "features=resnet32", f"features.weights={out}",
                                  "train.epochs=1"], tmp_path))
    assert summary["test_accuracy"] >= 0


# ------------------------------------------- the original README's example commands

SEED_EXAMPLES = {
    "cifar10 mixer --use_resnet": ["dataset=cifar10", "model=mixer", "features=resnet32"],
    "cifar10 index --use_resnet --p_inter 0.20": ["dataset=cifar10", "model=index", "features=resnet32",
                                                  "model.p_inter=0.2"],
    "cifar100 mixer --use_resnet --p_inter 0.20": ["dataset=cifar100", "model=mixer", "features=resnet32",
                                                   "model.p_inter=0.2"],
    "cifar100 random --use_resnet --p_inter 0.15": ["dataset=cifar100", "model=random", "features=resnet32"],
    "cifar10 mixer --use_resnet DST hebb/hebb": ["dataset=cifar10", "model=mixer", "features=resnet32",
                                                 "sparsity=dynamic", "sparsity.prune=hebb", "sparsity.grow=hebb",
                                                 "sparsity.update_interval=2"],
    "cifar10 index --use_resnet DST set/hebb": ["dataset=cifar10", "model=index", "features=resnet32",
                                                "sparsity=dynamic", "sparsity.prune=set", "sparsity.grow=hebb",
                                                "sparsity.update_interval=2"],
    "fashionmnist mixer --enforce_sparsity --warmup_epochs 10": ["model=mixer", "regularizer=firing_rate",
                                                                 "regularizer.warmup_epochs=1"],
    "crossval.py fashionmnist mixer --k_folds 5": ["model=mixer", "protocol=crossval", "protocol.k_folds=5",
                                                   "protocol.epochs=1"],
}


@pytest.mark.integration
@pytest.mark.parametrize("example", list(SEED_EXAMPLES))
def test_seed_readme_examples_run(example, tmp_path, tiny_data_root, trust_tiny_cifar, resnet_weights, monkeypatch):
    overrides = SEED_EXAMPLES[example]
    if "features=resnet32" in overrides:
        num_classes = 100 if "dataset=cifar100" in overrides else 10
        weights = tmp_path / f"resnet32_{num_classes}.pt"
        torch.save(features.CifarResNet32(num_classes).state_dict(), weights)
        overrides = overrides + [f"features.weights={weights}"]
    summary = run_job(compose_config(overrides, tmp_path))
    assert summary["skipped"] is False
    assert all(r.info.status == "FINISHED" for r in _runs(tmp_path))


def test_jobs_sharing_a_feature_cache_compute_it_once(tmp_path, resnet_weights, monkeypatch, caplog):
    extractor, weights_hash = features.build_extractor(str(resnet_weights), "cifar10", 10)
    pixels = torch.rand(6, 3072, generator=torch.Generator().manual_seed(0))
    real_forward, calls = features.ResNet32Features.forward, []

    def slow_forward(self, batch):  # long enough for every job to find the cache missing
        calls.append(len(batch))
        time.sleep(1.0)
        return real_forward(self, batch)

    monkeypatch.setattr(features.ResNet32Features, "forward", slow_forward)
    # four threads stand for four jobs: each takes the OS lock through a file it opens itself
    start, results = threading.Barrier(4), [None] * 4

    def job(index: int) -> None:
        start.wait()
        results[index] = features.extract(extractor, pixels, cache_dir=tmp_path / "cache", weights_hash=weights_hash)

    caplog.set_level(logging.INFO, logger="g2g.files")
    threads = [threading.Thread(target=job, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert calls == [6], "one job computes the features, the others read its file"
    assert all(torch.equal(result, results[0]) for result in results)
    cache = tmp_path / "cache" / f"resnet32_v{features.CACHE_VERSION}_{weights_hash}_{features._images_hash(pixels)}.pt"
    assert torch.equal(torch.load(cache, weights_only=True), results[0])
    lock = cache.parent / f".{cache.name}.lock"
    assert sorted(cache.parent.iterdir()) == [lock, cache]  # no temporary file left
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for another job")]
    assert 1 <= len(waits) <= 3 and all(w.endswith(f"(lock file {lock})") for w in waits), waits
