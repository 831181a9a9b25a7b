"""The loop over epochs of one training run, flat: train an epoch, evaluate, then the
hooks (metrics, checkpoint and record; later a search's pruning) in plain sight; stop
(resumably) on SIGINT/SIGTERM; then the run's plots and final weights."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from g2g.build.objects import RunObjects
from g2g.build.random_streams import rng_state, set_rng_state
from g2g.data.datasets import DataSplits
from g2g.lifecycle import checkpoint as ckpt
from g2g.lifecycle.record import RunRecord
from g2g.lifecycle.signals import TrainingInterrupted, stop_on_signals
from g2g.reporting.training_plots import dst_history_figure, learning_curves_figure, mask_structure_figure
from g2g.snn.neurons import LIF
from g2g.tracking.names import METRIC_EVALUATION_TIME, METRIC_LIF_BETA_PREFIX, METRIC_LIF_THRESHOLD_PREFIX
from g2g.tracking.run_logger import RunLogger
from g2g.training.trainer import EpochInterrupted

log = logging.getLogger(__name__)


@dataclass
class FitState:
    """What the loop knows between epochs, handed to every hook.

    history: one metrics row per completed epoch (all so far). epoch: the epoch that
    just ended (or, on a stop, the last complete one). progress: the position inside an
    interrupted epoch ``epoch + 1`` (None between epochs). logged_updates: how many of
    the DST's update records the MLflow run has.
    """

    objects: RunObjects
    history: list[dict] = field(default_factory=list)
    epoch: int = 0
    progress: dict | None = None
    logged_updates: int = 0


class MetricsHook:
    """Logs each epoch's row (step = epoch) and the DST updates made since the last call
    (step = global step) to the run's MLflow logger; at the end the plots and the final
    weights. It runs before :class:`CheckpointHook`, so a checkpoint never holds an
    update that was not logged."""

    def __init__(self, logger: RunLogger) -> None:
        self.logger = logger

    def log_updates(self, state: FitState) -> None:
        sparsity = state.objects.sparsity
        if sparsity is not None:
            for update in sparsity.records[state.logged_updates:]:
                self.logger.metrics(update.metrics(), step=update.step)
            state.logged_updates = len(sparsity.records)

    def on_epoch_end(self, state: FitState) -> None:
        row = state.history[-1]
        row.update(lif_parameters(state.objects.model))  # in the history: a resumed run's record has them too
        self.logger.metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        self.log_updates(state)

    def on_stop(self, state: FitState) -> None:
        self.log_updates(state)

    def on_fit_end(self, state: FitState) -> None:
        _log_final_artifacts(state.objects, state.history, self.logger)


def lif_parameters(model: torch.nn.Module) -> dict[str, float]:
    """Each LIF layer's learned parameters as the layer uses them: ``lif_beta_NAME``
    (membrane decay, clamped to [0, 1] as in :class:`g2g.snn.neurons.LIF`) and
    ``lif_threshold_NAME`` (firing threshold), each the mean over the layer's neurons when
    it has one per neuron (names: :data:`g2g.tracking.names.METRIC_LIF_BETA_PREFIX`,
    :data:`~g2g.tracking.names.METRIC_LIF_THRESHOLD_PREFIX`)."""
    values = {}
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, LIF):
                layer = name.rsplit(".", 1)[-1]
                values[METRIC_LIF_BETA_PREFIX + layer] = float(module.beta.clamp(0, 1).float().mean())
                values[METRIC_LIF_THRESHOLD_PREFIX + layer] = float(module.threshold.float().mean())
    return values


class CheckpointHook:
    """Writes the checkpoint after every epoch and on a stop (mid-epoch), and after a
    whole epoch the run record's epochs done and history."""

    def __init__(self, writer: ckpt.CheckpointWriter, record: RunRecord) -> None:
        self.writer = writer
        self.record = record

    def _save(self, state: FitState) -> None:
        self.writer.save(state.objects.trainer.state_dict(), rng_state(_device(state.objects)), epoch=state.epoch,
                         epoch_progress=state.progress, history=state.history, logged_updates=state.logged_updates)

    def on_epoch_end(self, state: FitState) -> None:
        self._save(state)
        self.record.epoch_done(state.epoch, state.history)

    def on_stop(self, state: FitState) -> None:
        self._save(state)
        self.record.stopped_mid_epoch()

    def on_fit_end(self, state: FitState) -> None:
        pass


