"""Names g2g writes into MLflow and the environment, in one place.

Tags (``TAG_*``) mark what a run is and metrics (``METRIC_*``) what it measured; reports
and the sweep callback read them back, so every module uses these constants instead of
string literals. Importing this module imports nothing else.
"""

#: the config keys (and MLflow params) that hold a run's epoch count: holdout's, and each
#: cross-validation fold's
EPOCH_KEYS = ("train.epochs", "protocol.epochs")

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
#: why a run did not finish: a sweep job's error or stop (child run), or what ended the
#: sweep early (parent run)
TAG_ERROR = "g2g.error"
#: file in a sweep's output folder whose presence means "the sweep was interrupted":
#: running jobs stop and save, jobs not yet started do not start
SWEEP_STOP_FILE = ".g2g_sweep_stop"
#: folder in a sweep's output folder with one empty file per running job, named by the
#: job's process id (the launcher passes a SIGTERM on to those processes)
RUNNING_FOLDER = ".g2g_running"
#: a child run that only links an earlier finished run (the job was not trained again)
TAG_REUSED_RUN_ID = "g2g.reused_run_id"
#: a linked run that answers a request for fewer epochs than its original trained: the
#: epoch whose metrics it copies
TAG_ANSWERED_FROM_EPOCH = "g2g.answered_from_epoch"
#: the readable run label of the checkpoint (seed naming convention)
TAG_RUN_LABEL = "g2g.experiment"
#: short hash of the result-affecting config
TAG_CONFIG_HASH = "g2g.config_hash"
#: absolute path of the run's checkpoint
TAG_CHECKPOINT = "g2g.checkpoint"
#: torch device and CPU thread count the run trained with
TAG_DEVICE = "g2g.device"
TAG_NUM_THREADS = "g2g.num_threads"
#: the epochs a run has trained for, or is training to (more than its ``train.epochs``
#: param when a finished run was extended: MLflow params cannot change)
TAG_EPOCHS = "g2g.epochs"
#: "crossval" on the parent run of a cross-validation
TAG_PROTOCOL = "g2g.protocol"
#: the fold number of a cross-validation child run
TAG_FOLD = "g2g.fold"
#: MLflow's own tag linking a child run to its parent
TAG_PARENT_RUN_ID = "mlflow.parentRunId"

#: environment variable through which a job of a hyperparameter search learns its Optuna
#: trial number (set per job by the search's sweeper, ``hydra.job.env_set``)
TRIAL_ENV = "G2G_OPTUNA_TRIAL"
#: file in a search's sweep folder with the study the trials report to (storage, name,
#: objectives, pruner): the jobs read it (:mod:`g2g.search.study`)
SEARCH_FILE = ".g2g_search.json"
#: a trial's number in its Optuna study (child run of a search)
TAG_TRIAL = "g2g.trial"
#: a trial's Optuna state once the search has told it: COMPLETE, PRUNED or FAIL
TAG_TRIAL_STATE = "g2g.trial_state"
#: why a trial's run was pruned (its MLflow status is KILLED; a pruned run is not a
#: failure of the search)
TAG_PRUNED = "g2g.pruned"
#: the Optuna study of a search (parent run)
TAG_STUDY = "g2g.study"

#: sweep parent run: how many jobs the sweep had, and how many of them did not finish
#: (failed, stopped, or never started)
METRIC_SWEEP_JOBS = "sweep_jobs"
METRIC_SWEEP_FAILED_JOBS = "sweep_failed_jobs"

