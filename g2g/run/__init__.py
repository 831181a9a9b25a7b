"""One run from a composed config: validation, objects built from config, the
holdout and cross-validation protocols, checkpoints, resume, signals and locks."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "job": ["run_job"],
    "build": ["build", "load_data", "instantiate_option", "RunObjects"],
    "protocols": ["holdout", "crossval", "RunContext"],
    "schema": ["register"],
    "errors": ["USER_ERRORS", "exit_code"],
    "signals": ["TrainingInterrupted"],
    "validation": ["validate", "ConfigError"],
    "hardware": ["Hardware", "select_device", "seed_everything", "DeviceUnavailableError"],
    "checkpoint": ["run_record", "config_hash", "CheckpointError"],
    "record": ["RunRecord"],
    "guard": ["RunGuard"],
    "lock": ["ExperimentLock", "ExperimentLockedError"],
})
