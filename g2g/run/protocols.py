"""Evaluation protocols: holdout (train on the training split, evaluate on the test
split) and stratified k-fold cross-validation; each trains its models with
:func:`train_model`, one MLflow run and one checkpoint per model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import mlflow
import torch
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from g2g.data.datasets import DataSplits
from g2g.data.folds import fold_split, hold_out_validation, stratified_folds
from g2g.reporting.statistics import mean_std
from g2g.run import checkpoint as ckpt
from g2g.run.build import build, instantiate_option, load_data
from g2g.run.hardware import seed_everything
from g2g.run.hydra_runtime import output_dir
from g2g.run.random_streams import stream_seed
from g2g.run.training_loop import train_epochs
from g2g.tracking.names import (
    TAG_CHECKPOINT, TAG_CONFIG_HASH, TAG_DEVICE, TAG_EPOCHS, TAG_FOLD, TAG_NUM_THREADS, TAG_PARENT_RUN_ID,
    TAG_PROTOCOL, TAG_RUN_LABEL,
)
from g2g.tracking.runs import mark_killed_if_running, resume_or_create_parent_run, start_run, update_tags
from g2g.tracking.params import flatten
from g2g.tracking.run_logger import RunLogger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Where and under which names a protocol's runs are recorded.

    cfg: the composed config. device: where tensors live.
    experiment_id: the MLflow experiment. paths: the checkpoint, ``.DONE`` marker and
    lock of the protocol (a fold's are :meth:`CheckpointPaths.for_fold`).
    run_name: the MLflow run name. tags: extra tags of the run (a sweep's parent and overrides).
    """

    cfg: DictConfig
    device: torch.device
    experiment_id: str
    paths: ckpt.CheckpointPaths
    run_name: str
    tags: dict[str, str]


def _config_record(cfg: DictConfig) -> dict:
    """A new run's ``params`` (the flattened resolved config) and ``config_yaml``."""
    return {"params": flatten(OmegaConf.to_container(cfg, resolve=True)),
            "config_yaml": OmegaConf.to_yaml(cfg, resolve=True)}


def run_protocol(context: RunContext) -> dict:
    """Run the ``protocol`` config group's option (:func:`holdout` or :func:`crossval`,
    named by its ``_target_``) and return its summary. Call it holding
    ``context.paths.lock``: it first removes the temporary files a save killed hard
    left behind."""
    ckpt.remove_stale_temporary_files(context.paths)
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


def crossval(context: RunContext, *, k_folds: int, epochs: int) -> dict:
    """k-fold cross-validation: one MLflow parent run for the whole protocol (params,
    fold accuracies as ``fold_val_accuracy`` at step = fold, and the summary
    ``cv_val_accuracy_mean`` / ``cv_val_accuracy_std``) with one child run per fold.
    Every fold has its own checkpoint and ``.DONE`` marker, so a resumed
    cross-validation continues with the first unfinished fold; the parent run's id is
    kept in ``LABEL_HASH.crossval.json`` beside the checkpoint.

    Args:
        k_folds: number of stratified folds (``protocol.k_folds``), >= 2.
        epochs: epochs per fold (``protocol.epochs``; ``train.epochs`` is not used).

    Returns:
        ``run_id`` (the parent's), ``tracking_uri``, ``experiment``,
        ``cv_val_accuracy_mean``, ``cv_val_accuracy_std``, ``fold_val_accuracy``
        (one per fold) and ``skipped`` (False).
    """
    cfg, paths = context.cfg, context.paths
    state_file = paths.checkpoint.with_name(paths.checkpoint.stem + ".crossval.json")
    recorded_id = ckpt.read_json(state_file).get("run_id") if state_file.exists() else None
    mark_killed_if_running(recorded_id, paths.name)
    tags = {**context.tags, TAG_RUN_LABEL: paths.name, TAG_PROTOCOL: "crossval", TAG_EPOCHS: str(epochs)}
    parent_id, is_new = resume_or_create_parent_run(recorded_id, context.experiment_id, context.run_name,
                                                    tags=tags, **_config_record(cfg))
    if is_new:
        ckpt.write_json(state_file, {"run_id": parent_id})
    else:
        update_tags(parent_id, tags)
    client = MlflowClient()
    status = "FAILED"
    try:
        data = load_data(cfg, context.device)
        accuracies = []
        folds = stratified_folds(data.train_y, k_folds, stream_seed(cfg.seed, "folds"))
        for fold, held_out in enumerate(folds, start=1):
            fold_paths = paths.for_fold(fold)
            finished = ckpt.finished_summary(fold_paths, epochs)
            if finished is not None:
                accuracies.append(finished["val_accuracy"])
                if is_new:  # the earlier parent run is gone: this one gets the whole record
                    client.log_metric(parent_id, "fold_val_accuracy", finished["val_accuracy"], step=fold)
                continue
            split = fold_split(data, held_out)
            log.info("cross-validation fold %d/%d: %d training, %d validation examples",
                     fold, k_folds, len(split.train_y), len(split.test_y))
            fold_context = replace(context, paths=fold_paths, run_name=f"fold {fold}/{k_folds}",
                                   tags={TAG_PARENT_RUN_ID: parent_id, TAG_FOLD: str(fold)})
            summary = train_model(fold_context, lambda split=split: split, epochs=epochs,
                                  eval_prefix="val")
            accuracies.append(summary["val_accuracy"])
            client.log_metric(parent_id, "fold_val_accuracy", summary["val_accuracy"], step=fold)
        mean, std = mean_std(accuracies)
        client.log_metric(parent_id, "cv_val_accuracy_mean", mean)
        client.log_metric(parent_id, "cv_val_accuracy_std", std)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent_id, status)
    summary = {"run_id": parent_id, "tracking_uri": mlflow.get_tracking_uri(),
               "experiment": cfg.tracking.experiment, "epochs": epochs, "cv_val_accuracy_mean": mean,
               "cv_val_accuracy_std": std, "fold_val_accuracy": accuracies}
    ckpt.write_json(paths.done_marker, summary)
    log.info("cross-validation %s: validation accuracy %.4f +- %.4f over %d folds; MLflow run %s",
             paths.name, mean, std, k_folds, parent_id)
    return {**summary, "skipped": False}


