"""Dynamic sparse training (DST): prune and grow connections of the masked layers.

Modules, by concern:

- :mod:`~g2g.sparse.dst.core`: :class:`DynamicSparsity`, the trainer's DST (which layers,
  the update itself, update records, checkpoint state);
- :mod:`~g2g.sparse.dst.schedule`: which steps update (the stop step) and the prune
  fraction of each update (``constant`` or ``cosine``), exact prune counts;
- :mod:`~g2g.sparse.dst.rules`: the prune and grow rule registries (``set``, ``random``,
  ``hebb`` / ``hebb``, ``random``) and the initial values of grown weights;
- :mod:`~g2g.sparse.dst.hebbian`: :class:`HebbianTrace`, the ``cosine`` or
  ``correlation`` score of the ``hebb`` rules;
- :mod:`~g2g.sparse.dst.adam_restart`: :class:`AdamRestart`, which restarts Adam's state
  of the changed entries exactly as a fresh parameter would have it (the training step
  calls it: ``adam_restart.step()`` instead of ``optimizer.step()``, and
  ``adam_restart.restart(changed)`` after an update).

``from g2g.sparse.dst import DynamicSparsity`` imports only what that name needs.
"""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "core": ["DynamicSparsity", "UpdateRecord", "group_densities"],
    "schedule": ["UpdateSchedule", "FRACTION_SCHEDULES", "prune_count", "exact_fraction"],
    "rules": ["PRUNE_SCORES", "GROW_SCORES", "GROW_INITIALIZERS", "PRUNE_RULES", "GROW_RULES", "GROW_INITS",
              "HEBBIAN_RULE", "Scores", "RuleContext", "lowest", "highest"],
    "hebbian": ["HebbianTrace", "HEBBIAN_SCORES", "spike_counts", "float64_device"],
    "adam_restart": ["AdamRestart", "restart_unsupported"],
})
