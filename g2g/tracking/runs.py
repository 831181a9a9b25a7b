"""MLflow runs of a job: start a new run or resume the one a checkpoint names, create
or resume a cross-validation's parent run, and link a finished job into a sweep.

Uses MLflow only (no torch, Hydra or matplotlib), through the store
:func:`g2g.tracking.store.setup_experiment` selected.
"""

from __future__ import annotations

import logging

import mlflow
from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from g2g.tracking.names import TAG_ERROR, TAG_OVERRIDES, TAG_PARENT_RUN_ID, TAG_REUSED_RUN_ID
from g2g.tracking.store import drop_foreign_run_environment, log_batch_chunked

log = logging.getLogger(__name__)

#: prefix of the tags g2g sets (see :mod:`g2g.tracking.names`)
G2G_TAG_PREFIX = "g2g."
#: longest error text kept in a :data:`~g2g.tracking.names.TAG_ERROR` tag (MLflow allows 8000)
ERROR_TAG_LENGTH = 2000


def find_run(run_id: str | None) -> Run | None:
    """The run ``run_id`` when the current store has it and it is not deleted (MLflow
    keeps a deleted run until garbage collection, but cannot log into it), else None."""
    if run_id is None:
        return None
    try:
        run = MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return None
    if run.info.lifecycle_stage == "deleted":
        log.info("MLflow run %s was deleted", run_id)
        return None
    return run


def mark_killed_if_running(run_id: str | None, what: str) -> bool:
    """Mark the run ``run_id`` KILLED when it is still RUNNING although no process
    trains it (its process was killed hard: SIGKILL, a second Ctrl-C while saving,
    power loss); call it only while holding the run's lock. Returns whether it did.

    Args:
        what: names the run in the log line (e.g. its checkpoint's label).
    """
    run = find_run(run_id)
    if run is None or run.info.status != "RUNNING":
        return False
    MlflowClient().set_terminated(run_id, "KILLED")
    log.warning("MLflow run %s of %s was still RUNNING, but its process is gone (killed hard); "
                "marked KILLED", run_id, what)
    return True


def update_tags(run_id: str, tags: dict[str, str]) -> None:
    """A resumed run takes the tags of the start that resumes it (inside a sweep, the
    current sweep's parent and the job's overrides, so that sweep lists it) and loses the
    reason an earlier stop left in :data:`~g2g.tracking.names.TAG_ERROR` (a new stop or
    failure sets it again)."""
    client = MlflowClient()
    if tags:
        client.log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])
    run = find_run(run_id)
    if run is not None and TAG_ERROR in run.data.tags:
        client.delete_tag(run_id, TAG_ERROR)


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
    client = MlflowClient()
    tags = {TAG_PARENT_RUN_ID: parent_run_id, TAG_OVERRIDES: " ".join(overrides),
            TAG_REUSED_RUN_ID: str(summary.get("run_id"))}
    if original is None:  # deleted or in another store: the .DONE summary keeps the final metrics
        log.warning("the original MLflow run %s of this finished job is not in this store; linking it to the "
                    "sweep with the final metrics of its .DONE marker", summary.get("run_id"))
        params = {}
        metrics = {key: value for key, value in summary.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"}
        run_name = " ".join(overrides) or str(summary.get("run_id"))
    else:
        tags = {**{k: v for k, v in original.data.tags.items() if k.startswith(G2G_TAG_PREFIX)}, **tags}
        params, metrics = original.data.params, original.data.metrics
        run_name = " ".join(overrides) or original.info.run_name
    child = client.create_run(experiment_id, run_name=run_name, tags=tags)
    log_batch_chunked(client, child.info.run_id, params=params, metrics=metrics, step=summary.get("epoch", 0))
    client.set_terminated(child.info.run_id, "FINISHED")


def sweep_children(client: MlflowClient, parent_run_id: str) -> list[Run]:
    """The runs tagged as children of the sweep's parent run ``parent_run_id``."""
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`{TAG_PARENT_RUN_ID}` = '{parent_run_id}'", max_results=50000)


def record_job_outcome(client: MlflowClient, parent_run_id: str, overrides: list[str], *, status: str,
                       reason: str) -> str:
    """Record why a sweep job did not finish, so the sweep's report and the MLflow UI show it.

    The job's run (a child of ``parent_run_id`` tagged with these ``overrides``) gets the tag
    :data:`~g2g.tracking.names.TAG_ERROR` and, when it is still RUNNING, ends with ``status``;
    a job that has no run (refused before it started one, or never started) gets a child
    run named by its overrides, with ``status`` and that tag.

    Args:
        status: ``FAILED`` or ``KILLED``.
        reason: what went wrong (the error's message); cut to :data:`ERROR_TAG_LENGTH`.
    Returns:
        The run id that carries the outcome.
    """
    joined = " ".join(overrides)
    reason = reason[:ERROR_TAG_LENGTH]
    runs = [run for run in sweep_children(client, parent_run_id) if run.data.tags.get(TAG_OVERRIDES) == joined]
    if runs:
        run = max(runs, key=lambda run: run.info.start_time)
        client.set_tag(run.info.run_id, TAG_ERROR, reason)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status)
        return run.info.run_id
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    child = client.create_run(experiment_id, run_name=joined or "job",
                              tags={TAG_PARENT_RUN_ID: parent_run_id, TAG_OVERRIDES: joined, TAG_ERROR: reason})
    client.set_terminated(child.info.run_id, status)
    return child.info.run_id

