"""The config's paths, made absolute against the directory where the command was started.

Hydra may run a job in another working directory (``hydra.job.chdir=true``: the job's
output folder ``outputs/DATE/TIME``). A relative path in the config always means the
directory where you typed the command (Hydra's original working directory, or the
current directory without Hydra), so two runs of the same command find the same data,
MLflow store and checkpoints whatever Hydra's working directory.

Every path means what it would mean to a shell in the launch directory: ``~`` and
``~user`` are home folders, and environment variables (``$HOME/data``, ``$SCRATCH/runs``)
are expanded (:func:`g2g.files.expand_path`; a variable that is not set is a
:class:`~g2g.config.validation.ConfigError` naming the key, not a folder named ``$NAME``).
Hydra's own ``${oc.env:HOME}/data`` works too (OmegaConf resolves it first); a shell's
``${NAME}`` is an OmegaConf interpolation of the key ``NAME`` in a config. Any
character may appear in a folder name (``?``, ``%``, ``#``, spaces), the launch
directory's included; on the command line, quote a value that Hydra's override syntax
would read (``'dataset.root="~/data"'``, ``#``, ``,``, ``=``, brackets).

What :func:`absolute_paths` rewrites:

- where things are (:data:`LOCATION_KEYS`: ``dataset.root``, ``checkpoint.dir``,
  ``features.cache_dir``): expanded, made absolute and normalised. These keys are not
  in the checkpoint hash (:data:`g2g.tracking.params.NON_RESULT_KEYS`), so the hash
  does not change.
- ``tracking.uri``: null becomes ``MLFLOW_TRACKING_URI`` or the SQLite file
  ``mlflow.db`` in the launch directory; a ``sqlite:///FILE`` is expanded, made
  absolute and percent-encoded where SQLAlchemy needs it
  (:func:`g2g.tracking.store.resolve_tracking_uri`, :func:`g2g.tracking.store.sqlite_uri`);
  not in the hash.
- ``features.weights`` (a ResNet-32 state dict; IS in the hash, because other weights
  give other results): a relative path, or one with an environment variable, becomes
  the normalised absolute path of the file it names, so the hash names the file the
  run reads. The same file reached from two launch directories (``w.pt`` in ``/a``,
  ``../a/w.pt`` in ``/b``) gets one hash, and two different files that share a
  relative name get two. ``hub``, absolute paths and ``~/...`` paths do not depend on
  the launch directory and are kept as written, so their hashes are the same as before.

It first checks that every interpolation of the config resolves
(:func:`g2g.config.validation.check_interpolations`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from g2g.config.validation import ConfigError, check_interpolations
from g2g.files import expand_path
from g2g.tracking.store import TRACKING_URI_ENV, resolve_tracking_uri, sqlite_uri_problem

#: config keys that say where things are (not result-affecting, not in the hash)
LOCATION_KEYS = ("dataset.root", "checkpoint.dir", "features.cache_dir")
#: ``features.weights`` values that are not paths
NAMED_WEIGHTS = ("hub",)


def launch_directory() -> Path:
    """The directory where the command was started: Hydra's original working
    directory when Hydra runs the job, else the current directory."""
    return Path(to_absolute_path("."))


def absolute_location(path: str) -> str:
    """``path`` expanded as a shell would (``~``, ``$NAME``: :func:`g2g.files.expand_path`),
    made absolute against :func:`launch_directory` and normalised (``a/../b`` -> ``b``).

    Raises:
        ValueError: ``path`` names an environment variable that is not set.
    """
    return os.path.normpath(to_absolute_path(expand_path(path)))


def absolute_weights(weights: str) -> str:
    """``features.weights``: a relative path, or one with an environment variable, made
    absolute (:func:`absolute_location`); ``hub``, and absolute and ``~/...`` paths
    without a variable, unchanged (see the module docstring for why).

    Raises:
        ValueError: ``weights`` names an environment variable that is not set.
    """
    if weights in NAMED_WEIGHTS:
        return weights
    without_variables = expand_path(weights) == os.path.expanduser(weights)
    if without_variables and (weights.startswith("~") or Path(weights).is_absolute()):
        return weights
    return absolute_location(weights)


def absolute_paths(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose paths are absolute against :func:`launch_directory`
    (what changes: the module docstring). Values that are not strings are left for
    :func:`g2g.config.validation.validate` to refuse; an interpolation that already gives
    an absolute path (``features.cache_dir: ${dataset.root}/features``) is kept.

    Args:
        cfg: the composed config.
    Returns:
        The copy; ``cfg`` itself is not changed.
    Raises:
        ConfigError: an interpolation that does not resolve
            (:func:`g2g.config.validation.check_interpolations`), a path that names an
            environment variable that is not set, or a SQLite URI with a ``?`` that is
            not a query string; each named with its key.
    """
    check_interpolations(cfg)
    cfg = copy.deepcopy(cfg)
    problems = [_rewrite(cfg, key, absolute_location) for key in LOCATION_KEYS]
    problems.append(_rewrite(cfg, "features.weights", absolute_weights))
    if "tracking" in cfg:
        problems.append(_absolute_tracking_uri(cfg))
    problems = [problem for problem in problems if problem]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return cfg


def _rewrite(cfg: DictConfig, key: str, absolute) -> str | None:
    """Set ``key`` to ``absolute(value)`` when it holds a string that changes; returns
    the problem (``key=value: why``) when ``absolute`` refuses the value."""
    value = OmegaConf.select(cfg, key, default=None)
    if not isinstance(value, str):
        return None
    try:
        path = absolute(value)
    except ValueError as error:
        return f"{key}={value!r}: {error}"
    if path != value:
        OmegaConf.update(cfg, key, path, merge=False)
    return None


def _absolute_tracking_uri(cfg: DictConfig) -> str | None:
    """Set ``tracking.uri`` to the store this run logs to; returns the problem, naming
    ``tracking.uri`` or ``MLFLOW_TRACKING_URI`` (whichever chose the store), when its
    SQLite file cannot be one."""
    configured = cfg.tracking.get("uri")
    source = (f"tracking.uri={configured!r}" if configured
              else f"{TRACKING_URI_ENV}={os.environ.get(TRACKING_URI_ENV)!r} (tracking.uri is null)")
    try:
        uri = resolve_tracking_uri(configured, launch_directory())
    except ValueError as error:
        return f"{source}: {error}"
    problem = sqlite_uri_problem(uri)
    if problem:
        return f"{source}: {problem}"
    cfg.tracking.uri = uri
    return None
