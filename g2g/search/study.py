"""What a hyperparameter search and its trials share: the study's settings, its storage,
the checks that make it select on a validation split, and the pruning hook.

The sweeper writes the settings once into the sweep folder (:data:`SEARCH_FILE`,
:meth:`SearchSettings.write`) and passes each job its trial number in the environment
(:data:`g2g.tracking.names.TRIAL_ENV`, read by :class:`g2g.lifecycle.runtime.JobRuntime`);
a job then opens the same study (:func:`trial_hooks`) and reports its objective metric to
it after every epoch, and the study's pruner may stop it there
(:class:`g2g.lifecycle.guard.RunPruned`: the run ends ``PRUNED``).

Storage (``hydra.sweeper.storage``): an SQLAlchemy URL (``sqlite:///…``,
``postgresql://…``: Optuna's RDB storage) or the path of a journal file (Optuna's
``JournalFileBackend``: one file, safe for several processes on one machine or a shared
file system); the default is :data:`STORAGE_FILE` beside the MLflow SQLite store, or in
the folder where the command ran for any other store.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from g2g.config.validation import ConfigError
from g2g.files import atomic_write
from g2g.lifecycle.guard import RunPruned
from g2g.tracking.names import SEARCH_FILE

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

#: Optuna's optimisation directions
DIRECTIONS = ("maximize", "minimize")
#: prefixes of metrics measured on the test split: a search does not select on them
#: unless ``hydra.sweeper.allow_test_objective=true``
TEST_PREFIXES = ("test_", "best_test_")
#: metrics of the validation split (holdout with ``protocol.validation_fraction`` > 0, or
#: cross-validation): what a search selects on
VALIDATION_PREFIXES = ("val_", "best_val_", "cv_val_")
#: the pruner that never prunes (``hydra/sweeper/pruner=none``)
NO_PRUNER = "optuna.pruners.NopPruner"
#: the default journal file of the studies, beside the MLflow SQLite store
STORAGE_FILE = "optuna_studies.log"


class SearchConfigError(ConfigError):
    """A search setting that cannot work; the message names the key, the value and what
    is allowed. Raised before any trial runs (and before the sweep's MLflow run exists:
    :func:`check_search` runs first thing in the sweep's callback)."""


@dataclass(frozen=True)
class SearchSettings:
    """The study a search's trials report to.

    Attributes:
        study_name: the Optuna study (several searches may share a storage).
        storage: an SQLAlchemy URL, or a journal file's path (see the module doc).
        objectives: the metrics of a trial's summary the study optimises, e.g.
            ``("val_accuracy",)`` or ``("val_accuracy", "energy_nj")``.
        directions: one of :data:`DIRECTIONS` per objective.
        pruner: the pruner's config (``_target_`` and its arguments, as
            ``hydra.sweeper.pruner``), or None for no pruning.
    """

    study_name: str
    storage: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    pruner: dict | None = None

    def write(self, sweep_dir: Path) -> Path:
        """Write the settings into ``sweep_dir/``:data:`SEARCH_FILE` (atomically)."""
        path = Path(sweep_dir) / SEARCH_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(asdict(self), indent=1).encode()
        atomic_write(path, lambda file: file.write(text))
        return path

    @classmethod
    def read(cls, sweep_dir: Path) -> SearchSettings:
        """The settings the search in ``sweep_dir`` wrote.

        Raises:
            FileNotFoundError: no search wrote there (the job was not launched by one).
        """
        state = json.loads((Path(sweep_dir) / SEARCH_FILE).read_text())
        return cls(state["study_name"], state["storage"], tuple(state["objectives"]), tuple(state["directions"]),
                   state.get("pruner"))


def override_value(value: Any) -> str:
    """A sampled value as an override's value: floats by ``repr`` (all digits: the same
    value gives the same run folder), booleans as ``true``/``false``, None as ``null``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, float) else str(value)


def default_storage(tracking_uri: str | None, cwd: Path) -> str:
    """:data:`STORAGE_FILE` in the folder of the MLflow SQLite store ``tracking_uri``
    (None: ``mlflow.db`` in ``cwd``, as g2g's default store), else in ``cwd``."""
    from g2g.tracking.store import sqlite_path  # MLflow only when a search starts

    if tracking_uri is None:
        return str(Path(cwd).resolve() / STORAGE_FILE)
    path = sqlite_path(tracking_uri)
    return str((path.parent if path is not None else Path(cwd)).resolve() / STORAGE_FILE)


def open_storage(storage: str):
    """Optuna's storage for ``storage``: an RDB storage for a URL (``…://…``), else a
    journal file (its folder is created)."""
    import optuna  # Optuna only when a search runs

    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(storage)))


