"""The loop over epochs of one training run: train, evaluate, log, checkpoint, and
stop (resumably) on SIGINT/SIGTERM; then the run's plots and final weights."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from g2g.data.datasets import DataSplits
from g2g.reporting.training_plots import dst_history_figure, learning_curves_figure, mask_structure_figure
from g2g.run import checkpoint as ckpt
from g2g.run.build import RunObjects
from g2g.run.hardware import rng_state, set_rng_state
from g2g.run.record import RunRecord
from g2g.run.signals import TrainingInterrupted, stop_on_signals
from g2g.tracking.names import METRIC_EVALUATION_TIME
from g2g.tracking.run_logger import RunLogger
from g2g.training.trainer import EpochInterrupted

log = logging.getLogger(__name__)


def train_epochs(objects: RunObjects, data: DataSplits, logger: RunLogger, writer: ckpt.CheckpointWriter,
                 record: RunRecord, *, epochs: int, eval_prefix: str, resume: dict | None = None) -> list[dict]:
    """Train epochs ``1..epochs`` (or, resuming, those after the checkpoint's, also
    from the middle of an epoch) on ``data.train_*``, evaluating ``data.test_*``
    after each, with a checkpoint after every epoch and on SIGINT/SIGTERM; then log
    the plots and the final weights.

    Every metric series of the MLflow run is the same, step for step, whether the run
    was interrupted and resumed (any number of times, at any step) or not: the DST
    updates made so far are logged before every checkpoint, which stores how many were
    logged; and a run resumed into a new MLflow run (the checkpoint's was deleted) gets
    the checkpoint's whole record first (model sizes, every epoch, every DST update).

    Args:
        logger: the run's MLflow logger (per-epoch metrics at step = epoch, DST
            updates at step = global step, the model sizes at step 0 of a new run).
        writer: writes the checkpoint; its ``mlflow_run_id`` is the run logged to.
        record: the run's record: after every checkpoint of a whole epoch, its epochs
            done and history.
        epochs: the run's total number of epochs (more than a finished checkpoint's
            continues it).
        eval_prefix: ``test`` or ``val``: the evaluation metrics' prefix.
        resume: a checkpoint :func:`g2g.run.checkpoint.load_checkpoint` loaded, to continue.
    Returns:
        The per-epoch history (one metrics row per epoch, all epochs so far).
    Raises:
        g2g.run.checkpoint.CheckpointError: the checkpoint is further than ``epochs``.
        g2g.run.signals.TrainingInterrupted: stopped on a signal after saving.
        g2g.training.trainer.NonFiniteLossError: the loss became NaN or infinite.
    """
    model, trainer, sparsity, regularizer = objects.model, objects.trainer, objects.sparsity, objects.regularizer
    if regularizer is not None:
        regularizer.warn_if_never_active(epochs)
    sizes = model.parameter_counts()  # of the initial masks; DST keeps them (it grows as many as it prunes)
    history: list[dict] = []
    completed_epochs, epoch_progress, logged_updates = 0, None, 0
    new_run = resume is None or resume["mlflow_run_id"] != writer.mlflow_run_id
    if resume is not None:
        _refuse_checkpoint_past(resume, epochs, writer.path)
        trainer.load_state_dict(ckpt.trainer_state(resume))
        set_rng_state(resume["rng"])
        history, completed_epochs = resume["history"], resume["epoch"]
        epoch_progress = resume.get("epoch_progress")
        logged_updates = 0 if new_run else resume["logged_updates"]
        log.info("resuming %s after epoch %d%s from %s", writer.path.stem, completed_epochs,
                 f" and step {epoch_progress['next_batch']} of epoch {completed_epochs + 1}"
                 if epoch_progress else "", writer.path)
    if new_run:
        logger.metrics(sizes, step=0)
        if resume is not None:
            log.warning("MLflow run %s of the checkpoint is gone; logging its record (%d epochs, %d DST "
                        "updates) into the new run %s", resume["mlflow_run_id"], len(history),
                        len(sparsity.records) if sparsity is not None else 0, writer.mlflow_run_id)
        for row in history:
            logger.metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def log_pending_updates() -> None:
        nonlocal logged_updates
        if sparsity is not None:
            for record in sparsity.records[logged_updates:]:
                logger.metrics(record.metrics(), step=record.step)
            logged_updates = len(sparsity.records)

    def save(epoch: int, progress: dict | None = None) -> None:
        log_pending_updates()  # a checkpoint never holds an update that was not logged
        writer.save(trainer.state_dict(), rng_state(), epoch=epoch, epoch_progress=progress, history=history,
                    logged_updates=logged_updates)
        if progress is None:
            record.epoch_done(epoch, history)

    log_pending_updates()  # a new run's copy of the checkpoint's updates
    with stop_on_signals(trainer) as received:
        for epoch in range(completed_epochs + 1, epochs + 1):
            row = {"epoch": epoch}
            if regularizer is not None:
                row.update(regularizer.start_epoch(epoch, epochs))
            try:
                row.update(trainer.train_epoch(data.train_x, data.train_y,
                                               f"epoch {epoch}/{epochs}", resume=epoch_progress))
            except EpochInterrupted as stop:
                save(epoch - 1, stop.progress)
                raise _stopped(trainer, epoch - 1, writer, received) from None
            epoch_progress = None
            evaluation_started = time.perf_counter()
            if data.val_x is not None:  # only its loss and accuracy: rates and SynOps are the test split's
                row.update({key: value for key, value in trainer.evaluate(data.val_x, data.val_y, prefix="val").items()
                            if key.startswith("val_")})
            row.update(trainer.evaluate(data.test_x, data.test_y, prefix=eval_prefix))
            row[METRIC_EVALUATION_TIME] = time.perf_counter() - evaluation_started
            for prefix in ("val", eval_prefix) if data.val_x is not None else (eval_prefix,):
                row.update(best_epoch(history, row, prefix))
            row.update({f"density_{name}": layer.density() for name, layer in model.masked_layers().items()})
            history.append(row)
            logger.metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            log.info("epoch %d/%d: train_loss %.4f train_accuracy %.4f %s_accuracy %.4f (%.0f s)",
                     epoch, epochs, row["train_loss"], row["train_accuracy"], eval_prefix,
                     row[f"{eval_prefix}_accuracy"], row["epoch_time_s"])
            save(epoch)
            if trainer.stop_requested and epoch < epochs:
                raise _stopped(trainer, epoch, writer, received)
        # a signal from here on changes nothing: the run is complete
        _log_final_artifacts(objects, history, logger)
    return history


def _stopped(trainer, epochs_done: int, writer: ckpt.CheckpointWriter, received: list[int]) -> TrainingInterrupted:
    """The stop after a signal, in one wording wherever in an epoch it came."""
    return TrainingInterrupted(
        f"stopped at global step {trainer.global_step} ({epochs_done} epochs complete); checkpoint {writer.path}; "
        "run the same command to resume", received[0])


def best_epoch(history: list[dict], row: dict, prefix: str) -> dict:
    """The best epoch so far (ties: the earliest) of ``{prefix}_accuracy`` over
    ``history`` and the current ``row``: ``best_{prefix}_accuracy`` and
    ``best_{prefix}_epoch``. Logged every epoch, so a run's last values are its best
    epoch's (for comparison with "best of run" numbers; the last epoch's stay primary)."""
    key = f"{prefix}_accuracy"
    rows = [earlier for earlier in history if key in earlier] + [row]
    best = max(rows, key=lambda candidate: (candidate[key], -candidate["epoch"]))
    return {f"best_{key}": best[key], f"best_{prefix}_epoch": best["epoch"]}


def _refuse_checkpoint_past(resume: dict, epochs: int, path: Path) -> None:
    """Raise :class:`g2g.run.checkpoint.CheckpointError` when the checkpoint is already
    past the end of an ``epochs``-epoch run (it belongs to a longer run that was stopped)."""
    done, progress = resume["epoch"], resume.get("epoch_progress")
    if done > epochs or (done == epochs and progress is not None):
        raise ckpt.CheckpointError(
            f"checkpoint {path} is {'in epoch ' + str(done + 1) if progress else 'after epoch ' + str(done)} "
            f"of a longer run; this run asks for {epochs} epochs, whose final weights it no longer holds. "
            f"Either ask for at least {done + (progress is not None)} epochs to continue it, or set "
            f"checkpoint.dir to another folder to train {epochs} epochs separately."
        )


def _log_final_artifacts(objects: RunObjects, history: list[dict], logger: RunLogger) -> None:
    """Learning curves, mask structure (sparse models), DST history (when it rewired)
    and the final state dict (weights and masks) as ``model/model_state_dict.pt``."""
    logger.figure(learning_curves_figure(history), "plots/learning_curves.png")
    if objects.model.connectivity != "dense":
        masked = {name: layer for name, layer in objects.model.masked_layers().items() if layer.mask is not None}
        logger.figure(mask_structure_figure(masked), "plots/mask_structure.png")
    if objects.sparsity is not None and objects.sparsity.records:
        logger.figure(dst_history_figure([vars(r) for r in objects.sparsity.records]), "plots/dst_history.png")
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "model_state_dict.pt"
        torch.save(objects.model.state_dict(), weights)
        logger.artifact(weights, "model")
