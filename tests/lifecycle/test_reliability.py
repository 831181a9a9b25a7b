"""Fault injection: signals, corrupt or foreign checkpoints, NaN losses, tracking
failures and concurrent starts. Each test asserts that nothing already saved is lost."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, compose_config, write_fashion_mnist
from g2g.build.objects import build
from g2g.data.datasets import DataSplits
from g2g.lifecycle import checkpoint as ckpt
from g2g.lifecycle.lock import ExperimentLock, ExperimentLockedError
from g2g.lifecycle.record import RunRecord
from g2g.run.job import run_job
from g2g.tracking.store import TrackingUnavailableError
from g2g.training.trainer import EpochInterrupted, NonFiniteLossError

# long enough epochs (500 steps, seconds) that a signal lands in the middle of one
SLOW = ["model=mixer", "encoder=rate", "model.hidden_dim=64", "encoder.num_steps=8", "train.epochs=2",
        "train.batch_size=8", "train.eval_batch_size=500", "train.progress=false", "hardware=cpu",
        "hardware.num_threads=1", "dataset.download=false"]


def _command(workdir: Path, data_root: Path, extra=()) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "run.py"), *SLOW, f"dataset.root={data_root}",
            f"hydra.run.dir={workdir / 'outputs'}", *extra]


def _env():
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="module")
def big_data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_fashion_mnist(root, num_train=4000, num_test=200)
    return root


def _final_state(workdir: Path) -> dict:
    (path,) = (workdir / "checkpoints").glob("*/checkpoint.pth")
    return torch.load(path, weights_only=True)


@pytest.mark.integration
def test_sigterm_mid_epoch_saves_and_the_same_command_resumes_to_the_same_weights(tmp_path, big_data_root):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir()
    done = subprocess.run(_command(straight, big_data_root), cwd=straight, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    process = subprocess.Popen(_command(interrupted, big_data_root), cwd=interrupted, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:  # wait until epoch 1 is done, then stop in the middle of epoch 2
        lines.append(line)
        if "epoch 1/2:" in line:
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            break
    output = "".join(lines) + process.stdout.read()
    assert process.wait(timeout=300) == 128 + signal.SIGTERM, output[-2000:]
    assert "SIGTERM received" in output and "interrupted:" in output
    state = _final_state(interrupted)
    assert state["epoch"] == 1 and state["epoch_progress"] is not None, "checkpoint taken mid-epoch"
    client = MlflowClient(f"sqlite:///{interrupted / 'mlflow.db'}")
    (killed,) = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    assert killed.info.status == "KILLED"

    resumed = subprocess.run(_command(interrupted, big_data_root), cwd=interrupted, env=_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "and step" in resumed.stdout + resumed.stderr  # resumed inside the epoch
    expected, got = _final_state(straight), _final_state(interrupted)
    for key, value in expected["model"].items():
        assert torch.equal(value, got["model"][key]), key
    drop_time = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_time_s")} for r in rows]  # noqa: E731
    assert drop_time(expected["history"]) == drop_time(got["history"])
    assert client.get_run(killed.info.run_id).info.status == "FINISHED"


def test_checkpoint_of_another_config_is_refused_listing_the_differences(tmp_path, tiny_data_root):
    first = compose_config(["model=index", "train.epochs=1"], tmp_path)
    run_job(first)
    other = compose_config(["model=index", "train.epochs=1", "train.lr=0.01"], tmp_path)
    source = ckpt.run_record(first, first.checkpoint.dir).checkpoint
    target = ckpt.run_record(other, other.checkpoint.dir).checkpoint
    target.parent.mkdir(parents=True)
    target.write_bytes(source.read_bytes())  # e.g. a file copied or renamed by hand
    with pytest.raises(ckpt.CheckpointError, match=r"(?s)train\.lr: 0\.0005 in the checkpoint, 0\.01 now"):
        run_job(other)
    assert target.exists()


def test_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_data_root, monkeypatch):
    import g2g.training.trainer

    cfg = compose_config(["model=index", "train.epochs=3"], tmp_path)
    real_cross_entropy = g2g.training.trainer.F.cross_entropy
    calls = {"n": 0}

    def nan_in_epoch_two(*args, **kwargs):
        loss = real_cross_entropy(*args, **kwargs)
        if "reduction" in kwargs:  # evaluation
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == 6 else loss  # 4 training steps per epoch

    monkeypatch.setattr(g2g.training.trainer.F, "cross_entropy", nan_in_epoch_two)
    with pytest.raises(NonFiniteLossError, match="the training loss became NaN at global step 6"):
        run_job(cfg)
    monkeypatch.undo()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (failed,) = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    assert failed.info.status == "FAILED"
    path = ckpt.run_record(cfg, cfg.checkpoint.dir).checkpoint
    state = ckpt.load_checkpoint(path, ckpt.config_hash(cfg))
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_unreachable_tracking_server_is_reported_before_training(tmp_path, tiny_data_root):
    cfg = compose_config(["model=index", "tracking.uri=http://127.0.0.1:9"], tmp_path)
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match="http://127.0.0.1:9.*does not answer"):
        run_job(cfg)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "checkpoints").exists()


def _store_fails(monkeypatch, failing_calls) -> None:
    """Make the store's batch writes (every metric, and the config's params) raise
    "database is locked" on the calls (1-based) that ``failing_calls(n)`` selects."""
    real_log_batch = MlflowClient.log_batch
    calls = {"n": 0}

    def log_batch(self, *args, **kwargs):
        calls["n"] += 1
        if failing_calls(calls["n"]):
            raise mlflow.exceptions.MlflowException("database is locked (injected)")
        return real_log_batch(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    monkeypatch.setattr("g2g.tracking.run_logger.RETRY_DELAYS_S", (0.01, 0.01), raising=False)


@pytest.mark.integration
@pytest.mark.parametrize("failures", [2, 4])
def test_a_transient_store_failure_is_retried_and_nothing_is_lost(tmp_path, tiny_data_root, monkeypatch, caplog,
                                                                   failures):
    # call 1: the config's params, 2: model sizes (step 0), 3: epoch 1; then `failures` calls fail:
    # 2 are absorbed by the retries, 4 outlast them (epoch 2 goes to the fallback file, epoch 3
    # is logged again) and the fallback is logged when the run ends
    cfg = compose_config(["model=index", "train.epochs=3"], tmp_path)
    _store_fails(monkeypatch, lambda n: 4 <= n < 4 + failures)
    caplog.set_level("INFO", logger="g2g")
    summary = run_job(cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(summary["run_id"], "test_accuracy")] == [1, 2, 3]
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"
    assert not list(tmp_path.rglob("mlflow_fallback.jsonl"))
    assert caplog.text.count("after 3 tries") == (failures > 2)
    assert ("answers again" in caplog.text) == (failures > 2)


@pytest.mark.integration
def test_tracking_failure_mid_run_keeps_training_and_metrics_can_be_relogged(
    tmp_path, tiny_data_root, monkeypatch, caplog
):
    cfg = compose_config(["model=index", "train.epochs=3"], tmp_path)
    _store_fails(monkeypatch, lambda n: n > 3)  # down for good after epoch 1
    caplog.set_level("WARNING", logger="g2g")
    summary = run_job(cfg)
    monkeypatch.undo()
    assert summary["epoch"] == 3 and RunRecord(Path(summary["checkpoint"]).parent).read().status == "FINISHED"
    assert caplog.text.count("after 3 tries") == 1, "the failure is reported once"
    assert "the MLflow store still fails: log" in caplog.text
    (fallback,) = (tmp_path / "checkpoints").glob("*/mlflow_fallback.jsonl")
    entries = [json.loads(line) for line in fallback.read_text().splitlines()]
    assert [e["step"] for e in entries if e["kind"] == "metrics"] == [2, 3]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(summary["run_id"], "test_accuracy")] == [1]
    result = subprocess.run([sys.executable, "-m", "g2g.tracking", "relog", str(fallback)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [m.step for m in client.get_metric_history(summary["run_id"], "test_accuracy")] == [1, 2, 3]
    assert not fallback.exists() and fallback.with_suffix(".jsonl.relogged").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoints_and_markers_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        ckpt.save_checkpoint({"epoch": 1}, tmp_path / "x.pth")
        RunRecord(tmp_path / "run").end("FAILED", error="x")
    finally:
        os.umask(previous)
    for name in ("x.pth", "run/record.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not list(tmp_path.glob(".*.tmp"))


def test_lock_refuses_a_second_holder_and_is_released_when_the_owner_dies(tmp_path):
    path = tmp_path / "x.lock"
    with ExperimentLock(path):
        holder = subprocess.run(
            [sys.executable, "-c", "from g2g.lifecycle.lock import ExperimentLock\nimport sys\n"
             "try:\n    ExperimentLock(sys.argv[1]).__enter__()\nexcept Exception as e:\n    print(e)",
             str(path)], capture_output=True, text=True, timeout=60)
        assert f"being trained by pid {os.getpid()}" in holder.stdout
    # a process that dies holding the lock (SIGKILL: no clean-up) does not leave it stuck
    dead = subprocess.Popen([sys.executable, "-c", "from g2g.lifecycle.lock import ExperimentLock\nimport sys, time\n"
                             "lock = ExperimentLock(sys.argv[1])\nlock.__enter__()\nprint('locked', flush=True)\n"
                             "time.sleep(60)", str(path)], stdout=subprocess.PIPE, text=True)
    assert dead.stdout.readline().strip() == "locked"
    with pytest.raises(ExperimentLockedError):
        ExperimentLock(path).__enter__()
    dead.kill()
    dead.wait()
    with ExperimentLock(path):
        pass


@pytest.mark.integration
def test_two_concurrent_starts_train_the_experiment_once(tmp_path, big_data_root):
    commands = [_command(tmp_path, big_data_root, [f"hydra.run.dir={tmp_path / f'out{i}'}"]) for i in (1, 2)]
    processes = [subprocess.Popen(c, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for c in commands]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    codes = sorted(p.returncode for p in processes)
    assert codes[0] == 0 and codes[1] != 0, outputs
    assert sum("error: this experiment is already being trained by pid" in out for out in outputs) == 1
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("g2g").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED"]


# ------------------------------------------------- trainer state round trip

DST_TRAINER = ["model=mixer", "sparsity=dynamic", "sparsity.update_interval=3", "sparsity.prune=set",
               "sparsity.grow=random", "encoder=current"]


def _trainer(seed: int):
    """A trainer with DST built from the real config, on 96 random examples of
    the Fashion-MNIST shape; ``seed`` sets the initial weights and masks."""
    cfg = compose_config(DST_TRAINER + [f"seed={seed}"])
    generator = torch.Generator().manual_seed(0)
    data = DataSplits(torch.rand(96, 784, generator=generator), torch.randint(0, 10, (96,), generator=generator),
                      torch.rand(32, 784, generator=generator), torch.randint(0, 10, (32,), generator=generator),
                      [str(label) for label in range(10)])
    torch.manual_seed(seed)
    return build(cfg, data, torch.device("cpu")).trainer, data


def _saved_and_loaded(state: dict) -> dict:
    """``state`` after a round trip through torch.save / torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_same_state(expected: dict, got: dict, where: str = "") -> None:
    assert type(expected) is type(got), where
    if isinstance(expected, dict):
        assert expected.keys() == got.keys(), where
        for key in expected:
            _assert_same_state(expected[key], got[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(expected) == len(got), where
        for index, (a, b) in enumerate(zip(expected, got)):
            _assert_same_state(a, b, f"{where}[{index}]")
    elif torch.is_tensor(expected):
        assert torch.equal(expected, got), where
    else:
        assert expected == got, where


def test_trainer_loaded_from_its_state_dict_continues_exactly_like_the_uninterrupted_one():
    trainer, data = _trainer(seed=1)
    trainer.train_epoch(data.train_x, data.train_y)
    saved = _saved_and_loaded(trainer.state_dict())
    uninterrupted = trainer.train_epoch(data.train_x, data.train_y)

    resumed, _ = _trainer(seed=2)  # other initial weights and masks: all must come from the state
    resumed.load_state_dict(saved)
    continued = resumed.train_epoch(data.train_x, data.train_y)

    drop_time = lambda metrics: {k: v for k, v in metrics.items() if k != "epoch_time_s"}  # noqa: E731
    assert drop_time(continued) == drop_time(uninterrupted)
    assert resumed.global_step == trainer.global_step == 12
    assert len(trainer.sparsity.records) > 0, "the DST rewired in between"
    _assert_same_state(trainer.state_dict(), resumed.state_dict())


def test_trainer_state_with_an_interrupted_epoch_resumes_the_epoch_exactly():
    trainer, data = _trainer(seed=1)
    uninterrupted = trainer.train_epoch(data.train_x, data.train_y)

    stopped, _ = _trainer(seed=1)
    stopped.stop_requested = True
    with pytest.raises(EpochInterrupted) as stop:
        stopped.train_epoch(data.train_x, data.train_y)
    saved, progress = _saved_and_loaded((stopped.state_dict(), stop.value.progress))
    resumed, _ = _trainer(seed=2)
    resumed.load_state_dict(saved)
    continued = resumed.train_epoch(data.train_x, data.train_y, resume=progress)

    drop_time = lambda metrics: {k: v for k, v in metrics.items() if k != "epoch_time_s"}  # noqa: E731
    assert drop_time(continued) == drop_time(uninterrupted)
    _assert_same_state(trainer.state_dict(), resumed.state_dict())


def test_checkpoint_file_keeps_its_keys_and_gives_the_trainer_state_back(tmp_path):
    trainer, data = _trainer(seed=1)
    trainer.train_epoch(data.train_x, data.train_y)
    state = trainer.state_dict()
    writer = ckpt.CheckpointWriter(tmp_path / "x.pth", "abc12345", {"seed": 1}, "run-id")
    writer.save(state, {"torch": torch.get_rng_state()}, epoch=1, epoch_progress=None, history=[{"epoch": 1}])
    written = ckpt.load_checkpoint(tmp_path / "x.pth", "abc12345")
    assert list(written) == ["config_hash", "config", "epoch", "epoch_progress", "global_step", "model",
                             "optimizer", "rng", "shuffle_rng", "history", "mlflow_run_id", "sparsity",
                             "logged_updates", "device", "precision", "scaler"]
    assert written["global_step"] == 6 and written["epoch"] == 1 and written["mlflow_run_id"] == "run-id"
    _assert_same_state(state["step_callbacks"][0], written["sparsity"])
    _assert_same_state(state, ckpt.trainer_state(written))


def test_a_checkpoint_loaded_for_another_device_restores_the_random_generator_states(tmp_path):
    from g2g.build.random_streams import rng_state, set_rng_state

    trainer, data = _trainer(seed=1)
    trainer.train_epoch(data.train_x, data.train_y)
    writer = ckpt.CheckpointWriter(tmp_path / "x.pth", "abc12345", {"seed": 1}, "run-id", device="meta")
    writer.save(trainer.state_dict(), rng_state(), epoch=1, epoch_progress=None, history=[])
    expected = torch.rand(3)

    state = ckpt.load_checkpoint(tmp_path / "x.pth", "abc12345", device="meta")  # stands in for a GPU
    assert next(iter(state["model"].values())).device.type == "meta"
    set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected)
    for generator_state in (state["shuffle_rng"], state["sparsity"]["generator"]):
        torch.Generator().set_state(generator_state)
