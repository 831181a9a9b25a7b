"""End to end through g2g.run.job.run_job on tiny data in the real on-disk formats,
with a real MLflow SQLite store in a temp dir."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, TINY, compose_config
from g2g.data.datasets import DEBIAN_FASHION_MNIST_DIR
from g2g.lifecycle import checkpoint as ckpt
from g2g.run.job import run_job

PER_EPOCH_METRICS = [
    "train_loss", "train_accuracy", "test_loss", "test_accuracy",
    "firing_rate_lif1", "firing_rate_lif2", "firing_rate_lif3",
    "train_firing_rate_lif1", "density_fc1", "density_fc2", "density_fc3", "epoch_time_s", "evaluation_time_s",
    "synops_total", "macs_total", "lif_updates", "ann_macs", "energy_nj", "energy_ann_nj",
]


def _client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.parametrize("dataset, model, encoder", [
    ("fashionmnist", "mixer", "current"),
    ("fashionmnist", "dense", "rate"),
    ("cifar10", "index", "current"),
    ("cifar100", "random", "rate"),
])
@pytest.mark.integration
def test_run_logs_params_metrics_and_artifacts_to_mlflow(
    dataset, model, encoder, tmp_path, tiny_data_root, trust_tiny_cifar
):
    cfg = compose_config([f"dataset={dataset}", f"model={model}", f"encoder={encoder}"], tmp_path)
    summary = run_job(cfg)
    client = _client(tmp_path)
    logged = client.get_run(summary["run_id"])
    assert logged.info.status == "FINISHED"
    params = logged.data.params
    assert params["dataset.name"] == dataset and params["model.name"] == model
    assert params["encoder.num_steps"] == "4" and params["train.optimizer._target_"] == "torch.optim.Adam"
    for name in PER_EPOCH_METRICS:
        history = client.get_metric_history(summary["run_id"], name)
        assert [m.step for m in history] == [1, 2], name
    artifacts = {a.path for a in client.list_artifacts(summary["run_id"])}
    assert {"config.yaml", "plots", "model"} <= artifacts
    plots = {a.path for a in client.list_artifacts(summary["run_id"], "plots")}
    expected_plots = {"plots/learning_curves.png"}
    if model != "dense":
        expected_plots.add("plots/mask_structure.png")  # group-by-group density of each mask
    assert plots == expected_plots
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location.startswith("file:///")

    state = torch.load(summary["checkpoint"], weights_only=True)
    densities = {name: logged.data.metrics[f"density_{name}"] for name in ("fc1", "fc2", "fc3")}
    for name, density in densities.items():
        mask = state["model"].get(f"{name}.mask")
        assert density == pytest.approx(1.0 if mask is None else mask.mean().item())
    if model != "dense":
        assert all(d < 0.5 for d in densities.values())
    assert json.loads((Path(summary["checkpoint"]).parent / "record.json").read_text())["status"] == "FINISHED"
    assert 0.0 <= summary["test_accuracy"] <= 1.0


def test_finished_experiment_is_skipped_with_where_its_results_are(tmp_path, tiny_data_root, caplog):
    cfg = compose_config(["model=index", "train.epochs=1"], tmp_path)
    first = run_job(cfg)
    caplog.set_level("INFO", logger="g2g")
    again = run_job(cfg)
    assert again["skipped"] and again["run_id"] == first["run_id"]
    assert first["run_id"] in caplog.text and "python -m g2g.run forget " in caplog.text
    assert len(_client(tmp_path).search_runs([_client(tmp_path).get_experiment_by_name("g2g").experiment_id])) == 1


def _interrupt_after_first_checkpoint(monkeypatch):
    real_save = ckpt.save_checkpoint

    def save_then_interrupt(state, path):
        real_save(state, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_interrupt)


@pytest.mark.integration
@pytest.mark.parametrize("model, encoder", [("mixer", "rate"), ("dense", "current")])
def test_resume_after_interrupt_equals_uninterrupted_run(model, encoder, tmp_path, tiny_data_root, monkeypatch):
    overrides = [f"model={model}", f"encoder={encoder}", "train.epochs=3"]
    straight = run_job(compose_config(overrides, tmp_path / "straight", data_root=tiny_data_root))

    cfg = compose_config(overrides, tmp_path / "resumed", data_root=tiny_data_root)
    with monkeypatch.context() as patch:
        _interrupt_after_first_checkpoint(patch)
        with pytest.raises(KeyboardInterrupt):
            run_job(cfg)
    client = _client(tmp_path / "resumed")
    experiment_id = client.get_experiment_by_name("g2g").experiment_id
    (interrupted,) = client.search_runs([experiment_id])
    assert interrupted.info.status == "KILLED"
    assert torch.load(ckpt.run_record(cfg, cfg.checkpoint.dir).checkpoint, weights_only=True)["epoch"] == 1

    resumed = run_job(cfg)
    assert resumed["run_id"] == interrupted.info.run_id, "resume logs into the same MLflow run"
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(resumed["run_id"], "test_accuracy")] == [1, 2, 3]

    weights_straight = torch.load(straight["checkpoint"], weights_only=True)
    weights_resumed = torch.load(resumed["checkpoint"], weights_only=True)
    for key, value in weights_straight["model"].items():
        assert torch.equal(value, weights_resumed["model"][key]), key
    drop_time = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_time_s")} for r in rows]  # noqa: E731
    assert drop_time(weights_straight["history"]) == drop_time(weights_resumed["history"])


def test_corrupt_checkpoint_stops_the_run_and_stays_on_disk(tmp_path, tiny_data_root, monkeypatch):
    cfg = compose_config(["model=index", "train.epochs=2"], tmp_path)
    with monkeypatch.context() as patch:
        _interrupt_after_first_checkpoint(patch)
        with pytest.raises(KeyboardInterrupt):
            run_job(cfg)
    path = ckpt.run_record(cfg, cfg.checkpoint.dir).checkpoint
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="delete it to start"):
        run_job(cfg)
    assert path.stat().st_size == 100


def test_checkpoint_name_follows_seed_convention_plus_hash(tmp_path):
    sparse = compose_config(["model=mixer", "model.p_inter=0.15", "encoder.num_steps=50"], tmp_path)
    name = ckpt.run_record(sparse, "checkpoints").folder.name
    assert name.startswith("fashionmnist_mixer_p0_15_T50_current_") and len(name.rsplit("_", 1)[1]) == 8
    dense = compose_config(["dataset=cifar10", "encoder=rate"], tmp_path)
    assert ckpt.run_label(dense) == "cifar10_dense_T4_rate"
    moved = compose_config(["model=mixer", "model.p_inter=0.15", "encoder.num_steps=50",
                            "tracking.experiment=other", "hardware.num_threads=1"], tmp_path)
    assert ckpt.config_hash(moved) == ckpt.config_hash(sparse), "where results go is not part of the hash"
    other = compose_config(["model=mixer", "model.p_inter=0.15", "encoder.num_steps=50", "train.lr=0.01"], tmp_path)
    assert ckpt.config_hash(other) != ckpt.config_hash(sparse)


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "x.pth"
    ckpt.save_checkpoint({"config_hash": "h", "value": torch.ones(3)}, path)

    def broken_save(state, file):
        file.write(b"partial bytes")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint({"config_hash": "h", "value": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(path, "h")["value"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pth"]


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="real Fashion-MNIST (Debian package dataset-fashion-mnist) not installed")
def test_smoke_run_on_a_slice_of_real_fashion_mnist(tmp_path):
    cfg = compose_config(["model=mixer", "model.hidden_dim=64", "encoder.num_steps=8",
                          "dataset.train_subset=3000", "dataset.test_subset=500", "dataset.download=true",
                          "train.batch_size=64", "train.lr=0.002", "train.epochs=2"], tmp_path)
    summary = run_job(cfg)
    assert summary["test_accuracy"] > 0.6, summary


def test_mlflow_runs_module_imports_neither_torch_nor_hydra_nor_matplotlib():
    code = "import sys, g2g.tracking.runs; print(sorted({'torch', 'hydra', 'matplotlib'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def _deleted_experiment(tmp_path: Path) -> str:
    """The store ``tmp_path/mlflow.db`` whose experiment ``g2g`` (with a sweep) was deleted."""
    client = _client(tmp_path)
    experiment_id = client.create_experiment("g2g")
    client.create_run(experiment_id, tags={"g2g.sweep": "true"})
    client.delete_experiment(experiment_id)
    return experiment_id


@pytest.mark.parametrize("command", [
    ["run.py", "model=index", "seed=7"],
    ["run.py", "-m", "model=index", "seed=7,8", "hydra.launcher.n_jobs=1"],
    ["-m", "g2g.report", "g2g"],
    ["-m", "g2g.report", "g2g", "--page", "results.md"],
])
@pytest.mark.integration
def test_deleted_experiment_is_a_user_error_naming_it_and_both_remedies(command, tmp_path, tiny_data_root):
    experiment_id = _deleted_experiment(tmp_path)
    if command[0] == "run.py":
        command = [str(REPO_ROOT / "run.py"), *command[1:], f"dataset.root={tiny_data_root}", *TINY]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), environment.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, *command], cwd=tmp_path, env=environment, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "'g2g'" in result.stderr and "was deleted" in result.stderr
    assert f"mlflow experiments restore --experiment-id {experiment_id}" in result.stderr
    assert f"MLFLOW_TRACKING_URI=sqlite:///{tmp_path / 'mlflow.db'}" in result.stderr
    assert "tracking.experiment=" in result.stderr or "python -m g2g.report OTHER_NAME" in result.stderr
    assert not (tmp_path / "checkpoints").exists(), "nothing trained"


def test_a_finished_run_in_a_deleted_experiment_is_refused_not_skipped(tmp_path, tiny_data_root):
    from g2g.tracking.store import ExperimentDeletedError

    cfg = compose_config(["train.epochs=1"], tmp_path, data_root=tiny_data_root)
    summary = run_job(cfg)
    client = _client(tmp_path)
    client.delete_experiment(client.get_run(summary["run_id"]).info.experiment_id)
    with pytest.raises(ExperimentDeletedError, match="restore"):
        run_job(cfg)


def test_a_finished_job_whose_run_was_deleted_is_linked_to_a_new_sweep_from_its_run_record(tmp_path):
    from g2g.tracking.names import TAG_PARENT_RUN_ID, TAG_REUSED_RUN_ID
    from g2g.tracking.runs import log_reused_run, sweep_children
    from g2g.tracking.store import setup_experiment

    experiment_id = setup_experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "g2g")
    client = _client(tmp_path)
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    log_reused_run(experiment_id, {"run_id": "0123abcd", "epoch": 3, "test_accuracy": 0.5, "checkpoint": "x.pth"},
                   parent, ["model=index"])
    (child,) = sweep_children(client, parent)
    assert child.info.status == "FINISHED" and child.data.metrics == {"test_accuracy": 0.5}
    assert child.data.tags[TAG_REUSED_RUN_ID] == "0123abcd" and child.data.tags[TAG_PARENT_RUN_ID] == parent


def test_a_linked_run_that_cannot_be_filled_ends_failed_not_running(tmp_path, monkeypatch):
    from g2g.tracking import runs
    from g2g.tracking.store import setup_experiment

    experiment_id = setup_experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "g2g")

    def store_fails(*args, **kwargs):
        raise OSError("the store went away")

    monkeypatch.setattr(runs, "log_batch_chunked", store_fails)
    with pytest.raises(OSError, match="went away"):
        runs.log_reused_run(experiment_id, {"run_id": "0123abcd", "epoch": 1, "test_accuracy": 0.5}, None, [])
    (linked,) = _client(tmp_path).search_runs([experiment_id])
    assert linked.info.status == "FAILED"
