"""Evaluation protocols: holdout (train on the training split, evaluate on the test
split) and stratified k-fold cross-validation; each trains its models with
:func:`train_model`, one MLflow run and one checkpoint per model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import mlflow
import torch
from omegaconf import DictConfig, OmegaConf

from g2g.build.objects import build, instantiate_option, load_data
from g2g.build.random_streams import seed_everything, stream_seed
from g2g.data.datasets import DataSplits
from g2g.data.folds import fold_split, hold_out_validation, stratified_folds
from g2g.files import remove_stale_temporary_files
from g2g.lifecycle import checkpoint as ckpt
from g2g.lifecycle.guard import RunGuard
from g2g.lifecycle.record import RunRecord
from g2g.reporting.statistics import mean_std
from g2g.run.loop import CheckpointHook, MetricsHook, fit
from g2g.tracking.names import (
    TAG_CHECKPOINT,
    TAG_CONFIG_HASH,
    TAG_DEVICE,
    TAG_EPOCHS,
    TAG_FOLD,
    TAG_NUM_THREADS,
    TAG_PARENT_RUN_ID,
    TAG_PROTOCOL,
    TAG_RUN_LABEL,
)
from g2g.tracking.params import PARAM_DEVICE, flatten
from g2g.tracking.run_logger import RunLogger
from g2g.tracking.runs import close_orphans, open_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Where and under which names a protocol's runs are recorded.

    cfg: the composed config. device: where tensors live.
    experiment_id: the MLflow experiment. record: the run's record, which owns its
    folder (checkpoint, lock; a fold's is :meth:`RunRecord.fold`).
    run_name: the MLflow run name. tags: extra tags of the run (a sweep's parent and
    overrides). parent_run_id: the sweep's parent run, or None. hooks: training-loop
    hooks after the metrics and checkpoint hooks (a search trial's pruning,
    :func:`g2g.search.study.trial_hooks`).
    """

    cfg: DictConfig
    device: torch.device
    experiment_id: str
    record: RunRecord
    run_name: str
    tags: dict[str, str]
    parent_run_id: str | None = None
    hooks: tuple = ()


def _config_record(cfg: DictConfig, device: torch.device) -> dict:
    """A new run's ``params`` (the flattened resolved config, and ``device``: the type of
    the device it computes on, a result-affecting setting) and ``config_yaml``."""
    return {"params": {**flatten(OmegaConf.to_container(cfg, resolve=True)), PARAM_DEVICE: device.type},
            "config_yaml": OmegaConf.to_yaml(cfg, resolve=True)}


def run_protocol(context: RunContext) -> dict:
    """Run the ``protocol`` config group's option (:func:`holdout` or :func:`crossval`,
    named by its ``_target_``) and return its summary. Call it holding the record's
    lock: it first removes the temporary files a save killed hard left behind."""
    remove_stale_temporary_files(context.record.folder)
    return instantiate_option(context.cfg.protocol)(context)


def holdout(context: RunContext, *, validation_fraction: float = 0.0) -> dict:
    """Train ``train.epochs`` epochs on the training split, evaluating the test split
    (``test_*`` metrics) after each. Returns :func:`train_model`'s summary.

    Args:
        validation_fraction: ``protocol.validation_fraction``: hold out this stratified,
            seeded fraction of the training split (the ``validation_split`` stream of
            ``seed``) and evaluate it too (``val_*`` metrics), for tuning; 0: none.
    """
    cfg = context.cfg

    def load() -> DataSplits:
        return hold_out_validation(load_data(cfg, context.device), validation_fraction,
                                   stream_seed(cfg.seed, "validation_split"))

    return train_model(context, load, epochs=cfg.train.epochs, eval_prefix="test")


