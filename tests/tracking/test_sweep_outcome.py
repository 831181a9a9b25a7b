"""A sweep's outcome is the truth about all its jobs: a job that fails at any stage, dies
without a word or is stopped is counted and shown with its reason; the parent run never
stays RUNNING; Ctrl-C stops the sweep cleanly and the same command resumes every job.
Subprocess tests through ``run.py -m`` on tiny data, as a user runs them."""

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, interrupt, write_fashion_mnist

TINY = ["model.hidden_dim=16", "encoder.num_steps=4", "train.epochs=1", "train.batch_size=16",
        "train.eval_batch_size=16", "train.progress=false", "hardware=cpu", "dataset.download=false"]


def _command(arguments: list[str]) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "run.py"), *arguments]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _run(arguments: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_command(arguments), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env())


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def _sweeps(client: MlflowClient) -> list:
    """Sweep parent runs, oldest first, each with its child runs as ``.children``."""
    experiment = client.get_experiment_by_name("g2g")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    parents = [r for r in runs if r.data.tags.get("g2g.sweep") == "true"]
    for parent in parents:
        parent.children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parents


@pytest.mark.integration
def test_a_job_refused_before_it_has_a_run_is_counted_as_failed_with_its_reason(workdir):
    result = _run(["-m", "model=index", "model.p_inter=0.1,1.5", "hydra.launcher.n_jobs=1", *TINY,
                   f"hydra.sweep.dir={workdir / 'multirun'}"], workdir)
    assert result.returncode == 1, result.stderr[-3000:]
    client = _client(workdir)
    (parent,) = _sweeps(client)
    assert parent.info.status == "FAILED"
    assert parent.data.metrics["sweep_jobs"] == 2 and parent.data.metrics["sweep_failed_jobs"] == 1
    assert parent.data.tags["g2g.error"] == "1 of 2 jobs did not finish"
    status = {c.data.tags["g2g.overrides"].split()[1]: c.info.status for c in parent.children}
    assert status == {"model.p_inter=0.1": "FINISHED", "model.p_inter=1.5": "FAILED"}
    (refused,) = [c for c in parent.children if c.info.status == "FAILED"]
    assert refused.data.tags["g2g.error"].startswith("ConfigError: ")
    assert "model.p_inter=1.5: must be a probability" in refused.data.tags["g2g.error"]
    table = Path(client.download_artifacts(parent.info.run_id, "report/jobs.csv", str(workdir)))
    with open(table) as file:
        jobs = {row["status"]: row for row in csv.DictReader(file)}
    assert jobs["FAILED"]["error"].startswith("ConfigError: invalid configuration:")
    assert "model.p_inter=1.5: must be a probability" in jobs["FAILED"]["error"]
    comparison = Path(client.download_artifacts(parent.info.run_id, "report/comparison.md", str(workdir))).read_text()
    assert "1 run(s) without a finished test_accuracy left out" in comparison, "the failed job is said, not compared"

    report = subprocess.run([sys.executable, "-m", "g2g.report", "g2g", "--out", str(workdir / "again")],
                            cwd=workdir, capture_output=True, text=True, timeout=120, env=_env())
    assert report.returncode == 0, report.stderr
    assert "sweep FAILED: 2 jobs, 1 did not finish" in report.stdout


