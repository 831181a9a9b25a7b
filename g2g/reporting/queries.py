"""Runs read back from MLflow as rows, and the targets of a report.

A row is one run as a dict (:func:`run_row`): its info, a few tags, all its params under
``params`` and its metrics by name. What a row *trained* is not listed here: the
configurations are derived from the params that vary (:mod:`g2g.reporting.comparison`).
Importing this module imports neither MLflow nor torch: the client comes from
:func:`open_store`, and the model registry (:mod:`g2g.models.network`) is read when
first needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from g2g.shell import shell_command
from g2g.tracking import names
from g2g.tracking.params import is_non_result_key

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: the keys of a row that are not metrics (see :func:`run_row`)
ROW_KEYS = ("run_id", "run_name", "status", "start_time", "error", "device", "num_threads", "epochs", "seed",
            "params")


def run_row(run) -> dict:
    """One MLflow run as a row: ``run_id``, ``run_name``, ``status``, ``start_time``,
    ``error`` (tag ``g2g.error``), ``device``, ``num_threads``, ``epochs`` (the tag
    ``g2g.epochs``, else the param ``train.epochs``: a run extended to more epochs keeps
    its first param, MLflow params are final), ``seed``, ``params`` (every MLflow param:
    the flattened resolved config), and each metric's last logged value under its name
    (for ``best_*`` metrics the best epoch's). A missing value is None."""
    tags, params = run.data.tags, dict(run.data.params)
    return {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
            "start_time": run.info.start_time, "error": tags.get(names.TAG_ERROR),
            "device": tags.get(names.TAG_DEVICE), "num_threads": tags.get(names.TAG_NUM_THREADS),
            "epochs": tags.get(names.TAG_EPOCHS, params.get("train.epochs")), "seed": params.get("seed"),
            "params": params, **run.data.metrics}


def sweep_jobs(client: MlflowClient, parent_run_id: str) -> list[dict]:
    """One row per child run of the sweep, in run-name order (see :func:`run_row`)."""
    from g2g.tracking.runs import sweep_children  # MLflow only once a store is read

    rows = [run_row(child) for child in sweep_children(client, parent_run_id)]
    return sorted(rows, key=lambda row: row["run_name"] or "")


class ResultsError(ValueError):
    """The experiment cannot make a results page (no such experiment, no finished runs)."""


class TargetError(ValueError):
    """The report's target names nothing it reports: no such experiment or run, or a run
    that is not a sweep's parent. The message names the target, what it is, and what
    the report takes (:data:`TARGETS`)."""


class UnknownExperimentError(ResultsError, TargetError):
    """The results page's experiment is not in the store."""


#: what ``python -m g2g.report`` takes as its target
TARGETS = ("python -m g2g.report takes the name of an MLflow experiment (its newest sweep with jobs; with "
           "--page, every finished run of it) or the run id of a sweep's parent run")


def experiment_rows(client: MlflowClient, experiment_name: str) -> list[dict]:
    """Every finished training run of the experiment as a :func:`run_row`, plus
    ``train_time_s`` (sum of the per-epoch training times), oldest first. Sweep parents
    and runs that only link a run of this experiment are left out (a link to a run of
    another experiment, or one that answers a request for fewer epochs from its history,
    is counted, with its original's training time). Every run is returned: repeats of a
    configuration and seed are resolved by :func:`g2g.reporting.comparison.compare`,
    which derives the configurations from all result-affecting params.

    Raises:
        UnknownExperimentError: no such experiment (the message says what the name is
            when it is a run id).
        ResultsError: no finished run in it.
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        run = find_run(client, experiment_name)
        what = f"no MLflow experiment named {experiment_name!r}" + (
            f" ({describe_run(client, run)}; --page takes an experiment name)" if run is not None else "")
        raise UnknownExperimentError(missing_experiment_message(client, experiment_name, what))
    refuse_deleted(client, experiment, ResultsError)
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=50000)
    rows = []
    for run in runs:
        tags = run.data.tags
        if tags.get(names.TAG_SWEEP) == "true" or names.METRIC_TEST_ACCURACY not in run.data.metrics:
            continue
        original = find_run(client, tags[names.TAG_REUSED_RUN_ID]) if names.TAG_REUSED_RUN_ID in tags else None
        answered = tags.get(names.TAG_ANSWERED_FROM_EPOCH)
        if original is not None and original.info.experiment_id == experiment.experiment_id and answered is None:
            continue  # a link to a run of this experiment, which is counted itself
        row = run_row(run)
        timed = client.get_metric_history((original or run).info.run_id, names.METRIC_EPOCH_TIME)
        row["train_time_s"] = sum(m.value for m in timed if answered is None or m.step <= int(answered))
        rows.append(row)
    if not rows:
        raise ResultsError(f"experiment {experiment_name!r} has no finished training run with a test accuracy")
    return rows


def model_rank(model: str) -> int:
    """Position of ``model`` in :data:`g2g.models.network.MODELS` (the original README's
    order: dense, index, random, mixer); unknown models come after them."""
    from g2g.models.network import MODELS  # torch only when rows are ordered

    return MODELS.index(model) if model in MODELS else len(MODELS)


def result_params(row: dict) -> dict[str, str]:
    """The row's params (``row["params"]``) that change results: without those under
    :data:`g2g.tracking.params.NON_RESULT_KEYS` (the keys the checkpoint hash leaves out),
    and with ``train.epochs`` the epochs the run has (tag ``g2g.epochs``: a finished run
    extended to more epochs keeps its first ``train.epochs`` param)."""
    params = {key: value for key, value in row["params"].items() if not is_non_result_key(key)}
    if "train.epochs" in params and row.get("epochs") is not None:
        params["train.epochs"] = str(row["epochs"])
    return params


def open_store(tracking_uri: str) -> MlflowClient:
    """A client of an existing MLflow store (an SQLite file is not created just to read it).

    Raises:
        ValueError: an ``sqlite:///`` URI whose file does not exist, or whose ``?`` is not
            a query string (:func:`g2g.tracking.store.sqlite_uri_problem`).
    """
    from mlflow.tracking import MlflowClient  # MLflow only once a store is read

    from g2g.tracking.store import sqlite_path, sqlite_uri_problem

    problem = sqlite_uri_problem(tracking_uri)
    if problem:
        raise ValueError(f"tracking URI {tracking_uri}: {problem}")
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise ValueError(f"no MLflow store at {path} (tracking URI {tracking_uri}): run from the folder "
                         "where you ran the experiments, or pass --tracking-uri")
    return MlflowClient(tracking_uri)


def missing_experiment_message(client: MlflowClient, name: str, what: str) -> str:
    """``what`` plus the store's URI and the experiments it has."""
    experiments = sorted(e.name for e in client.search_experiments())
    return (f"{what} in the MLflow store {client.tracking_uri}; its experiments: "
            f"{', '.join(experiments) if experiments else 'none'} (another store: --tracking-uri)")


def refuse_deleted(client: MlflowClient, experiment, error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` naming both remedies when ``experiment`` was deleted (it is in
    MLflow's trash: its runs are hidden from searches and cannot be written)."""
    from g2g.tracking.store import deleted_experiment_message

    if experiment.lifecycle_stage == "deleted":
        raise error(deleted_experiment_message(experiment.name, experiment.experiment_id, client.tracking_uri,
                                               "report another experiment: python -m g2g.report OTHER_NAME"))


def find_run(client: MlflowClient, run_id: str):
    """The MLflow run ``run_id``, or None when the store has no run of that id (or
    ``run_id`` cannot be one); any other failure of the store is raised."""
    from mlflow.exceptions import MlflowException  # MLflow only once a store is read

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


#: how many parent runs :func:`describe_run` follows to find a run's sweep (a sweep's
#: cross-validation fold is two below it)
_MAX_ANCESTORS = 8


def _kind(run) -> str:
    """What ``run`` is, from g2g's tags: a sweep, a cross-validation parent, a fold or a
    training run."""
    tags = run.data.tags
    if tags.get(names.TAG_SWEEP) == "true":
        return "the parent run of a sweep"
    if tags.get(names.TAG_PROTOCOL) == "crossval":
        return "the parent run of a cross-validation"
    if names.TAG_FOLD in tags:
        return f"fold {tags[names.TAG_FOLD]} of a cross-validation"
    return "a training run"


def sweep_of(client: MlflowClient, run) -> str | None:
    """The run id of the sweep ``run`` belongs to: its nearest ancestor (tag
    ``mlflow.parentRunId``, followed upwards) that is a sweep's parent run; None when
    it has none."""
    seen = {run.info.run_id}
    for _ in range(_MAX_ANCESTORS):
        parent_id = run.data.tags.get(names.TAG_PARENT_RUN_ID)
        if parent_id is None or parent_id in seen or (run := find_run(client, parent_id)) is None:
            return None
        if run.data.tags.get(names.TAG_SWEEP) == "true":
            return parent_id
        seen.add(parent_id)
    return None


def describe_run(client: MlflowClient, run) -> str:
    """``run ID is KIND (a child of sweep S) of experiment 'E'``: what an MLflow run is
    (a sweep's parent, a cross-validation's parent, a fold or a training run, from g2g's
    tags), its parent and its sweep (:func:`sweep_of`), for a message that refuses it."""
    parent_id = run.data.tags.get(names.TAG_PARENT_RUN_ID)
    sweep_id = sweep_of(client, run)
    if sweep_id is not None and sweep_id == parent_id:
        where = f" (a child of sweep {sweep_id})"
    elif sweep_id is not None:
        where = f" (a child of run {parent_id}, in sweep {sweep_id})"
    else:
        where = "" if parent_id is None else f" (a child of run {parent_id})"
    experiment = client.get_experiment(run.info.experiment_id)
    return f"run {run.info.run_id} is {_kind(run)}{where} of experiment {experiment.name!r}"


def report_command(target: str, *arguments: str, tracking_uri: str | None = None) -> str:
    """``python -m g2g.report TARGET ARGUMENTS [--tracking-uri URI]`` quoted for the shell
    (:func:`g2g.shell.shell_command`): the command written onto a results page, and the
    one an error suggests."""
    return shell_command("python", "-m", "g2g.report", target, *arguments,
                         *(["--tracking-uri", tracking_uri] if tracking_uri else []))


def _not_a_sweep(client: MlflowClient, run, tracking_uri: str | None) -> TargetError:
    """The error for a run that is not a sweep's parent: what it is, what the report
    takes, and the command for its sweep when it has one."""
    sweep_id = sweep_of(client, run)
    remedy = (f"; report its sweep with: {report_command(sweep_id, tracking_uri=tracking_uri)}"
              if sweep_id is not None else "; it belongs to no sweep")
    return TargetError(f"{describe_run(client, run)}, not a sweep: {TARGETS}{remedy}")


def resolve_sweep(client: MlflowClient, target: str, *, tracking_uri: str | None = None) -> tuple[str, list[str]]:
    """A run id of a sweep parent, or an experiment name whose latest sweep with jobs is
    meant: newer sweeps without a job (Hydra refused the batch, interrupted before any job)
    are skipped, and said so.

    Args:
        tracking_uri: the ``--tracking-uri`` the report was given (None: the default
            store), repeated in the command an error suggests.
    Returns:
        (the sweep parent's run id, one line per newer sweep that was skipped and why).
    Raises:
        TargetError: neither a run nor an experiment of the store, or a run that is not a
            sweep's parent (a training run, a cross-validation or a fold).
        ValueError: an experiment without a sweep that has jobs, or a deleted experiment.
    """
    run = find_run(client, target)
    if run is not None:
        if run.data.tags.get(names.TAG_SWEEP) != "true":
            raise _not_a_sweep(client, run, tracking_uri)
        refuse_deleted(client, client.get_experiment(run.info.experiment_id))
        return run.info.run_id, []
    experiment = client.get_experiment_by_name(target)
    if experiment is None:
        raise TargetError(missing_experiment_message(
            client, target, f"{target!r} is neither a run id nor an experiment name") + f"; {TARGETS}")
    refuse_deleted(client, experiment)
    sweeps = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{names.TAG_SWEEP}` = 'true'",
                                order_by=["attributes.start_time DESC"], max_results=1000)
    if not sweeps:
        raise ValueError(f"experiment {target!r} has no sweep runs (the report compares a sweep's jobs): run one "
                         "first, e.g. python run.py -m model=index,mixer seed=1,2 experiment=quick")
    skipped = []
    for sweep in sweeps:
        if sweep_jobs(client, sweep.info.run_id):
            return sweep.info.run_id, skipped
        reason = sweep.data.tags.get(names.TAG_ERROR)
        skipped.append(f"skipped newer sweep {sweep.info.run_id} ({sweep.info.run_name}): {sweep.info.status}, "
                       f"no jobs{': ' + reason if reason else ''}")
    raise ValueError(f"experiment {target!r} has no sweep with jobs:\n" + "\n".join(skipped))
