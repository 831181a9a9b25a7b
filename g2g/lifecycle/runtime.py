"""What Hydra's runtime says about the job that runs now, read once per job
(:meth:`JobRuntime.read`, in ``run.py``) and passed down: whether it is one job of a
multirun, of which MLflow sweep and sweep folder, with which overrides, and how many CPU
threads its launcher leaves it. Nothing below ``run.py`` reads Hydra's runtime."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from g2g.tracking.names import PARENT_RUN_ENV, TRIAL_ENV


@dataclass(frozen=True)
class JobRuntime:
    """One job's runtime. The default is a run outside any sweep (no Hydra: tests, scripts).

    Args:
        parent_run_id: the sweep's MLflow parent run (set by the sweep callback), or None.
        overrides: the job's command-line overrides as typed (a sweep child's name and tag).
        sweep_dir: the sweep's output folder (stop file, running jobs), or None.
        launcher_threads: the threads the launcher leaves the job: the machine's cores
            divided among the joblib launcher's parallel jobs, or submitit's
            ``cpus_per_task``; None outside a sweep or when the launcher says nothing.
        trial: the Optuna trial number of a hyperparameter search's job (its sweeper sets
            :data:`g2g.tracking.names.TRIAL_ENV`), or None.
    """

    parent_run_id: str | None = None
    overrides: list[str] = field(default_factory=list)
    sweep_dir: Path | None = None
    launcher_threads: int | None = None
    trial: int | None = None

    @property
    def in_sweep(self) -> bool:
        """Whether this is one job of a multirun."""
        return self.sweep_dir is not None

    def threads(self, num_threads: int | None) -> int | None:
        """``hardware.num_threads`` when set, else what the launcher leaves the job, so
        jobs x threads never oversubscribes the cores."""
        return num_threads if num_threads is not None else self.launcher_threads

    @classmethod
    def read(cls) -> JobRuntime:
        """Hydra's runtime of the job running now (the one place that reads it)."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return cls()
        hydra_config = HydraConfig.get()
        trial = os.environ.get(TRIAL_ENV)
        return cls(parent_run_id=os.environ.get(PARENT_RUN_ENV), overrides=list(hydra_config.overrides.task),
                   sweep_dir=Path(hydra_config.sweep.dir), launcher_threads=_launcher_threads(hydra_config.launcher),
                   trial=int(trial) if trial else None)


def _launcher_threads(launcher) -> int | None:
    """The cores divided among the joblib launcher's parallel jobs, or submitit's ``cpus_per_task``."""
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return None
    cores = os.cpu_count() or 1
    n_jobs = cores if n_jobs < 0 else min(int(n_jobs), cores)
    return max(1, cores // max(1, n_jobs))