def _open(context: RunContext, resume_run_id: str | None, tags: dict) -> tuple[RunLogger, bool]:
    """Close the runs of this record left RUNNING (their process is gone: we hold the
    lock), open its MLflow run and its logger: ``resume_run_id`` resumed when the store
    has it, else a new one. The record is started by the caller inside its guard.
    Returns (logger, whether the MLflow run is new)."""
    record, cfg = context.record, context.cfg
    close_orphans([context.experiment_id, record.state.get("experiment_id")], str(record.checkpoint.resolve()),
                  [record.run_id, resume_run_id])
    run_id, is_new = open_run(resume_run_id, context.experiment_id, context.run_name, tags=tags,
                              **_config_record(cfg, context.device))
    return RunLogger(run_id, mlflow.get_tracking_uri(), record.folder / "mlflow_fallback.jsonl"), is_new


def _start(context: RunContext, logger: RunLogger, epochs: int) -> None:
    context.record.start(run_id=logger.run_id, tracking_uri=logger.tracking_uri,
                         experiment=context.cfg.tracking.experiment, experiment_id=context.experiment_id,
                         parent_run_id=context.parent_run_id, epochs=epochs)


def crossval(context: RunContext, *, k_folds: int, epochs: int) -> dict:
    """k-fold cross-validation: one MLflow parent run for the whole protocol (params,
    fold accuracies as ``fold_val_accuracy`` at step = fold, and the summary
    ``cv_val_accuracy_mean`` / ``cv_val_accuracy_std``) with one child run per fold.
    Every fold is a run of its own (its own record folder ``foldK``), so a resumed
    cross-validation continues with the first unfinished fold. The record's history
    has the cross-validation mean and standard deviation after every epoch (from the
    folds' histories), so a request for fewer epochs is answered from it.

    Args:
        k_folds: number of stratified folds (``protocol.k_folds``), >= 2.
        epochs: epochs per fold (``protocol.epochs``; ``train.epochs`` is not used).

    Returns:
        ``run_id`` (the parent's), ``tracking_uri``, ``experiment``,
        ``cv_val_accuracy_mean``, ``cv_val_accuracy_std``, ``fold_val_accuracy``
        (one per fold) and ``skipped`` (False).
    """
    cfg, record = context.cfg, context.record
    tags = {**context.tags, TAG_RUN_LABEL: record.label, TAG_PROTOCOL: "crossval", TAG_EPOCHS: str(epochs),
            TAG_CHECKPOINT: str(record.checkpoint.resolve())}
    logger, is_new = _open(context, record.run_id, tags)  # the folds' records hold their progress
    parent_id = logger.run_id
    with RunGuard(record, logger) as guard:
        _start(context, logger, epochs)
        data = load_data(cfg, context.device)
        accuracies, histories = [], []
        folds = stratified_folds(data.train_y, k_folds, stream_seed(cfg.seed, "folds"))
        for fold, held_out in enumerate(folds, start=1):
            fold_record = record.fold(fold).read()
            plan = fold_record.plan(epochs)
            trained = plan.action == "train"
            if trained:
                split = fold_split(data, held_out)
                log.info("cross-validation fold %d/%d: %d training, %d validation examples",
                         fold, k_folds, len(split.train_y), len(split.test_y))
                fold_context = replace(context, record=fold_record, run_name=f"fold {fold}/{k_folds}",
                                       tags={TAG_PARENT_RUN_ID: parent_id, TAG_FOLD: str(fold)})
                summary = train_model(fold_context, lambda split=split: split, epochs=epochs, eval_prefix="val")
                fold_record.read()
            else:
                summary = plan.summary
            accuracies.append(summary["val_accuracy"])
            histories.append(fold_record.history)
            if trained or is_new:  # a resumed parent has the finished folds' accuracies already
                logger.metrics({"fold_val_accuracy": summary["val_accuracy"]}, step=fold)
        mean, std = mean_std(accuracies)
        logger.metrics({"cv_val_accuracy_mean": mean, "cv_val_accuracy_std": std}, step=0)
        history = []
        for epoch in range(1, epochs + 1):
            fold_values = [row["val_accuracy"] for rows in histories for row in rows if row["epoch"] == epoch]
            if len(fold_values) == k_folds:
                epoch_mean, epoch_std = mean_std(fold_values)
                history.append({"epoch": epoch, "cv_val_accuracy_mean": epoch_mean,
                                "cv_val_accuracy_std": epoch_std, "fold_val_accuracy": fold_values})
        record.epoch_done(epochs, history)
        summary = {"run_id": parent_id, "tracking_uri": logger.tracking_uri, "experiment": cfg.tracking.experiment,
                   "epochs": epochs, "cv_val_accuracy_mean": mean, "cv_val_accuracy_std": std,
                   "fold_val_accuracy": accuracies}
        guard.succeed(summary)
    log.info("cross-validation %s: validation accuracy %.4f +- %.4f over %d folds; MLflow run %s",
             record.label, mean, std, k_folds, parent_id)
    return {**summary, "skipped": False}


