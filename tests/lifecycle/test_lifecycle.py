"""One lifecycle per run and per sweep: the exit status, the MLflow status and the run
record agree on every exit path (a failure at any step of a run's life, a read-only or
full store, signals, repeated grid points, another experiment, fewer epochs than a
finished run). Through ``run.py`` in a subprocess where the fault is there."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, compose_config, write_fashion_mnist
from g2g.lifecycle import checkpoint as ckpt
from g2g.lifecycle.record import RunRecord
from g2g.run.job import run_job

TINY = ["model.hidden_dim=16", "encoder.num_steps=4", "train.epochs=1", "train.batch_size=16",
        "train.eval_batch_size=16", "train.progress=false", "hardware=cpu", "hardware.num_threads=1",
        "dataset.download=false"]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _run(arguments: list[str], cwd: Path, prefix: tuple[str, ...] = (), timeout: int = 300):
    return subprocess.run([*prefix, sys.executable, str(REPO_ROOT / "run.py"), *arguments], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=_env())


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def _runs(workdir: Path, experiment: str = "g2g") -> list:
    client = _client(workdir)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def _group_alive(group: int) -> bool:
    """Whether a process of the process group ``group`` is alive."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _records(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((workdir / "checkpoints").glob("*/record.json"))]


def _without_privileges() -> tuple[str, ...]:
    """A prefix that runs a command as root without the capabilities that ignore file
    permissions (util-linux setpriv), so chmod applies; skip where that is not possible."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and util-linux setpriv to run a command without CAP_DAC_OVERRIDE")
    return ("setpriv", "--bounding-set=-all", "--inh-caps=-all")


# ------------------------------------------------------------ stores that refuse writes

@pytest.mark.integration
def test_a_read_only_store_is_one_line_naming_it_and_a_non_zero_exit_for_a_run_and_a_sweep(workdir):
    assert _run(TINY, workdir).returncode == 0
    before = (workdir / "mlflow.db").read_bytes()
    (workdir / "mlflow.db").chmod(0o444)
    workdir.chmod(0o555)
    try:
        single = _run([*TINY, "seed=2"], workdir, _without_privileges())
        sweep = _run(["-m", *TINY, "seed=3,4"], workdir, _without_privileges())
    finally:
        workdir.chmod(0o755)
    assert single.returncode == 1, single.stderr[-2000:]
    assert "Traceback" not in single.stderr
    (line,) = [line for line in single.stderr.splitlines() if line.startswith("error:")]
    assert f"sqlite:///{workdir}/mlflow.db" in line and "readonly database" in line
    assert sweep.returncode == 1 and "Traceback" not in sweep.stderr
    assert [line for line in sweep.stderr.splitlines() if line.startswith("error:")]
    assert (workdir / "mlflow.db").read_bytes() == before, "nothing in the store changed"
    assert [r["status"] for r in _records(workdir)] == ["FINISHED"], "the first run's record is kept"


@pytest.mark.integration
def test_an_artifact_folder_that_refuses_writes_fails_every_job_and_the_sweep(workdir):
    assert _run(TINY, workdir).returncode == 0
    (workdir / "mlartifacts").chmod(0o555)
    try:
        sweep = _run(["-m", *TINY, "seed=1,2", "hydra.launcher.n_jobs=1"], workdir, _without_privileges())
    finally:
        (workdir / "mlartifacts").chmod(0o755)
    assert sweep.returncode == 1, sweep.stderr[-3000:]
    parent = [r for r in _runs(workdir) if r.data.tags.get("g2g.sweep") == "true"][-1]
    assert parent.info.status == "FAILED" and parent.data.tags["g2g.error"]
    children = [r for r in _runs(workdir) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and {c.info.status for c in children} == {"FAILED"}
    assert all("Permission denied" in c.data.tags["g2g.error"] for c in children)
    assert not [r for r in _runs(workdir) if r.info.status == "RUNNING"]


@pytest.mark.integration
def test_a_full_checkpoint_disk_fails_the_run_in_one_line_and_nothing_claims_finished(workdir):
    folder = workdir / "ck"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = _run([*TINY, "model.hidden_dim=256", "checkpoint.dir=ck"], workdir)
    finally:
        subprocess.run(["umount", str(folder)], check=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "no space left on the device writing " in line and "checkpoint.pth" in line
    (run,) = _runs(workdir)
    assert run.info.status == "FAILED" and "No space left on device" in run.data.tags["g2g.error"]


# ------------------------------------------------------------ the guard

FAULTS = {
    "start": ("g2g.lifecycle.record.RunRecord.start", None),
    "epoch": ("g2g.training.trainer.Trainer.train_epoch", None),
    "checkpoint write": ("g2g.files.atomic_torch_save", OSError(errno.ENOSPC, "No space left on device")),
    "record write": ("g2g.lifecycle.record.RunRecord.epoch_done", None),
}


@pytest.mark.integration
@pytest.mark.parametrize("step", [*FAULTS, "record end", "MLflow end"])
def test_a_failure_at_any_step_of_a_run_ends_it_failed_in_mlflow_and_its_record(step, tmp_path, tiny_data_root,
                                                                              monkeypatch):
    cfg = compose_config(["model=index", "train.epochs=1"], tmp_path)
    if step in FAULTS:
        target, error = FAULTS[step]
        module, _, name = target.rpartition(".")

        def fail(*args, **kwargs):
            raise error or RuntimeError(f"injected at {step}")

        if module.endswith(("RunRecord", "Trainer")):
            module, cls = module.rsplit(".", 1)
            monkeypatch.setattr(getattr(__import__(module, fromlist=[cls]), cls), name, fail)
        else:
            monkeypatch.setattr("g2g.lifecycle.checkpoint.atomic_torch_save", fail)
    elif step == "record end":
        real_end = RunRecord.end

        def end(self, status, **kwargs):
            if status == "FINISHED":
                raise OSError(errno.EROFS, "Read-only file system", str(self.path))
            return real_end(self, status, **kwargs)

        monkeypatch.setattr(RunRecord, "end", end)
    else:  # the store refuses the final status: the record is the truth, the next start repairs MLflow
        monkeypatch.setattr("g2g.tracking.run_logger.RETRY_DELAYS_S", ())
        monkeypatch.setattr(MlflowClient, "set_terminated", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
    record = ckpt.run_record(cfg, cfg.checkpoint.dir)
    if step == "MLflow end":
        summary = run_job(cfg)
        monkeypatch.undo()
        assert record.read().status == "FINISHED"
        assert _client(tmp_path).get_run(summary["run_id"]).info.status == "RUNNING"
        assert run_job(cfg)["skipped"]
        assert _client(tmp_path).get_run(summary["run_id"]).info.status == "FINISHED", "repaired at the next start"
        return
    with pytest.raises((RuntimeError, OSError)):
        run_job(cfg)
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["g2g.error"]
    assert record.read().status == "FAILED" and record.state["error"] == run.data.tags["g2g.error"]


def test_a_report_that_fails_ends_the_sweep_failed(tmp_path, monkeypatch):
    from g2g.tracking.store import setup_experiment
    from g2g.tracking.sweep_callback import Sweep

    experiment_id = setup_experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "g2g")
    client = MlflowClient()
    parent = client.create_run(experiment_id, tags={"g2g.sweep": "true"}).info.run_id
    child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "g2g.overrides": "seed=1"})
    client.set_terminated(child.info.run_id, "FINISHED")
    monkeypatch.setattr("g2g.reporting.sweep_report.report_sweep",
                        lambda *a, **k: (_ for _ in ()).throw(PermissionError(13, "Permission denied", "report")))
    assert Sweep(parent, tmp_path / "multirun").conclude(0) == 1
    ended = client.get_run(parent)
    assert ended.info.status == "FAILED" and "PermissionError" in ended.data.tags["g2g.error"]


# ------------------------------------------------------------ grids, experiments, epochs

@pytest.mark.integration
def test_a_repeated_grid_point_runs_once_and_is_said_once(workdir):
    result = _run(["-m", *TINY, "seed=7,7", "hydra.launcher.n_jobs=2"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("repeated job") == 1
    (parent,) = [r for r in _runs(workdir) if r.data.tags.get("g2g.sweep") == "true"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep_jobs"] == 1
    children = [r for r in _runs(workdir) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert [c.info.status for c in children] == ["FINISHED"] and "g2g.error" not in children[0].data.tags


@pytest.mark.integration
def test_a_run_resumed_into_another_experiment_is_recorded_there_and_says_so(workdir):
    """Stopped after its first checkpoint, then run again with tracking.experiment=other:
    it continues in a run of experiment ``other`` (with the whole history), the earlier run
    in ``g2g`` says where it went, and the record names ``other``."""
    arguments = [*TINY, "train.epochs=2", "train.batch_size=8"]
    write_fashion_mnist(workdir / "data", num_train=3000, num_test=32)
    process = subprocess.Popen([sys.executable, str(REPO_ROOT / "run.py"), *arguments], cwd=workdir, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not list((workdir / "checkpoints").glob("*/checkpoint.pth")) and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output[-2000:]
    again = _run([*arguments, "tracking.experiment=other"], workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    (record,) = _records(workdir)
    (moved,) = _runs(workdir, "other")
    (earlier,) = _runs(workdir, "g2g")
    assert record["status"] == "FINISHED" and record["experiment"] == "other" and record["run_id"] == moved.info.run_id
    assert moved.info.status == "FINISHED" and earlier.info.status == "KILLED"
    assert f"continued in MLflow run {moved.info.run_id} of experiment 'other'" == earlier.data.tags["g2g.error"]
    client = _client(workdir)
    assert [m.step for m in client.get_metric_history(moved.info.run_id, "test_accuracy")] == [1, 2]
    assert "it continues in the new run" in again.stdout + again.stderr

    linked = _run([*arguments, "tracking.experiment=third"], workdir)  # finished elsewhere: linked, said where
    assert linked.returncode == 0 and "already finished" in linked.stdout + linked.stderr
    (link,) = _runs(workdir, "third")
    assert link.info.status == "FINISHED" and link.data.tags["g2g.reused_run_id"] == moved.info.run_id
    page = subprocess.run([sys.executable, "-m", "g2g.report", "third", "--page", "third.md"], cwd=workdir,
                          capture_output=True, text=True, timeout=120, env=_env())
    assert page.returncode == 0, page.stderr[-2000:]
    assert "from 1 finished run" in (workdir / "third.md").read_text(), "the linked run is the experiment's result"


@pytest.mark.integration
def test_a_sweep_asking_fewer_epochs_than_a_finished_run_is_answered_from_its_history(workdir):
    assert _run([*TINY, "model=mixer", "train.epochs=2"], workdir).returncode == 0
    (finished,) = _runs(workdir)
    result = _run(["-m", *TINY, "model=index,mixer", "train.epochs=1"], workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "answered from its metrics after epoch 1" in result.stdout + result.stderr
    parent = [r for r in _runs(workdir) if r.data.tags.get("g2g.sweep") == "true"][-1]
    children = {next(t for t in c.data.tags["g2g.overrides"].split() if t.startswith("model=")): c
                for c in _runs(workdir)
                if c.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {k: c.info.status for k, c in children.items()} == {"model=index": "FINISHED", "model=mixer": "FINISHED"}
    answer = children["model=mixer"]
    assert answer.data.tags["g2g.answered_from_epoch"] == "1" and answer.data.tags["g2g.epochs"] == "1"
    assert answer.data.params["train.epochs"] == "1", "never pooled with the 2-epoch run"
    epoch_one = _client(workdir).get_metric_history(finished.info.run_id, "test_accuracy")[0]
    assert epoch_one.step == 1 and answer.data.metrics["test_accuracy"] == epoch_one.value
    (record,) = [r for r in _records(workdir) if r["run_id"] == finished.info.run_id]
    assert record["epochs_done"] == 2 and record["status"] == "FINISHED", "the finished run is untouched"


# ------------------------------------------------------------ signals

@pytest.mark.integration
def test_sigterm_to_the_launcher_stops_every_job_with_a_checkpoint_and_the_parent_killed(workdir):
    write_fashion_mnist(workdir / "data", num_train=3000, num_test=32)
    arguments = ["-m", "model=index,mixer", "hydra.launcher.n_jobs=2", *TINY, "train.epochs=5",
                 "train.batch_size=8"]
    sweep = subprocess.Popen([sys.executable, str(REPO_ROOT / "run.py"), *arguments], cwd=workdir, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(list((workdir / "checkpoints").glob("*/checkpoint.pth"))) < 2 and time.time() < deadline:
            time.sleep(0.2)
        sweep.send_signal(signal.SIGTERM)  # the launcher only, as `kill PID` sends it
        output, _ = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 128 + signal.SIGTERM, output[-3000:]
    checkpoints = {p: p.stat().st_mtime_ns for p in (workdir / "checkpoints").glob("*/checkpoint.pth")}
    deadline = time.time() + 30  # idle loky workers notice their launcher is gone and exit
    while _group_alive(sweep.pid):
        assert time.time() < deadline, "a worker outlived its launcher"
        time.sleep(0.5)
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints, "no worker trained on"
    runs = _runs(workdir)
    (parent,) = [r for r in runs if r.data.tags.get("g2g.sweep") == "true"]
    assert parent.info.status == "KILLED" and "SIGTERM" in parent.data.tags["g2g.error"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert {c.info.status for c in children} == {"KILLED"} and len(children) == 2
    assert all(c.data.tags["g2g.error"].startswith("stopped: stopped at global step") for c in children)
    assert {r["status"] for r in _records(workdir)} == {"KILLED"}

    again = _run([*arguments], workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {r["status"] for r in _records(workdir)} == {"FINISHED"}
    assert {c.info.run_id for c in children} == {r["run_id"] for r in _records(workdir)}, "the same runs continued"


@pytest.mark.integration
def test_a_worker_killed_hard_leaves_no_run_running_and_every_job_counted(workdir):
    """kill -9 of one joblib worker of a 3-job, 2-worker sweep: loky then stops the other
    worker too (a library limit, documented); the sweep still ends FAILED with every job
    counted (the queued one as not started), no MLflow run or record is left RUNNING, and
    the same command resumes the stopped jobs from their checkpoints."""
    write_fashion_mnist(workdir / "data", num_train=3000, num_test=32)
    arguments = ["-m", "seed=1,2,3", "hydra.launcher.n_jobs=2", *TINY, "train.epochs=3", "train.batch_size=8",
                 f"hydra.sweep.dir={workdir / 'multirun'}"]
    sweep = subprocess.Popen([sys.executable, str(REPO_ROOT / "run.py"), *arguments], cwd=workdir, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, running = time.time() + 240, []
        while time.time() < deadline and not (len(running) == 2 and _records(workdir)
                                              and list((workdir / "checkpoints").glob("*/checkpoint.pth"))):
            running = list((workdir / "multirun").glob(".g2g_running/*"))
            time.sleep(0.2)
        os.kill(int(running[0].name), signal.SIGKILL)
        output, _ = sweep.communicate(timeout=180)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
    assert sweep.returncode == 1, output[-3000:]
    runs = _runs(workdir)
    (parent,) = [r for r in runs if r.data.tags.get("g2g.sweep") == "true"]
    assert parent.info.status == "FAILED" and parent.data.metrics["sweep_jobs"] == 3
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert "RUNNING" not in {r["status"] for r in _records(workdir)}
    again = _run(arguments, workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {r["status"] for r in _records(workdir)} == {"FINISHED"} and len(_records(workdir)) == 3


@pytest.mark.integration
def test_forget_makes_a_finished_run_train_again_and_refuses_what_is_not_a_run_folder(workdir):
    assert _run(TINY, workdir).returncode == 0
    (folder,) = (workdir / "checkpoints").iterdir()
    forget = subprocess.run([sys.executable, "-m", "g2g.run", "forget", str(folder)], capture_output=True, text=True,
                            timeout=120, env=_env())
    assert forget.returncode == 0 and not folder.exists(), forget.stderr
    again = _run(TINY, workdir)
    assert again.returncode == 0 and "already finished" not in again.stdout + again.stderr
    assert [r.info.status for r in _runs(workdir)] == ["FINISHED", "FINISHED"], "trained again, in a new run"
    refused = subprocess.run([sys.executable, "-m", "g2g.run", "forget", str(workdir / "data")], capture_output=True,
                             text=True, timeout=120, env=_env())
    assert refused.returncode == 1 and "is not a run folder" in refused.stderr
    assert (workdir / "data").exists()
