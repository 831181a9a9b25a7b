"""MLflow tracking: the store and experiment, the run logger with its offline
fallback, and the sweep callback that makes one parent run per multirun."""

from g2g._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "names": ["PARENT_RUN_ENV"],
    "store": ["setup_experiment", "default_tracking_uri", "TrackingUnavailableError"],
    "run_logger": ["RunLogger", "relog"],
    "runs": ["open_run", "log_reused_run"],
    "sweep_callback": ["MlflowSweepCallback"],
})
