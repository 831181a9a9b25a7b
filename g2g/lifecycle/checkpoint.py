"""Checkpoint names, atomic saves and safe loads.

A checkpoint lives at ``CHECKPOINT_DIR/LABEL_HASH/checkpoint.pth``, in the run's folder
beside its record (:mod:`g2g.lifecycle.record`), where LABEL (the run label) follows the
original scripts' convention (``fashionmnist_mixer_p0_15_T50_current``, ``..._cpset_cghebb`` for dynamic
sparsity, ``resnet_`` prefix with ResNet features) and HASH is a short hash of every
result-affecting setting, so two runs that could differ never share a folder.

The epoch count is not part of HASH (:data:`EPOCH_KEYS`): the first E epochs of a
longer run are the E-epoch run, so asking a finished run for more epochs continues it
from its checkpoint. Exception: with a regulariser (``regularizer`` other than
``none``), whose schedule spans the total epochs, the count stays in HASH and a longer
run starts over.

The file's keys: :class:`CheckpointWriter` writes them, :func:`trainer_state` reads the
trainer's part back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from g2g.files import atomic_torch_save
from g2g.lifecycle.record import RunRecord
from g2g.tracking.names import EPOCH_KEYS
from g2g.tracking.params import NON_RESULT_KEYS

log = logging.getLogger(__name__)



#: checkpoint entries that :func:`load_checkpoint` keeps on the CPU for any device: the
#: random generator states (torch accepts these only as CPU tensors) and the optimizer
#: state (``Optimizer.load_state_dict`` moves the moments to each parameter's device
#: itself and keeps Adam's ``step`` on the CPU, as a fresh optimizer has it: a ``step`` on
#: the GPU would cost a sync per parameter and step for the rest of the run)
KEPT_ON_CPU = ("rng", "shuffle_rng", "sparsity.generator", "optimizer")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the choices."""


def epoch_dependent_schedules(cfg: DictConfig) -> list[str]:
    """The settings of ``cfg`` whose schedule is spread over the run's total epochs, so
    that the first E epochs of a longer run differ from an E-epoch run, e.g.
    ``["regularizer=firing_rate", "sparsity.stop_fraction=0.75"]``:

    - a regulariser (``regularizer`` other than ``none``): lambda and target per epoch;
    - DST (``sparsity=dynamic``) with ``sparsity.stop_fraction`` < 1 (its stop step is a
      fraction of the total optimizer steps) or ``sparsity.fraction_schedule`` other
      than ``constant`` (the cosine decays to 0 at that stop step).
    """
    schedules = [] if cfg.regularizer.name == "none" else [f"regularizer={cfg.regularizer.name}"]
    if cfg.sparsity.name == "dynamic":
        if float(cfg.sparsity.get("stop_fraction", 1.0)) < 1.0:
            schedules.append(f"sparsity.stop_fraction={cfg.sparsity.stop_fraction}")
        if cfg.sparsity.get("fraction_schedule", "constant") != "constant":
            schedules.append(f"sparsity.fraction_schedule={cfg.sparsity.fraction_schedule}")
    return schedules


def epochs_in_hash(cfg: DictConfig) -> bool:
    """Whether the epoch count is part of the config hash: only when a schedule is
    spread over the total epochs (:func:`epoch_dependent_schedules`)."""
    return bool(epoch_dependent_schedules(cfg))


#: result-affecting keys added after runs had been recorded, with the value every earlier
#: run had: left out of :func:`result_config` at that value, so the hashes (and folders)
#: of earlier runs stay theirs
DEFAULTS_OUT_OF_HASH = {"train.precision": "32", "train.tf32": False, "model.lif_scan": "loop"}


