"""One experiment from a composed config: the function ``run.py`` calls.

Data flow (ARCHITECTURE.md): validate -> hardware -> data -> encoder -> model ->
trainer (epochs, evaluation, checkpoint after every epoch, resume) -> MLflow.
This is the only module besides ``run.py`` that knows about Hydra.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from g2g import checkpoint as ckpt
from g2g.hardware import configure, rng_state, seed_everything, select_device, set_rng_state
from g2g.plots import dst_history_figure, learning_curves_figure, mask_structure_figure
from g2g.tracking import flatten, log_figure, setup_experiment
from g2g.trainer import Trainer
from g2g.validation import validate

log = logging.getLogger(__name__)


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


def _log_final_model(model: torch.nn.Module) -> None:
    """Log the trained weights and masks (a state dict, not an exported model)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model_state_dict.pt"
        torch.save(model.state_dict(), path)
        mlflow.log_artifact(str(path), artifact_path="model")


def run(cfg: DictConfig) -> dict:
    """Train and evaluate the experiment ``cfg`` describes, logging it to MLflow.

    Resumes from the experiment's checkpoint when one exists, and skips a finished
    experiment (its ``.DONE`` marker exists).

    Args:
        cfg: the composed config (see ``conf/config.yaml``).
    Returns:
        Summary: ``run_id``, ``tracking_uri``, ``checkpoint``, ``skipped`` and the
        last epoch's metrics.
    Raises:
        g2g.validation.ConfigError: a bad config value (before any work).
        g2g.hardware.DeviceUnavailableError: a requested device is missing.
        g2g.tracking.TrackingUnavailableError: the MLflow store cannot be used.
        g2g.data.DatasetUnavailableError: data missing and not fetchable.
        g2g.checkpoint.CheckpointError: an unusable checkpoint (left in place).
    """
    validate(cfg)
    device = select_device(cfg.hardware.device)
    configure(cfg.hardware.num_threads, cfg.hardware.deterministic)
    encoder = instantiate(cfg.encoder)
    paths = ckpt.checkpoint_paths(cfg, cfg.checkpoint.dir)
    if paths.done_marker.exists():
        summary = ckpt.read_done_marker(paths.done_marker)
        log.info(
            "experiment %s already finished: MLflow run %s in %s (experiment %r), checkpoint %s. "
            "Delete %s to train it again.",
            paths.name, summary.get("run_id"), summary.get("tracking_uri"),
            summary.get("experiment"), paths.checkpoint, paths.done_marker,
        )
        return {**summary, "skipped": True}
    experiment_id = setup_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    config_hash = ckpt.config_hash(cfg)

    seed_everything(cfg.seed)
    data = instantiate(cfg.dataset, seed=cfg.seed, device=device)
    model = instantiate(
        cfg.model, input_dim=data.input_dim, num_classes=data.num_classes, mask_seed=cfg.seed
    ).to(device)
    optimizer = instantiate(cfg.train.optimizer)(model.parameters())
    sparsity = instantiate(cfg.sparsity)(model=model, optimizer=optimizer, seed=cfg.seed)
    trainer = Trainer(
        model, optimizer, encoder, cfg.train.batch_size, cfg.train.eval_batch_size,
        shuffle_generator=torch.Generator().manual_seed(cfg.seed), progress=cfg.train.progress,
        step_callbacks=[sparsity] if sparsity is not None else [],
    )
    history: list[dict] = []
    start_epoch, run_id = 0, None
    if paths.checkpoint.exists() and cfg.checkpoint.resume:
        state = ckpt.load_checkpoint(paths.checkpoint, config_hash, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        trainer.shuffle_generator.set_state(state["shuffle_rng"])
        set_rng_state(state["rng"])
        trainer.global_step = state["global_step"]
        if sparsity is not None:
            sparsity.load_state_dict(state["sparsity"])
        history, start_epoch, run_id = state["history"], state["epoch"], state["mlflow_run_id"]
        log.info("resuming %s after epoch %d from %s", paths.name, start_epoch, paths.checkpoint)

    logged_updates = len(sparsity.records) if sparsity is not None else 0
    active, is_new = _start_run(run_id, experiment_id, paths.name)
    with active:
        run_id = active.info.run_id
        if is_new:
            mlflow.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
            mlflow.set_tags({"g2g.experiment": paths.name, "g2g.config_hash": config_hash,
                             "g2g.checkpoint": str(paths.checkpoint.resolve())})
            mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        try:
            for epoch in range(start_epoch + 1, cfg.train.epochs + 1):
                row = {"epoch": epoch}
                row.update(trainer.train_epoch(
                    data.train_x, data.train_y, f"epoch {epoch}/{cfg.train.epochs}"))
                row.update(trainer.evaluate(data.test_x, data.test_y, prefix="test"))
                row.update({f"density_{name}": layer.density()
                            for name, layer in model.masked_layers().items()})
                history.append(row)
                mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                if sparsity is not None:
                    for record in sparsity.records[logged_updates:]:
                        mlflow.log_metrics(record.metrics(), step=record.step)
                    logged_updates = len(sparsity.records)
                log.info("epoch %d/%d: train_loss %.4f train_accuracy %.4f test_accuracy %.4f (%.0f s)",
                         epoch, cfg.train.epochs, row["train_loss"], row["train_accuracy"],
                         row["test_accuracy"], row["epoch_time_s"])
                ckpt.save_checkpoint({
                    "config_hash": config_hash, "epoch": epoch, "global_step": trainer.global_step,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "rng": rng_state(), "shuffle_rng": trainer.shuffle_generator.get_state(),
                    "history": history, "mlflow_run_id": run_id,
                    "sparsity": sparsity.state_dict() if sparsity is not None else None,
                }, paths.checkpoint)
            log_figure(learning_curves_figure(history), "plots/learning_curves.png")
            if model.name != "dense":
                log_figure(mask_structure_figure(model.masked_layers()), "plots/mask_structure.png")
            if sparsity is not None and sparsity.records:
                log_figure(dst_history_figure([vars(r) for r in sparsity.records]), "plots/dst_history.png")
            _log_final_model(model)
        except KeyboardInterrupt:
            mlflow.end_run("KILLED")
            log.warning("interrupted; the same command resumes from %s", paths.checkpoint)
            raise
        except Exception:
            mlflow.end_run("FAILED")
            raise
    summary = {
        "run_id": run_id, "tracking_uri": mlflow.get_tracking_uri(),
        "experiment": cfg.tracking.experiment, "checkpoint": str(paths.checkpoint.resolve()),
        **history[-1],
    }
    ckpt.write_done_marker(paths.done_marker, summary)
    log.info("finished %s: test_accuracy %.4f; MLflow run %s in %s",
             paths.name, history[-1]["test_accuracy"], run_id, summary["tracking_uri"])
    return {**summary, "skipped": False}
