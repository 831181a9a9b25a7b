"""MLflow runs of a job: open a new run or resume the one a run record names, close
runs left RUNNING by a process killed hard, and link a finished job into a sweep.

Uses MLflow only (no torch, Hydra or matplotlib), through the store
:func:`g2g.tracking.store.setup_experiment` selected.
"""

from __future__ import annotations

import contextlib
import logging

import mlflow
from mlflow.entities import Run, RunTag
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from g2g.tracking.names import (
    EPOCH_KEYS,
    TAG_ANSWERED_FROM_EPOCH,
    TAG_CHECKPOINT,
    TAG_EPOCHS,
    TAG_ERROR,
    TAG_OVERRIDES,
    TAG_PARENT_RUN_ID,
    TAG_REUSED_RUN_ID,
    fit_run_name,
)
from g2g.tracking.store import (
    TrackingUnavailableError,
    drop_foreign_run_environment,
    log_batch_chunked,
    quiet_store_errors,
    root_cause,
)

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


def _writable(action, tracking_uri: str, what: str):
    """Run a store call that creates or changes a run; a store that refuses it (read-only
    database or artifact folder, a server that is down) becomes a
    :class:`~g2g.tracking.store.TrackingUnavailableError` that names the store."""
    try:
        with quiet_store_errors():
            return action()
    except Exception as error:
        raise TrackingUnavailableError(
            f"MLflow store {tracking_uri} cannot {what} ({root_cause(error)}). "
            "Check that the store is writable (the database file, its folder and mlartifacts/ beside it) or "
            "that its server runs, or log to another one with tracking.uri=..."
        ) from error


def open_run(earlier_run_id: str | None, experiment_id: str, run_name: str, *, tags: dict[str, str],
             params: dict, config_yaml: str) -> tuple[str, bool]:
    """The MLflow run a training run logs into: the run ``earlier_run_id`` (from its run
    record or checkpoint) when the store has it in ``experiment_id``, marked RUNNING
    again with this start's ``tags``; else a new run with ``tags``, ``params`` and the
    artifact ``config.yaml``. An earlier run that is in another experiment (the run was
    resumed with another ``tracking.experiment``) is left there, tagged with the run
    that continues it, and a new run in ``experiment_id`` gets the whole record.

    Only the MLflow client is used (no active run): nothing but
    :class:`g2g.lifecycle.guard.RunGuard` ends a run, and no ``atexit`` hook of MLflow can
    mark it FINISHED. No environment variable (``MLFLOW_RUN_ID``, ...) can make it log
    into another run (:func:`g2g.tracking.store.drop_foreign_run_environment`).

    Returns:
        (run id, whether it is new).
    Raises:
        TrackingUnavailableError: the store refuses to create or change the run.
    """
    drop_foreign_run_environment()
    client = MlflowClient()
    uri = mlflow.get_tracking_uri()
    earlier = find_run(earlier_run_id)
    if earlier is not None and earlier.info.experiment_id == experiment_id:
        _writable(lambda: client.update_run(earlier_run_id, status="RUNNING"), uri, "resume a run")
        update_tags(earlier_run_id, tags)
        return earlier_run_id, False
    created = _writable(lambda: client.create_run(experiment_id, run_name=fit_run_name(run_name),
                                                  tags=resolve_tags(tags)), uri, "create a run").info.run_id
    try:
        _writable(lambda: _log_config(created, params=params, config_yaml=config_yaml), uri, "log a run's config")
    except TrackingUnavailableError as error:
        with contextlib.suppress(Exception):
            client.set_terminated(created, "FAILED")
        raise error
    if earlier is not None:
        experiment = client.get_experiment(experiment_id).name
        log.warning("MLflow run %s of this run is in another experiment (id %s); it continues in the new run %s "
                    "of experiment %r, which gets its whole record", earlier_run_id, earlier.info.experiment_id,
                    created, experiment)
        with contextlib.suppress(Exception):
            client.set_tag(earlier_run_id, TAG_ERROR, f"continued in MLflow run {created} of experiment "
                                                      f"{experiment!r}")
            if earlier.info.status == "RUNNING":
                client.set_terminated(earlier_run_id, "KILLED")
    elif earlier_run_id is not None:
        log.warning("MLflow run %s of this run is not in this store; logging into the new run %s", earlier_run_id,
                    created)
    return created, True


