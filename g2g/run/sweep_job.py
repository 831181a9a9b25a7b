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

Ctrl-C (SIGINT to the whole process group) during a sweep: the launching process
ignores it, so joblib does not kill workers while they save; each running job stops
after its current step, saves its checkpoint and ends KILLED
(:mod:`g2g.run.signals`), and writes the stop file
(:data:`g2g.tracking.names.SWEEP_STOP_FILE`) into the sweep folder, so jobs not yet
started do not start. A second Ctrl-C stops the running jobs at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from g2g.run.hydra_runtime import sweep_context
from g2g.tracking.names import SWEEP_STOP_FILE
from g2g.tracking.runs import record_job_outcome
from g2g.tracking.store import setup_experiment

log = logging.getLogger(__name__)

#: the reason recorded for a job that did not start because the sweep was interrupted
NOT_STARTED = "not started: the sweep was interrupted (Ctrl-C); run the same command to continue"


def stop_file(sweep_dir: str | Path) -> Path:
    """The file whose presence in ``sweep_dir`` means the sweep was interrupted."""
    return Path(sweep_dir) / SWEEP_STOP_FILE


def _this_sweep_stop_file() -> Path:
    return stop_file(HydraConfig.get().sweep.dir)


def request_sweep_stop(reason: str) -> None:
    """Write the stop file of the running job's sweep (jobs not yet started will not start)."""
    path = _this_sweep_stop_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reason + "\n")


@contextlib.contextmanager
def interrupts_stop_the_sweep() -> Iterator[None]:
    """While a sweep job runs, SIGINT writes the sweep's stop file and raises
    KeyboardInterrupt (inside training, :func:`g2g.run.signals.stop_on_signals` handles it
    first: it stops after the current step and saves). On exit the previous handler comes
    back: an idle joblib worker ignores SIGINT (inherited from the launching process), so
    it never dies between jobs. Only in the main thread; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signal_number, frame):
        request_sweep_stop("SIGINT")
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _record(cfg: DictConfig, status: str, reason: str) -> None:
    """Record the job's outcome under the sweep's parent run (best effort: when even that
    fails, the sweep callback records the job as one that ended without a record)."""
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
    failure or interruption, records it instead (see the module doc).

    Returns:
        The job's test accuracy (or cross-validation mean), None when it did not finish.
    """
    with interrupts_stop_the_sweep():
        if _this_sweep_stop_file().exists():
            log.warning("%s", NOT_STARTED)
            _record(cfg, "KILLED", NOT_STARTED)
            return None
        try:
            from g2g.run.job import run_job  # noqa: PLC0415 (torch: inside the handler's scope)

            summary = run_job(cfg)
        except KeyboardInterrupt as stop:  # also g2g.run.signals.TrainingInterrupted (checkpoint saved)
            if getattr(stop, "signal_number", signal.SIGINT) == signal.SIGINT:
                request_sweep_stop("SIGINT")
            reason = str(stop) or "interrupted at once (SIGINT); it resumes from its last checkpoint, if it has one"
            log.warning("job stopped: %s", reason)
            _record(cfg, "KILLED", f"stopped: {reason}")
            return None
        except Exception as error:
            from g2g.run.errors import USER_ERRORS  # noqa: PLC0415 (torch)

            job = " ".join(HydraConfig.get().overrides.task)
            if isinstance(error, USER_ERRORS):  # its message says what to do: no traceback
                log.error("job failed: %s: %s", job, error)
            else:
                log.exception("job failed: %s", job)
            _record(cfg, "FAILED", f"{type(error).__name__}: {error}")
            return None
    return summary.get("test_accuracy", summary.get("cv_val_accuracy_mean"))
