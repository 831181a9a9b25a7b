"""A Hydra sweeper that runs the union of several grids as one sweep.

Hydra's basic sweeper runs one Cartesian product. A study often needs more: the
p_inter study crosses the sparse models with p_inter values *and* adds the dense
baseline, which has no p_inter. ``hydra/sweeper=grids`` (conf/hydra/sweeper/grids.yaml)
takes a list of grids, each a mapping like ``hydra.sweeper.params``, expands each
with the basic sweeper's rules, appends the command-line arguments to every grid,
drops repeated jobs (said once) and launches everything as one multirun (one launcher,
one MLflow parent run). It is g2g's default sweeper (with one grid it is the basic
sweeper's grid), and it lists every job in the sweep folder before any starts, so the
sweep's end counts jobs that never started (:mod:`g2g.tracking.sweep_callback`).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package, so
this lives there (a namespace package: no ``hydra_plugins/__init__.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


class GridsSweeper(BasicSweeper):
    """Basic sweeper over the union of ``grids``.

    Args:
        max_batch_size: jobs per launcher call (None: all at once).
        params: a grid shared by every grid (like the basic sweeper's ``params``).
        grids: list of mappings ``key -> comma-separated values``.
    """

    def __init__(self, max_batch_size: int | None = None, params: dict | None = None,
                 grids: list[dict] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.shared_params = dict(params or {})
        self.grids = [dict(grid) for grid in (grids or [{}])]

    def job_overrides(self, arguments: list[str]) -> list[list[str]]:
        """Every job's override list: each grid (with the shared params) plus the
        command-line ``arguments``, expanded, in order, without repeats."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs, seen, repeated = [], set(), []
        for grid in self.grids:
            self.params = {**self.shared_params, **grid}
            overrides = parser.parse_overrides(self._parse_config() + list(arguments))
            for job in self.split_arguments(overrides, None)[0]:
                if tuple(job) not in seen:
                    seen.add(tuple(job))
                    jobs.append(job)
                else:
                    repeated.append(" ".join(job))
        if repeated:
            log.warning("%d repeated job(s) of the grid run once: %s", len(repeated), "; ".join(repeated))
        return jobs

    def sweep(self, arguments: list[str]) -> Any:
        jobs = self.job_overrides(arguments)
        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        from g2g.tracking.sweep_callback import write_job_list  # MLflow: only when sweeping

        write_job_list(sweep_dir, jobs)  # the sweep's end counts every job, also one that never starts
        log.info("grids sweeper: %d jobs from %d grids", len(jobs), len(self.grids))
        returns, initial_job_idx = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for result in results:
                _ = result.return_value  # raises for a failed job, as the basic sweeper does
            initial_job_idx += len(batch)
            returns.append(results)
        return returns
