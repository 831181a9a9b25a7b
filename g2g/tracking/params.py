"""A nested config as MLflow params: dotted keys, and which of them do not change
results. Imports nothing heavy, so that :mod:`g2g.config_docs` can use it without
MLflow."""

from __future__ import annotations

#: config paths that do not change results (where things go, how fast, how shown): left
#: out of the checkpoint hash (:func:`g2g.lifecycle.checkpoint.result_config`) and of the
#: settings the results page requires runs to share (a param whose dotted key is one of
#: these or starts with one of these plus ``.``)
NON_RESULT_KEYS = (
    "tracking",
    "checkpoint",
    "hardware",
    "dataset.root",
    "dataset.download",
    "train.progress",
    "train.eval_batch_size",
    "features.batch_size",
    "features.cache_dir",
)


#: the MLflow param with the type of the device a run computed on (``cpu``, ``cuda``): not a
#: config key (``hardware.device=auto`` resolves per machine) but result-affecting, so runs
#: on different devices are not pooled; ``train.precision`` and ``train.tf32`` are config keys
PARAM_DEVICE = "device"


def is_non_result_key(dotted: str) -> bool:
    """Whether the param ``dotted`` (``hardware.num_threads``) lies under one of
    :data:`NON_RESULT_KEYS`."""
    return any(dotted == key or dotted.startswith(key + ".") for key in NON_RESULT_KEYS)


def flatten(container: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become their string form."""
    flat: dict[str, object] = {}
    for key, value in container.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
