"""Hyperparameter search: the Optuna study a search's trials report to.

The sweeper (``hydra/sweeper=optuna``, :mod:`hydra_plugins.g2g_optuna_sweeper`) asks the
study for trials and launches each as a job of the sweep; :mod:`g2g.search.study` holds
what both sides share: the search's settings (written once into the sweep folder), the
storage, the refusal of test-split objectives, and the pruning hook a trial's training
loop reports its validation metric to after every epoch. :mod:`g2g.search.report`
writes the search's own report (trials, best trial as a command, Pareto front).
See docs/search.md.
"""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "study": ["SearchSettings", "SearchConfigError", "PruningHook", "check_search", "trial_hooks"],
    "report": ["write_search_report"],
})