def fit(objects: RunObjects, data: DataSplits, hooks: list, *, epochs: int, eval_prefix: str,
        resume: dict | None = None, new_run: bool = True) -> list[dict]:
    """Train epochs ``1..epochs`` (or, resuming, those after the checkpoint's, also
    from the middle of an epoch) on ``data.train_*``, evaluating ``data.test_*`` (and
    ``data.val_*``) after each; then the hooks' ends (plots, final weights).

    After every epoch each hook's ``on_epoch_end(state)`` runs, in order (the metrics,
    then the checkpoint: :class:`MetricsHook`, :class:`CheckpointHook`; a hook may raise
    to end the run, as a search's pruning would); on SIGINT/SIGTERM each hook's
    ``on_stop(state)`` runs after the current step and the run stops with
    :class:`TrainingInterrupted`; once the last epoch is done, each ``on_fit_end(state)``.

    Every metric series of the MLflow run is the same, step for step, whether the run
    was interrupted and resumed (any number of times, at any step) or not; a run
    resumed into a new MLflow run (``new_run``: the checkpoint's was deleted or is in
    another experiment) gets the checkpoint's whole record first.

    Args:
        hooks: objects with ``on_epoch_end``, ``on_stop`` and ``on_fit_end`` (see above).
        epochs: the run's total number of epochs (more than a finished checkpoint's
            continues it).
        eval_prefix: ``test`` or ``val``: the evaluation metrics' prefix.
        resume: a checkpoint :func:`g2g.lifecycle.checkpoint.load_checkpoint` loaded, to continue.
        new_run: the MLflow run is new (the model sizes and the resumed record go into it).
    Returns:
        The per-epoch history (one metrics row per epoch, all epochs so far).
    Raises:
        g2g.lifecycle.checkpoint.CheckpointError: the checkpoint is further than ``epochs``.
        g2g.lifecycle.signals.TrainingInterrupted: stopped on a signal after saving.
        g2g.training.trainer.NonFiniteLossError: the loss became NaN or infinite.
    """
    state = _begin(objects, hooks, resume, epochs, new_run)
    trainer = objects.trainer
    with stop_on_signals(trainer) as received:
        for epoch in range(state.epoch + 1, epochs + 1):
            row = {"epoch": epoch, **(objects.regularizer.start_epoch(epoch, epochs) if objects.regularizer else {})}
            try:
                row.update(trainer.train_epoch(data.train_x, data.train_y, f"epoch {epoch}/{epochs}",
                                               resume=state.progress))
            except EpochInterrupted as stop:
                state.progress = stop.progress
                for hook in hooks:
                    hook.on_stop(state)
                raise _stopped(trainer, epoch - 1, hooks, received) from None
            row.update(evaluate(objects, data, eval_prefix, state.history, row))
            state.history.append(row)
            state.epoch, state.progress = epoch, None
            log.info("epoch %d/%d: train_loss %.4f train_accuracy %.4f %s_accuracy %.4f (%.0f s)", epoch, epochs,
                     row["train_loss"], row["train_accuracy"], eval_prefix, row[f"{eval_prefix}_accuracy"],
                     row["epoch_time_s"])
            for hook in hooks:
                hook.on_epoch_end(state)
            if trainer.stop_requested and epoch < epochs:
                raise _stopped(trainer, epoch, hooks, received)
        for hook in hooks:  # a signal from here on changes nothing: the run is complete
            hook.on_fit_end(state)
    return state.history


