"""Structured config schemas: one dataclass per config group option, registered in
Hydra's ConfigStore.

Every option file in ``conf/`` starts from its schema (``defaults: -
/schema/GROUP/SCHEMA@_here_``), so Hydra and OmegaConf check the key names and types
of every override (``model.p_inter=abc`` and ``model.prune=hebb`` are refused while
composing). The YAML files hold the values and their comments; a schema field without a
default is required.

Each field also says what values it allows (``check`` in the field's metadata: a
probability, a positive integer, one of a registry's names, ...).
:func:`g2g.config.validation.validate` applies these checks, refuses keys that the
selected option does not use (Hydra's ``+key=value`` can add them), and checks the
rules that relate several keys. Importing this module imports neither torch nor MLflow.

Source: Hydra's "Structured Configs" tutorial (config groups with a schema, "Extending
Configs").
"""

from __future__ import annotations

import importlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

#: a check returns None for a good value, else what is allowed
Check = Callable[[Any], str | None]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A finite real number (not a bool, NaN or infinity)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def probability(value) -> str | None:
    return None if _is_number(value) and 0.0 <= value <= 1.0 else "must be a probability in [0, 1]"


def open_unit_interval(value) -> str | None:
    return None if _is_number(value) and 0.0 < value < 1.0 else "must be a fraction in the open interval (0, 1)"


def fraction_up_to_one(value) -> str | None:
    return None if _is_number(value) and 0.0 < value <= 1.0 else "must be a fraction in (0, 1]"


def validation_fraction(value) -> str | None:
    return None if _is_number(value) and 0.0 <= value < 1.0 else "must be a fraction in [0, 1) (0: no validation split)"


def positive_int(value) -> str | None:
    return None if _is_int(value) and value >= 1 else "must be a positive integer (>= 1)"


def optional_positive_int(value) -> str | None:
    return None if value is None else positive_int(value)


def non_negative_int(value) -> str | None:
    return None if _is_int(value) and value >= 0 else "must be an integer >= 0"


def at_least_two(value) -> str | None:
    return None if _is_int(value) and value >= 2 else "must be an integer >= 2"


def positive_number(value) -> str | None:
    return None if _is_number(value) and value > 0 else "must be a number > 0"


def non_negative(value) -> str | None:
    return None if _is_number(value) and value >= 0 else "must be a number >= 0"


def finite(value) -> str | None:
    return None if _is_number(value) else "must be a finite number"


def one_of(registry: str) -> Check:
    """Check that a value is one of the names of a registry, given as
    ``"module:NAME"`` and imported only when the check runs (the registries live
    beside the code they describe, e.g. ``g2g.sparse.dst:PRUNE_RULES``)."""

    def check(value) -> str | None:
        module, name = registry.split(":")
        allowed = tuple(getattr(importlib.import_module(module), name))
        return None if value in allowed else f"must be one of: {', '.join(map(str, allowed))}"

    check.registry = registry
    return check


def value(default=MISSING, check: Check | None = None):
    """A schema field: its default (MISSING: required, the YAML gives it) and its check."""
    return field(default=default, metadata={"check": check} if check else {})


# --- dataset ---------------------------------------------------------------------


@dataclass
class DatasetSchema:
    """``dataset=fashionmnist|cifar10|cifar100`` (:func:`g2g.data.datasets.load_dataset`)."""

    _target_: str = "g2g.data.datasets.load_dataset"
    name: str = value(check=one_of("g2g.data.datasets:DATASETS"))
    root: str = value()
    download: bool = value()
    train_subset: int | None = value(check=optional_positive_int)
    test_subset: int | None = value(check=optional_positive_int)


# --- model -----------------------------------------------------------------------