def check_settings(objectives: tuple[str, ...], directions: tuple[str, ...], *, allow_test_objective: bool,
                   protocol: str, validation_fraction: float, pruner: dict | None) -> None:
    """Refuse a search that cannot select honestly or cannot run, before any trial.

    Raises:
        SearchConfigError: no objective; a direction not in :data:`DIRECTIONS` or not one
            per objective; a test-split objective without ``allow_test_objective``; a
            validation objective without a validation split (holdout with
            ``protocol.validation_fraction`` 0); a pruner on a multi-objective study
            (Optuna prunes single-objective studies only).
    """
    if not objectives:
        raise SearchConfigError("hydra.sweeper.objective is empty: name the metric(s) to optimise, e.g. "
                                "val_accuracy")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad or len(directions) != len(objectives):
        raise SearchConfigError(
            f"hydra.sweeper.direction={list(directions)} must give one of {', '.join(DIRECTIONS)} for each "
            f"objective {list(objectives)}")
    for objective in objectives:
        if objective.startswith(TEST_PREFIXES) and not allow_test_objective:
            raise SearchConfigError(
                f"hydra.sweeper.objective={objective} is measured on the test split: a search that selects on it "
                "reports an optimistic test accuracy. Select on the validation split: val_accuracy with "
                "protocol.validation_fraction=0.1 (or protocol=crossval and cv_val_accuracy_mean); or set "
                "hydra.sweeper.allow_test_objective=true to search on the test split anyway")
    needs_validation = [o for o in objectives if o.startswith(VALIDATION_PREFIXES)]
    if needs_validation and protocol == "holdout" and not validation_fraction:
        raise SearchConfigError(
            f"hydra.sweeper.objective={needs_validation[0]} needs a validation split, but "
            f"protocol.validation_fraction={validation_fraction}: set protocol.validation_fraction (e.g. 0.1) "
            "or protocol=crossval")
    if needs_validation and protocol == "crossval" and not all(o.startswith("cv_val_") for o in needs_validation):
        raise SearchConfigError(
            f"hydra.sweeper.objective={needs_validation[0]}: a cross-validation's result is cv_val_accuracy_mean "
            "(the mean over folds); use it as the objective")
    if pruner is not None and pruner.get("_target_") != NO_PRUNER and len(objectives) > 1:
        raise SearchConfigError(
            f"hydra.sweeper.pruner={pruner.get('_target_')}: Optuna prunes single-objective studies only, and this "
            f"one has {len(objectives)} objectives ({', '.join(objectives)}); set hydra/sweeper/pruner=none")


#: the ``_target_`` of g2g's search sweeper (conf/hydra/sweeper/optuna.yaml)
SEARCH_SWEEPER = "hydra_plugins.g2g_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def as_tuple(value) -> tuple[str, ...]:
    """A config value that is one name or a list of names, as a tuple."""
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def check_search(config) -> None:
    """:func:`check_settings` on a composed config (``hydra.sweeper`` and ``protocol``)
    when its sweeper is g2g's search sweeper; nothing otherwise.

    Raises:
        SearchConfigError: see :func:`check_settings`.
    """
    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != SEARCH_SWEEPER:
        return
    pruner = sweeper.get("pruner")
    check_settings(as_tuple(sweeper.get("objective", "val_accuracy")), as_tuple(sweeper.get("direction", "maximize")),
                   allow_test_objective=bool(sweeper.get("allow_test_objective", False)),
                   protocol=str(config.protocol.name),
                   validation_fraction=float(config.protocol.get("validation_fraction") or 0.0),
                   pruner=dict(pruner) if pruner else None)


def make_pruner(pruner: dict | None) -> optuna.pruners.BasePruner:
    """The pruner a config describes (``_target_`` and arguments, instantiated by Hydra);
    Optuna's ``NopPruner`` for None (a study loaded without a pruner would prune with
    Optuna's default, the median rule)."""
    import optuna
    from hydra.utils import instantiate

    return optuna.pruners.NopPruner() if pruner is None else instantiate(pruner)


def load_trial(settings: SearchSettings, number: int) -> optuna.trial.Trial:
    """Trial ``number`` of the settings' study, to report to from a job's process."""
    import optuna

    storage = open_storage(settings.storage)
    study_id = storage.get_study_id_from_name(settings.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    study = optuna.load_study(study_name=settings.study_name, storage=storage, pruner=make_pruner(settings.pruner))
    return optuna.trial.Trial(study, trial_id)


class PruningHook:
    """A training-loop hook (:func:`g2g.run.loop.fit`) that reports the objective metric of
    each epoch to the trial (step = epoch) and ends the run when the study's pruner says
    so (:class:`~g2g.lifecycle.guard.RunPruned`, after the epoch's metrics and checkpoint
    were saved: it comes after the metrics and checkpoint hooks).

    Epochs of a resumed run that the trial has not seen (its checkpoint's) are reported
    first. An epoch without the metric (e.g. ``val_accuracy`` of a run without a
    validation split) is not reported, said once.
    """

    def __init__(self, trial: optuna.trial.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.reported: set[int] = set()
        self.warned = False

    def on_epoch_end(self, state) -> None:
        for row in state.history:
            epoch, value = row["epoch"], row.get(self.metric)
            if epoch in self.reported:
                continue
            if value is None or not math.isfinite(value):
                if not self.warned:
                    log.warning("trial %d: epoch %d has no finite %s to report; it is not pruned on it",
                                self.trial.number, epoch, self.metric)
                    self.warned = True
                continue
            self.trial.report(float(value), step=epoch)
            self.reported.add(epoch)
        row = state.history[-1]
        if row["epoch"] in self.reported and self.trial.should_prune():
            pruner = type(self.trial.study.pruner).__name__
            raise RunPruned(f"trial {self.trial.number} stopped by {pruner} after epoch {row['epoch']} "
                            f"({self.metric} {row[self.metric]:.4f})")

    def on_stop(self, state) -> None:
        pass

    def on_fit_end(self, state) -> None:
        pass


def trial_hooks(sweep_dir: Path | None, trial_number: int | None, protocol: str) -> list:
    """The hooks of a search's trial (:class:`PruningHook` on its first objective), or
    none outside a search, for a multi-objective study (nothing to prune on), or for a
    cross-validation (its folds are separate trainings; the trial's value is their mean)."""
    if sweep_dir is None or trial_number is None or protocol != "holdout":
        return []
    settings = SearchSettings.read(sweep_dir)
    if len(settings.objectives) != 1:
        return []
    return [PruningHook(load_trial(settings, trial_number), settings.objectives[0])]
