"""Hydra callbacks: one MLflow parent run per multirun sweep.

``conf/config.yaml`` registers :class:`MlflowSweepCallback` under ``hydra.callbacks``.
In the launching process, before any worker starts, it creates the MLflow store and
experiment once (parallel workers creating a brand-new SQLite store race on its
schema) and a parent run for the sweep; jobs find the parent through the
environment variable :data:`g2g.tracking.names.PARENT_RUN_ENV` and log as nested child
runs. When the sweep ends the parent gets the comparison report
(:mod:`g2g.reporting.sweep_report`) and is marked FINISHED, or FAILED when a job failed, and the
command exits non-zero in that case.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from g2g.tracking.names import PARENT_RUN_ENV, TAG_SWEEP, TAG_SWEEP_DIR, TAG_SWEEP_OVERRIDES
from g2g.tracking.store import TrackingUnavailableError, setup_experiment

log = logging.getLogger(__name__)


class MlflowSweepCallback(Callback):
    """Parent MLflow run and comparison report for a Hydra multirun."""

    def __init__(self) -> None:
        self.parent_run_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            experiment_id = setup_experiment(config.tracking.uri, config.tracking.experiment)
        except TrackingUnavailableError as error:  # a message that says what to do; no traceback
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1) from error
        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        overrides = " ".join(config.hydra.overrides.task)
        parent = MlflowClient().create_run(
            experiment_id,
            run_name=f"sweep {overrides}".strip(),
            tags={TAG_SWEEP: "true", TAG_SWEEP_DIR: sweep_dir, TAG_SWEEP_OVERRIDES: overrides},
        )
        self.parent_run_id = parent.info.run_id
        os.environ[PARENT_RUN_ENV] = self.parent_run_id
        log.info("sweep: MLflow parent run %s in %s", self.parent_run_id, config.tracking.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from g2g.reporting.sweep_report import report_sweep  # noqa: PLC0415 (matplotlib, torch: at the end)

        if self.parent_run_id is None:
            return
        client = MlflowClient()
        try:
            jobs = report_sweep(client, self.parent_run_id)
        finally:
            os.environ.pop(PARENT_RUN_ENV, None)
        failed = [job for job in jobs if job["status"] != "FINISHED"]
        client.set_terminated(self.parent_run_id, "FAILED" if failed else "FINISHED")
        log.info("sweep finished: %d jobs, %d failed; report in MLflow run %s (artifacts report/)",
                 len(jobs), len(failed), self.parent_run_id)
        if failed:
            for job in failed:
                log.error("job %s: %s", job["run_name"], job["status"])
            raise SystemExit(1)
