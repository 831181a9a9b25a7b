"""Every command g2g prints for a person to run works when pasted into bash, whatever
the names and paths in it (spaces, quotes, ``$``, backticks): the helper that builds
them (:mod:`g2g.shell`), and the commands themselves taken from what g2g wrote (the
results page's regeneration command, the report's suggestion of a run's sweep, the
restore command of a deleted experiment, the relog command of a fallback file) and run
through a real ``bash -c``. Also ``python -m g2g.report`` refusing a target that is not
a sweep (exit 2), on a real tiny sweep and on runs logged into a real MLflow store."""

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, write_fashion_mnist
from g2g.reporting import markdown
from g2g.shell import hydra_override, shell_command

AWKWARD = ["a b", "it's", 'say "hi"', "$HOME", "`date`", "a;b", "*", "~", "", "new\nline", "back\\slash", "-x"]
#: a folder, an experiment and a page name that a shell or Hydra would misread unquoted
FOLDER_NAME = "it's a $weep"
EXPERIMENT = 'my "study" $1 `x`'
PAGE = "pages/x y $z 'q'.md"
TINY = ["model=mixer", "model.p_inter=0.1", "model.hidden_dim=16", "encoder.num_steps=4", "train.epochs=1",
        "train.batch_size=16", "train.eval_batch_size=16", "train.progress=false", "hardware=cpu",
        "hardware.num_threads=1", "dataset.download=false", "dataset.root=data", "hydra.launcher.n_jobs=1"]


