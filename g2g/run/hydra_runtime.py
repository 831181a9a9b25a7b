"""What the running Hydra job says about where and how it runs: its output folder,
whether it is one job of a multirun (and of which MLflow sweep), and how many CPU
threads its launcher leaves it. Everything here also works without Hydra."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from g2g.tracking.names import PARENT_RUN_ENV


def output_dir(default: Path) -> Path:
    """The job's output directory when running under Hydra, else ``default``."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return default


def _multirun_hydra_config():
    """Hydra's runtime config when this process runs a job of a multirun, else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return HydraConfig.get()


def sweep_context() -> tuple[str | None, list[str]]:
    """(MLflow parent run id, this job's overrides) when running inside a Hydra
    multirun started with :class:`g2g.tracking.sweep_callback.MlflowSweepCallback`; else (None, [])."""
    hydra_config = _multirun_hydra_config()
    if hydra_config is None:
        return None, []
    return os.environ.get(PARENT_RUN_ENV), list(hydra_config.overrides.task)


def threads_per_job(num_threads: int | None) -> int | None:
    """``hardware.num_threads``, or when it is null inside a joblib multirun, the
    machine's cores divided among the launcher's parallel jobs (so jobs x threads
    never oversubscribes the cores); inside a submitit job, its ``cpus_per_task``."""
    if num_threads is not None:
        return num_threads
    hydra_config = _multirun_hydra_config()
    if hydra_config is None:
        return None
    launcher = hydra_config.launcher
    cores = os.cpu_count() or 1
    if launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    n_jobs = launcher.get("n_jobs")
    if n_jobs is None:
        return None
    n_jobs = cores if n_jobs < 0 else min(int(n_jobs), cores)
    return max(1, cores // max(1, n_jobs))
