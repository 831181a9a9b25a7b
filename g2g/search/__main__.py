"""``python -m g2g.search best SWEEP_DIR``: the best trial of the search that ran in
SWEEP_DIR, as overrides for ``run.py`` (one ``key=value`` per trial parameter, quoted for
the shell), to train it again, e.g. with more seeds on the full training set::

    python run.py -m experiment=quick model=mixer seed=42,43,44 $(python -m g2g.search best multirun/DATE/TIME)

The study and its storage are those the search wrote into the folder (``.g2g_search.json``).
A search with several objectives has no single best trial: its Pareto front is in
``search_report/search.md``. Exit status 2 when the folder holds no search or the study has
no completed trial (the message says which).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def best_overrides(sweep_dir: Path) -> list[str]:
    """The best completed trial's parameters of the search in ``sweep_dir`` as overrides.

    Raises:
        FileNotFoundError: no search ran in ``sweep_dir``.
        ValueError: a study with several objectives, or without a completed trial.
    """
    import optuna

    from g2g.search.study import SearchSettings, open_storage, override_value

    settings = SearchSettings.read(sweep_dir)
    if len(settings.objectives) > 1:
        raise ValueError(f"the study {settings.study_name!r} has {len(settings.objectives)} objectives "
                         f"({', '.join(settings.objectives)}): no single best trial; its Pareto front is in "
                         f"{Path(sweep_dir) / 'search_report' / 'search.md'}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=settings.study_name, storage=open_storage(settings.storage))
    try:
        best = study.best_trial
    except ValueError as error:
        raise ValueError(f"the study {settings.study_name!r} has no completed trial yet") from error
    return [f"{key}={override_value(value)}" for key, value in best.params.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2g.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    best = commands.add_parser("best", help="the best trial's parameters as run.py overrides")
    best.add_argument("sweep_dir", type=Path, help="the folder of the search (its hydra.sweep.dir)")
    args = parser.parse_args(argv)
    from g2g.shell import shell_command

    try:
        overrides = best_overrides(args.sweep_dir)
    except FileNotFoundError:
        print(f"error: no search ran in {args.sweep_dir} (no .g2g_search.json there); give the folder of a "
              "search (hydra.sweep.dir, printed when it starts)", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(shell_command(*overrides))
    return 0


if __name__ == "__main__":
    sys.exit(main())