@dataclass
class NetworkSchema:
    """The keys every model option has: its label, hidden width, LIF settings (and how
    their scan runs), spike products and weight initialisation."""

    name: str = value()
    hidden_dim: int = value(check=positive_int)
    beta: float = value(check=probability)
    threshold: float = value(check=positive_number)
    learn_beta: bool = value()
    learn_threshold: bool = value()
    surrogate_slope: float = value(check=positive_number)
    spike_matmul: str = value(check=one_of("g2g.sparse.layers:SPIKE_MATMUL_MODES"))
    lif_scan: str = value(check=one_of("g2g.snn.kernels:LIF_SCANS"))
    weight_init: str = value(check=one_of("g2g.sparse.layers:WEIGHT_INITS"))


@dataclass
class DenseModelSchema(NetworkSchema):
    """``model=dense`` (:class:`g2g.models.network.SpikingNetwork`, fully connected)."""

    _target_: str = "g2g.models.network.SpikingNetwork"
    connectivity: str = value(check=one_of("g2g.models.network:MODELS"))


@dataclass
class GroupsSchema:
    """The keys of a G2G network's groups: ``num_groups`` per layer, ``p_intra`` inside,
    ``p_inter`` between groups, and the ``readout`` (fc3 masked or dense)."""

    num_groups: int = value(check=positive_int)
    p_intra: float = value(check=probability)
    p_inter: float = value(check=probability)
    readout: str = value(check=one_of("g2g.models.network:READOUTS"))


@dataclass
class SparseModelSchema(GroupsSchema, DenseModelSchema):
    """``model=index|random|mixer``: G2G groups with ``p_intra`` inside, ``p_inter`` between."""


@dataclass
class DenseMatchedModelSchema(GroupsSchema, NetworkSchema):
    """``model=dense_matched`` (:func:`g2g.models.network.parameter_matched_dense`): fully
    connected, as wide as gives the parameter count of the G2G network described by
    ``hidden_dim`` and the :class:`GroupsSchema` keys."""

    _target_: str = "g2g.models.network.parameter_matched_dense"


# --- sparsity --------------------------------------------------------------------


@dataclass
class StaticSparsitySchema:
    """``sparsity=static``: the masks never change (nothing to build)."""

    name: str = value()


@dataclass
class DynamicSparsitySchema:
    """``sparsity=dynamic`` (:class:`g2g.sparse.dst.DynamicSparsity`, built with the
    model and optimizer)."""

    _target_: str = "g2g.sparse.dst.DynamicSparsity"
    _partial_: bool = True
    name: str = value()
    prune: str = value(check=one_of("g2g.sparse.dst:PRUNE_RULES"))
    grow: str = value(check=one_of("g2g.sparse.dst:GROW_RULES"))
    update_interval: int = value(check=positive_int)
    prune_fraction: float = value(check=open_unit_interval)
    grow_init: str = value(check=one_of("g2g.sparse.dst:GROW_INITS"))
    stop_fraction: float = value(check=fraction_up_to_one)
    fraction_schedule: str = value(check=one_of("g2g.sparse.dst:FRACTION_SCHEDULES"))
    hebbian_score: str = value(check=one_of("g2g.sparse.dst:HEBBIAN_SCORES"))


# --- encoder ---------------------------------------------------------------------


@dataclass
class EncoderSchema:
    """``encoder=current|rate`` (:mod:`g2g.snn.encoders`)."""

    _target_: str = value()
    name: str = value()
    num_steps: int = value(check=positive_int)
    scale: float = value(check=finite)
    bias: float = value(check=finite)


# --- features --------------------------------------------------------------------


@dataclass
class RawFeaturesSchema:
    """``features=raw``: pixels go straight to the encoder (nothing to build)."""

    name: str = value()


@dataclass
class ResNet32FeaturesSchema:
    """``features=resnet32`` (:func:`g2g.data.features.resnet32_features`, CIFAR only)."""

    _target_: str = "g2g.data.features.resnet32_features"
    _partial_: bool = True
    name: str = value()
    weights: str = value()
    batch_size: int = value(check=positive_int)
    cache_dir: str | None = value()


# --- regularizer -----------------------------------------------------------------


@dataclass
class NoRegularizerSchema:
    """``regularizer=none``: cross-entropy only (nothing to build)."""

    name: str = value()