def train_model(context: RunContext, load: Callable[[], DataSplits], *, epochs: int, eval_prefix: str) -> dict:
    """Train one model in its own MLflow run, resuming from the record's checkpoint
    (and its MLflow run) when it exists and ``checkpoint.resume`` is on. The whole run,
    from the moment its MLflow run exists, is inside its :class:`RunGuard`, which alone
    sets its terminal state (record and MLflow); so is loading the data, so a data set
    that cannot be loaded marks the run FAILED.

    Args:
        load: gives the :class:`DataSplits`; its test tensors are evaluated after every
            epoch, as ``{eval_prefix}_accuracy`` and ``{eval_prefix}_loss``.
        epochs: the model's number of epochs.
    Returns:
        ``run_id``, ``tracking_uri``, ``experiment``, ``checkpoint``, the last
        epoch's metrics and ``skipped`` (False).
    Raises:
        g2g.lifecycle.checkpoint.CheckpointError: an unusable checkpoint (left in place).
        g2g.lifecycle.signals.TrainingInterrupted: stopped on SIGINT/SIGTERM (run KILLED).
        g2g.data.datasets.DatasetUnavailableError: the data cannot be loaded (run FAILED).
    """
    cfg, record, device = context.cfg, context.record, context.device
    config_hash = ckpt.config_hash(cfg, device=device.type)
    resume = None
    if record.checkpoint.exists() and cfg.checkpoint.resume:
        resume = ckpt.load_checkpoint(record.checkpoint, config_hash, device, ckpt.result_config(cfg, device.type),
                                      precision=cfg.train.precision)
    elif ckpt.epochs_in_hash(cfg):
        log.info("the schedule of %s spans the total epochs, so the epoch count is part of the checkpoint "
                 "name: a run with another epoch count starts over rather than continuing one",
                 " and ".join(ckpt.epoch_dependent_schedules(cfg)))
    tags = {TAG_RUN_LABEL: record.label, TAG_CONFIG_HASH: config_hash,
            TAG_CHECKPOINT: str(record.checkpoint.resolve()), TAG_DEVICE: str(device),
            TAG_NUM_THREADS: str(torch.get_num_threads()), TAG_EPOCHS: str(epochs), **context.tags}
    logger, _ = _open(context, resume["mlflow_run_id"] if resume else None, tags)  # no checkpoint: a new run
    writer = ckpt.CheckpointWriter(record.checkpoint, config_hash, ckpt.result_config(cfg, device.type), logger.run_id,
                                   device=device.type, precision=cfg.train.precision)
    with RunGuard(record, logger) as guard:
        _start(context, logger, epochs)
        seed_everything(cfg.seed)
        data = load()
        hooks = [MetricsHook(logger), CheckpointHook(writer, record), *context.hooks]
        history = fit(build(cfg, data, device), data, hooks, epochs=epochs, eval_prefix=eval_prefix, resume=resume,
                      new_run=resume is None or resume["mlflow_run_id"] != logger.run_id)
        summary = {"run_id": logger.run_id, "tracking_uri": logger.tracking_uri,
                   "experiment": cfg.tracking.experiment, "checkpoint": str(record.checkpoint.resolve()),
                   **history[-1]}
        guard.succeed(summary)
    log.info("finished %s: %s_accuracy %.4f; MLflow run %s in %s", record.label, eval_prefix,
             history[-1][f"{eval_prefix}_accuracy"], logger.run_id, summary["tracking_uri"])
    return {**summary, "skipped": False}