def result_config(cfg: DictConfig, device: str = "cpu") -> dict:
    """The resolved config without the keys in :data:`~g2g.tracking.params.NON_RESULT_KEYS`, nor those in
    :data:`EPOCH_KEYS` unless :func:`epochs_in_hash`, nor those of :data:`DEFAULTS_OUT_OF_HASH`
    at their old value; plus ``device``, the type of the run's device (``cuda``), when it
    is not the CPU.

    The device changes results (other kernels, other summation orders, TF32), so a run on a
    GPU is another run than on the CPU: another folder, never resumed from, nor skipped
    because of, a CPU run's checkpoint or record. CPU runs keep the hashes they always had."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    for dotted, old_value in DEFAULTS_OUT_OF_HASH.items():
        parent, leaf = dotted.split(".")
        if isinstance(container.get(parent), dict) and container[parent].get(leaf, old_value) == old_value:
            container[parent].pop(leaf, None)
    if device != "cpu":
        container["device"] = device
    for dotted in NON_RESULT_KEYS + (() if epochs_in_hash(cfg) else EPOCH_KEYS):
        *parents, leaf = dotted.split(".")
        node = container
        for parent in parents:
            node = node.get(parent, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return container


def config_hash(cfg: DictConfig, length: int = 8, device: str = "cpu") -> str:
    """Short SHA-256 of :func:`result_config` (stable across key order) for a run on a
    ``device`` of that type."""
    text = json.dumps(result_config(cfg, device), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_label(cfg: DictConfig) -> str:
    """Readable run label in the original scripts' convention, e.g. ``fashionmnist_mixer_p0_15_T50_current``."""
    parts = [cfg.dataset.name, cfg.model.name]
    if "p_inter" in cfg.model:
        parts.append("p" + f"{float(cfg.model.p_inter):g}".replace(".", "_"))
    parts += [f"T{cfg.encoder.num_steps}", cfg.encoder.name]
    if cfg.sparsity.name == "dynamic":
        parts += [f"cp{cfg.sparsity.prune}", f"cg{cfg.sparsity.grow}"]
    name = "_".join(str(part) for part in parts)
    return f"resnet_{name}" if cfg.features.name == "resnet32" else name


def run_record(cfg: DictConfig, directory: str | os.PathLike, device: str = "cpu") -> RunRecord:
    """The record of the run ``cfg`` describes on a ``device`` of that type: folder
    ``DIRECTORY/LABEL_HASH`` (read)."""
    return RunRecord(Path(directory) / f"{run_label(cfg)}_{config_hash(cfg, device=device)}").read()


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomically save ``state`` (tensors, dicts, lists, numbers, strings) with torch.save."""
    atomic_torch_save(state, path)


@dataclass(frozen=True)
class CheckpointWriter:
    """Writes one training run's checkpoint: what identifies it (the config and its
    hash, the MLflow run) plus the training state at the moment of saving.

    Args:
        path: the ``.pth`` file.
        config_hash: :func:`config_hash` of the run's config.
        config: :func:`result_config` of the run's config (lists the differences
            when a later run finds the file written for another config).
        mlflow_run_id: the MLflow run that a resume logs into.
        device: the type of the run's device (``cpu``, ``cuda``).
        precision: ``train.precision``.
    """

    path: Path
    config_hash: str
    config: dict
    mlflow_run_id: str
    device: str = "cpu"
    precision: str = "32"

    def save(self, trainer: dict, rng: dict, *, epoch: int, epoch_progress: dict | None,
             history: list[dict], logged_updates: int = 0) -> None:
        """Atomically write the checkpoint.

        Args:
            trainer: ``Trainer.state_dict()``, with at most one step-callback state
                (the DST's; stored under ``sparsity``).
            rng: ``g2g.build.random_streams.rng_state()``.
            epoch: completed epochs.
            epoch_progress: the ``progress`` of an interrupted epoch ``epoch + 1``, else None.
            history: one row of metrics per completed epoch.
            logged_updates: how many of the DST's update records the MLflow run has
                (all, as the training loop logs them before saving).
        Raises:
            ValueError: more than one step-callback state.
        """
        callbacks = trainer["step_callbacks"]
        if len(callbacks) > 1:
            raise ValueError(f"a checkpoint stores one step-callback state (the DST's), not {len(callbacks)}")
        save_checkpoint({
            "config_hash": self.config_hash, "config": self.config,
            "epoch": epoch, "epoch_progress": epoch_progress, "global_step": trainer["global_step"],
            "model": trainer["model"], "optimizer": trainer["optimizer"],
            "rng": rng, "shuffle_rng": trainer["shuffle_rng"],
            "history": history, "mlflow_run_id": self.mlflow_run_id,
            "sparsity": callbacks[0] if callbacks else None, "logged_updates": logged_updates,
            "device": self.device, "precision": self.precision, "scaler": trainer.get("scaler"),
        }, self.path)


def trainer_state(state: dict) -> dict:
    """The ``Trainer.state_dict()`` inside a checkpoint that :class:`CheckpointWriter`
    wrote (the inverse of its layout)."""
    sparsity = state.get("sparsity")
    trainer = {"model": state["model"], "optimizer": state["optimizer"],
               "step_callbacks": [] if sparsity is None else [sparsity],
               "shuffle_rng": state["shuffle_rng"], "global_step": state["global_step"]}
    if state.get("scaler"):
        trainer["scaler"] = state["scaler"]
    return trainer


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts, as ``key: a -> b``."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} in the checkpoint, {b!r} now")
    return lines


def _to_device(value, device: torch.device | str):
    """``value`` with every tensor inside (nested dicts, lists, tuples) moved to ``device``."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, dict):
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(item, device) for item in value)
    return value


