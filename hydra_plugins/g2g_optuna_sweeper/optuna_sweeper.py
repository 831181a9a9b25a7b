"""A Hydra sweeper that searches hyperparameters with Optuna (>= 4), pruning, multiple
objectives and a study that survives the command.

``python run.py hparams_search=NAME`` (conf/hparams_search/) or ``hydra/sweeper=optuna``.
The config interface is that of Hydra's official Optuna sweeper (hydra-optuna-sweeper
1.3, which requires optuna < 3), so its users' configs carry over:
``hydra.sweeper.params`` with ``interval(a, b)`` (float), ``int(interval(a, b))``,
``tag(log, interval(a, b))``, ``choice(a, b)`` or ``a,b`` (categorical), ``range(a, b,
step)`` (integers from a to b inclusive, as the official plugin), and ``direction``,
``n_trials``, ``n_jobs``, ``sampler``, ``storage``, ``study_name``. A sweep on the command
line (``model.beta=interval(0.5,0.99)``) joins the search space too; other overrides go
to every trial. Beyond it (docs/search.md):

- ``objective``: the metric(s) of a trial's summary to optimise (default
  ``val_accuracy``); a test-split metric, or a validation metric without a validation
  split, is refused before any trial (``allow_test_objective: true`` to search on the test
  split anyway);
- ``pruner`` (``hydra/sweeper/pruner``: median, hyperband, successive_halving, none): the
  jobs report the objective after every epoch to the study, and a pruned trial's run ends
  PRUNED (MLflow: KILLED with the tag ``g2g.pruned``), which is not a failure of the sweep;
- several objectives (``direction: [maximize, minimize]``): the Pareto front is written
  as a table and a figure;
- resumable: the study lives in ``storage`` (default: a journal file beside the MLflow
  store) under a name derived from the command, so running the same command again
  continues it: ``n_trials`` is the study's total, finished trials are not rerun, and a
  trial the last command left running (Ctrl-C) is asked again with the same parameters,
  so its run resumes from its checkpoint.

Trials run ``n_jobs`` at a time through the configured launcher (joblib here, submitit on
a cluster); each is a child run of the sweep's MLflow parent run, tagged with its trial
number and, once told, its Optuna state (COMPLETE, PRUNED, FAIL). A trial that fails is
told FAIL and the search goes on. At the end the search's report (trials, best trial as a
command to copy, Pareto front) is written to ``SWEEP_DIR/search_report/`` and logged to
the parent run under ``report/search/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from g2g.search.study import as_tuple, override_value

log = logging.getLogger(__name__)


def distribution(override: Override):
    """The Optuna distribution of a sweep override, as the official plugin maps it:
    ``choice``/``a,b`` -> categorical (shuffled ranges too), ``range(a, b, step)`` -> int
    (float when a bound is), ``interval`` -> float, or int when both bounds are ints
    (``int(interval(...))``), with ``log`` from ``tag(log, ...)``.

    Raises:
        ValueError: a sweep Optuna cannot sample (names the override).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution([x if isinstance(x, (int, float, bool, str)) or x is None
                                        else Transformer.encode(x)
                                        for x in override.sweep_iterator(transformer=Transformer.identity)])
    if isinstance(value, RangeSweep):
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: Optuna cannot sample this sweep; use choice(...), range(...) or "
                     "interval(...)")


def search_space(parser: OverridesParser, params: dict | None, arguments: list[str]) -> tuple[dict, list[str]]:
    """The search space and the fixed overrides of every trial, from ``hydra.sweeper.params``
    and the command-line ``arguments`` (the command line wins for a key in both).

    Returns:
        (key -> Optuna distribution, in order; the overrides that are not sweeps, as typed).
    """
    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    overrides = {}
    for override in parser.parse_overrides(lines) + parser.parse_overrides(list(arguments)):
        overrides[override.get_key_element()] = override
    space, fixed = {}, []
    for key, override in overrides.items():
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


