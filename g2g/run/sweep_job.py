"""One job of a multirun sweep: whatever happens to it is recorded, and Ctrl-C stops the
sweep cleanly.

``run.py -m`` calls :func:`run_sweep_job` for every job instead of letting an error
escape: one job's failure must not stop the others (Hydra would end the whole sweep),
and must not go unseen either. A job that fails (at any stage: refused config, missing
data, an error in training) or is stopped gets the tag
:data:`g2g.tracking.names.TAG_ERROR` on its MLflow run, or a FAILED/KILLED child run of
the sweep's parent when it had none (:func:`g2g.tracking.runs.record_job_outcome`); the
sweep callback (:mod:`g2g.tracking.sweep_callback`) then counts it, marks the parent and
sets the exit status.

Ctrl-C (SIGINT to the whole process group) or SIGTERM during a sweep: the launching
process ignores SIGINT and passes SIGTERM on to the running jobs
(:mod:`g2g.tracking.sweep_callback`), so joblib does not kill workers while they save;
each running job stops after its current step, saves its checkpoint and ends KILLED
(:mod:`g2g.run.signals`), and writes the stop file
(:data:`g2g.tracking.names.SWEEP_STOP_FILE`) into the sweep folder, so jobs not yet
started do not start. A second Ctrl-C stops the running jobs at once. Between jobs a
worker ignores both signals (the launcher decides).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from g2g.run.hydra_runtime import sweep_context
from g2g.run.signals import StopRequest, job_signals
from g2g.tracking.names import RUNNING_FOLDER, SWEEP_STOP_FILE
from g2g.tracking.runs import record_job_outcome
from g2g.tracking.store import setup_experiment

log = logging.getLogger(__name__)

#: the reason recorded for a job that did not start because the sweep was interrupted
NOT_STARTED = "not started: the sweep was stopped; run the same command to continue"


def stop_file(sweep_dir: str | Path) -> Path:
    """The file whose presence in ``sweep_dir`` means the sweep was stopped (it holds the
    signal's name)."""
    return Path(sweep_dir) / SWEEP_STOP_FILE


def _this_sweep_stop_file() -> Path:
    return stop_file(HydraConfig.get().sweep.dir)


def request_sweep_stop(signal_number: int) -> None:
    """Write the stop file of the running job's sweep (jobs not yet started will not start)."""
    path = _this_sweep_stop_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(signal.Signals(signal_number).name + "\n")


def _record(cfg: DictConfig, status: str, reason: str) -> None:
    """Record the outcome of a job that has no run of its own (refused, or stopped before
    it had one) under the sweep's parent run; a job whose run exists was ended by its
    :class:`~g2g.run.guard.RunGuard`. Best effort: when even that fails, the sweep's
    end counts the job as one that ended without a record."""
    parent_run_id, overrides = sweep_context()
    if parent_run_id is None:
        return
    try:
        setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
        record_job_outcome(MlflowClient(), parent_run_id, overrides, status=status, reason=reason)
    except Exception as error:  # the store itself may be what failed
        log.warning("could not record this job's outcome in MLflow (%s); the sweep's end counts it", error)


def run_sweep_job(cfg: DictConfig) -> float | None:
    """Run one job of a sweep (:func:`g2g.run.job.run_job`); never raises for a job's
    failure or stop, records it instead (see the module doc).

    Returns:
        The job's test accuracy (or cross-validation mean), None when it did not finish.
    """
    running = Path(HydraConfig.get().sweep.dir) / RUNNING_FOLDER / str(os.getpid())
    running.parent.mkdir(parents=True, exist_ok=True)
    with job_signals():
        running.touch()  # the launcher passes SIGTERM on to the jobs listed here
        try:
            return _run(cfg)
        finally:
            running.unlink(missing_ok=True)
            if StopRequest.received:  # queued jobs do not start
                request_sweep_stop(StopRequest.received[0])
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # an idle worker: the launcher decides


def _run(cfg: DictConfig) -> float | None:
    if _this_sweep_stop_file().exists():
        log.warning("%s", NOT_STARTED)
        _record(cfg, "KILLED", NOT_STARTED)
        return None
    from g2g.run.errors import USER_ERRORS, user_message  # noqa: PLC0415 (torch)
    from g2g.run.guard import describe  # noqa: PLC0415
    from g2g.run.job import run_job  # noqa: PLC0415 (torch: inside the handler's scope)

    try:
        summary = run_job(cfg)
    except KeyboardInterrupt as stop:  # also g2g.run.signals.TrainingInterrupted (checkpoint saved)
        StopRequest.received = StopRequest.received or [getattr(stop, "signal_number", signal.SIGINT)]
        log.warning("job stopped: %s", describe(stop))
        _record(cfg, "KILLED", describe(stop))
        return None
    except Exception as error:
        job = " ".join(HydraConfig.get().overrides.task)
        message = user_message(error)
        if message is not None:  # its message says what to do: no traceback
            log.error("job failed: %s: %s", job, message)
        else:
            log.exception("job failed: %s", job)
        _record(cfg, "FAILED", describe(error) if message is None or isinstance(error, USER_ERRORS)
                else f"{type(error).__name__}: {message}")
        return None
    return summary.get("test_accuracy", summary.get("cv_val_accuracy_mean"))