def _map_except_kept_on_cpu(state: dict, device: torch.device | str) -> dict:
    """``state`` (loaded on the CPU) with its tensors on ``device``, except the
    entries :data:`KEPT_ON_CPU` names, which stay on the CPU (and are not copied)."""
    kept, rest = {}, dict(state)
    for dotted in KEPT_ON_CPU:
        *parents, leaf = dotted.split(".")
        node, copy = state, rest
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
            if isinstance(node, dict):
                copy[parent] = dict(copy[parent])
                copy = copy[parent]
        if isinstance(node, dict) and leaf in node:
            kept[dotted] = node[leaf]
            copy.pop(leaf)
    moved = _to_device(rest, device)
    for dotted, value in kept.items():
        *parents, leaf = dotted.split(".")
        node = moved
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return moved


def load_checkpoint(
    path: Path, expected_hash: str, device: torch.device | str = "cpu", config: dict | None = None,
    precision: str = "32",
) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (no arbitrary pickle code).

    Args:
        device: where its tensors go, except the random generator states and the
            optimizer state (:data:`KEPT_ON_CPU`), which stay on the CPU where
            ``torch.set_rng_state`` and ``torch.Generator.set_state`` accept them and
            ``Optimizer.load_state_dict`` places them as a fresh optimizer would.
        config: this run's :func:`result_config`, to list the differing keys when the
            checkpoint was written for another config.
        precision: this run's ``train.precision``.
    Raises:
        CheckpointError: unreadable/truncated file, one written on another type of device
            or in another precision (each named, with what to do), or one written for
            another config (the differing keys listed). The file is left where it is.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {error}).\n"
            f"Either delete it to start this experiment over, or replace it with a good copy."
        ) from error
    device_type = torch.device(device).type
    for what, key, saved, now in (("device", "hardware.device", state.get("device", "cpu"), device_type),
                                  ("precision", "train.precision", state.get("precision", "32"), precision)):
        if saved != now:
            raise CheckpointError(
                f"checkpoint {path} was written by a run with {what} {saved!r}, this run has {now!r}: a run "
                f"continues with the {what} it started with (the numbers would change mid-run). Either set "
                f"{key} back to continue it, or set checkpoint.dir to another folder to start a new run.")
    if state.get("config_hash") != expected_hash:
        differing = _differences(state.get("config") or {}, config or {}) if config else []
        raise CheckpointError(
            f"checkpoint {path} was written for config hash {state.get('config_hash')!r}, "
            f"this run has {expected_hash!r}"
            + (":\n  " + "\n  ".join(differing) if differing else "")
            + "\nEither delete it to start over, or point checkpoint.dir at the folder of the matching run."
        )
    return _map_except_kept_on_cpu(state, device) if torch.device(device).type != "cpu" else state