def train_model(context: RunContext, load: Callable[[], DataSplits], *, epochs: int, eval_prefix: str) -> dict:
    """Train one model in its own MLflow run, resuming from ``context.paths.checkpoint``
    (and its MLflow run) when it exists and ``checkpoint.resume`` is on, and write its
    ``.DONE`` marker. The data come from ``load()`` inside the run, so a data set that
    cannot be loaded marks the run FAILED.

    An MLflow run that the checkpoint or ``paths.run_record`` names and that is still
    RUNNING (its process was killed hard) is marked KILLED first. A resumed run takes
    this start's tags (inside a sweep: the current sweep's parent and overrides); a
    checkpoint whose run was deleted resumes into a new run that gets its whole record.

    Args:
        load: gives the :class:`DataSplits`; its test tensors are evaluated after every
            epoch, as ``{eval_prefix}_accuracy`` and ``{eval_prefix}_loss``.
        epochs: the model's number of epochs.
    Returns:
        ``run_id``, ``tracking_uri``, ``experiment``, ``checkpoint``, the last
        epoch's metrics and ``skipped`` (False).
    Raises:
        g2g.run.checkpoint.CheckpointError: an unusable checkpoint (left in place).
        g2g.run.signals.TrainingInterrupted: stopped on SIGINT/SIGTERM (run KILLED).
        g2g.data.datasets.DatasetUnavailableError: the data cannot be loaded (run FAILED).
    """
    cfg, paths, device = context.cfg, context.paths, context.device
    config_hash = ckpt.config_hash(cfg)
    resume = None
    if paths.checkpoint.exists() and cfg.checkpoint.resume:
        resume = ckpt.load_checkpoint(paths.checkpoint, config_hash, device, ckpt.result_config(cfg))
    elif ckpt.epochs_in_hash(cfg):
        log.info("the schedule of %s spans the total epochs, so the epoch count is part of the checkpoint "
                 "name: a run with another epoch count starts over rather than continuing one",
                 " and ".join(ckpt.epoch_dependent_schedules(cfg)))
    resume_id = resume["mlflow_run_id"] if resume else None
    recorded_id = ckpt.read_json(paths.run_record).get("run_id") if paths.run_record.exists() else None
    for earlier_id in {resume_id, recorded_id} - {None}:  # a process killed hard left it RUNNING
        mark_killed_if_running(earlier_id, paths.name)
    tags = {TAG_RUN_LABEL: paths.name, TAG_CONFIG_HASH: config_hash,
            TAG_CHECKPOINT: str(paths.checkpoint.resolve()), TAG_DEVICE: str(device),
            TAG_NUM_THREADS: str(torch.get_num_threads()), TAG_EPOCHS: str(epochs), **context.tags}
    run_id = start_run(resume_id, context.experiment_id, context.run_name, tags=tags, **_config_record(cfg))
    if run_id == resume_id:  # this start's tags: a sweep's parent lists the run it resumes
        update_tags(run_id, tags)
    ckpt.write_json(paths.run_record, {"run_id": run_id})
    logger = RunLogger(run_id, mlflow.get_tracking_uri(),
                       output_dir(paths.checkpoint.parent) / f"{paths.name}.mlflow_fallback.jsonl")
    writer = ckpt.CheckpointWriter(paths.checkpoint, config_hash, ckpt.result_config(cfg), run_id)
    status = "FAILED"
    try:
        seed_everything(cfg.seed)
        data = load()
        history = train_epochs(build(cfg, data, device), data, logger, writer,
                               epochs=epochs, eval_prefix=eval_prefix, resume=resume)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        log.warning("interrupted; the same command %s", f"resumes from {paths.checkpoint}"
                    if paths.checkpoint.exists() else "starts it over (no checkpoint was written yet)")
        raise
    finally:
        logger.end(status)
    summary = {
        "run_id": run_id, "tracking_uri": mlflow.get_tracking_uri(),
        "experiment": cfg.tracking.experiment, "checkpoint": str(paths.checkpoint.resolve()),
        **history[-1],
    }
    ckpt.write_json(paths.done_marker, summary)
    log.info("finished %s: %s_accuracy %.4f; MLflow run %s in %s", paths.name, eval_prefix,
             history[-1][f"{eval_prefix}_accuracy"], run_id, summary["tracking_uri"])
    return {**summary, "skipped": False}
