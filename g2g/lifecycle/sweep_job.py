"""One job of a multirun sweep: whatever happens to it is recorded, and Ctrl-C stops the
sweep cleanly.

``run.py -m`` calls :func:`run_sweep_job` with :func:`g2g.run.job.run_job` for every
job instead of letting an error escape: one job's failure must not stop the others
(Hydra would end the whole sweep), and must not go unseen either. A job that fails
(at any stage: refused config, missing data, an error in training) or is stopped gets
the tag :data:`g2g.tracking.names.TAG_ERROR` on its MLflow run, or a FAILED/KILLED child run of
the sweep's parent when it had none (:func:`g2g.tracking.runs.record_job_outcome`); the
sweep callback (:mod:`g2g.tracking.sweep_callback`) then counts it, marks the parent and
sets the exit status.

Ctrl-C (SIGINT to the whole process group) or SIGTERM during a sweep: the launching
process ignores SIGINT and passes SIGTERM on to the running jobs
(:mod:`g2g.tracking.sweep_callback`), so joblib does not kill workers while they save;
each running job stops after its current step, saves its checkpoint and ends KILLED
(:mod:`g2g.lifecycle.signals`), and writes the stop file
(:data:`g2g.tracking.names.SWEEP_STOP_FILE`) into the sweep folder, so jobs not yet
started do not start. A second Ctrl-C stops the running jobs at once. Between jobs a
worker ignores both signals (the launcher decides).

A SLURM job (``hydra/launcher=slurm``) is different: a signal to it comes from SLURM for that
job alone (``scancel``, ``scontrol requeue``, its time limit, preemption), so it does not
stop the sweep's other jobs, and a job stopped by one leaves no result for submitit: its
run ends KILLED with a checkpoint, then SLURM decides. A requeued job runs again and
resumes into the same MLflow run (:mod:`g2g.lifecycle.signals` requeues on the time limit
or preemption); a cancelled one ends CANCELLED in SLURM, and the sweep's end counts its
KILLED run (docs/cluster.md).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from g2g.lifecycle.runtime import JobRuntime
from g2g.lifecycle.signals import StopRequest, job_signals, slurm_job
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


def request_sweep_stop(sweep_dir: Path, signal_number: int) -> None:
    """Write the stop file of the sweep in ``sweep_dir`` (jobs not yet started will not start)."""
    path = stop_file(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(signal.Signals(signal_number).name + "\n")


def _record(cfg: DictConfig, runtime: JobRuntime, status: str, reason: str) -> None:
    """Record the outcome of a job that has no run of its own (refused, or stopped before
    it had one) under the sweep's parent run; a job whose run exists was ended by its
    :class:`~g2g.lifecycle.guard.RunGuard`. Best effort: when even that fails, the sweep's
    end counts the job as one that ended without a record."""
    if runtime.parent_run_id is None:
        return
    try:
        setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
        record_job_outcome(MlflowClient(), runtime.parent_run_id, runtime.overrides, status=status, reason=reason)
    except Exception as error:  # noqa: BLE001 (the store itself may be what failed)
        log.warning("could not record this job's outcome in MLflow (%s); the sweep's end counts it", error)


def run_sweep_job(cfg: DictConfig, runtime: JobRuntime, job: Callable[[DictConfig, JobRuntime], dict]) -> dict:
    """Run one job of a sweep; never raises for a job's failure or stop, records it
    instead (see the module doc).

    Args:
        cfg: the job's composed config.
        runtime: the job's runtime (its sweep folder, parent run and overrides).
        job: runs it (with ``runtime``) and returns its summary (:func:`g2g.run.job.run_job`); called inside
            the job's signal handlers, so it imports torch there.
    Returns:
        The job's outcome, for the sweeper (a search tells its study): ``status``
        (FINISHED, PRUNED, FAILED or KILLED), ``summary`` (the run's summary:
        :func:`g2g.run.job.run_job`; empty unless FINISHED) and ``reason`` (why it did not
        finish; None when it did).
    """
    running = runtime.sweep_dir / RUNNING_FOLDER / str(os.getpid())
    running.parent.mkdir(parents=True, exist_ok=True)
    with job_signals():
        if not slurm_job():  # the launcher passes SIGTERM on to the jobs listed here (a SLURM job's
            running.touch()  # process is on another node: scancel stops it)
        try:
            return _run(cfg, runtime, job)
        finally:
            running.unlink(missing_ok=True)
            if StopRequest.received and not slurm_job():  # queued jobs do not start
                request_sweep_stop(runtime.sweep_dir, StopRequest.received[0])
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # an idle worker: the launcher decides


def _outcome(status: str, summary: dict | None = None, reason: str | None = None) -> dict:
    return {"status": status, "summary": summary or {}, "reason": reason}


def _run(cfg: DictConfig, runtime: JobRuntime, job: Callable[[DictConfig, JobRuntime], dict]) -> dict:
    if stop_file(runtime.sweep_dir).exists():
        log.warning("%s", NOT_STARTED)
        _record(cfg, runtime, "KILLED", NOT_STARTED)
        return _outcome("KILLED", reason=NOT_STARTED)
    from g2g.lifecycle.errors import USER_ERRORS, user_message  # torch
    from g2g.lifecycle.guard import RunPruned, describe

    try:
        summary = job(cfg, runtime)
    except KeyboardInterrupt as stop:  # also g2g.lifecycle.signals.TrainingInterrupted (checkpoint saved)
        StopRequest.received = StopRequest.received or [getattr(stop, "signal_number", signal.SIGINT)]
        log.warning("job %s", describe(stop))  # "job stopped: ..."
        _record(cfg, runtime, "KILLED", describe(stop))
        if slurm_job():  # no result for submitit: SLURM requeues the job or has cancelled it
            raise
        return _outcome("KILLED", reason=describe(stop))
    except RunPruned as pruned:  # its guard ended the run PRUNED: not a failure
        log.info("%s", describe(pruned))
        return _outcome("PRUNED", reason=describe(pruned))
    except Exception as error:
        overrides = " ".join(runtime.overrides)
        message = user_message(error)
        if message is not None:  # its message says what to do: no traceback
            log.error("job failed: %s: %s", overrides, message)
        else:
            log.exception("job failed: %s", overrides)
        reason = (describe(error) if message is None or isinstance(error, USER_ERRORS)
                  else f"{type(error).__name__}: {message}")
        _record(cfg, runtime, "FAILED", reason)
        return _outcome("FAILED", reason=reason)
    return _outcome("FINISHED", summary)
