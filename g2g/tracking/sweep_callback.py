"""A sweep's lifecycle: one MLflow parent run per multirun, whose status and exit code
tell the truth about every job of the grid.

``conf/config.yaml`` registers :class:`MlflowSweepCallback` under ``hydra.callbacks``.
In the launching process, before any worker starts, it creates the MLflow store and
experiment once (parallel workers creating a brand-new SQLite store race on its
schema) and a parent run for the sweep; jobs find the parent through the environment
variable :data:`g2g.tracking.names.PARENT_RUN_ENV` and log as child runs
(:mod:`g2g.lifecycle.sweep_job` records a job that failed or stopped). A store that cannot
be used ends the command at once with one line (exit 1), before any job.

The sweep's end is not left to Hydra, which turns a callback's exceptions into
warnings: ``run.py`` calls :func:`conclude_sweep` after Hydra returns or raises, on
every exit path. It matches every job of the grid (the sweeper's job list,
:data:`JOBS_FILE`, written before any job starts; else the job folders Hydra made)
with a child run, so a job that never started (the sweep was stopped) or died without
a word (its worker was killed) is counted too, closes children left RUNNING, logs the
comparison report (:mod:`g2g.reporting.sweep_report`: the jobs compared by the settings
that vary across them, ``comparison.md``, figures, ``jobs.csv``) and the metrics ``sweep_jobs``
and ``sweep_failed_jobs``, and ends the parent: FINISHED (exit 0) when every job
finished (a hyperparameter search's pruned trials count as done: their runs end KILLED
with the tag :data:`~g2g.tracking.names.TAG_PRUNED`), FAILED (exit 1) when one did not or
the report could not be made, KILLED
(exit 128 + the signal) when the sweep was stopped by SIGINT or SIGTERM.

While the jobs run, the launching process ignores SIGINT (workers inherit that: an
idle joblib worker that got a KeyboardInterrupt would break the pool, and joblib would
then kill the others while they save; each job handles Ctrl-C itself), and passes a
SIGTERM on to the worker processes that run a job (:data:`~g2g.tracking.names.RUNNING_FOLDER`),
so a ``kill`` or a batch system's ``timeout`` of the
launcher stops every job after its step, with a checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from g2g.config.validation import ConfigError, check_interpolations
from g2g.tracking.names import (
    METRIC_SWEEP_FAILED_JOBS,
    METRIC_SWEEP_JOBS,
    PARENT_RUN_ENV,
    RUNNING_FOLDER,
    SWEEP_STOP_FILE,
    TAG_CHECKPOINT,
    TAG_ERROR,
    TAG_OVERRIDES,
    TAG_PRUNED,
    TAG_SWEEP,
    TAG_SWEEP_DIR,
    TAG_SWEEP_OVERRIDES,
    fit_run_name,
)
from g2g.tracking.runs import record_job_outcome, sweep_children
from g2g.tracking.store import TrackingUnavailableError, quiet_store_errors, root_cause, setup_experiment

log = logging.getLogger(__name__)

#: exit status of a sweep in which a job did not finish (or whose report failed)
EXIT_FAILED_JOBS = 1
#: the sweeper's list of every job of the grid, in the sweep folder (see :func:`write_job_list`)
JOBS_FILE = ".g2g_jobs.json"


def write_job_list(sweep_dir: str | Path, jobs: list[list[str]]) -> None:
    """Write every job's overrides of the grid into ``SWEEP_DIR/``:data:`JOBS_FILE`, before
    any job starts (the sweeper calls it), so the sweep's end counts jobs that never started."""
    path = Path(sweep_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"jobs": [" ".join(job) for job in jobs]}, indent=1))


def _job_folders(sweep_dir: Path, since_ms: int) -> dict[str, Path]:
    """The job folders Hydra made in ``sweep_dir`` at or after ``since_ms`` (ms since the
    epoch; older ones are an earlier sweep's): overrides joined by spaces -> folder
    (Hydra writes ``JOB/.hydra/overrides.yaml`` before it calls the job)."""
    return {" ".join(OmegaConf.load(path)): path.parent.parent
            for path in sorted(sweep_dir.glob("**/.hydra/overrides.yaml"))
            if path.stat().st_mtime * 1000 >= since_ms - 1000}


def _job_list(sweep_dir: Path, folders: dict[str, Path], since_ms: int) -> list[str]:
    """The jobs of the sweep, as their overrides joined by spaces: the sweeper's list
    when it wrote one (:data:`JOBS_FILE`), plus every job folder Hydra made (``folders``)."""
    jobs: dict[str, None] = {}
    path = sweep_dir / JOBS_FILE
    if path.exists() and path.stat().st_mtime * 1000 >= since_ms - 1000:
        jobs.update(dict.fromkeys(json.loads(path.read_text())["jobs"]))
    jobs.update(dict.fromkeys(folders))
    return list(jobs)


