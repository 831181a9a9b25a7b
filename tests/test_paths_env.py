"""Paths and environment mean what they say: every relative path in the config is
relative to the directory where the command was started (whatever Hydra's working
directory), and MLflow's environment variables are honoured as documented or ignored
with a warning, never used to log into a run g2g did not create."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import REPO_ROOT, TINY, compose_config, write_fashion_mnist
from g2g.run import checkpoint as ckpt
from g2g.run.job import run_job
from g2g.run.paths import absolute_paths

QUICK = [*TINY, "train.epochs=1", "hardware.num_threads=1", "dataset.download=false"]


def _run_py(cwd: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *QUICK, *overrides],
                          cwd=cwd, env={**environment, **(env or {})}, capture_output=True, text=True, timeout=300)


def test_hydra_chdir_run_twice_shares_store_checkpoints_and_data_of_the_launch_directory(tmp_path):
    write_fashion_mnist(tmp_path / "data")
    common = ["model=index", "dataset.root=data", "hydra.job.chdir=true"]
    first = _run_py(tmp_path, *common, "hydra.run.dir=outputs/first")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run_py(tmp_path, *common, "hydra.run.dir=outputs/second")
    assert second.returncode == 0, second.stderr[-3000:]

    assert "already finished" in second.stdout + second.stderr, "the identical second run is skipped, not trained again"
    (done,) = (tmp_path / "checkpoints").glob("*/record.json")
    assert (done.parent / "checkpoint.pth").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    assert [run.info.run_id for run in runs] == [json.loads(done.read_text())["run_id"]]
    assert runs[0].data.params["dataset.root"] == str(tmp_path / "data")
    for job_dir in (tmp_path / "outputs" / "first", tmp_path / "outputs" / "second"):
        assert {path.name for path in job_dir.iterdir()} <= {".hydra", "run.log"}, "nothing else in the job folder"


def test_relative_paths_become_absolute_against_the_launch_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "w.pt"
    cfg = compose_config(["dataset=cifar10", "features=resnet32", "dataset.root=../data",
                          "checkpoint.dir=runs/checkpoints", "features.weights=w.pt",
                          "tracking.uri=sqlite:///stores/mlflow.db"])
    resolved = absolute_paths(cfg)
    assert resolved.dataset.root == str(tmp_path.parent / "data")
    assert resolved.checkpoint.dir == str(tmp_path / "runs" / "checkpoints")
    assert resolved.features.cache_dir == str(tmp_path.parent / "data" / "features")
    assert OmegaConf.to_container(resolved)["features"]["cache_dir"] == "${dataset.root}/features"
    assert resolved.features.weights == str(weights)
    assert resolved.tracking.uri == f"sqlite:///{tmp_path / 'stores' / 'mlflow.db'}"
    assert cfg.dataset.root == "../data", "the caller's config is not changed"


def test_default_store_is_mlflow_db_in_the_launch_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_paths(compose_config([])).tracking.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_relative_feature_weights_hash_names_the_file_not_the_launch_directory(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    overrides = ["dataset=cifar10", "features=resnet32"]

    def hash_from(directory: Path, weights: str) -> str:
        monkeypatch.chdir(directory)
        return ckpt.config_hash(absolute_paths(compose_config([*overrides, f"features.weights={weights}"])))

    same_file = {hash_from(tmp_path / "a", "w.pt"), hash_from(tmp_path / "b", "../a/w.pt"),
                 hash_from(tmp_path, str(tmp_path / "a" / "w.pt"))}
    assert len(same_file) == 1, "one file, one hash, from any launch directory"
    assert hash_from(tmp_path / "b", "w.pt") not in same_file, "another file with the same relative name"
    for weights in ("hub", "~/w.pt", str(tmp_path / "a" / "w.pt")):  # not relative: hash as before
        cfg = compose_config([*overrides, f"features.weights='{weights}'"])
        assert ckpt.config_hash(absolute_paths(cfg)) == ckpt.config_hash(cfg), weights


def test_location_paths_do_not_change_the_checkpoint_hash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["dataset.root=data", "checkpoint.dir=checkpoints"])
    assert ckpt.config_hash(absolute_paths(cfg)) == ckpt.config_hash(cfg)


# --- MLflow's environment variables ----------------------------------------------------


def _foreign_run(tmp_path: Path) -> str:
    """A run another program made in the store g2g will use."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("g2g")
    run_id = client.create_run(experiment_id, run_name="someone else's run").info.run_id
    client.log_param(run_id, "model.name", "theirs")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _assert_untouched(tmp_path: Path, foreign: str, summary: dict) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(foreign)
    assert (run.info.run_name, run.info.status, run.data.params) == (
        "someone else's run", "FINISHED", {"model.name": "theirs"})
    assert summary["run_id"] != foreign
    assert client.get_run(summary["run_id"]).data.params["model.name"] == "index"


