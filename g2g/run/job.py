"""One job from a composed config: the function ``run.py`` calls.

Data flow: MLflow's environment variables checked (:mod:`g2g.tracking.store`) -> paths
made absolute against the launch directory (:mod:`g2g.run.paths`) -> validate
(:mod:`g2g.run.validation`) -> hardware (:mod:`g2g.run.hardware`, threads from
:mod:`g2g.run.hydra_runtime`) -> checkpoint paths, lock, skip if done (:mod:`g2g.run.checkpoint`,
:mod:`g2g.run.lock`) -> protocol (:mod:`g2g.run.protocols`: holdout or cross-validation;
each model built by :mod:`g2g.run.build` and trained by :mod:`g2g.run.training_loop`)
-> MLflow (:mod:`g2g.tracking`).
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from g2g.run import checkpoint as ckpt
from g2g.run.build import instantiate_option, protocol_epochs
from g2g.run.hydra_runtime import sweep_context, threads_per_job
from g2g.run.lock import ExperimentLock
from g2g.run.paths import absolute_paths
from g2g.run.protocols import RunContext, run_protocol
from g2g.run.validation import check_interpolations, validate
from g2g.tracking.names import TAG_OVERRIDES, TAG_PARENT_RUN_ID
from g2g.tracking.runs import find_run, log_reused_run
from g2g.tracking.store import setup_experiment, warn_ignored_environment

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig) -> dict:
    """Train and evaluate what ``cfg`` describes, logging it to MLflow.

    Resumes from the run's checkpoint when one exists, and skips a finished run (its
    ``.DONE`` marker exists). Inside a sweep the MLflow run is a child of the sweep's
    parent run, named and tagged with the job's overrides. Relative paths are relative
    to the directory where the command was started, whatever Hydra's working directory
    (:func:`g2g.run.paths.absolute_paths`); MLflow's environment variables are honoured
    or ignored as :mod:`g2g.tracking.store` says.

    Args:
        cfg: the composed config (see ``conf/config.yaml``).
    Returns:
        Summary: ``run_id``, ``tracking_uri``, ``skipped``, and for holdout
        ``checkpoint`` and the last epoch's metrics, for cross-validation
        ``cv_val_accuracy_mean``, ``cv_val_accuracy_std`` and ``fold_val_accuracy``.
    Raises:
        g2g.run.validation.ConfigError: a bad config value (before any work).
        g2g.run.hardware.DeviceUnavailableError: a requested device is missing.
        g2g.tracking.store.TrackingUnavailableError: the MLflow store cannot be used.
        g2g.tracking.store.ExperimentDeletedError: ``tracking.experiment`` was deleted.
        g2g.run.lock.ExperimentLockedError: another process trains this run.
        g2g.data.datasets.DatasetUnavailableError: data missing and not fetchable (the MLflow
            run is marked FAILED).
        g2g.run.checkpoint.CheckpointError: an unusable checkpoint (left in place).
        g2g.run.signals.TrainingInterrupted: stopped on SIGINT/SIGTERM after a checkpoint.
        (:data:`g2g.run.errors.USER_ERRORS` lists the errors ``run.py`` reports without a traceback.)
    """
    check_interpolations(cfg)  # before any value is read: a broken interpolation is a ConfigError
    warn_ignored_environment(cfg.tracking.uri, cfg.tracking.experiment)
    cfg = absolute_paths(cfg)
    validate(cfg)
    hardware = instantiate_option(cfg.hardware)
    device = hardware.apply(num_threads=threads_per_job(hardware.num_threads))
    paths = ckpt.checkpoint_paths(cfg, cfg.checkpoint.dir)
    parent_run_id, overrides = sweep_context()
    summary = ckpt.finished_summary(paths, protocol_epochs(cfg))  # fewer epochs than asked: extended
    if summary is not None:
        experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)  # refuses a deleted one
        log.info(
            "experiment %s already finished: MLflow run %s in %s (experiment %r), checkpoint %s. "
            "Delete %s to train it again.",
            paths.name, summary.get("run_id"), summary.get("tracking_uri"),
            summary.get("experiment"), paths.checkpoint, paths.done_marker,
        )
        if find_run(summary.get("run_id")) is None:
            log.warning("the MLflow run %s of this finished experiment is not in the store any more (deleted?); "
                        "its final metrics are in %s", summary.get("run_id"), paths.done_marker)
        if parent_run_id:
            log_reused_run(experiment_id, summary, parent_run_id, overrides)
        return {**summary, "skipped": True}
    experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    with ExperimentLock(paths.lock):
        summary = ckpt.finished_summary(paths, protocol_epochs(cfg), announce=False)
        if summary is not None:  # finished by another process while we waited
            return {**summary, "skipped": True}
        tags = {TAG_PARENT_RUN_ID: parent_run_id, TAG_OVERRIDES: " ".join(overrides)} if parent_run_id else {}
        run_name = " ".join(overrides) if overrides else paths.name
        return run_protocol(RunContext(cfg, device, experiment_id, paths, run_name, tags))