def evaluate(objects: RunObjects, data: DataSplits, eval_prefix: str, history: list[dict], row: dict) -> dict:
    """The evaluation after an epoch: the validation split's loss and accuracy (when
    held out), the evaluated split's metrics, their best epoch so far, the evaluation
    time and each masked layer's density."""
    trainer, started, metrics = objects.trainer, time.perf_counter(), {}
    if data.val_x is not None:  # only its loss and accuracy: rates and SynOps are the test split's
        metrics.update({key: value for key, value in trainer.evaluate(data.val_x, data.val_y, prefix="val").items()
                        if key.startswith("val_")})
    metrics.update(trainer.evaluate(data.test_x, data.test_y, prefix=eval_prefix))
    metrics[METRIC_EVALUATION_TIME] = time.perf_counter() - started
    for prefix in ("val", eval_prefix) if data.val_x is not None else (eval_prefix,):
        metrics.update(best_epoch(history, {**row, **metrics}, prefix))
    metrics.update({f"density_{name}": layer.density() for name, layer in objects.model.masked_layers().items()})
    return metrics


def _begin(objects: RunObjects, hooks: list, resume: dict | None, epochs: int, new_run: bool) -> FitState:
    """The state to start from: a new run's (its model sizes logged at step 0), or the
    checkpoint's (trainer, generators, history, position), whose record a new MLflow run
    gets first."""
    if objects.regularizer is not None:
        objects.regularizer.warn_if_never_active(epochs)
    state = FitState(objects)
    metrics = next((hook for hook in hooks if isinstance(hook, MetricsHook)), None)
    if resume is not None:
        _refuse_checkpoint_past(resume, epochs)
        objects.trainer.load_state_dict(ckpt.trainer_state(resume))
        set_rng_state(resume["rng"], _device(objects))
        state.history, state.epoch, state.progress = resume["history"], resume["epoch"], resume.get("epoch_progress")
        state.logged_updates = 0 if new_run else resume["logged_updates"]
        log.info("resuming after epoch %d%s", state.epoch,
                 f" and step {state.progress['next_batch']} of epoch {state.epoch + 1}" if state.progress else "")
    if new_run and metrics is not None:
        metrics.logger.metrics(objects.model.parameter_counts(), step=0)  # DST keeps the sizes: grows as it prunes
        if resume is not None:
            log.warning("the checkpoint's MLflow run %s is gone or elsewhere; logging its record (%d epochs) into the "
                        "new run %s", resume["mlflow_run_id"], len(state.history), metrics.logger.run_id)
        for row in state.history:
            metrics.logger.metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    if metrics is not None:
        metrics.log_updates(state)  # a new run's copy of the checkpoint's updates
    return state


def _device(objects: RunObjects) -> torch.device:
    """The device the run computes on (its model's)."""
    return next(objects.model.parameters()).device


def _stopped(trainer, epochs_done: int, hooks: list, received: list[int]) -> TrainingInterrupted:
    """The stop after a signal, in one wording wherever in an epoch it came."""
    saved = next((f"; checkpoint {hook.writer.path}" for hook in hooks if isinstance(hook, CheckpointHook)), "")
    return TrainingInterrupted(
        f"stopped at global step {trainer.global_step} ({epochs_done} epochs complete){saved}; run the same command "
        "to resume", received[0])


def best_epoch(history: list[dict], row: dict, prefix: str) -> dict:
    """The best epoch so far (ties: the earliest) of ``{prefix}_accuracy`` over
    ``history`` and the current ``row``: ``best_{prefix}_accuracy`` and
    ``best_{prefix}_epoch``. Logged every epoch, so a run's last values are its best
    epoch's (for comparison with "best of run" numbers; the last epoch's stay primary)."""
    key = f"{prefix}_accuracy"
    rows = [earlier for earlier in history if key in earlier] + [row]
    best = max(rows, key=lambda candidate: (candidate[key], -candidate["epoch"]))
    return {f"best_{key}": best[key], f"best_{prefix}_epoch": best["epoch"]}


def _refuse_checkpoint_past(resume: dict, epochs: int) -> None:
    """Raise :class:`g2g.lifecycle.checkpoint.CheckpointError` when the checkpoint is already
    past the end of an ``epochs``-epoch run (it belongs to a longer run that was stopped)."""
    done, progress = resume["epoch"], resume.get("epoch_progress")
    if done > epochs or (done == epochs and progress is not None):
        raise ckpt.CheckpointError(
            f"the checkpoint is {'in epoch ' + str(done + 1) if progress else 'after epoch ' + str(done)} "
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