class OptunaSweeper(Sweeper):
    """See the module doc. Arguments are the keys of ``hydra.sweeper``
    (conf/hydra/sweeper/optuna.yaml)."""

    def __init__(self, sampler: Any = None, direction: Any = "maximize", storage: str | None = None,
                 study_name: str | None = None, n_trials: int = 20, n_jobs: int = 2, params: dict | None = None,
                 pruner: Any = None, objective: Any = "val_accuracy", allow_test_objective: bool = False,
                 search_space: Any = None, custom_search_space: Any = None) -> None:
        if search_space or custom_search_space:
            raise ValueError("hydra.sweeper.search_space and custom_search_space (deprecated or code in the official "
                             "plugin) are not supported: give the space in hydra.sweeper.params")
        self.sampler_config = sampler
        self.objectives, self.directions = as_tuple(objective), as_tuple(direction)
        self.storage, self.study_name = storage, study_name
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.params = dict(params or {})
        if isinstance(pruner, DictConfig):
            pruner = OmegaConf.to_container(pruner, resolve=True)
        self.pruner_config = dict(pruner) if pruner else None
        self.allow_test_objective = bool(allow_test_objective)
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from g2g.search.study import check_search

        check_search(config)  # also done by the sweep's callback, before its MLflow run exists
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def _default_study_name(self, space: dict, fixed: list[str]) -> str:
        """``EXPERIMENT-search-HASH``: the hash of the search space, the objectives and the
        trials' fixed overrides (less ``hydra.*``: the sweep folder, the launcher, the
        budget), so the same command, also with more ``n_trials``, continues the same study."""
        text = repr((sorted((key, repr(value)) for key, value in space.items()), self.objectives, self.directions,
                     sorted(line for line in fixed if not line.lstrip("+~").startswith("hydra."))))
        return f"{self.config.tracking.experiment}-search-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    def sweep(self, arguments: list[str]) -> Any:
        import optuna
        from hydra.utils import instantiate

        from g2g.search.report import write_search_report
        from g2g.search.study import SearchSettings, default_storage, make_pruner, open_storage
        from g2g.tracking.names import PARENT_RUN_ENV, SWEEP_STOP_FILE, TAG_STUDY, TRIAL_ENV
        from g2g.tracking.sweep_callback import write_job_list

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space, fixed = search_space(parser, self.params, arguments)
        if not space:
            raise SystemExit("error: invalid search: hydra.sweeper.params has nothing to search: give at least one "
                             "key with interval(...), choice(...) or range(...)")
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        settings = SearchSettings(
            study_name=self.study_name or self._default_study_name(space, fixed),
            storage=str(self.storage or default_storage(self.config.tracking.uri, Path.cwd())),
            objectives=self.objectives, directions=self.directions, pruner=self.pruner_config)
        settings.write(sweep_dir)
        storage = open_storage(settings.storage)
        sampler = instantiate(self.sampler_config) if self.sampler_config else None
        study = optuna.create_study(study_name=settings.study_name, storage=storage, sampler=sampler,
                                    pruner=make_pruner(settings.pruner), directions=list(self.directions),
                                    load_if_exists=True)
        if [d.name.lower() for d in study.directions] != list(self.directions):
            raise SystemExit(f"error: study {settings.study_name!r} in {settings.storage} optimises "
                             f"{[d.name.lower() for d in study.directions]}, not hydra.sweeper.direction="
                             f"{list(self.directions)}: set hydra.sweeper.study_name to another name")
        parent_run_id = os.environ.get(PARENT_RUN_ENV)
        client = _mlflow_client()
        if parent_run_id:
            client.set_tag(parent_run_id, TAG_STUDY, f"{settings.study_name} in {settings.storage}")
        done = _resume(study, storage)
        remaining = self.n_trials - done
        log.info("study %s (%s): %d of %d trials done; running %d, %d at a time", settings.study_name,
                 settings.storage, done, self.n_trials, max(remaining, 0), self.n_jobs)
        jobs: list[list[str]] = []
        returns, index = [], 0
        exhausted = False
        while remaining > 0 and not exhausted and not (sweep_dir / SWEEP_STOP_FILE).exists():
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            batch = [fixed + [f"{key}={override_value(trial.params[key])}" for key in space] for trial in trials]
            jobs += batch
            write_job_list(sweep_dir, jobs)  # the sweep's end counts every job, also one that never starts
            results = self.launcher.launch([overrides + [f"+hydra.job.env_set.{TRIAL_ENV}={trial.number}"]
                                            for overrides, trial in zip(batch, trials)], initial_job_idx=index)
            index += len(batch)
            runs = _runs_by_overrides(client, parent_run_id)  # the batch's child runs, read once
            for trial, overrides, result in zip(trials, batch, results):
                done, stopped = _tell(study, trial, result, settings.objectives, client,
                                      runs.get(" ".join(overrides), []))
                remaining, exhausted = remaining - done, exhausted or stopped
            returns.append(results)
        # the trials are in the study whatever happens here; a failure goes on to the sweep's end
        write_search_report(study, settings, sweep_dir / "search_report", fixed, client, parent_run_id)
        return returns