# Metrics the reports read back (``*_PREFIX`` + a layer name: one metric per layer).
#: test-set accuracy after the last epoch (fraction in [0, 1])
METRIC_TEST_ACCURACY = "test_accuracy"
#: training-set accuracy and mean cross-entropy loss of the last epoch
METRIC_TRAIN_ACCURACY = "train_accuracy"
METRIC_TRAIN_LOSS = "train_loss"
#: seconds one training epoch took (logged per epoch)
METRIC_EPOCH_TIME = "epoch_time_s"
#: seconds the evaluation after an epoch took (validation split, when held out, and test
#: split; logged per epoch)
METRIC_EVALUATION_TIME = "evaluation_time_s"
#: cross-validation: mean and sample standard deviation of the folds' validation accuracy
METRIC_CV_VAL_ACCURACY_MEAN = "cv_val_accuracy_mean"
METRIC_CV_VAL_ACCURACY_STD = "cv_val_accuracy_std"
#: mean firing rate of a LIF layer (``firing_rate_lif1``, ...)
METRIC_FIRING_RATE_PREFIX = "firing_rate_"
#: fraction of a masked layer's weights that are active (``density_fc1``, ...)
METRIC_DENSITY_PREFIX = "density_"
#: active connections of a masked layer (``connections_fc1``, ...) and of all of them
METRIC_CONNECTIONS_PREFIX = "connections_"
METRIC_CONNECTIONS_TOTAL = "connections_total"
#: learnable parameters measured from the masks, and of the same network fully connected
METRIC_PARAMETERS_TOTAL = "parameters_total"
METRIC_PARAMETERS_DENSE = "parameters_dense"
#: per inference (one test image, all time steps): accumulates (ACs) of spike-driven
#: layers and of injecting fc1's constant current, multiply-accumulates (MACs) of fc1
#: with analog input, the LIF membrane updates (one multiply-add per neuron and step)
METRIC_SYNOPS_TOTAL = "synops_total"
METRIC_MACS_TOTAL = "macs_total"
METRIC_LIF_UPDATES = "lif_updates"
#: per layer: ``synops_fc2`` (ACs), and with constant-current input ``macs_fc1`` (fc1's
#: current, computed once) and ``synops_fc1_injection`` (adding it at every step)
METRIC_SYNOPS_PREFIX = "synops_"
METRIC_MACS_PREFIX = "macs_"
METRIC_INJECTION_SUFFIX = "_injection"
#: MACs of one forward pass of the same-shape non-spiking (ANN) network, fully connected
METRIC_ANN_MACS = "ann_macs"
#: energy of one inference in nJ, and of the one-pass ANN reference
METRIC_ENERGY = "energy_nj"
METRIC_ENERGY_ANN = "energy_ann_nj"
#: validation-split accuracy (``protocol.validation_fraction`` > 0, or a fold's held-out part)
METRIC_VAL_ACCURACY = "val_accuracy"
#: the best epoch so far of the evaluated split: its accuracy and epoch number
#: (``best_test_accuracy``, ``best_test_epoch``; ``best_val_*`` with a validation split)
METRIC_BEST_ACCURACY_PREFIX = "best_"
#: hidden width the model was built with (``model=dense_matched`` computes it)
METRIC_HIDDEN_DIM = "hidden_dim"
#: the learned LIF parameters of a layer after each epoch (``lif_beta_lif1``,
#: ``lif_threshold_lif1``, ...): the membrane decay as the layer uses it (clamped to
#: [0, 1]) and the firing threshold, each the mean over the layer's neurons when it has
#: one per neuron
METRIC_LIF_BETA_PREFIX = "lif_beta_"
METRIC_LIF_THRESHOLD_PREFIX = "lif_threshold_"

#: the longest run name MLflow's SQL stores keep (the column ``runs.name`` is VARCHAR(250):
#: PostgreSQL and MySQL refuse a longer one, SQLite does not check)
RUN_NAME_LENGTH = 250


def fit_run_name(text: str) -> str:
    """``text`` as a run name: cut to :data:`RUN_NAME_LENGTH`, ending in ``...`` when cut
    (the full overrides are in the tag :data:`TAG_OVERRIDES` or :data:`TAG_SWEEP_OVERRIDES`)."""
    return text if len(text) <= RUN_NAME_LENGTH else text[:RUN_NAME_LENGTH - 3] + "..."
