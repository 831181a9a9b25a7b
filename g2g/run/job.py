"""One experiment from a composed config: the function ``run.py`` calls.

Data flow (ARCHITECTURE.md): validate -> hardware -> data -> features -> encoder ->
model -> sparsity -> trainer (epochs, evaluation, checkpoint after every epoch and on
SIGINT/SIGTERM, resume) -> protocol (holdout or cross-validation) -> MLflow.
With ``g2g.tracking.sweep_callback`` it is the only module besides ``run.py`` that knows about Hydra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import statistics
import tempfile
import threading
from pathlib import Path

import mlflow
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from g2g.run import checkpoint as ckpt
from g2g.run.checkpoint import CheckpointError
from g2g.data.datasets import DatasetUnavailableError, DataSplits
from g2g.data.features import FeaturesUnavailableError, prepare_features
from g2g.run.hardware import (
    DeviceUnavailableError, configure, rng_state, seed_everything, select_device, set_rng_state,
)
from g2g.run.lock import ExperimentLock, ExperimentLockedError
from g2g.reporting.training_plots import dst_history_figure, learning_curves_figure, mask_structure_figure
from g2g.tracking.names import PARENT_RUN_ENV
from g2g.tracking.params import flatten
from g2g.tracking.run_logger import RunLogger
from g2g.tracking.store import TrackingUnavailableError, log_batch_chunked, setup_experiment
from g2g.training.trainer import EpochInterrupted, NonFiniteLossError, Trainer
from g2g.run.validation import ConfigError, validate

log = logging.getLogger(__name__)

#: errors whose message tells the user what to do; run.py prints them without a traceback
USER_ERRORS = (ConfigError, DeviceUnavailableError, TrackingUnavailableError, DatasetUnavailableError,
               CheckpointError, ExperimentLockedError, NonFiniteLossError, FeaturesUnavailableError)



def instantiate(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate``, but an error raised by the target itself (a
    missing data set, say) reaches the caller as it was raised, not wrapped."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        if error.__cause__ is not None:
            raise error.__cause__ from None
        raise


def _start_run(run_id: str | None, experiment_id: str, run_name: str):
    """Resume the MLflow run ``run_id`` when the store still has it, else start a new one.
    Returns (active run, whether it is new)."""
    if run_id is not None:
        try:
            mlflow.get_run(run_id)
            return mlflow.start_run(run_id=run_id), False
        except mlflow.exceptions.MlflowException:
            log.warning("MLflow run %s from the checkpoint is not in this store; starting a new run", run_id)
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name), True


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; the same command
    resumes. ``signal_number`` is the signal that asked for it."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """SIGINT/SIGTERM ask the trainer to stop after its current step (a second
    SIGINT interrupts at once). Handlers are only installed in the main thread."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def request_stop(signal_number, frame):
        if received and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signal_number)
        trainer.stop_requested = True
        log.warning("%s received: stopping after the current step and saving a checkpoint "
                    "(press Ctrl-C again to stop at once)", signal.Signals(signal_number).name)

    previous = {number: signal.signal(number, request_stop) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _output_dir(paths: ckpt.CheckpointPaths) -> Path:
    """The run's output directory: Hydra's when running under Hydra, else the
    checkpoint folder."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return paths.checkpoint.parent


def _multirun_hydra_config():
    """Hydra's runtime config when this process runs a job of a multirun, else None."""
    from hydra.core.hydra_config import HydraConfig  # noqa: PLC0415
    from hydra.types import RunMode  # noqa: PLC0415

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get()


def sweep_context() -> tuple[str | None, list[str]]:
    """(MLflow parent run id, this job's overrides) when running inside a Hydra
    multirun started with :class:`g2g.tracking.sweep_callback.MlflowSweepCallback`; else (None, [])."""
    hydra_config = _multirun_hydra_config()
    if hydra_config is None:
        return None, []
    return os.environ.get(PARENT_RUN_ENV), list(hydra_config.overrides.task)


def threads_per_job(num_threads: int | None) -> int | None:
    """``hardware.num_threads``, or when it is null inside a joblib multirun, the
    machine's cores divided among the launcher's parallel jobs (so jobs x threads
    never oversubscribes the cores); inside a submitit job, its ``cpus_per_task``."""
    if num_threads is not None:
        return num_threads
    hydra_config = _multirun_hydra_config()
    if hydra_config is None:
        return None
    launcher = hydra_config.launcher
    cores = os.cpu_count() or 1
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return None
    n_jobs = cores if n_jobs < 0 else min(int(n_jobs), cores)
    return max(1, cores // max(1, n_jobs))


def _log_reused_run(experiment_id: str, summary: dict, parent_run_id: str, overrides: list[str]) -> None:
    """In a sweep, a finished job is not trained again; record it under the sweep's
    parent as a child run that copies the original run's params and final metrics."""
    client = MlflowClient()
    try:
        original = client.get_run(summary["run_id"])
    except (mlflow.exceptions.MlflowException, KeyError):
        log.warning("the original run of this finished job is not in this store; not linked to the sweep")
        return
    tags = {**{k: v for k, v in original.data.tags.items() if k.startswith("g2g.")},
            "mlflow.parentRunId": parent_run_id, "g2g.overrides": " ".join(overrides),
            "g2g.reused_run_id": original.info.run_id}
    child = client.create_run(experiment_id, run_name=" ".join(overrides) or original.info.run_name,
                              tags=tags)
    log_batch_chunked(client, child.info.run_id, params=original.data.params,
                      metrics=original.data.metrics, step=summary.get("epoch", 0))
    client.set_terminated(child.info.run_id, "FINISHED")


def run(cfg: DictConfig) -> dict:
    """Train and evaluate the experiment ``cfg`` describes, logging it to MLflow.

    Resumes from the experiment's checkpoint when one exists, and skips a finished
    experiment (its ``.DONE`` marker exists). Inside a sweep the MLflow run is a child
    of the sweep's parent run, named and tagged with the job's overrides.

    Args:
        cfg: the composed config (see ``conf/config.yaml``).
    Returns:
        Summary: ``run_id``, ``tracking_uri``, ``checkpoint``, ``skipped`` and the
        last epoch's metrics.
    Raises:
        g2g.run.validation.ConfigError: a bad config value (before any work).
        g2g.run.hardware.DeviceUnavailableError: a requested device is missing.
        g2g.tracking.store.TrackingUnavailableError: the MLflow store cannot be used.
        g2g.data.datasets.DatasetUnavailableError: data missing and not fetchable (the MLflow
            run is marked FAILED).
        g2g.run.checkpoint.CheckpointError: an unusable checkpoint (left in place).
    """
    validate(cfg)
    device = select_device(cfg.hardware.device)
    configure(threads_per_job(cfg.hardware.num_threads), cfg.hardware.deterministic)
    encoder = instantiate(cfg.encoder)
    paths = ckpt.checkpoint_paths(cfg, cfg.checkpoint.dir)
    parent_run_id, overrides = sweep_context()
    if paths.done_marker.exists():
        summary = ckpt.read_json(paths.done_marker)
        log.info(
            "experiment %s already finished: MLflow run %s in %s (experiment %r), checkpoint %s. "
            "Delete %s to train it again.",
            paths.name, summary.get("run_id"), summary.get("tracking_uri"),
            summary.get("experiment"), paths.checkpoint, paths.done_marker,
        )
        if parent_run_id:
            experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
            _log_reused_run(experiment_id, summary, parent_run_id, overrides)
        return {**summary, "skipped": True}
    experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    with ExperimentLock(paths.lock):
        if paths.done_marker.exists():  # finished by another process while we waited
            return {**ckpt.read_json(paths.done_marker), "skipped": True}
        tags = {}
        if parent_run_id:
            tags = {"mlflow.parentRunId": parent_run_id, "g2g.overrides": " ".join(overrides)}
        run_name = " ".join(overrides) if overrides else paths.name
        if cfg.protocol.name == "crossval":
            return _run_crossval(cfg, device, encoder, paths, experiment_id, run_name, tags)
        return _run_job(cfg, device, encoder, paths, experiment_id, run_name, tags,
                        lambda: _load_data(cfg, device), cfg.train.epochs, "test")


def _load_data(cfg: DictConfig, device: torch.device) -> DataSplits:
    """The data set on ``device``, through the ``features`` group (e.g. ResNet-32)."""
    data = instantiate(cfg.dataset, seed=cfg.seed, device=device)
    return prepare_features(data, cfg.dataset.name, **cfg.features)


def stratified_folds(labels: torch.Tensor, k_folds: int, seed: int) -> list[torch.Tensor]:
    """Split example indices into ``k_folds`` stratified folds: each class's examples
    are shuffled (seeded) and dealt round-robin, so every fold has each class's share
    to within one example. Returns ``k_folds`` sorted int64 index tensors.

    Raises:
        ValueError: fewer examples than folds.
    """
    if len(labels) < k_folds:
        raise ValueError(f"protocol.k_folds={k_folds} is more than the {len(labels)} training examples")
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    assignment = torch.empty(len(labels), dtype=torch.int64)
    offset = 0
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        assignment[members] = (torch.arange(len(members)) + offset) % k_folds
        offset += len(members)  # continue dealing where the previous class stopped
    return [(assignment == fold).nonzero().flatten() for fold in range(k_folds)]


def _run_crossval(cfg, device, encoder, paths, experiment_id, run_name, tags) -> dict:
    """k-fold cross-validation: one MLflow parent run for the whole protocol (params,
    fold accuracies as ``fold_val_accuracy`` at step = fold, and the summary
    ``cv_val_accuracy_mean`` / ``cv_val_accuracy_std``) with one child run per fold.
    Every fold has its own checkpoint and ``.DONE`` marker, so a resumed
    cross-validation continues with the first unfinished fold."""
    k_folds = cfg.protocol.k_folds
    client = MlflowClient()
    state_file = paths.checkpoint.with_name(paths.checkpoint.stem + ".crossval.json")
    parent_id = ckpt.read_json(state_file).get("run_id") if state_file.exists() else None
    if parent_id is not None:
        try:
            client.get_run(parent_id)
        except mlflow.exceptions.MlflowException:
            parent_id = None
    if parent_id is None:
        parent = client.create_run(experiment_id, run_name=run_name, tags={
            **tags, "g2g.experiment": paths.name, "g2g.protocol": "crossval"})
        parent_id = parent.info.run_id
        log_batch_chunked(client, parent_id, params=flatten(OmegaConf.to_container(cfg, resolve=True)))
        client.log_text(parent_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        ckpt.write_json(state_file, {"run_id": parent_id})
    else:
        client.update_run(parent_id, status="RUNNING")
    status = "FAILED"
    try:
        data = _load_data(cfg, device)
        folds = stratified_folds(data.train_y, k_folds, cfg.seed)
        accuracies = []
        for fold, held_out in enumerate(folds, start=1):
            fold_paths = paths.for_fold(fold)
            if fold_paths.done_marker.exists():
                accuracies.append(ckpt.read_json(fold_paths.done_marker)["val_accuracy"])
                continue
            keep = torch.ones(len(data.train_y), dtype=torch.bool)
            keep[held_out] = False
            keep = keep.to(data.train_y.device)
            held_out = held_out.to(data.train_y.device)
            split = DataSplits(data.train_x[keep], data.train_y[keep], data.train_x[held_out],
                               data.train_y[held_out], data.class_names)
            log.info("cross-validation fold %d/%d: %d training, %d validation examples",
                     fold, k_folds, len(split.train_y), len(split.test_y))
            summary = _run_job(cfg, device, encoder, fold_paths, experiment_id, f"fold {fold}/{k_folds}",
                               {"mlflow.parentRunId": parent_id, "g2g.fold": str(fold)},
                               lambda split=split: split, cfg.protocol.epochs, "val")
            accuracies.append(summary["val_accuracy"])
            client.log_metric(parent_id, "fold_val_accuracy", summary["val_accuracy"], step=fold)
        mean = statistics.mean(accuracies)
        std = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
        client.log_metric(parent_id, "cv_val_accuracy_mean", mean)
        client.log_metric(parent_id, "cv_val_accuracy_std", std)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent_id, status)
    summary = {"run_id": parent_id, "tracking_uri": mlflow.get_tracking_uri(),
               "experiment": cfg.tracking.experiment, "cv_val_accuracy_mean": mean,
               "cv_val_accuracy_std": std, "fold_val_accuracy": accuracies}
    ckpt.write_json(paths.done_marker, summary)
    log.info("cross-validation %s: validation accuracy %.4f +- %.4f over %d folds; MLflow run %s",
             paths.name, mean, std, k_folds, parent_id)
    return {**summary, "skipped": False}


def _run_job(cfg, device, encoder, paths, experiment_id, run_name, tags, load_data, epochs,
             eval_prefix) -> dict:
    """Train one model (resuming from ``paths.checkpoint``) in its own MLflow run and
    write its ``.DONE`` marker. ``load_data()`` gives the :class:`DataSplits` whose
    test tensors are evaluated after every epoch, named ``{eval_prefix}_accuracy``."""
    config_hash = ckpt.config_hash(cfg)
    state = None
    if paths.checkpoint.exists() and cfg.checkpoint.resume:
        state = ckpt.load_checkpoint(paths.checkpoint, config_hash, device, ckpt.result_config(cfg))
    tags = {"g2g.experiment": paths.name, "g2g.config_hash": config_hash,
            "g2g.checkpoint": str(paths.checkpoint.resolve()), "g2g.device": str(device),
            "g2g.num_threads": str(torch.get_num_threads()), **tags}
    active, is_new = _start_run(state["mlflow_run_id"] if state else None, experiment_id, run_name)
    run_id = active.info.run_id
    if is_new:
        mlflow.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
        mlflow.set_tags(tags)
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    logger = RunLogger(run_id, mlflow.get_tracking_uri(),
                       _output_dir(paths) / f"{paths.name}.mlflow_fallback.jsonl")
    status = "FAILED"
    try:
        history = _train(cfg, device, encoder, paths, config_hash, state, run_id, logger,
                         load_data, epochs, eval_prefix)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        log.warning("interrupted; the same command resumes from %s", paths.checkpoint)
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


def _train(cfg, device, encoder, paths, config_hash, state, run_id, logger: RunLogger, load_data,
           epochs: int, eval_prefix: str) -> list[dict]:
    """Build data, model, optimizer, sparsity and trainer; restore ``state`` when
    resuming (also in the middle of an epoch); train the remaining epochs with a
    checkpoint after each and on SIGINT/SIGTERM; log plots and the final weights.
    Returns the per-epoch history."""
    seed_everything(cfg.seed)
    data = load_data()
    model = instantiate(
        cfg.model, input_dim=data.input_dim, num_classes=data.num_classes, mask_seed=cfg.seed
    ).to(device)
    optimizer = instantiate(cfg.train.optimizer)(model.parameters())
    sparsity = instantiate(cfg.sparsity)(model=model, optimizer=optimizer, seed=cfg.seed)
    regularizer = instantiate(cfg.regularizer)
    if regularizer is not None:
        regularizer.warn_if_never_active(epochs)
    trainer = Trainer(
        model, optimizer, encoder, cfg.train.batch_size, cfg.train.eval_batch_size,
        shuffle_generator=torch.Generator().manual_seed(cfg.seed), progress=cfg.train.progress,
        step_callbacks=[sparsity] if sparsity is not None else [], regularizer=regularizer,
    )
    history: list[dict] = []
    completed_epochs, epoch_progress = 0, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        trainer.shuffle_generator.set_state(state["shuffle_rng"])
        set_rng_state(state["rng"])
        trainer.global_step = state["global_step"]
        if sparsity is not None:
            sparsity.load_state_dict(state["sparsity"])
        history, completed_epochs = state["history"], state["epoch"]
        epoch_progress = state.get("epoch_progress")
        log.info("resuming %s after epoch %d%s from %s", paths.name, completed_epochs,
                 f" and step {epoch_progress['next_batch']} of epoch {completed_epochs + 1}"
                 if epoch_progress else "", paths.checkpoint)
    else:  # sizes measured from the masks; DST keeps them (it grows as many as it prunes)
        logger.metrics(model.parameter_counts(), step=0)
    logged_updates = len(sparsity.records) if sparsity is not None else 0

    def save(epoch: int, progress: dict | None = None) -> None:
        ckpt.save_checkpoint({
            "config_hash": config_hash, "config": ckpt.result_config(cfg),
            "epoch": epoch, "epoch_progress": progress, "global_step": trainer.global_step,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": rng_state(), "shuffle_rng": trainer.shuffle_generator.get_state(),
            "history": history, "mlflow_run_id": run_id,
            "sparsity": sparsity.state_dict() if sparsity is not None else None,
        }, paths.checkpoint)

    with _stop_on_signals(trainer) as received:
        for epoch in range(completed_epochs + 1, epochs + 1):
            row = {"epoch": epoch}
            if regularizer is not None:
                row.update(regularizer.start_epoch(epoch, epochs))
            try:
                row.update(trainer.train_epoch(data.train_x, data.train_y,
                                               f"epoch {epoch}/{epochs}", resume=epoch_progress))
            except EpochInterrupted as stop:
                save(epoch - 1, stop.progress)
                raise TrainingInterrupted(
                    f"stopped in epoch {epoch} after global step {trainer.global_step}; checkpoint "
                    f"{paths.checkpoint}; run the same command to resume", received[0]) from None
            epoch_progress = None
            row.update(trainer.evaluate(data.test_x, data.test_y, prefix=eval_prefix))
            row.update({f"density_{name}": layer.density() for name, layer in model.masked_layers().items()})
            history.append(row)
            logger.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            if sparsity is not None:
                for record in sparsity.records[logged_updates:]:
                    logger.metrics(record.metrics(), step=record.step)
                logged_updates = len(sparsity.records)
            log.info("epoch %d/%d: train_loss %.4f train_accuracy %.4f %s_accuracy %.4f (%.0f s)",
                     epoch, epochs, row["train_loss"], row["train_accuracy"], eval_prefix,
                     row[f"{eval_prefix}_accuracy"], row["epoch_time_s"])
            save(epoch)
            if trainer.stop_requested and epoch < epochs:
                raise TrainingInterrupted(
                    f"stopped after epoch {epoch}; checkpoint {paths.checkpoint}; run the same "
                    "command to resume", received[0])
        # a signal from here on changes nothing: the run is complete
        logger.figure(learning_curves_figure(history), "plots/learning_curves.png")
        if model.connectivity != "dense":
            logger.figure(mask_structure_figure(model.masked_layers()), "plots/mask_structure.png")
        if sparsity is not None and sparsity.records:
            logger.figure(dst_history_figure([vars(r) for r in sparsity.records]), "plots/dst_history.png")
        with tempfile.TemporaryDirectory() as folder:  # weights and masks as a state dict
            weights = Path(folder) / "model_state_dict.pt"
            torch.save(model.state_dict(), weights)
            logger.artifact(weights, "model")
    return history
