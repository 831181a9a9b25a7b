"""Paths and environment mean what they say: every relative path in the config is
relative to the directory where the command was started (whatever Hydra's working
directory); ``~``, ``$HOME`` and ``${oc.env:HOME}`` mean the home folder in every path key
and command-line path argument; any folder name works, ``?``, ``%``, ``#`` and spaces
included (SQLite URIs); and MLflow's environment variables are honoured as documented or
ignored with a warning, never used to log into a run g2g did not create."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from conftest import REPO_ROOT, TINY, compose_config, write_fashion_mnist
from g2g.config.paths import absolute_paths
from g2g.config.validation import ConfigError, validate
from g2g.files import expand_path
from g2g.lifecycle import checkpoint as ckpt
from g2g.run.job import run_job
from g2g.tracking.store import (
    absolute_tracking_uri,
    default_tracking_uri,
    deleted_experiment_message,
    sqlite_path,
    sqlite_uri,
    sqlite_uri_problem,
)

QUICK = [*TINY, "train.epochs=1", "hardware.num_threads=1", "dataset.download=false"]


def _run_py(cwd: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), *QUICK, *overrides],
                          cwd=cwd, env={**environment, **(env or {})}, capture_output=True, text=True, timeout=300)


@pytest.mark.integration
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


@pytest.mark.integration
def test_mlflow_run_id_from_the_environment_is_ignored_through_run_py(tmp_path, tiny_data_root):
    foreign = _foreign_run(tmp_path)
    result = _run_py(tmp_path, "model=index", f"dataset.root={tiny_data_root}", "hydra.run.dir=out",
                     env={"MLFLOW_RUN_ID": foreign})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"MLFLOW_RUN_ID={foreign} is ignored" in result.stdout + result.stderr
    (done,) = (tmp_path / "checkpoints").glob("*/record.json")
    _assert_untouched(tmp_path, foreign, json.loads(done.read_text()))


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


# --- paths as a shell reads them: ~, $HOME, ${oc.env:HOME}, any folder name ---------------


def _home(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A home folder with tiny data in ``data/``, a launch folder beside it, and the
    environment that makes that folder the home (``HOME``) of a command."""
    home, launch = tmp_path / "home", tmp_path / "launch"
    write_fashion_mnist(home / "data")
    launch.mkdir()
    return home, launch, {"HOME": str(home)}


