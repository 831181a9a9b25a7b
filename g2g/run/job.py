"""One job from a composed config: the function ``run.py`` calls.

Data flow: MLflow's environment variables checked (:mod:`g2g.tracking.store`) -> paths
made absolute against the launch directory (:mod:`g2g.config.paths`) -> validate
(:mod:`g2g.config.validation`) -> hardware (:mod:`g2g.hardware.device`, threads from
:mod:`g2g.lifecycle.runtime`; the precision the device can run, :mod:`g2g.hardware.precision`)
-> the run's record: skip, answer, extend or resume (:mod:`g2g.lifecycle.record`), lock
(:mod:`g2g.lifecycle.lock`) -> protocol (:mod:`g2g.run.protocols`: holdout or cross-validation;
each model built by :mod:`g2g.build.objects` and trained by :mod:`g2g.run.loop`)
-> MLflow (:mod:`g2g.tracking`).
"""

from __future__ import annotations

import logging

from mlflow import get_tracking_uri
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from g2g.build.objects import instantiate_option, protocol_epochs
from g2g.config.paths import absolute_paths
from g2g.config.validation import check_interpolations, validate
from g2g.hardware.precision import check_precision, set_tf32
from g2g.lifecycle import checkpoint as ckpt
from g2g.lifecycle.lock import ExperimentLock
from g2g.lifecycle.record import Plan, RunRecord
from g2g.lifecycle.runtime import JobRuntime
from g2g.run.protocols import RunContext, run_protocol
from g2g.search.study import trial_hooks
from g2g.shell import shell_command
from g2g.tracking.names import TAG_OVERRIDES, TAG_PARENT_RUN_ID, TAG_TRIAL
from g2g.tracking.runs import find_run, log_reused_run
from g2g.tracking.store import setup_experiment, warn_ignored_environment

log = logging.getLogger(__name__)


def run_job(cfg: DictConfig, runtime: JobRuntime | None = None) -> dict:
    """Train and evaluate what ``cfg`` describes, logging it to MLflow.

    The run's record (:mod:`g2g.lifecycle.record`, folder ``checkpoint.dir/LABEL_HASH``) says
    what to do: a finished run is skipped; one with fewer epochs than asked is extended;
    one with more is answered from its history (the metrics after the asked epoch); an
    unfinished one resumes from its checkpoint. A finished run is linked (as a FINISHED
    run that copies its results) into the sweep that asks for it, and into the asked
    ``tracking.experiment`` when it was logged to another one. Inside a sweep the MLflow
    run is a child of the sweep's parent run, named and tagged with the job's overrides,
    and a job whose run another job of the sweep trains waits for it. Relative paths are
    relative to the directory where the command was started
    (:func:`g2g.config.paths.absolute_paths`); MLflow's environment variables are honoured
    or ignored as :mod:`g2g.tracking.store` says.

    Args:
        cfg: the composed config (see ``conf/config.yaml``).
        runtime: what Hydra's runtime says about this job (``run.py`` reads it once); the
            default is a run outside any sweep.
    Returns:
        Summary: ``run_id``, ``tracking_uri``, ``skipped``, and for holdout
        ``checkpoint`` and the last epoch's metrics, for cross-validation
        ``cv_val_accuracy_mean``, ``cv_val_accuracy_std`` and ``fold_val_accuracy``;
        an answer from the history also has ``answered_from_epoch``.
    Raises:
        g2g.config.validation.ConfigError: a bad config value (before any work).
        g2g.hardware.device.DeviceUnavailableError: a requested device is missing.
        g2g.hardware.precision.PrecisionUnavailableError: ``train.precision`` or ``train.tf32``
            asks for what the device cannot run natively (before any work).
        g2g.tracking.store.TrackingUnavailableError: the MLflow store cannot be used.
        g2g.tracking.store.ExperimentDeletedError: ``tracking.experiment`` was deleted.
        g2g.lifecycle.lock.ExperimentLockedError: another process trains this run.
        g2g.data.datasets.DatasetUnavailableError: data missing and not fetchable (the MLflow
            run is marked FAILED).
        g2g.lifecycle.checkpoint.CheckpointError: an unusable checkpoint (left in place).
        g2g.lifecycle.signals.TrainingInterrupted: stopped on SIGINT/SIGTERM after a checkpoint.
        (:data:`g2g.lifecycle.errors.USER_ERRORS` lists the errors ``run.py`` reports without a traceback.)
    """
    check_interpolations(cfg)  # before any value is read: a broken interpolation is a ConfigError
    warn_ignored_environment(cfg.tracking.uri, cfg.tracking.experiment)
    cfg = absolute_paths(cfg)
    validate(cfg)
    hardware = instantiate_option(cfg.hardware)
    runtime = runtime or JobRuntime()
    device = hardware.apply(num_threads=runtime.threads(hardware.num_threads))
    check_precision(device, cfg.train.precision, cfg.train.tf32)  # before any work: refuse what it cannot run
    set_tf32(cfg.train.tf32)
    record = ckpt.run_record(cfg, cfg.checkpoint.dir, device.type)
    epochs = protocol_epochs(cfg)
    parent_run_id, overrides = runtime.parent_run_id, runtime.overrides
    experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)  # refuses a deleted one
    plan = record.plan(epochs)
    if plan.action != "train":
        return _reuse(record, plan, experiment_id, parent_run_id, overrides)
    with ExperimentLock(record.lock_file, wait=parent_run_id is not None):
        plan = record.read().plan(epochs)
        if plan.action != "train":  # finished by another process while we waited
            return _reuse(record, plan, experiment_id, parent_run_id, overrides)
        tags = {TAG_PARENT_RUN_ID: parent_run_id, TAG_OVERRIDES: " ".join(overrides)} if parent_run_id else {}
        if runtime.trial is not None:  # a hyperparameter search's trial: it reports each epoch to its study
            tags[TAG_TRIAL] = str(runtime.trial)
        hooks = tuple(trial_hooks(runtime.sweep_dir, runtime.trial, cfg.protocol.name))
        run_name = " ".join(overrides) if overrides else record.label
        return run_protocol(RunContext(cfg, device, experiment_id, record, run_name, tags, parent_run_id, hooks))