def close_orphans(experiment_ids: list[str], checkpoint: str, known: list[str | None]) -> list[str]:
    """Mark KILLED every RUNNING run of ``experiment_ids`` that trains the checkpoint
    ``checkpoint`` (tag :data:`~g2g.tracking.names.TAG_CHECKPOINT`) or whose id is in
    ``known``: no process trains them (call it holding the run's lock), their process
    was killed hard (SIGKILL, power loss). Found by tag too, so a lost or damaged run
    record leaves no run RUNNING for ever. Returns the ids marked."""
    client = MlflowClient()
    candidates = {run.info.run_id: run for run in (find_run(run_id) for run_id in known) if run is not None}
    for experiment_id in dict.fromkeys(experiment_ids):
        with contextlib.suppress(Exception):
            for run in client.search_runs([experiment_id], filter_string=(
                    f"tags.`{TAG_CHECKPOINT}` = '{checkpoint}' and attributes.status = 'RUNNING'")):
                candidates[run.info.run_id] = run
    closed = []
    for run_id, run in candidates.items():
        if run.info.status != "RUNNING":
            continue
        _writable(lambda run_id=run_id: client.set_terminated(run_id, "KILLED"), mlflow.get_tracking_uri(),
                  "close a run left RUNNING")
        client.set_tag(run_id, TAG_ERROR, "killed hard: its process is gone (closed by the next start)")
        log.warning("MLflow run %s of %s was still RUNNING, but its process is gone (killed hard); marked KILLED",
                    run_id, checkpoint)
        closed.append(run_id)
    return closed


def log_reused_run(experiment_id: str, summary: dict, parent_run_id: str | None, overrides: list[str]) -> str:
    """Record a run that was not trained again (it finished earlier) as a FINISHED run
    of ``experiment_id`` that copies the original run's g2g tags and params, and its
    final metrics, or, for a request answered from the history (``answered_from_epoch``
    in ``summary``), the metrics after that epoch. Inside a sweep it is a child of the
    sweep's parent. Returns its id.

    Args:
        summary: the finished run's summary from its record (``run_id``, metrics).
        parent_run_id: the sweep's parent run, or None outside a sweep.
        overrides: the job's command-line overrides (the run's name and tag).
    """
    original = find_run(summary.get("run_id"))
    client = MlflowClient()
    tags = {TAG_REUSED_RUN_ID: str(summary.get("run_id"))}
    if parent_run_id:
        tags.update({TAG_PARENT_RUN_ID: parent_run_id, TAG_OVERRIDES: " ".join(overrides)})
    answered = summary.get("answered_from_epoch")
    summary_metrics = {key: value for key, value in summary.items() if isinstance(value, (int, float))
                       and not isinstance(value, bool) and key not in ("epoch", "epochs_done", "answered_from_epoch")}
    if answered is not None:
        tags[TAG_ANSWERED_FROM_EPOCH] = str(answered)
    if original is None:  # deleted or in another store: the record's summary keeps the final metrics
        log.warning("the original MLflow run %s of this finished run is not in this store; linking it with the "
                    "metrics of its run record", summary.get("run_id"))
        params, metrics = {}, summary_metrics
        run_name = " ".join(overrides) or str(summary.get("run_id"))
    else:
        tags = {**{k: v for k, v in original.data.tags.items() if k.startswith(G2G_TAG_PREFIX)}, **tags}
        params = dict(original.data.params)
        metrics = summary_metrics if answered is not None else original.data.metrics
        if answered is not None:  # the epochs this run answers for, so it is never pooled with the original
            params.update({key: str(answered) for key in EPOCH_KEYS if key in params})
        run_name = " ".join(overrides) or original.info.run_name
    if answered is not None:
        tags[TAG_EPOCHS] = str(answered)
    child = client.create_run(experiment_id, run_name=fit_run_name(run_name), tags=tags)
    try:
        log_batch_chunked(client, child.info.run_id, params=params, metrics=metrics,
                          step=answered if answered is not None else summary.get("epoch", 0))
    except BaseException:  # a linked run that could not be filled never stays RUNNING, nor claims FINISHED
        with contextlib.suppress(Exception):
            client.set_terminated(child.info.run_id, "FAILED")
        raise
    client.set_terminated(child.info.run_id, "FINISHED")
    return child.info.run_id


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
    child = client.create_run(experiment_id, run_name=fit_run_name(joined or "job"),
                              tags={TAG_PARENT_RUN_ID: parent_run_id, TAG_OVERRIDES: joined, TAG_ERROR: reason})
    client.set_terminated(child.info.run_id, status)
    return child.info.run_id