class Sweep:
    """One multirun sweep in the launching process: its parent run and folder."""

    def __init__(self, parent_run_id: str, sweep_dir: Path) -> None:
        self.parent_run_id = parent_run_id
        self.sweep_dir = sweep_dir
        self.concluded = False

    def stop_signal(self) -> int | None:
        """The signal that stopped the sweep (the stop file's content), or None."""
        path = self.sweep_dir / SWEEP_STOP_FILE
        if not path.exists():
            return None
        name = path.read_text().strip() or "SIGINT"
        return int(getattr(signal, name, signal.SIGINT))

    def request_stop(self, signal_number: int) -> None:
        (self.sweep_dir / SWEEP_STOP_FILE).write_text(signal.Signals(signal_number).name + "\n")

    def conclude(self, hydra_exit: int | str | None) -> int:
        """Account for every job, log the report, end the parent (see the module doc).
        Returns the command's exit status. Never raises: whatever fails is the
        parent's reason, and the parent never stays RUNNING."""
        self.concluded = True
        os.environ.pop(PARENT_RUN_ENV, None)
        client = MlflowClient()
        stopped = self.stop_signal()
        reason, status, jobs, failed = None, "FAILED", [], []
        try:
            self._record_missing_jobs(client, stopped is not None, hydra_exit)
            from g2g.reporting.sweep_report import report_sweep  # matplotlib: at the end

            try:
                jobs = report_sweep(client, self.parent_run_id)
            finally:
                jobs = jobs or _rows(client, self.parent_run_id)
                pruned = _pruned_runs(client, self.parent_run_id)  # a search's pruned trials did not fail
                failed = [job for job in jobs if job["status"] != "FINISHED" and job.get("run_id") not in pruned]
                client.log_metric(self.parent_run_id, METRIC_SWEEP_JOBS, len(jobs))
                client.log_metric(self.parent_run_id, METRIC_SWEEP_FAILED_JOBS, len(failed))
            if stopped is not None:
                status = "KILLED"
                reason = f"stopped ({signal.Signals(stopped).name}); run the same command to continue"
            elif failed:
                reason = f"{len(failed)} of {len(jobs)} jobs did not finish"
            elif hydra_exit not in (None, 0):
                reason = f"Hydra or the launcher ended the sweep with exit status {hydra_exit} (see the output above)"
            else:
                status = "FINISHED"
        except BaseException as error:  # noqa: BLE001 (the parent must end whatever failed)
            reason = f"the sweep's end could not be recorded: {type(error).__name__}: {error}"
            log.error("%s", reason)
        # late binding on purpose: when the tag fails, the end takes the reason and status it leaves
        for action in (lambda: reason and client.set_tag(self.parent_run_id, TAG_ERROR, reason[:2000]),  # noqa: B023
                       lambda: client.set_terminated(self.parent_run_id, status)):  # noqa: B023
            try:
                action()
            except Exception as error:  # noqa: BLE001 (the parent must end whatever failed)
                log.error("could not end the sweep's MLflow parent run %s %s (%s)", self.parent_run_id, status,
                          error)
                reason = reason or f"the store failed: {error}"
                status = "FAILED" if status == "FINISHED" else status
        log.info("sweep %s: %d jobs, %d did not finish; report in MLflow run %s (artifacts report/)",
                 status, len(jobs), len(failed), self.parent_run_id)
        for job in failed:
            log.error("job %s: %s %s", job["run_name"], job["status"], job.get("error") or "")
        if status == "KILLED":
            log.warning("stopped: run the same command to resume the stopped jobs and start the others")
            return 128 + int(stopped or signal.SIGINT)
        if status == "FAILED":
            print(f"error: sweep FAILED: {reason}", file=sys.stderr)
            return EXIT_FAILED_JOBS
        return 0

    def _record_missing_jobs(self, client: MlflowClient, stopped: bool, hydra_exit: int | str | None) -> None:
        """A child run for every job of the grid that has none (it never started, or died
        without a word), and an end for every child left RUNNING (its process is gone)."""
        start_ms = client.get_run(self.parent_run_id).info.start_time
        children = sweep_children(client, self.parent_run_id)
        recorded = {run.data.tags.get(TAG_OVERRIDES) for run in children}
        folders = _job_folders(self.sweep_dir, start_ms)
        for overrides in _job_list(self.sweep_dir, folders, start_ms):
            if overrides in recorded:
                continue
            folder = folders.get(overrides)
            if stopped:
                reason = "not started: the sweep was stopped; run the same command to continue"
            elif folder is None and hydra_exit not in (None, 0):
                reason = (f"not started: Hydra or the launcher ended the sweep (exit status {hydra_exit}; see the "
                          "output above)")
            elif folder is None:
                reason = "not started: the launcher never ran it (see the output above)"
            else:
                reason = f"the job ended without a record (its worker process died?); its log: {folder / 'run.log'}"
            record_job_outcome(client, self.parent_run_id, overrides.split(), status="KILLED" if stopped
                               else "FAILED", reason=reason)
        for run in children:
            if run.info.status == "RUNNING":
                reason = "its process ended without ending the run (killed hard?); run the same command to resume it"
                status = "KILLED" if stopped else "FAILED"
                client.set_tag(run.info.run_id, TAG_ERROR, reason)
                client.set_terminated(run.info.run_id, status)
                _end_orphaned_record(run.data.tags.get(TAG_CHECKPOINT), run.info.run_id, status, reason)


