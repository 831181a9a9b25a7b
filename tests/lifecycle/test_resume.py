"""Resume keeps every record: after any interrupt and resume (a signal mid-epoch or at an
epoch's end, a crash, a deleted MLflow run, a finished run extended to more epochs)
every metric series of the run equals the uninterrupted run's, step for step; a job
killed hard leaves nothing RUNNING and no temporary file behind once it starts again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, compose_config, metric_histories, write_fashion_mnist
from g2g.lifecycle import checkpoint as ckpt
from g2g.lifecycle.signals import TrainingInterrupted
from g2g.run.job import run_job
from g2g.sparse.dst import DynamicSparsity

# 64 training examples in batches of 16: 4 steps per epoch; DST updates at steps 3, 6, 9, 12
DST_RUN = ["model=mixer", "sparsity=dynamic", "sparsity.update_interval=3", "sparsity.prune=set",
           "sparsity.grow=random", "train.epochs=3"]


def _client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")




def _stop_at_step(monkeypatch, step: int, how) -> None:
    """Make the DST step callback call ``how()`` right after global step ``step``."""
    real_call = DynamicSparsity.__call__

    def call(self, global_step, output, inputs):
        changed = real_call(self, global_step, output, inputs)
        if global_step == step:
            how()
        return changed

    monkeypatch.setattr(DynamicSparsity, "__call__", call)


def _sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _crash() -> None:
    raise RuntimeError("injected crash (no checkpoint written)")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The metric histories of the uninterrupted 3-epoch DST run."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    write_fashion_mnist(tmp_path / "data")
    summary = run_job(compose_config(DST_RUN, tmp_path))
    return metric_histories(_client(tmp_path), summary["run_id"])


@pytest.mark.parametrize("interruption", ["sigterm_mid_epoch", "sigterm_at_epoch_end", "crash_mid_epoch",
                                          "run_deleted_after_sigterm", "finished_run_extended"])
@pytest.mark.integration
def test_every_metric_series_equals_the_uninterrupted_runs_after_an_interrupt_and_resume(
    tmp_path, tiny_data_root, monkeypatch, uninterrupted, interruption
):
    client = _client(tmp_path)
    if interruption == "finished_run_extended":
        first = run_job(compose_config([*DST_RUN, "train.epochs=2"], tmp_path))
        interrupted_id = first["run_id"]
        assert client.get_run(interrupted_id).info.status == "FINISHED"
    else:
        how = _crash if interruption == "crash_mid_epoch" else _sigterm
        _stop_at_step(monkeypatch, 8 if interruption == "sigterm_at_epoch_end" else 7, how)
        with pytest.raises((TrainingInterrupted, RuntimeError)):
            run_job(compose_config(DST_RUN, tmp_path))
        monkeypatch.undo()
        (interrupted,) = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
        interrupted_id = interrupted.info.run_id
        if interruption == "run_deleted_after_sigterm":
            client.delete_run(interrupted_id)

    summary = run_job(compose_config(DST_RUN, tmp_path))

    assert summary["epoch"] == 3
    if interruption == "run_deleted_after_sigterm":
        assert summary["run_id"] != interrupted_id
        resumed = client.get_run(summary["run_id"])
        assert resumed.data.params["sparsity.update_interval"] == "3"
        assert resumed.data.tags["g2g.config_hash"] == ckpt.config_hash(compose_config(DST_RUN, tmp_path))
        assert "config.yaml" in [a.path for a in client.list_artifacts(summary["run_id"])]
    else:
        assert summary["run_id"] == interrupted_id
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"
    got = metric_histories(client, summary["run_id"])
    assert sorted(got) == sorted(uninterrupted)
    for key in uninterrupted:
        assert got[key] == uninterrupted[key], key
    assert [step for step, _ in got["dst_fc1_pruned"]] == [3, 6, 9, 12]


# ------------------------------------------------------------ extending a finished run

def test_the_epoch_count_is_not_in_the_config_hash_unless_a_regulariser_schedules_over_it():
    one, two = compose_config(["train.epochs=1"]), compose_config(["train.epochs=2"])
    assert ckpt.config_hash(one) == ckpt.config_hash(two)
    crossval = [compose_config(["protocol=crossval", f"protocol.epochs={n}"]) for n in (1, 2)]
    assert ckpt.config_hash(crossval[0]) == ckpt.config_hash(crossval[1])
    regularized = [compose_config(["regularizer=firing_rate", f"train.epochs={n}"]) for n in (1, 2)]
    assert ckpt.config_hash(regularized[0]) != ckpt.config_hash(regularized[1])


@pytest.mark.parametrize("schedule, in_hash", [
    ([], False), (["sparsity.stop_fraction=1.0", "sparsity.fraction_schedule=constant"], False),
    (["sparsity.stop_fraction=0.75"], True), (["sparsity.fraction_schedule=cosine"], True),
])
def test_the_epoch_count_is_in_the_config_hash_when_the_dst_schedule_spans_the_run(schedule, in_hash):
    one, two = (compose_config(["model=mixer", "sparsity=dynamic", *schedule, f"train.epochs={n}"]) for n in (1, 2))
    assert ckpt.epochs_in_hash(one) is in_hash
    assert (ckpt.config_hash(one) != ckpt.config_hash(two)) is in_hash
    assert ckpt.epoch_dependent_schedules(one) == (schedule if in_hash else [])


def test_a_run_asked_for_fewer_epochs_than_a_finished_one_is_answered_from_its_history(tmp_path, tiny_data_root,
                                                                                        caplog):
    finished = run_job(compose_config(["model=index", "train.epochs=2"], tmp_path))
    caplog.set_level("INFO", logger="g2g")
    answer = run_job(compose_config(["model=index", "train.epochs=1"], tmp_path))
    epoch_one = _client(tmp_path).get_metric_history(finished["run_id"], "test_accuracy")[0]
    assert answer["skipped"] and answer["answered_from_epoch"] == 1 and answer["run_id"] == finished["run_id"]
    assert answer["test_accuracy"] == epoch_one.value and epoch_one.step == 1
    assert "answered from its metrics after epoch 1" in caplog.text


def test_a_checkpoint_further_than_the_epochs_asked_for_answers_from_its_history(tmp_path, tiny_data_root,
                                                                                 monkeypatch):
    _stop_at_step(monkeypatch, 6, _sigterm)  # in epoch 2 of 3
    with pytest.raises(TrainingInterrupted):
        run_job(compose_config(DST_RUN, tmp_path))
    monkeypatch.undo()
    record = ckpt.run_record(compose_config(DST_RUN, tmp_path), tmp_path / "checkpoints")
    assert record.status == "KILLED" and record.epochs_done == 1 and record.state["mid_epoch"]
    answer = run_job(compose_config([*DST_RUN, "train.epochs=1"], tmp_path))
    assert answer["answered_from_epoch"] == 1 and answer["test_accuracy"] == record.history[0]["test_accuracy"]
    assert ckpt.run_record(compose_config(DST_RUN, tmp_path), tmp_path / "checkpoints").status == "KILLED"


@pytest.mark.integration
def test_extending_a_cross_validation_continues_every_fold_in_the_same_runs(tmp_path, tiny_data_root):
    client = _client(tmp_path)
    crossval = ["model=index", "protocol=crossval", "protocol.k_folds=2"]
    first = run_job(compose_config([*crossval, "protocol.epochs=1"], tmp_path))
    runs_before = {r.info.run_id for r in client.search_runs([client.get_experiment_by_name("g2g").experiment_id])}
    extended = run_job(compose_config([*crossval, "protocol.epochs=2"], tmp_path))
    assert extended["run_id"] == first["run_id"] and not extended["skipped"]
    runs = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    assert {r.info.run_id for r in runs} == runs_before, "no new run: the folds continued"
    for run in runs:
        if "g2g.fold" in run.data.tags:
            assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
        assert run.data.tags["g2g.epochs"] == "2" and run.info.status == "FINISHED"


# ------------------------------------------------------------ a job killed hard

def test_a_run_killed_before_its_first_checkpoint_is_marked_killed_at_the_next_start(
    tmp_path, tiny_data_root, monkeypatch, caplog
):
    cfg = compose_config(["model=index", "train.epochs=1"], tmp_path)
    record = ckpt.run_record(cfg, cfg.checkpoint.dir)
    # what SIGKILL in epoch 1 leaves: the run RUNNING, its record RUNNING, a torn temporary file
    from g2g.tracking.store import setup_experiment

    experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    client = _client(tmp_path)
    orphan = client.create_run(experiment_id).info.run_id
    record.start(run_id=orphan, tracking_uri=cfg.tracking.uri, experiment="g2g", experiment_id=experiment_id,
                 parent_run_id=None, epochs=1)
    stale = record.checkpoint.with_name(f".{record.checkpoint.name}.k1ll3d.tmp")
    stale.write_bytes(b"torn")
    caplog.set_level("WARNING", logger="g2g")

    summary = run_job(cfg)

    assert client.get_run(orphan).info.status == "KILLED"
    assert f"MLflow run {orphan}" in caplog.text and "marked KILLED" in caplog.text
    assert client.get_run(summary["run_id"]).info.status == "FINISHED" and summary["run_id"] != orphan
    assert not stale.exists()


def test_a_run_resumed_inside_a_sweep_is_listed_by_the_new_sweep_parent(tmp_path, tiny_data_root, monkeypatch):
    cfg = compose_config(DST_RUN, tmp_path)
    _stop_at_step(monkeypatch, 7, _sigterm)
    with pytest.raises(TrainingInterrupted):
        run_job(cfg)
    monkeypatch.undo()
    client = _client(tmp_path)
    new_parent = client.create_run(client.get_experiment_by_name("g2g").experiment_id).info.run_id
    from g2g.lifecycle.runtime import JobRuntime

    runtime = JobRuntime(parent_run_id=new_parent, overrides=["model=mixer"], sweep_dir=tmp_path / "sweep")
    summary = run_job(cfg, runtime)
    tags = client.get_run(summary["run_id"]).data.tags
    assert tags["mlflow.parentRunId"] == new_parent and tags["g2g.overrides"] == "model=mixer"


@pytest.mark.integration
def test_sigkill_mid_epoch_then_the_same_command_marks_the_run_killed_and_resumes_it(tmp_path):
    data_root = tmp_path / "data"
    write_fashion_mnist(data_root, num_train=4000, num_test=200)
    command = [sys.executable, str(REPO_ROOT / "run.py"), "model=index", "encoder=rate", "model.hidden_dim=64",
               "encoder.num_steps=8", "train.epochs=2", "train.batch_size=8", "train.progress=false",
               "hardware=cpu", "hardware.num_threads=1", "dataset.download=false", f"dataset.root={data_root}",
               f"hydra.run.dir={tmp_path / 'outputs'}"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if "epoch 1/2:" in line:
            time.sleep(0.5)
            process.kill()  # SIGKILL: no handler, no clean-up
            break
    process.wait(timeout=60)
    (checkpoint,) = (tmp_path / "checkpoints").glob("*/checkpoint.pth")
    stale = checkpoint.with_name(f".{checkpoint.name}.k1ll3d.tmp")
    stale.write_bytes(b"torn")  # as a kill during a save leaves it
    client = _client(tmp_path)
    (killed,) = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    assert killed.info.status == "RUNNING"

    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    output = resumed.stdout + resumed.stderr
    assert f"MLflow run {killed.info.run_id}" in output and "marked KILLED" in output
    assert "resuming" in output and not stale.exists()
    (run,) = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_accuracy")] == [1, 2]


def test_a_damaged_run_record_is_reported_and_the_run_it_lost_is_still_closed(tmp_path, tiny_data_root, caplog):
    """Killed hard before its first checkpoint, with its record torn: the next start says
    the record is damaged, finds the run left RUNNING by its checkpoint tag and closes it."""
    from g2g.tracking.names import TAG_CHECKPOINT
    from g2g.tracking.store import setup_experiment

    cfg = compose_config(["model=index", "train.epochs=1"], tmp_path)
    record = ckpt.run_record(cfg, cfg.checkpoint.dir)
    experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    client = _client(tmp_path)
    orphan = client.create_run(experiment_id, tags={TAG_CHECKPOINT: str(record.checkpoint.resolve())}).info.run_id
    record.folder.mkdir(parents=True)
    record.path.write_text('{"status": "RUNNING", "run_')  # torn
    caplog.set_level("WARNING", logger="g2g")

    summary = run_job(cfg)

    assert "is damaged" in caplog.text and str(record.path) in caplog.text
    assert client.get_run(orphan).info.status == "KILLED"
    assert "killed hard" in client.get_run(orphan).data.tags["g2g.error"]
    assert client.get_run(summary["run_id"]).info.status == "FINISHED" and summary["run_id"] != orphan
    assert record.read().status == "FINISHED" and record.run_id == summary["run_id"]