@pytest.mark.integration
def test_a_job_that_died_without_a_record_is_counted_from_its_hydra_job_folder(tmp_path):
    from g2g.tracking.store import setup_experiment
    from g2g.tracking.sweep_callback import Sweep

    sweep_dir = tmp_path / "multirun"
    experiment_id = setup_experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "g2g")
    client = MlflowClient()
    callback = Sweep(client.create_run(experiment_id, tags={"g2g.sweep": "true"}).info.run_id, sweep_dir)
    for number, overrides in enumerate((["model=index"], ["model=mixer"])):  # as Hydra writes them
        (sweep_dir / str(number) / ".hydra").mkdir(parents=True)
        (sweep_dir / str(number) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    finished = client.create_run(experiment_id, run_name="model=index", tags={
        "mlflow.parentRunId": callback.parent_run_id, "g2g.overrides": "model=index"}).info.run_id
    client.set_terminated(finished, "FINISHED")  # the mixer job's worker died before it logged anything

    assert callback.conclude(0) == 1
    parent = client.get_run(callback.parent_run_id)
    assert parent.info.status == "FAILED" and parent.data.metrics["sweep_failed_jobs"] == 1
    (silent,) = [r for r in client.search_runs([experiment_id]) if r.data.tags.get("g2g.overrides") == "model=mixer"]
    assert silent.info.status == "FAILED" and silent.data.tags["mlflow.parentRunId"] == callback.parent_run_id
    assert "ended without a record" in silent.data.tags["g2g.error"]
    assert str(sweep_dir / "1" / "run.log") in silent.data.tags["g2g.error"]


@pytest.mark.integration
def test_a_sweep_hydra_rejects_ends_its_parent_failed_and_the_report_says_it_skipped_it(workdir):
    # dense has no p_inter: Hydra refuses the job batch after the parent run was created
    result = _run(["-m", "model=index,dense", "model.p_inter=0.1,0.2", *TINY,
                   f"hydra.sweep.dir={workdir / 'multirun'}"], workdir)
    assert result.returncode == 1
    assert "Key 'p_inter' not in" in result.stderr
    client = _client(workdir)
    (parent,) = _sweeps(client)
    assert parent.info.status == "FAILED" and parent.data.metrics["sweep_jobs"] == 4
    assert parent.data.tags["g2g.error"] == "4 of 4 jobs did not finish"
    assert {c.info.status for c in parent.children} == {"FAILED"}
    assert all(c.data.tags["g2g.error"].startswith("not started: Hydra or the launcher ended the sweep (exit "
                                                   "status 1") for c in parent.children)


def test_the_report_of_an_experiment_takes_the_newest_sweep_with_jobs_and_names_the_empty_ones(tmp_path):
    from g2g.reporting.queries import resolve_sweep
    from g2g.tracking.store import setup_experiment

    experiment_id = setup_experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "g2g")
    client = MlflowClient()
    older = client.create_run(experiment_id, run_name="sweep good", tags={"g2g.sweep": "true"}).info.run_id
    client.create_run(experiment_id, run_name="job", tags={"mlflow.parentRunId": older})
    time.sleep(0.01)
    newer = client.create_run(experiment_id, run_name="sweep refused",
                              tags={"g2g.sweep": "true", "g2g.error": "Hydra refused the batch"}).info.run_id
    client.set_terminated(newer, "FAILED")

    chosen, skipped = resolve_sweep(client, "g2g")
    assert chosen == older
    assert skipped == [f"skipped newer sweep {newer} (sweep refused): FAILED, no jobs: Hydra refused the batch"]
    assert resolve_sweep(client, newer) == (newer, []), "a run id is taken as given"


@pytest.mark.integration
def test_ctrl_c_stops_every_job_with_a_checkpoint_and_the_same_command_resumes_all_of_them(tmp_path):
    write_fashion_mnist(tmp_path / "data", num_train=3000, num_test=32)
    arguments = ["-m", "model=index,random,mixer", "hydra.launcher.n_jobs=2", "hardware.num_threads=1",
                 *TINY, "train.epochs=5", "train.batch_size=8"]
    # both running jobs have finished an epoch (a checkpoint each): Ctrl-C, as a terminal sends it
    status, output = interrupt(_command([*arguments, f"hydra.sweep.dir={tmp_path / 'multirun1'}"]), tmp_path, _env(),
                               lambda: len(list((tmp_path / "checkpoints").glob("*/checkpoint.pth"))) >= 2,
                               "two checkpoints")
    assert status == 130, output[-3000:]
    client = _client(tmp_path)
    (parent,) = _sweeps(client)
    assert parent.info.status == "KILLED" and parent.data.metrics["sweep_failed_jobs"] == 3
    children = {c.data.tags["g2g.overrides"].split()[0]: c for c in parent.children}
    assert sorted(children) == ["model=index", "model=mixer", "model=random"]
    assert {c.info.status for c in children.values()} == {"KILLED"}
    stopped = [c for c in children.values() if "g2g.checkpoint" in c.data.tags]
    assert len(stopped) == 2 and all(Path(c.data.tags["g2g.checkpoint"]).exists() for c in stopped)
    assert all(c.data.tags["g2g.error"].startswith("stopped: stopped at global step") for c in stopped)
    (not_started,) = [c for c in children.values() if "g2g.checkpoint" not in c.data.tags]
    assert not_started.data.tags["g2g.error"].startswith("not started: the sweep was stopped")
    assert "Traceback" not in output and "BrokenProcessPool" not in output, "no worker was killed"

    again = _run([*arguments, f"hydra.sweep.dir={tmp_path / 'multirun2'}"], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "multirun2").glob("*/run.log"))
    assert logs.count("resuming ") == 2, "both stopped jobs resume from their checkpoints"
    newest = _sweeps(client)[-1]
    assert newest.info.status == "FINISHED" and newest.data.metrics["sweep_failed_jobs"] == 0
    assert sorted(c.data.tags["g2g.overrides"].split()[0] for c in newest.children) == sorted(children)
    assert {c.info.run_id for c in stopped} <= {c.info.run_id for c in newest.children}, "the same runs continued"
    assert all(c.info.status == "FINISHED" and "g2g.error" not in c.data.tags for c in newest.children)