def _mlflow_client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _runs_by_overrides(client, parent_run_id: str | None) -> dict[str, list[str]]:
    """The sweep's child runs by their overrides (tag ``g2g.overrides``): run ids."""
    from g2g.tracking.names import TAG_OVERRIDES
    from g2g.tracking.runs import sweep_children

    runs: dict[str, list[str]] = {}
    for run in sweep_children(client, parent_run_id) if parent_run_id else []:
        runs.setdefault(run.data.tags.get(TAG_OVERRIDES), []).append(run.info.run_id)
    return runs


def _resume(study, storage) -> int:
    """Count the trials of an earlier command that are done (COMPLETE, PRUNED, FAIL), and
    ask again, with the same parameters, those it left RUNNING (stopped by Ctrl-C or a
    kill): each is told FAIL (marked ``g2g_interrupted``) and enqueued, so its run resumes
    from its checkpoint. Returns the number done."""
    import optuna

    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "g2g_interrupted", True)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"g2g_resumes_trial": trial.number})
        log.info("trial %d was left running by an earlier command: asked again with the same parameters %s",
                 trial.number, trial.params)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return sum(1 for trial in study.get_trials(deepcopy=False, states=finished)
               if not trial.user_attrs.get("g2g_interrupted"))


def _tell(study, trial, result, objectives: tuple[str, ...], client, run_ids: list[str]) -> tuple[int, bool]:
    """Tell the study how ``trial``'s job ended and tag its MLflow runs ``run_ids``. Returns (1 when the
    trial is done: COMPLETE, PRUNED, FAIL; 0 when it was stopped: it stays RUNNING and the
    next command asks it again; whether the sampler has sampled its whole space)."""
    import optuna

    from g2g.tracking.names import TAG_TRIAL, TAG_TRIAL_STATE

    outcome = result.return_value if result.status == JobStatus.COMPLETED else None
    status = (outcome or {}).get("status", "FAILED")
    if status == "KILLED":
        log.warning("trial %d was stopped; the next command asks it again", trial.number)
        return 0, False
    state, values = optuna.trial.TrialState.FAIL, None
    if status == "PRUNED":
        state = optuna.trial.TrialState.PRUNED
    elif status == "FINISHED":
        summary = outcome["summary"]
        missing = [name for name in objectives if not isinstance(summary.get(name), (int, float))]
        if missing:
            log.error("trial %d has no %s in its summary (it has %s): told FAIL", trial.number, ", ".join(missing),
                      ", ".join(sorted(k for k, v in summary.items() if isinstance(v, (int, float)))))
        else:
            state, values = optuna.trial.TrialState.COMPLETE, [float(summary[name]) for name in objectives]
    else:
        log.error("trial %d failed: %s", trial.number, (outcome or {}).get("reason") or result.status)
    exhausted = False
    try:
        study.tell(trial, values if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    except RuntimeError as error:  # the trial is stored; a grid or brute-force sampler that has asked its
        if "Study.stop" not in str(error):  # whole space calls Study.stop, which Optuna allows only in optimize()
            raise
        log.info("the sampler has asked every point of its search space: the search ends")
        exhausted = True
    for run_id in run_ids:
        client.set_tag(run_id, TAG_TRIAL, str(trial.number))
        client.set_tag(run_id, TAG_TRIAL_STATE, state.name)
    return 1, exhausted
