"""The report of a hyperparameter search, from its Optuna study.

Files (in ``SWEEP_DIR/search_report/``, and in the sweep's MLflow parent run under
``report/search/``):

- ``trials.csv``: every trial (Optuna's ``Study.trials_dataframe``: number, state,
  objective value(s), parameters, duration, whether it was asked again after a stop);
- ``search.md``: the study, its storage, the count of trials by state, and the best
  trial with the command that trains it again (single objective), or the Pareto front
  (several objectives): the trials no other trial beats in every objective, each with
  its command;
- ``pareto_front.png`` (two objectives): every complete trial, the front highlighted.

The command of a trial is ``python run.py FIXED PARAMS hydra.mode=RUN``: the search's
fixed overrides (``hparams_search=NAME`` among them, so the search's settings apply)
and the trial's parameters, as one run. Its run is the trial's: it is found finished,
and e.g. ``seed=43`` or ``protocol.validation_fraction=0`` trains another.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from g2g.reporting import markdown
from g2g.shell import shell_command

if TYPE_CHECKING:
    import optuna

    from g2g.search.study import SearchSettings

log = logging.getLogger(__name__)


def trial_command(fixed: list[str], params: dict, keys: list[str] | None = None) -> str:
    """``python run.py FIXED KEY=VALUE... hydra.mode=RUN`` quoted for the shell: one run
    of a trial (see the module doc)."""
    from g2g.search.study import override_value

    return shell_command("python", "run.py", *fixed,
                         *(f"{key}={override_value(params[key])}" for key in (keys or list(params))), "hydra.mode=RUN")


def _values(trial: optuna.trial.FrozenTrial, objectives: tuple[str, ...]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in zip(objectives, trial.values))


def pareto_figure(study: optuna.Study, objectives: tuple[str, ...]):
    """The complete trials of a two-objective study in the plane of their objectives
    (first objective on the y axis), the Pareto front highlighted and joined; None for
    another number of objectives or without a complete trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(objectives) != 2 or not complete:
        return None
    front = sorted(study.best_trials, key=lambda trial: trial.values[1])
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    axis.scatter([t.values[1] for t in complete], [t.values[0] for t in complete], color="C7", label="trials")
    axis.plot([t.values[1] for t in front], [t.values[0] for t in front], "o-", color="C3", label="Pareto front")
    for trial in front:
        axis.annotate(str(trial.number), (trial.values[1], trial.values[0]), textcoords="offset points",
                      xytext=(4, 4), fontsize=8)
    directions = [d.name.lower() for d in study.directions]
    axis.set(xlabel=f"{objectives[1]} ({directions[1]})", ylabel=f"{objectives[0]} ({directions[0]})",
             title=f"Pareto front of {study.study_name}")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def search_summary(study: optuna.Study, settings: SearchSettings, fixed: list[str]) -> str:
    """``search.md``'s Markdown (see the module doc)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    counts = {state.name: sum(t.state == state for t in trials) for state in optuna.trial.TrialState}
    asked_again = sum(bool(t.user_attrs.get("g2g_interrupted")) for t in trials)
    directions = [d.name.lower() for d in study.directions]
    parts = [f"# Search {markdown.code(settings.study_name)}\n\n",
             f"Storage {markdown.code(settings.storage)}; objective"
             f"{'s' if len(directions) > 1 else ''}: "
             + ", ".join(f"{name} ({direction})" for name, direction in zip(settings.objectives, directions))
             + f"; pruner: {(settings.pruner or {}).get('_target_', 'none')}.\n\n",
             "Trials: " + ", ".join(f"{count} {name}" for name, count in counts.items() if count)
             + (f" ({asked_again} stopped by a command and asked again)" if asked_again else "") + ".\n\n"]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return "".join(parts + ["No trial completed.\n"])
    if len(directions) == 1:
        best = study.best_trial
        parts += [f"Best trial {best.number}: {_values(best, settings.objectives)}.\n\n",
                  f"```bash\n{trial_command(fixed, best.params)}\n```\n"]
        return "".join(parts)
    front = sorted(study.best_trials, key=lambda trial: trial.values[0], reverse=directions[0] == "maximize")
    keys = sorted({key for trial in front for key in trial.params})
    parts += [f"Pareto front: {len(front)} of {len(complete)} complete trials.\n\n",
              markdown.table(["trial", *settings.objectives, *keys, "command"],
                             [[t.number, *(f"{v:.4g}" for v in t.values), *(t.params.get(k, "") for k in keys),
                               markdown.code(trial_command(fixed, t.params))] for t in front]), "\n"]
    return "".join(parts)


def write_search_report(study: optuna.Study, settings: SearchSettings, folder: Path, fixed: list[str],
                        client=None, parent_run_id: str | None = None) -> list[Path]:
    """Write the report's files into ``folder`` (its earlier files are replaced), log them
    to ``parent_run_id`` under ``report/search/`` when given, and log the best trial's
    command. Returns the files."""
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("trials.csv", "search.md", "pareto_front.png"):
        (folder / name).unlink(missing_ok=True)
    files = [folder / "trials.csv", folder / "search.md"]
    study.trials_dataframe().to_csv(files[0], index=False)
    summary = search_summary(study, settings, fixed)
    files[1].write_text(summary)
    figure = pareto_figure(study, settings.objectives)
    if figure is not None:
        files.append(folder / "pareto_front.png")
        figure.savefig(files[-1], dpi=120)
        plt.close(figure)
    if client is not None and parent_run_id:
        for path in files:
            client.log_artifact(parent_run_id, str(path), artifact_path="report/search")
    log.info("search report in %s:\n%s", folder, summary)
    return files