@dataclass
class FiringRateRegularizerSchema:
    """``regularizer=firing_rate`` (:class:`g2g.training.regularizer.FiringRateRegularizer`)."""

    _target_: str = "g2g.training.regularizer.FiringRateRegularizer"
    name: str = value()
    warmup_epochs: int = value(check=non_negative_int)
    lambda_start: float = value(check=non_negative)
    lambda_end: float = value(check=non_negative)
    target_start: float = value(check=probability)
    target_end: float = value(check=probability)


# --- protocol --------------------------------------------------------------------


@dataclass
class HoldoutSchema:
    """``protocol=holdout``: train on the training split, evaluate on the test split."""

    _target_: str = "g2g.run.protocols.holdout"
    _partial_: bool = True
    name: str = value()
    validation_fraction: float = value(check=validation_fraction)


@dataclass
class CrossValidationSchema:
    """``protocol=crossval``: stratified k-fold cross-validation on the training split."""

    _target_: str = "g2g.run.protocols.crossval"
    _partial_: bool = True
    name: str = value()
    k_folds: int = value(check=at_least_two)
    epochs: int = value(check=positive_int)


# --- hardware --------------------------------------------------------------------


@dataclass
class HardwareSchema:
    """``hardware=auto|cpu|cuda|directml`` (:class:`g2g.hardware.device.Hardware`)."""

    _target_: str = "g2g.hardware.device.Hardware"
    device: str = value(check=one_of("g2g.hardware.device:DEVICES"))
    num_threads: int | None = value(check=optional_positive_int)
    deterministic: bool = value()


# --- the primary config's own keys -----------------------------------------------


@dataclass
class TrainSchema:
    epochs: int = value(check=positive_int)
    batch_size: int = value(check=positive_int)
    lr: float = value(check=positive_number)
    eval_batch_size: int = value(check=positive_int)
    progress: bool = value()
    precision: str = value(check=one_of("g2g.hardware.precision:PRECISIONS"))
    tf32: bool = value()
    optimizer: Any = value()


@dataclass
class CheckpointSchema:
    dir: str = value()
    resume: bool = value()


@dataclass
class TrackingSchema:
    uri: str | None = value()
    experiment: str = value()


@dataclass
class ConfigSchema:
    """The primary config (``conf/config.yaml``); the groups carry their own schemas."""

    seed: int = value(check=non_negative_int)
    train: TrainSchema = field(default_factory=TrainSchema)
    checkpoint: CheckpointSchema = field(default_factory=CheckpointSchema)
    tracking: TrackingSchema = field(default_factory=TrackingSchema)
    dataset: Any = MISSING
    model: Any = MISSING
    sparsity: Any = MISSING
    encoder: Any = MISSING
    features: Any = MISSING
    regularizer: Any = MISSING
    protocol: Any = MISSING
    hardware: Any = MISSING


#: group -> schema name -> dataclass; conf/GROUP/OPTION.yaml names one of them
SCHEMAS: dict[str, dict[str, type]] = {
    "dataset": {"dataset": DatasetSchema},
    "model": {"dense": DenseModelSchema, "sparse": SparseModelSchema, "dense_matched": DenseMatchedModelSchema},
    "sparsity": {"static": StaticSparsitySchema, "dynamic": DynamicSparsitySchema},
    "encoder": {"encoder": EncoderSchema},
    "features": {"raw": RawFeaturesSchema, "resnet32": ResNet32FeaturesSchema},
    "regularizer": {"none": NoRegularizerSchema, "firing_rate": FiringRateRegularizerSchema},
    "protocol": {"holdout": HoldoutSchema, "crossval": CrossValidationSchema},
    "hardware": {"hardware": HardwareSchema},
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore: the primary config's as
    ``schema/config``, each group option's as ``schema/GROUP/NAME``. Idempotent."""
    store = ConfigStore.instance()
    store.store(group="schema", name="config", node=ConfigSchema)
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=schema)
