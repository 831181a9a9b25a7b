"""MLflow tracking: the store and experiment, the run logger with its offline
fallback, and the sweep callback that makes one parent run per multirun."""
