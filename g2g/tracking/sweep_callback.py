"""Hydra callbacks: one MLflow parent run per multirun sweep, whose status tells the
truth about all its jobs.

``conf/config.yaml`` registers :class:`MlflowSweepCallback` under ``hydra.callbacks``.
In the launching process, before any worker starts, it creates the MLflow store and
experiment once (parallel workers creating a brand-new SQLite store race on its
schema) and a parent run for the sweep; jobs find the parent through the
environment variable :data:`g2g.tracking.names.PARENT_RUN_ENV` and log as nested child
runs (:mod:`g2g.run.sweep_job` records a job that failed or stopped).

When the sweep ends, every job Hydra launched (its folder ``SWEEP_DIR/N/.hydra/``) is
matched with a child run, so a job that died without a word is counted too; the parent
gets the comparison report (:mod:`g2g.reporting.sweep_report`), the metrics
``sweep_jobs`` and ``sweep_failed_jobs``, and ends FINISHED when every job finished,
FAILED when one did not (exit status 1), or KILLED when the sweep was interrupted
(Ctrl-C; exit status 130). When the sweep itself fails (Hydra refuses the job batch, a
worker dies) Hydra skips ``on_multirun_end``: an ``atexit`` hook then ends the parent
FAILED (or KILLED) with the reason in :data:`g2g.tracking.names.TAG_ERROR`, so no parent
is left RUNNING.

While the jobs run, the launching process ignores SIGINT: workers inherit that (an
idle joblib worker that got a KeyboardInterrupt would break the pool, and joblib would
then kill the others while they save), and each job handles Ctrl-C itself.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from g2g.run.validation import ConfigError, check_interpolations
from g2g.tracking.names import (
    METRIC_SWEEP_FAILED_JOBS, METRIC_SWEEP_JOBS, PARENT_RUN_ENV, SWEEP_STOP_FILE, TAG_ERROR, TAG_OVERRIDES, TAG_SWEEP,
    TAG_SWEEP_DIR, TAG_SWEEP_OVERRIDES,
)
from g2g.tracking.runs import record_job_outcome, sweep_children
from g2g.tracking.store import TrackingUnavailableError, setup_experiment

log = logging.getLogger(__name__)

#: exit status of an interrupted sweep (128 + SIGINT, as a shell reports Ctrl-C)
EXIT_INTERRUPTED = 128 + signal.SIGINT
#: exit status of a sweep in which a job did not finish
EXIT_FAILED_JOBS = 1


def launched_jobs(sweep_dir: Path, since_ms: int) -> dict[str, Path]:
    """The jobs Hydra launched into ``sweep_dir`` at or after ``since_ms`` (ms since the
    epoch): their overrides joined by spaces (as in :data:`~g2g.tracking.names.TAG_OVERRIDES`)
    -> job folder. Hydra writes ``JOB/.hydra/overrides.yaml`` before it calls the job."""
    jobs = {}
    for path in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        if path.stat().st_mtime * 1000 >= since_ms - 1000:  # older folders: an earlier sweep in the same dir
            jobs[" ".join(OmegaConf.load(path))] = path.parent.parent
    return jobs


class MlflowSweepCallback(Callback):
    """Parent MLflow run, job accounting and comparison report for a Hydra multirun."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None
        self.sweep_dir: Path | None = None
        self._ended = False
        self._previous_sigint = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_interpolations(config, under="tracking")  # what this reads; each job checks the rest
            experiment_id = setup_experiment(config.tracking.uri, config.tracking.experiment)
        except (ConfigError, TrackingUnavailableError) as error:  # a message that says what to do; no traceback
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2 if isinstance(error, ConfigError) else 1) from error
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        (self.sweep_dir / SWEEP_STOP_FILE).unlink(missing_ok=True)  # from an earlier sweep in this folder
        overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task))  # as typed: ${...} unresolved
        parent = MlflowClient().create_run(
            experiment_id,
            run_name=f"sweep {overrides}".strip(),
            tags={TAG_SWEEP: "true", TAG_SWEEP_DIR: str(self.sweep_dir), TAG_SWEEP_OVERRIDES: overrides},
        )
        self.parent_run_id = parent.info.run_id
        os.environ[PARENT_RUN_ENV] = self.parent_run_id
        atexit.register(self._end_unfinished_sweep)
        if threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        log.info("sweep: MLflow parent run %s in %s", self.parent_run_id, config.tracking.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.parent_run_id is None:
            return
        self._restore_sigint()
        jobs, failed, interrupted = self._finish(reason=None)
        log.info("sweep %s: %d jobs, %d did not finish; report in MLflow run %s (artifacts report/)",
                 "interrupted" if interrupted else "finished", len(jobs), len(failed), self.parent_run_id)
        for job in failed:
            log.error("job %s: %s %s", job["run_name"], job["status"], job.get("error") or "")
        if interrupted:
            log.warning("interrupted: run the same command to resume the stopped jobs and start the others")
            raise SystemExit(EXIT_INTERRUPTED)
        if failed:
            raise SystemExit(EXIT_FAILED_JOBS)

    def _interrupted(self) -> bool:
        return self.sweep_dir is not None and (self.sweep_dir / SWEEP_STOP_FILE).exists()

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def _record_silent_jobs(self, client: MlflowClient, interrupted: bool) -> None:
        """A child run for every launched job that has none (it died without a word, or
        did not start because the sweep was interrupted)."""
        start_ms = client.get_run(self.parent_run_id).info.start_time
        recorded = {run.data.tags.get(TAG_OVERRIDES) for run in sweep_children(client, self.parent_run_id)}
        for overrides, folder in launched_jobs(self.sweep_dir, start_ms).items():
            if overrides in recorded:
                continue
            reason = ("the sweep was interrupted before this job recorded anything" if interrupted else
                      "the job ended without a record (its process died?); its log: "
                      f"{folder / 'run.log'}")
            record_job_outcome(client, self.parent_run_id, overrides.split(), status="KILLED" if interrupted
                               else "FAILED", reason=reason)

    def _finish(self, reason: str | None) -> tuple[list[dict], list[dict], bool]:
        """Account for every job, log the report, end the parent. ``reason``: why the
        sweep itself ended early (None when Hydra ended it normally). Returns (job rows,
        rows of jobs that did not finish, whether the sweep was interrupted)."""
        from g2g.reporting.sweep_report import report_sweep  # noqa: PLC0415 (matplotlib, torch: at the end)

        client = MlflowClient()
        interrupted = self._interrupted()
        status = "FAILED"
        jobs: list[dict] = []
        failed: list[dict] = []
        try:
            self._record_silent_jobs(client, interrupted)
            jobs = report_sweep(client, self.parent_run_id)
            failed = [job for job in jobs if job["status"] != "FINISHED"]
            client.log_metric(self.parent_run_id, METRIC_SWEEP_JOBS, len(jobs))
            client.log_metric(self.parent_run_id, METRIC_SWEEP_FAILED_JOBS, len(failed))
            if interrupted:
                reason = reason or "interrupted (Ctrl-C); run the same command to continue"
            elif failed and reason is None:
                reason = f"{len(failed)} of {len(jobs)} jobs did not finish"
            status = "KILLED" if interrupted else "FAILED" if failed or reason else "FINISHED"
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)
            if reason:
                client.set_tag(self.parent_run_id, TAG_ERROR, reason)
            client.set_terminated(self.parent_run_id, status)
            self._ended = True
        return jobs, failed, interrupted

    def _end_unfinished_sweep(self) -> None:
        """At exit: when ``on_multirun_end`` never ran (the sweep raised), end the parent
        FAILED, or KILLED when it was interrupted, with what the jobs left."""
        if self._ended or self.parent_run_id is None:
            return
        self._restore_sigint()
        try:
            jobs, _, _ = self._finish(reason="the sweep stopped before its end (Hydra or the launcher raised an "
                                             "error: see the command's output)")
            log.error("sweep ended early: MLflow parent run %s marked %s with %d jobs",
                      self.parent_run_id, "KILLED" if self._interrupted() else "FAILED", len(jobs))
        except Exception as error:  # at exit, a report that cannot be made must not hide the sweep's own error
            log.error("could not end the sweep's MLflow parent run %s: %s", self.parent_run_id, error)
