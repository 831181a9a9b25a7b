"""The config's paths, made absolute against the directory where the command was started.

Hydra may run a job in another working directory (``hydra.job.chdir=true``: the job's
output folder ``outputs/DATE/TIME``). A relative path in the config always means the
directory where you typed the command (Hydra's original working directory, or the
current directory without Hydra), so two runs of the same command find the same data,
MLflow store and checkpoints whatever Hydra's working directory.

What :func:`absolute_paths` rewrites:

- where things are (:data:`LOCATION_KEYS`: ``dataset.root``, ``checkpoint.dir``,
  ``features.cache_dir``): ``~`` expanded, made absolute and normalised. These keys
  are not in the checkpoint hash (:data:`g2g.tracking.params.NON_RESULT_KEYS`), so the
  hash does not change.
- ``tracking.uri``: null becomes ``MLFLOW_TRACKING_URI`` or the SQLite file
  ``mlflow.db`` in the launch directory, and a relative ``sqlite:///FILE`` becomes
  absolute (:func:`g2g.tracking.store.resolve_tracking_uri`); not in the hash.
- ``features.weights`` (a ResNet-32 state dict; IS in the hash, because other weights
  give other results): a relative path becomes the normalised absolute path of the
  file it names from the launch directory, so the hash names the file the run reads.
  The same file reached from two launch directories (``w.pt`` in ``/a``, ``../a/w.pt``
  in ``/b``) gets one hash, and two different files that share a relative name get two.
  ``hub``, absolute paths and ``~/...`` paths do not depend on the launch directory
  and are kept as written, so their hashes are the same as before.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from g2g.tracking.store import resolve_tracking_uri

#: config keys that say where things are (not result-affecting, not in the hash)
LOCATION_KEYS = ("dataset.root", "checkpoint.dir", "features.cache_dir")
#: ``features.weights`` values that are not paths
NAMED_WEIGHTS = ("hub",)


def launch_directory() -> Path:
    """The directory where the command was started: Hydra's original working
    directory when Hydra runs the job, else the current directory."""
    return Path(to_absolute_path("."))


def absolute_location(path: str) -> str:
    """``path`` with ``~`` expanded, made absolute against :func:`launch_directory` and
    normalised (``a/../b`` -> ``b``)."""
    return os.path.normpath(to_absolute_path(os.path.expanduser(path)))


def absolute_weights(weights: str) -> str:
    """``features.weights``: a relative path made absolute against the launch
    directory and normalised; ``hub``, absolute and ``~/...`` paths unchanged (see the
    module docstring for why)."""
    if weights in NAMED_WEIGHTS or weights.startswith("~") or Path(weights).is_absolute():
        return weights
    return absolute_location(weights)


def absolute_paths(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose paths are absolute against :func:`launch_directory`
    (what changes: the module docstring). Values that are not strings are left for
    :func:`g2g.run.validation.validate` to refuse; an interpolation that already gives
    an absolute path (``features.cache_dir: ${dataset.root}/features``) is kept.

    Args:
        cfg: the composed config.
    Returns:
        The copy; ``cfg`` itself is not changed.
    """
    cfg = copy.deepcopy(cfg)
    for key in LOCATION_KEYS:
        _rewrite(cfg, key, absolute_location)
    _rewrite(cfg, "features.weights", absolute_weights)
    if "tracking" in cfg:
        cfg.tracking.uri = resolve_tracking_uri(cfg.tracking.get("uri"), launch_directory())
    return cfg


def _rewrite(cfg: DictConfig, key: str, absolute) -> None:
    """Set ``key`` to ``absolute(value)`` when it holds a string that changes."""
    value = OmegaConf.select(cfg, key, default=None)
    if isinstance(value, str) and absolute(value) != value:
        OmegaConf.update(cfg, key, absolute(value), merge=False)