def _end_orphaned_record(checkpoint: str | None, run_id: str, status: str, reason: str) -> None:
    """The run record beside ``checkpoint`` of a run whose process died: when it still
    says RUNNING for ``run_id`` and no process holds its lock, it ends with ``status``."""
    if not checkpoint:
        return
    from g2g.lifecycle.lock import ExperimentLock, ExperimentLockedError
    from g2g.lifecycle.record import RunRecord

    record = RunRecord(Path(checkpoint).parent)
    try:
        with ExperimentLock(record.lock_file):
            if record.read().status == "RUNNING" and record.run_id == run_id:
                record.end(status, error=reason)
    except (ExperimentLockedError, OSError) as error:  # still held, or not writable: the next start closes it
        log.warning("the run record %s was left as it was (%s)", record.path, error)


def _pruned_runs(client: MlflowClient, parent_run_id: str) -> set[str]:
    """The run ids of the sweep's children that a search pruned (tag :data:`TAG_PRUNED`)."""
    return {run.info.run_id for run in sweep_children(client, parent_run_id) if TAG_PRUNED in run.data.tags}


def _rows(client: MlflowClient, parent_run_id: str) -> list[dict]:
    from g2g.reporting.queries import sweep_jobs

    return sweep_jobs(client, parent_run_id)


#: the sweep this process launches (set by the callback), for :func:`conclude_sweep`
ACTIVE: Sweep | None = None


def conclude_sweep(hydra_exit: int | str | None) -> int:
    """End the sweep this process launched, if any (see :meth:`Sweep.conclude`); returns
    the exit status the command should have (``hydra_exit`` when no sweep started)."""
    global ACTIVE
    sweep, ACTIVE = ACTIVE, None
    if sweep is None or sweep.concluded:
        return 0 if hydra_exit is None else hydra_exit if isinstance(hydra_exit, int) else 1
    return sweep.conclude(hydra_exit)


class MlflowSweepCallback(Callback):
    """Creates the sweep's parent MLflow run and handles signals in the launching
    process; :func:`conclude_sweep` ends it."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        global ACTIVE
        try:
            check_interpolations(config, under="tracking")  # what this reads; each job checks the rest
            from g2g.search.study import check_search  # a search's refusals: before its run

            check_search(config)
            experiment_id = setup_experiment(config.tracking.uri, config.tracking.experiment)
            sweep_dir = Path(config.hydra.sweep.dir).resolve()
            sweep_dir.mkdir(parents=True, exist_ok=True)
            (sweep_dir / SWEEP_STOP_FILE).unlink(missing_ok=True)  # from an earlier sweep in this folder
            overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task))  # as typed: ${...} kept
            try:
                with quiet_store_errors():
                    parent = MlflowClient().create_run(
                        experiment_id, run_name=fit_run_name(f"sweep {overrides}".strip()),
                        tags={TAG_SWEEP: "true", TAG_SWEEP_DIR: str(sweep_dir), TAG_SWEEP_OVERRIDES: overrides},
                    )
            except Exception as error:
                raise TrackingUnavailableError(
                    f"MLflow store {config.tracking.uri or 'mlflow.db'} cannot create the sweep's run "
                    f"({root_cause(error)}). Check that the store is writable "
                    "(the database file and its folder) or that its server runs.") from error
        except (ConfigError, TrackingUnavailableError, OSError) as error:  # Hydra would make it a warning
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2 if isinstance(error, ConfigError) else 1) from error
        ACTIVE = Sweep(parent.info.run_id, sweep_dir)
        os.environ[PARENT_RUN_ENV] = ACTIVE.parent_run_id
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._pass_on)
        log.info("sweep: MLflow parent run %s in %s", ACTIVE.parent_run_id, config.tracking.experiment)

    @staticmethod
    def _pass_on(signal_number, frame) -> None:
        """SIGTERM to the launcher: stop the sweep (queued jobs do not start) and pass the
        signal on to every worker, which stops after its step with a checkpoint."""
        if ACTIVE is not None:
            ACTIVE.request_stop(signal_number)
        log.warning("%s received: stopping every job after its current step", signal.Signals(signal_number).name)
        if ACTIVE is None:
            return
        for path in (ACTIVE.sweep_dir / RUNNING_FOLDER).glob("*"):
            try:
                os.kill(int(path.name), signal_number)
            except (OSError, ValueError):  # ended meanwhile
                pass

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if threading.current_thread() is threading.main_thread():
            for number, handler in self._previous.items():
                signal.signal(number, handler)
        self._previous.clear()
