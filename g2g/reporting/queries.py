"""Runs read back from MLflow as rows, and rows grouped by what they trained.

A row is one run as a dict with the keys of :func:`columns` (settings from its params,
results from its metrics). Importing this module imports neither MLflow nor torch: the
client comes from :func:`open_store`, and the model, rule and layer registries
(:mod:`g2g.models.network`, :mod:`g2g.sparse.dst`) are read when first needed.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import TYPE_CHECKING

from g2g.tracking import names

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

#: table columns that are neither per-layer nor metrics: (header, ("param"|"info"|"tag", key));
#: "tag or param" takes the tag (first key) and falls back to the param (second key): a run
#: extended to more epochs keeps its first ``train.epochs`` param (MLflow params are final)
#: and records the epochs it has in the tag
_SETTINGS = [
    ("run_name", ("info", "run_name")),
    ("status", ("info", "status")),
    ("error", ("tag", names.TAG_ERROR)),
    ("dataset", ("param", "dataset.name")),
    ("model", ("param", "model.name")),
    ("p_inter", ("param", "model.p_inter")),
    ("hidden_dim", ("param", "model.hidden_dim")),
    ("num_steps", ("param", "encoder.num_steps")),
    ("encoder", ("param", "encoder.name")),
    ("sparsity", ("param", "sparsity.name")),
    ("prune", ("param", "sparsity.prune")),
    ("grow", ("param", "sparsity.grow")),
    ("grow_init", ("param", "sparsity.grow_init")),
    ("update_interval", ("param", "sparsity.update_interval")),
    ("prune_fraction", ("param", "sparsity.prune_fraction")),
    ("epochs", ("tag or param", f"{names.TAG_EPOCHS} train.epochs")),
    ("batch_size", ("param", "train.batch_size")),
    ("lr", ("param", "train.lr")),
    ("seed", ("param", "seed")),
]
#: the LIF layers whose firing rate the table shows (the two hidden ones)
_FIRING_RATE_LAYERS = ("lif1", "lif2")


@functools.cache
def columns() -> tuple[tuple[str, tuple[str, str]], ...]:
    """The job table's columns: (header, where in the run: ("param"|"metric"|"info"|"tag",
    key)); a metric's header is its name. Per-layer metrics follow
    :data:`g2g.models.network.LAYER_NAMES`."""
    from g2g.models.network import LAYER_NAMES  # noqa: PLC0415 (torch only when rows are made)

    def metrics(*metric_names: str) -> list[tuple[str, tuple[str, str]]]:
        return [(name, ("metric", name)) for name in metric_names]

    return tuple(
        _SETTINGS
        + metrics(names.METRIC_TEST_ACCURACY, names.METRIC_TRAIN_ACCURACY, names.METRIC_TRAIN_LOSS,
                  *(names.METRIC_FIRING_RATE_PREFIX + layer for layer in _FIRING_RATE_LAYERS),
                  *(names.METRIC_DENSITY_PREFIX + layer for layer in LAYER_NAMES),
                  *(names.METRIC_CONNECTIONS_PREFIX + layer for layer in LAYER_NAMES),
                  names.METRIC_CONNECTIONS_TOTAL, names.METRIC_PARAMETERS_TOTAL, names.METRIC_PARAMETERS_DENSE,
                  names.METRIC_SYNOPS_TOTAL, names.METRIC_MACS_TOTAL, names.METRIC_LIF_UPDATES,
                  names.METRIC_ANN_MACS, names.METRIC_ENERGY, names.METRIC_ENERGY_ANN,
                  names.METRIC_CV_VAL_ACCURACY_MEAN, names.METRIC_CV_VAL_ACCURACY_STD, names.METRIC_EPOCH_TIME)
        + [("device", ("tag", names.TAG_DEVICE)), ("num_threads", ("tag", names.TAG_NUM_THREADS)),
           ("run_id", ("info", "run_id"))])


def run_row(run) -> dict:
    """One MLflow run as a row of :func:`columns` (None where the run lacks a value)."""
    row = {}
    for header, (kind, key) in columns():
        if kind == "info":
            row[header] = getattr(run.info, key)
        elif kind == "param":
            row[header] = run.data.params.get(key)
        elif kind == "tag":
            row[header] = run.data.tags.get(key)
        elif kind == "tag or param":
            tag, param = key.split()
            row[header] = run.data.tags.get(tag, run.data.params.get(param))
        else:
            row[header] = run.data.metrics.get(key)
    return row


def sweep_jobs(client: MlflowClient, parent_run_id: str) -> list[dict]:
    """One row per child run of the sweep, in run-name order (see :func:`columns`)."""
    from g2g.tracking.runs import sweep_children  # noqa: PLC0415 (MLflow only once a store is read)

    rows = [run_row(child) for child in sweep_children(client, parent_run_id)]
    return sorted(rows, key=lambda row: row["run_name"] or "")


class ResultsError(ValueError):
    """The experiment cannot make a results page (no runs, mixed settings)."""


def experiment_rows(client: MlflowClient, experiment_name: str) -> list[dict]:
    """Every finished training run of the experiment as a :func:`run_row`, plus
    ``train_time_s`` (sum of the per-epoch training times). Sweep parents and runs
    that a re-run sweep only reused are left out; one run per configuration and seed
    (the latest).

    Raises:
        ResultsError: no such experiment, or no finished run in it.
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ResultsError(missing_experiment_message(client, experiment_name,
                                                      f"no MLflow experiment named {experiment_name!r}"))
    refuse_deleted(client, experiment, ResultsError)
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time ASC"], max_results=50000)
    latest = {}
    for run in runs:
        tags = run.data.tags
        if (tags.get(names.TAG_SWEEP) == "true" or names.TAG_REUSED_RUN_ID in tags
                or names.METRIC_TEST_ACCURACY not in run.data.metrics):
            continue
        row = run_row(run)
        row["train_time_s"] = sum(m.value for m in client.get_metric_history(run.info.run_id,
                                                                             names.METRIC_EPOCH_TIME))
        latest[(configuration(row), row["seed"])] = row
    if not latest:
        raise ResultsError(f"experiment {experiment_name!r} has no finished training run with a test accuracy")
    return list(latest.values())