def _only_folder_in(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


@pytest.mark.integration
def test_home_and_environment_variables_in_path_keys_mean_the_home_folder_through_run_py(tmp_path):
    home, launch, env = _home(tmp_path)
    first = _run_py(launch, "model=index", "dataset.root=$HOME/data", "checkpoint.dir=$HOME/checkpoints",
                    "tracking.uri='sqlite:///~/store/mlflow.db'", env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _only_folder_in(launch) == {"outputs"}, "no folder named $HOME or ~ in the launch folder"
    (done,) = (home / "checkpoints").glob("*/record.json")
    summary = json.loads(done.read_text())
    assert summary["tracking_uri"] == f"sqlite:///{home / 'store' / 'mlflow.db'}"
    run = MlflowClient(summary["tracking_uri"]).get_run(summary["run_id"])
    assert run.data.params["dataset.root"] == str(home / "data")

    # the same folders written as Hydra's ${oc.env:HOME} and as ~: the same experiment, found finished
    again = _run_py(launch, "model=index", "dataset.root=${oc.env:HOME}/data", 'checkpoint.dir="~/checkpoints"',
                    "tracking.uri=sqlite:///${oc.env:HOME}/store/mlflow.db", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stdout + again.stderr
    assert _only_folder_in(launch) == {"outputs"}

    # the report reads the same store and writes the page where ~ and $HOME say
    for page, uri in (("~/pages/tilde.md", "sqlite:///~/store/mlflow.db"),
                      ("$HOME/pages/variable.md", "sqlite:///$HOME/store/mlflow.db")):
        report = subprocess.run([sys.executable, "-m", "g2g.report", "g2g", "--page", page, "--tracking-uri", uri],
                                cwd=launch, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert report.returncode == 0, report.stderr[-3000:]
    assert {path.name for path in (home / "pages").glob("*.md")} == {"tilde.md", "variable.md"}
    assert _only_folder_in(launch) == {"outputs"}


@pytest.mark.integration
def test_an_unset_environment_variable_in_a_path_is_refused_naming_the_key(tmp_path):
    _, launch, env = _home(tmp_path)
    result = _run_py(launch, "dataset.root=$G2G_UNSET_FOLDER/data", "checkpoint.dir=$G2G_UNSET_FOLDER/c", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("dataset.root='$G2G_UNSET_FOLDER/data': the environment variable G2G_UNSET_FOLDER is not set"
            in result.stderr)
    assert "checkpoint.dir='$G2G_UNSET_FOLDER/c'" in result.stderr
    assert _only_folder_in(launch) == {"outputs"}, "nothing made before the config is refused"


def test_feature_weights_and_cache_with_environment_variables_name_the_files(tmp_path, monkeypatch):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w.pt").touch()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("G2G_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.chdir(tmp_path / "weights")
    cfg = compose_config(["dataset=cifar10", "features=resnet32", "features.weights=$G2G_WEIGHTS_DIR/w.pt",
                          "features.cache_dir=$HOME/cache"])
    resolved = absolute_paths(cfg)
    assert resolved.features.weights == str(tmp_path / "weights" / "w.pt")
    assert resolved.features.cache_dir == str(tmp_path / "cache")
    validate(resolved)  # the weights file is found
    relative = compose_config(["dataset=cifar10", "features=resnet32", "features.weights=w.pt"])
    assert ckpt.config_hash(resolved) == ckpt.config_hash(absolute_paths(relative)), "one file, one hash"


@pytest.mark.integration
@pytest.mark.parametrize("folder", ["q?mark", "100%", "a#b c%41"])
def test_a_launch_folder_with_uri_characters_keeps_its_store_inside(folder, tmp_path):
    launch = tmp_path / folder
    write_fashion_mnist(launch / "data")
    result = _run_py(launch, "model=index", "dataset.root=data")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (launch / "mlflow.db").is_file()
    outside = [path for path in tmp_path.rglob("*") if path.is_file() and not path.is_relative_to(launch)]
    assert outside == [], "the store is inside the launch folder, not in a file cut off at '?' or decoded '%41'"
    (done,) = (launch / "checkpoints").glob("*/record.json")
    summary = json.loads(done.read_text())
    assert sqlite_path(summary["tracking_uri"]) == launch / "mlflow.db"
    assert summary["tracking_uri"] in result.stdout + result.stderr, "the URI the log shows is the one to use"
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))).is_file()
    assert list((launch / "mlartifacts").rglob("config.yaml")), "artifacts beside mlflow.db"

    page = subprocess.run([sys.executable, "-m", "g2g.report", "g2g", "--page", "results.md"], cwd=launch,
                          capture_output=True, text=True, timeout=120)
    assert page.returncode == 0, page.stderr[-3000:]
    assert (launch / "results.md").is_file()


@pytest.mark.integration
def test_g2g_data_root_with_tilde_or_variable_is_the_home_folder(tmp_path):
    home, launch, env = _home(tmp_path)
    for root in ("~/data", "$HOME/data"):
        result = subprocess.run([sys.executable, "-m", "g2g.data", "fashionmnist", "--root", root, "--no-download"],
                                cwd=launch, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"64 training and 32 test examples under {home / 'data'}" in result.stdout
    assert _only_folder_in(launch) == set(), "nothing unpacked into a folder named ~ or $HOME"
    # a $NAME the shell left (quoted, or no such variable) is part of a name, as the shell meant it
    from g2g.files import path_argument

    assert path_argument("$G2G_UNSET_ROOT/data") == Path("$G2G_UNSET_ROOT/data")
    assert path_argument("~/$G2G_UNSET_ROOT") == Path(os.path.expanduser("~")) / "$G2G_UNSET_ROOT"


@pytest.mark.parametrize("folder", ["q?mark", "100%", "x%41y", "a#b c", "plain"])
def test_sqlite_uris_name_their_file_whatever_its_folder_is_called(folder, tmp_path):
    from sqlalchemy.engine import make_url

    database = tmp_path / folder / "mlflow.db"
    uri = sqlite_uri(database)
    assert make_url(uri).database == str(database), "SQLAlchemy (what MLflow opens it with) reads the same file"
    assert sqlite_path(uri) == database
    assert absolute_tracking_uri(uri, "/elsewhere") == uri
    assert default_tracking_uri(tmp_path / folder) == uri
    assert sqlite_uri_problem(uri) is None
    restore = deleted_experiment_message("g2g", "1", uri).splitlines()[1]
    assert shlex.split(restore)[0] == f"MLFLOW_TRACKING_URI={uri}", "the printed command works in a shell"


def test_a_question_mark_in_a_written_sqlite_uri_is_refused_with_the_uri_to_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config([f"tracking.uri='sqlite:///{tmp_path}/q?mark/mlflow.db'"])
    with pytest.raises(ConfigError) as error:
        absolute_paths(cfg)
    assert "is written %3F: sqlite:///" + f"{tmp_path}/q%3Fmark/mlflow.db" in str(error.value)
    options = compose_config(["tracking.uri='sqlite:///store.db?timeout=30'"])  # SQLAlchemy's options are kept
    assert absolute_paths(options).tracking.uri == f"sqlite:///{tmp_path}/store.db?timeout=30"


def test_expand_path_reads_a_path_as_a_shell_would(monkeypatch):
    monkeypatch.setenv("HOME", "/home/me")
    monkeypatch.setenv("RUNS", "/scratch/runs")
    assert expand_path("~/data") == "/home/me/data"
    assert expand_path("$HOME/data/${RUNS}x") == "/home/me/data//scratch/runsx"
    assert expand_path("data/$5/a$") == "data/$5/a$", "a $ not followed by a variable name is kept"
    assert expand_path("relative/path") == "relative/path"
    with pytest.raises(ValueError, match="G2G_UNSET_A, G2G_UNSET_B are not set"):
        expand_path("$G2G_UNSET_B/${G2G_UNSET_A}")
