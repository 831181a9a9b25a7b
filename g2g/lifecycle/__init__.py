"""A run's lifecycle: its record, guard, lock, checkpoints, signals, errors, its runtime (read once from
Hydra) and one job of a sweep."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "record": ["RunRecord", "forget"],
    "guard": ["RunGuard"],
    "lock": ["ExperimentLock", "ExperimentLockedError"],
    "checkpoint": ["run_record", "config_hash", "CheckpointError"],
    "signals": ["TrainingInterrupted", "job_signals"],
    "errors": ["USER_ERRORS", "exit_code", "user_message"],
    "sweep_job": ["run_sweep_job"],
    "runtime": ["JobRuntime"],
})
