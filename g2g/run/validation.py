"""Checks of a composed config before any expensive work starts.

Every problem is reported with the key, the bad value and what is allowed, e.g.
``model.p_inter=1.5: must be a probability in [0, 1]``.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from g2g.data.datasets import DATASETS
from g2g.sparse.dst import GROW_INITS, GROW_RULES, PRUNE_RULES
from g2g.run.hardware import DEVICES
from g2g.models.network import MODELS


class ConfigError(ValueError):
    """One or more config values are not allowed; the message lists each."""


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite real number (not a bool, NaN or infinity)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _probability(value) -> str | None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        return "must be a probability in [0, 1]"
    return None


def _open_unit_interval(value) -> str | None:
    if not _is_number(value) or not 0.0 < value < 1.0:
        return "must be a fraction in the open interval (0, 1)"
    return None


def _positive_int(value) -> str | None:
    if not _is_int(value) or value < 1:
        return "must be a positive integer (>= 1)"
    return None


def _optional_positive_int(value) -> str | None:
    return None if value is None else _positive_int(value)


def _positive_number(value) -> str | None:
    if not _is_number(value) or value <= 0:
        return "must be a number > 0"
    return None


def _non_negative(value) -> str | None:
    return None if _is_number(value) and value >= 0 else "must be a number >= 0"


def _number(value) -> str | None:
    return None if _is_number(value) else "must be a finite number"


def _one_of(*allowed):
    def check(value) -> str | None:
        return None if value in allowed else f"must be one of: {', '.join(map(str, allowed))}"

    return check


def _boolean(value) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


#: dotted key -> check returning a problem description or None
RULES = {
    "seed": lambda v: None if _is_int(v) and v >= 0 else "must be an integer >= 0",
    "dataset.name": _one_of(*DATASETS),
    "dataset.train_subset": _optional_positive_int,
    "dataset.test_subset": _optional_positive_int,
    "dataset.download": _boolean,
    "model.name": _one_of(*MODELS),
    "model.hidden_dim": _positive_int,
    "model.num_groups": _positive_int,
    "model.p_intra": _probability,
    "model.p_inter": _probability,
    "model.beta": _probability,
    "model.threshold": _positive_number,
    "model.surrogate_slope": _positive_number,
    "encoder.name": _one_of("current", "rate"),
    "encoder.num_steps": _positive_int,
    "encoder.scale": _number,
    "encoder.bias": _number,
    "train.epochs": _positive_int,
    "train.batch_size": _positive_int,
    "train.eval_batch_size": _positive_int,
    "train.lr": _positive_number,
    "hardware.device": _one_of(*DEVICES),
    "hardware.num_threads": _optional_positive_int,
    "hardware.deterministic": _boolean,
    "sparsity.name": _one_of("static", "dynamic"),
    "sparsity.prune": _one_of(*PRUNE_RULES),
    "sparsity.grow": _one_of(*GROW_RULES),
    "sparsity.update_interval": _positive_int,
    "sparsity.prune_fraction": _open_unit_interval,
    "sparsity.grow_init": _one_of(*GROW_INITS),
    "features.name": _one_of("raw", "resnet32"),
    "features.batch_size": _positive_int,
    "regularizer.name": _one_of("none", "firing_rate"),
    "regularizer.warmup_epochs": lambda v: None if _is_int(v) and v >= 0 else "must be an integer >= 0",
    "regularizer.lambda_start": _non_negative,
    "regularizer.lambda_end": _non_negative,
    "regularizer.target_start": _probability,
    "regularizer.target_end": _probability,
    "protocol.name": _one_of("holdout", "crossval"),
    "protocol.k_folds": lambda v: None if _is_int(v) and v >= 2 else "must be an integer >= 2",
    "protocol.epochs": _positive_int,
}


def validate(cfg: DictConfig) -> None:
    """Check every key in :data:`RULES` that the config has, and the relations between
    keys (``model.hidden_dim >= model.num_groups``; dynamic sparsity needs a sparse model).

    Raises:
        ConfigError: listing every problem as ``key=value: what is allowed``.
    """
    problems = []
    for key, check in RULES.items():
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            continue
        value = OmegaConf.select(cfg, key)
        problem = check(value)
        if problem:
            problems.append(f"{key}={value!r}: {problem}")
    model = cfg.get("model", {})
    if (
        model.get("name") != "dense"
        and _is_int(model.get("hidden_dim"))
        and _is_int(model.get("num_groups"))
        and model.hidden_dim < model.num_groups
    ):
        problems.append(
            f"model.hidden_dim={model.hidden_dim!r}: must be >= model.num_groups "
            f"({model.num_groups}) so that every group has a neuron"
        )
    if cfg.get("sparsity", {}).get("name") == "dynamic" and model.get("name") == "dense":
        problems.append(
            "sparsity=dynamic with model='dense': a dense model is fully connected and has "
            "nothing to rewire; use model=index|random|mixer, or sparsity=static"
        )
    features = cfg.get("features", {})
    dataset_name = cfg.get("dataset", {}).get("name")
    if features.get("name") == "resnet32":
        if dataset_name not in ("cifar10", "cifar100"):
            problems.append(
                f"features=resnet32 with dataset={dataset_name!r}: the ResNet-32 extractor is for "
                "CIFAR images (32x32 RGB); use dataset=cifar10|cifar100, or features=raw"
            )
        weights = features.get("weights")
        if weights != "hub" and not (isinstance(weights, str) and Path(weights).expanduser().is_file()):
            problems.append(
                f"features.weights={weights!r}: must be 'hub' or the path of an existing state dict "
                "file (train one with: python -m g2g.data.features train --dataset cifar10 --out FILE)"
            )
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