def _reuse(record: RunRecord, plan: Plan, experiment_id: str, parent_run_id: str | None,
           overrides: list[str]) -> dict:
    """A run that is not trained again: say where its results are, and link it into the
    sweep that asks for it, or into the asked experiment when it was logged elsewhere."""
    summary = plan.summary
    where = (f"MLflow run {summary.get('run_id')} in {summary.get('tracking_uri')} "
             f"(experiment {summary.get('experiment')!r})")
    if plan.action == "answer":
        log.info("run %s has trained %d epochs (%s); this request for %d epochs is answered from its metrics after "
                 "epoch %d (its checkpoint holds the weights after epoch %d). To train %d epochs on their own, set "
                 "checkpoint.dir to another folder.", record.label, summary["epochs_done"], where,
                 summary["answered_from_epoch"], summary["answered_from_epoch"], summary["epochs_done"],
                 summary["answered_from_epoch"])
    else:
        log.info("run %s already finished: %s, folder %s. To train it again: %s", record.label, where,
                 record.folder, shell_command("python", "-m", "g2g.run", "forget", record.folder))
    original = find_run(summary.get("run_id"))
    if original is not None and original.info.status == "RUNNING" and plan.action == "finished":
        log.warning("MLflow run %s was left RUNNING although its run finished (the store failed at its end); "
                    "marked FINISHED", original.info.run_id)
        MlflowClient().set_terminated(original.info.run_id, "FINISHED")
    if original is None:
        log.warning("the MLflow run %s of this finished run is not in this store (deleted, or another store); "
                    "its final metrics are in %s", summary.get("run_id"), record.path)
    elsewhere = summary.get("experiment_id") != experiment_id or summary.get("tracking_uri") != get_tracking_uri()
    if parent_run_id or elsewhere:
        linked = log_reused_run(experiment_id, summary, parent_run_id, overrides)
        if elsewhere:
            log.info("linked into this experiment (id %s) as MLflow run %s", experiment_id, linked)
    return {**summary, "skipped": True}
