"""Names g2g writes into MLflow and the environment, in one place.

Tags (``TAG_*``) mark what a run is; reports and the sweep callback read them back, so
every module uses these constants instead of string literals. Importing this module
imports nothing else.
"""

#: environment variable through which a sweep's jobs learn their MLflow parent run
PARENT_RUN_ENV = "G2G_MLFLOW_PARENT_RUN_ID"

#: "true" on the parent run of a multirun sweep
TAG_SWEEP = "g2g.sweep"
#: the sweep's output folder (parent run)
TAG_SWEEP_DIR = "g2g.sweep_dir"
#: the sweep's command-line overrides (parent run)
TAG_SWEEP_OVERRIDES = "g2g.sweep_overrides"
#: one job's overrides (child run of a sweep)
TAG_OVERRIDES = "g2g.overrides"
#: a child run that only links an earlier finished run (the job was not trained again)
TAG_REUSED_RUN_ID = "g2g.reused_run_id"
#: the readable run label of the checkpoint (seed naming convention)
TAG_RUN_LABEL = "g2g.experiment"
#: short hash of the result-affecting config
TAG_CONFIG_HASH = "g2g.config_hash"
#: absolute path of the run's checkpoint
TAG_CHECKPOINT = "g2g.checkpoint"
#: torch device and CPU thread count the run trained with
TAG_DEVICE = "g2g.device"
TAG_NUM_THREADS = "g2g.num_threads"
#: "crossval" on the parent run of a cross-validation
TAG_PROTOCOL = "g2g.protocol"
#: the fold number of a cross-validation child run
TAG_FOLD = "g2g.fold"
#: MLflow's own tag linking a child run to its parent
TAG_PARENT_RUN_ID = "mlflow.parentRunId"