@pytest.fixture(scope="module")
def shell_bin(tmp_path_factory) -> Path:
    """A folder whose ``python`` runs this interpreter (the commands say ``python``)."""
    folder = tmp_path_factory.mktemp("bin")
    (folder / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (folder / "python").chmod(0o755)
    return folder


def _bash(command: str, cwd: Path, shell_bin: Path) -> subprocess.CompletedProcess:
    """``command`` as a person pastes it: ``bash -c`` with this interpreter as ``python``
    and MLflow's CLI on the PATH."""
    path = os.pathsep.join([str(shell_bin), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update(PATH=path, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _echo_argv(*arguments: str) -> list[str]:
    return [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", *arguments]


# --- the helper -------------------------------------------------------------------------

def test_shell_command_leaves_plain_words_alone():
    assert shell_command("python", "-m", "g2g.report", "g2g", "--page", "docs/results.md") == (
        "python -m g2g.report g2g --page docs/results.md")
    assert shell_command("rm", Path("/tmp/x.DONE")) == "rm /tmp/x.DONE"


def test_bash_gets_back_every_argument_of_a_shell_command(tmp_path, shell_bin):
    result = _bash(shell_command(*_echo_argv(*AWKWARD)), tmp_path, shell_bin)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == AWKWARD
    assert shlex.split(shell_command("python", *AWKWARD)) == ["python", *AWKWARD]


def test_shell_command_sets_the_environment_for_the_command_only(tmp_path, shell_bin):
    value = "sqlite:////tmp/it's a $store/mlflow.db"
    command = shell_command(sys.executable, "-c", "import os; print(os.environ['G2G_TEST_VALUE'])",
                            env={"G2G_TEST_VALUE": value})
    assert command.startswith("G2G_TEST_VALUE=")
    result = _bash(command + "; echo \"after: ${G2G_TEST_VALUE-unset}\"", tmp_path, shell_bin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [value, "after: unset"]


@pytest.mark.parametrize("name", ["BAD-NAME", "1X", "", "A B"])
def test_shell_command_refuses_an_environment_name_a_shell_would_not_take(name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        shell_command("mlflow", "ui", env={name: "x"})


def test_shell_command_needs_a_program():
    with pytest.raises(ValueError, match="at least the program"):
        shell_command()


@pytest.mark.parametrize("value", ["/abs/resnet32_cifar10.pt", "/a b/x.pt", "/a,b/x.pt", "/runs/it's.pt",
                                   "/a/(b)/[c]", "/a/${x}/y", "x\\${y}", "back\\slash\\", "null", "1.5", "",
                                   'say "hi"', "$HOME/x"])
def test_a_hydra_override_survives_bash_then_hydra(value, tmp_path, shell_bin):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    result = _bash(shell_command(*_echo_argv(hydra_override("features.weights", value))), tmp_path, shell_bin)
    (argument,) = json.loads(result.stdout)
    override = OverridesParser.create().parse_override(argument)
    assert not override.is_sweep_override()
    assert OmegaConf.create({"value": override.value()}).value == value
    if value == "/abs/resnet32_cifar10.pt":
        assert argument == f"features.weights={value}", "a plain path is left as it is"


@pytest.mark.parametrize(("text", "span"), [("python -m g2g.report g2g", "`python -m g2g.report g2g`"),
                                            ("my `x`", "`` my `x` ``"), ("a``b", "```a``b```")])
def test_markdown_code_spans_show_backticks(text, span):
    assert markdown.code(text) == span


# --- the commands g2g writes, pasted into bash ----------------------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    """A real one-job sweep (``run.py -m``) run in the folder ``it's a $weep``, logged to
    the experiment ``my "study" $1 `x``` of the store ``mlflow.db`` there."""
    folder = tmp_path_factory.mktemp("sweep") / FOLDER_NAME
    write_fashion_mnist(folder / "data", num_train=64, num_test=32)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "HYDRA_"))}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "run.py"), "-m", *TINY,
                             hydra_override("tracking.experiment", EXPERIMENT)],
                            cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get("g2g.sweep") == "true"]
    (child,) = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return {"folder": folder, "uri": uri, "client": client, "parent": parent.info.run_id, "child": child.info.run_id}


def _report(arguments: list[str], folder: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    return subprocess.run([sys.executable, "-m", "g2g.report", *arguments], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


def _artifacts(client: MlflowClient, run_id: str) -> list[str]:
    return sorted(item.path for item in client.list_artifacts(run_id))


@pytest.mark.integration
def test_the_results_page_command_pasted_into_bash_regenerates_the_page(sweep, shell_bin):
    folder = sweep["folder"]
    arguments = [EXPERIMENT, "--page", PAGE, "--tracking-uri", sweep["uri"]]
    result = _report(arguments, folder)
    assert result.returncode == 0, result.stderr
    page = folder / PAGE
    found = re.search(r"_Generated on \S+ by (`+) ?(.+?) ?\1 from 1 finished runs of the MLflow experiment "
                      r"(`+) ?(.+?) ?\3\.", page.read_text())
    assert found, page.read_text()[:2000]
    command = found.group(2)
    assert found.group(4) == EXPERIMENT
    assert shlex.split(command) == ["python", "-m", "g2g.report", *arguments]

    page.unlink()
    pasted = _bash(command, folder, shell_bin)
    assert pasted.returncode == 0, pasted.stderr
    assert page.exists() and command in page.read_text()


@pytest.mark.integration
def test_the_report_refuses_a_training_run_and_its_suggested_command_reports_the_sweep(sweep, shell_bin):
    client, child, parent = sweep["client"], sweep["child"], sweep["parent"]
    before = {run_id: _artifacts(client, run_id) for run_id in (child, parent)}
    result = _report([child, "--tracking-uri", sweep["uri"], "--out", "child_report"], sweep["folder"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: run {child} is a training run (a child of sweep {parent}) "
                                    f"of experiment {EXPERIMENT!r}, not a sweep: ")
    assert "takes the name of an MLflow experiment" in result.stderr
    assert "or the run id of a sweep's parent run" in result.stderr
    assert {run_id: _artifacts(client, run_id) for run_id in (child, parent)} == before, "nothing logged"
    assert "report" not in before[child]
    assert not (sweep["folder"] / "child_report").exists()

    suggested = result.stderr.strip().split("report its sweep with: ")[1]
    assert shlex.split(suggested) == ["python", "-m", "g2g.report", parent, "--tracking-uri", sweep["uri"]]
    pasted = _bash(suggested, sweep["folder"], shell_bin)
    assert pasted.returncode == 0, pasted.stderr
    assert "sweep FINISHED: 1 jobs, 0 did not finish" in pasted.stdout


@pytest.mark.integration
def test_the_report_refuses_a_run_id_the_store_does_not_have(sweep):
    missing = "0123456789abcdef0123456789abcdef"
    for arguments in ([missing], [missing, "--page", "missing.md"]):
        result = _report([*arguments, "--tracking-uri", sweep["uri"]], sweep["folder"])
        assert result.returncode == 2, result.stdout + result.stderr
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
        assert f"'{missing}' is neither a run id nor an experiment name" in result.stderr or (
            f"no MLflow experiment named '{missing}'" in result.stderr)
        assert f"its experiments: Default, {EXPERIMENT}" in result.stderr
    assert not (sweep["folder"] / "missing.md").exists()


@pytest.mark.integration
def test_the_results_page_refuses_a_run_id_and_says_what_it_is(sweep):
    result = _report([sweep["child"], "--page", "child.md", "--tracking-uri", sweep["uri"]], sweep["folder"])
    assert result.returncode == 2, result.stdout + result.stderr
    assert (f"(run {sweep['child']} is a training run (a child of sweep {sweep['parent']}) of experiment "
            f"{EXPERIMENT!r}; --page takes an experiment name)") in result.stderr
    assert not (sweep["folder"] / "child.md").exists()


def test_a_cross_validation_fold_names_its_sweep_and_a_lone_run_says_it_has_none(tmp_path):
    from g2g.reporting.queries import TargetError, resolve_sweep
    from g2g.tracking.store import setup_experiment

    experiment_id = setup_experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "g2g")
    client = MlflowClient()
    sweep_id = client.create_run(experiment_id, run_name="sweep", tags={"g2g.sweep": "true"}).info.run_id
    crossval = client.create_run(experiment_id, tags={"mlflow.parentRunId": sweep_id,
                                                      "g2g.protocol": "crossval"}).info.run_id
    fold = client.create_run(experiment_id, tags={"mlflow.parentRunId": crossval, "g2g.fold": "2"}).info.run_id
    lone = client.create_run(experiment_id).info.run_id

    with pytest.raises(TargetError) as error:
        resolve_sweep(client, fold)
    assert str(error.value).startswith(f"run {fold} is fold 2 of a cross-validation (a child of run {crossval}, "
                                       f"in sweep {sweep_id}) of experiment 'g2g', not a sweep: ")
    assert str(error.value).endswith(f"report its sweep with: python -m g2g.report {sweep_id}")
    with pytest.raises(TargetError, match=f"run {crossval} is the parent run of a cross-validation "
                                          f"\\(a child of sweep {sweep_id}\\)"):
        resolve_sweep(client, crossval)
    with pytest.raises(TargetError) as error:
        resolve_sweep(client, lone)
    assert str(error.value).startswith(f"run {lone} is a training run of experiment 'g2g', not a sweep")
    assert str(error.value).endswith("; it belongs to no sweep")
    assert resolve_sweep(client, sweep_id) == (sweep_id, [])


@pytest.mark.skipif(shutil.which("mlflow", path=str(Path(sys.executable).parent)) is None,
                    reason="MLflow's command line is not beside this interpreter")
@pytest.mark.integration
def test_the_restore_command_of_a_deleted_experiment_restores_it(tmp_path, shell_bin):
    from g2g.tracking.store import deleted_experiment_message

    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    client.delete_experiment(experiment_id)
    message = deleted_experiment_message(EXPERIMENT, experiment_id, uri)
    (command,) = [line.strip() for line in message.splitlines() if "mlflow experiments restore" in line]
    result = _bash(command, tmp_path, shell_bin)
    assert result.returncode == 0, result.stderr[-3000:]
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


@pytest.mark.integration
def test_the_relog_command_of_a_fallback_file_logs_it(tmp_path, shell_bin, monkeypatch, caplog):
    from g2g.tracking.run_logger import RunLogger

    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("g2g")).info.run_id

    def store_down(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("database is locked (injected)")

    monkeypatch.setattr("g2g.tracking.run_logger.log_batch_chunked", store_down)
    monkeypatch.setattr("g2g.tracking.run_logger.RETRY_DELAYS_S", ())
    caplog.set_level(logging.WARNING, logger="g2g")
    RunLogger(run_id, uri, folder / "run $1.mlflow_fallback.jsonl").metrics({"test_accuracy": 0.5}, step=1)
    (message,) = [record.getMessage() for record in caplog.records if "else later with: " in record.getMessage()]
    command = message.split("else later with: ")[1].removesuffix(")")
    assert shlex.split(command)[:4] == ["python", "-m", "g2g.tracking", "relog"]

    result = _bash(command, tmp_path, shell_bin)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m.value for m in client.get_metric_history(run_id, "test_accuracy")] == [0.5]


def test_the_offline_resnet_message_gives_commands_that_survive_bash_and_hydra(tmp_path, shell_bin, monkeypatch):
    import torch
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from g2g.data import features

    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable (simulated)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(features.FeaturesUnavailableError) as error:
        features.load_weights("hub", "cifar10")
    lines = str(error.value).splitlines()
    weights = folder / "resnet32_cifar10.pt"
    (train,) = [line.strip() for line in lines if "g2g.data.features train" in line]
    assert shlex.split(train) == ["python", "-m", "g2g.data.features", "train", "--dataset", "cifar10",
                                  "--root", "data", "--out", str(weights)]
    (then,) = [line.strip() for line in lines if line.strip().startswith("then add ")]
    override = then.removeprefix("then add ").removesuffix(" to the run's command line")
    result = _bash(shell_command(*_echo_argv()) + " " + override, tmp_path, shell_bin)
    (argument,) = json.loads(result.stdout)
    assert OverridesParser.create().parse_override(argument).value() == str(weights)
