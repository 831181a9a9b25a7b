"""MLflow runs of a job: start a new run or resume the one a checkpoint names, create
or resume a cross-validation's parent run, and link a finished job into a sweep.

Uses MLflow only (no torch, Hydra or matplotlib), through the store
:func:`g2g.tracking.store.setup_experiment` selected.
"""

from __future__ import annotations

import logging

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from g2g.tracking.names import TAG_OVERRIDES, TAG_PARENT_RUN_ID, TAG_REUSED_RUN_ID
from g2g.tracking.store import drop_foreign_run_environment, log_batch_chunked

log = logging.getLogger(__name__)

#: prefix of the tags g2g sets (see :mod:`g2g.tracking.names`)
G2G_TAG_PREFIX = "g2g."


def find_run(run_id: str | None) -> Run | None:
    """The run ``run_id`` when the current store has it, else None."""
    if run_id is None:
        return None
    try:
        return MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None


def _log_config(run_id: str, *, params: dict, config_yaml: str) -> None:
    """A new run's flattened config as params and the resolved config as ``config.yaml``."""
    client = MlflowClient()
    log_batch_chunked(client, run_id, params=params)
    client.log_text(run_id, config_yaml, "config.yaml")


def start_run(run_id: str | None, experiment_id: str, run_name: str, *, tags: dict[str, str],
              params: dict, config_yaml: str) -> str:
    """Make the run ``run_id`` (from a checkpoint) the active run when the store still
    has it; else start a new active run with ``tags``, ``params`` and the artifact
    ``config.yaml`` (text ``config_yaml``). Returns the active run's id.

    ``mlflow.start_run`` is only ever given the id of a run g2g created here or took
    from its own checkpoint, so no environment variable (``MLFLOW_RUN_ID``, ...) can
    make it log into another run; those variables are removed with a warning
    (:func:`g2g.tracking.store.drop_foreign_run_environment`). A new run gets the same
    context tags (``mlflow.user``, ``mlflow.source.*``, git commit) as one that
    ``mlflow.start_run`` creates."""
    drop_foreign_run_environment()
    if run_id is not None:
        if find_run(run_id) is not None:
            return mlflow.start_run(run_id=run_id).info.run_id
        log.warning("MLflow run %s from the checkpoint is not in this store; starting a new run", run_id)
    created = MlflowClient().create_run(experiment_id, run_name=run_name, tags=resolve_tags(tags)).info.run_id
    run_id = mlflow.start_run(run_id=created).info.run_id
    _log_config(run_id, params=params, config_yaml=config_yaml)
    return run_id


def resume_or_create_parent_run(run_id: str | None, experiment_id: str, run_name: str, *,
                                tags: dict[str, str], params: dict, config_yaml: str) -> tuple[str, bool]:
    """A parent run (not active: its children are) for a protocol with several runs.
    Marks ``run_id`` RUNNING again when the store still has it; else creates one with
    ``tags``, ``params`` and ``config.yaml``. Returns (run id, whether it is new)."""
    client = MlflowClient()
    if find_run(run_id) is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id, False
    run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
    _log_config(run_id, params=params, config_yaml=config_yaml)
    return run_id, True


def log_reused_run(experiment_id: str, summary: dict, parent_run_id: str, overrides: list[str]) -> None:
    """In a sweep, a finished job is not trained again; record it under the sweep's
    parent as a child run that copies the original run's g2g tags, params and final
    metrics.

    Args:
        summary: the finished job's ``.DONE`` summary (``run_id``, ``epoch``).
        parent_run_id: the sweep's parent run.
        overrides: the job's command-line overrides (the child's name and tag).
    """
    original = find_run(summary.get("run_id"))
    if original is None:
        log.warning("the original run of this finished job is not in this store; not linked to the sweep")
        return
    tags = {**{k: v for k, v in original.data.tags.items() if k.startswith(G2G_TAG_PREFIX)},
            TAG_PARENT_RUN_ID: parent_run_id, TAG_OVERRIDES: " ".join(overrides),
            TAG_REUSED_RUN_ID: original.info.run_id}
    client = MlflowClient()
    child = client.create_run(experiment_id, run_name=" ".join(overrides) or original.info.run_name, tags=tags)
    log_batch_chunked(client, child.info.run_id, params=original.data.params,
                      metrics=original.data.metrics, step=summary.get("epoch", 0))
    client.set_terminated(child.info.run_id, "FINISHED")