def finished_rows(rows: list[dict]) -> list[dict]:
    """The rows of runs that finished with a test accuracy."""
    return [r for r in rows if r["status"] == "FINISHED" and r[names.METRIC_TEST_ACCURACY] is not None]


def model_rank(model: str) -> int:
    """Position of ``model`` in :data:`g2g.models.network.MODELS` (the seed README's
    order: dense, index, random, mixer); unknown models come after them."""
    from g2g.models.network import MODELS  # noqa: PLC0415 (torch only when rows are ordered)

    return MODELS.index(model) if model in MODELS else len(MODELS)


def model_order(model: str) -> tuple:
    """Sort key of a model name: :func:`model_rank`, then the name."""
    return model_rank(model), model


def _rule_rank(rule: str | None) -> int:
    """Position of a DST rule among :data:`g2g.sparse.dst.PRUNE_RULES` then
    :data:`~g2g.sparse.dst.GROW_RULES` (set, random, hebb); others after them."""
    from g2g.sparse.dst import GROW_RULES, PRUNE_RULES  # noqa: PLC0415 (torch only when rows are ordered)

    rules = tuple(dict.fromkeys(PRUNE_RULES + GROW_RULES))
    return rules.index(rule) if rule in rules else len(rules)


def configuration(row: dict) -> tuple:
    """What a run trained, less the seed: (model, p_inter, sparsity, prune, grow);
    p_inter is None for dense, prune and grow are None for static runs."""
    dynamic = row.get("sparsity") == "dynamic"
    return (row["model"], None if row["model"] == "dense" or row.get("p_inter") is None else float(row["p_inter"]),
            row.get("sparsity") or "static", row.get("prune") if dynamic else None,
            row.get("grow") if dynamic else None)


def configuration_label(key: tuple) -> str:
    """``dense``, ``mixer p=0.15`` or ``mixer p=0.15 set->hebb``."""
    model, p_inter, _, prune, grow = key
    label = model if p_inter is None else f"{model} p={p_inter:g}"
    return label if prune is None else f"{label} {prune}->{grow}"


def group_by_configuration(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Finished rows grouped by :func:`configuration` (repeats = seeds), sorted by
    model, p_inter, static before dynamic, then prune and grow rule."""
    groups = defaultdict(list)
    for row in finished_rows(rows):
        groups[configuration(row)].append(row)

    def order(key: tuple) -> tuple:
        model, p_inter, sparsity, prune, grow = key
        return (*model_order(model), -1.0 if p_inter is None else p_inter,
                sparsity != "static", _rule_rank(prune), _rule_rank(grow))
    return dict(sorted(groups.items(), key=lambda item: order(item[0])))


def open_store(tracking_uri: str) -> MlflowClient:
    """A client of an existing MLflow store (an SQLite file is not created just to read it).

    Raises:
        ValueError: an ``sqlite:///`` URI whose file does not exist.
    """
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 (MLflow only once a store is read)

    from g2g.tracking.store import sqlite_path  # noqa: PLC0415

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
    from g2g.tracking.store import deleted_experiment_message  # noqa: PLC0415

    if experiment.lifecycle_stage == "deleted":
        raise error(deleted_experiment_message(experiment.name, experiment.experiment_id, client.tracking_uri,
                                               "report another experiment: python -m g2g.report OTHER_NAME"))


def resolve_sweep(client: MlflowClient, target: str) -> tuple[str, list[str]]:
    """A run id of a sweep parent, or an experiment name whose latest sweep with jobs is
    meant: newer sweeps without a job (Hydra refused the batch, interrupted before any job)
    are skipped, and said so.

    Returns:
        (the sweep parent's run id, one line per newer sweep that was skipped and why).
    Raises:
        ValueError: neither a run nor an experiment with a sweep that has jobs, or a
            deleted experiment.
    """
    try:
        run = client.get_run(target)
    except Exception:  # not a run id: try an experiment name
        pass
    else:
        refuse_deleted(client, client.get_experiment(run.info.experiment_id))
        return run.info.run_id, []
    experiment = client.get_experiment_by_name(target)
    if experiment is None:
        raise ValueError(missing_experiment_message(client, target,
                                                    f"{target!r} is neither a run id nor an experiment name"))
    refuse_deleted(client, experiment)
    sweeps = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{names.TAG_SWEEP}` = 'true'",
                                order_by=["attributes.start_time DESC"], max_results=1000)
    if not sweeps:
        raise ValueError(f"experiment {target!r} has no sweep runs")
    skipped = []
    for sweep in sweeps:
        if sweep_jobs(client, sweep.info.run_id):
            return sweep.info.run_id, skipped
        reason = sweep.data.tags.get(names.TAG_ERROR)
        skipped.append(f"skipped newer sweep {sweep.info.run_id} ({sweep.info.run_name}): {sweep.info.status}, "
                       f"no jobs{': ' + reason if reason else ''}")
    raise ValueError(f"experiment {target!r} has no sweep with jobs:\n" + "\n".join(skipped))