def test_mlflow_run_id_from_the_environment_is_ignored_through_run_py(tmp_path, tiny_data_root):
    foreign = _foreign_run(tmp_path)
    result = _run_py(tmp_path, "model=index", f"dataset.root={tiny_data_root}", "hydra.run.dir=out",
                     env={"MLFLOW_RUN_ID": foreign})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"MLFLOW_RUN_ID={foreign} is ignored" in result.stdout + result.stderr
    (done,) = (tmp_path / "checkpoints").glob("*/record.json")
    _assert_untouched(tmp_path, foreign, json.loads(done.read_text()))


def test_databricks_job_run_resumption_variable_is_ignored(tmp_path, tiny_data_root, monkeypatch, caplog):
    """With SERVERLESS_GPU_COMPUTE_ASSOCIATED_JOB_RUN_ID set, ``mlflow.start_run``
    resumes the run an earlier program started under the same job id."""
    monkeypatch.setenv("SERVERLESS_GPU_COMPUTE_ASSOCIATED_JOB_RUN_ID", "job-7")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = MlflowClient().create_experiment("g2g")
    with mlflow.start_run(experiment_id=experiment_id, run_name="someone else's run") as other:
        mlflow.log_param("model.name", "theirs")
    caplog.set_level("WARNING", logger="g2g")
    summary = run_job(compose_config(["model=index", "train.epochs=1"], tmp_path))
    assert "SERVERLESS_GPU_COMPUTE_ASSOCIATED_JOB_RUN_ID=job-7 is ignored" in caplog.text
    _assert_untouched(tmp_path, other.info.run_id, summary)


@pytest.mark.parametrize("variable", ["MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"])
def test_experiment_from_the_environment_is_ignored_with_a_warning(variable, tmp_path, tiny_data_root,
                                                                    monkeypatch, caplog):
    other = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("other")
    monkeypatch.setenv(variable, "other" if variable == "MLFLOW_EXPERIMENT_NAME" else other)
    caplog.set_level("WARNING", logger="g2g")
    summary = run_job(compose_config(["model=index", "train.epochs=1"], tmp_path))
    assert f"{variable}=" in caplog.text and "tracking.experiment=g2g" in caplog.text
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(summary["run_id"]).info.experiment_id == client.get_experiment_by_name("g2g").experiment_id
    assert client.search_runs([other]) == []


def test_mlflow_tracking_uri_is_honoured_when_tracking_uri_is_null(tmp_path, tiny_data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere/store.db")
    (tmp_path / "elsewhere").mkdir()
    cfg = compose_config(["model=index", "train.epochs=1", f"dataset.root={tiny_data_root}",
                          "dataset.download=false"])
    summary = run_job(cfg)
    assert summary["tracking_uri"] == f"sqlite:///{tmp_path / 'elsewhere' / 'store.db'}"
    assert not (tmp_path / "mlflow.db").exists()
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///elsewhere/store.db", "left as the user set it"


def test_mlflow_tracking_uri_is_ignored_with_a_warning_when_tracking_uri_is_set(tmp_path, tiny_data_root,
                                                                                 monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    caplog.set_level("WARNING", logger="g2g")
    summary = run_job(compose_config(["model=index", "train.epochs=1"], tmp_path))
    assert summary["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert "MLFLOW_TRACKING_URI=" in caplog.text and "is ignored: tracking.uri=" in caplog.text
    assert not (tmp_path / "other.db").exists()
