"""Runs read back from MLflow as rows, and rows grouped by what they trained.

A row is one run as a dict with the keys of :func:`columns` (settings from its params,
results from its metrics). Importing this module imports neither MLflow nor torch: the
client comes from :func:`open_store`, and the model, rule and layer registries
(:mod:`g2g.models.network`, :mod:`g2g.sparse.dst`) are read when first needed.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import TYPE_CHECKING, NamedTuple

from g2g.shell import shell_command
from g2g.tracking import names
from g2g.tracking.params import is_non_result_key

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
    ("hebbian_score", ("param", "sparsity.hebbian_score")),
    ("stop_fraction", ("param", "sparsity.stop_fraction")),
    ("fraction_schedule", ("param", "sparsity.fraction_schedule")),
    ("readout", ("param", "model.readout")),
    ("weight_init", ("param", "model.weight_init")),
    ("validation_fraction", ("param", "protocol.validation_fraction")),
    ("epochs", ("tag or param", f"{names.TAG_EPOCHS} train.epochs")),
    ("batch_size", ("param", "train.batch_size")),
    ("lr", ("param", "train.lr")),
    ("seed", ("param", "seed")),
]
#: the LIF layers whose firing rate the table shows (the two hidden ones)
_FIRING_RATE_LAYERS = ("lif1", "lif2")
#: the best epoch's test and validation accuracy (running best; its last value is the run's)
BEST_TEST_ACCURACY = names.METRIC_BEST_ACCURACY_PREFIX + names.METRIC_TEST_ACCURACY
BEST_VAL_ACCURACY = names.METRIC_BEST_ACCURACY_PREFIX + names.METRIC_VAL_ACCURACY
#: the number of the best epoch of the test split (1 = the first epoch)
BEST_TEST_EPOCH = names.METRIC_BEST_ACCURACY_PREFIX + "test_epoch"


@functools.cache
def columns() -> tuple[tuple[str, tuple[str, str]], ...]:
    """The job table's columns: (header, where in the run: ("param"|"metric"|"info"|"tag",
    key)); a metric's header is its name, except ``hidden_width`` (metric ``hidden_dim``:
    the width the model was built with, which ``model=dense_matched`` computes; the
    ``hidden_dim`` column is the param ``model.hidden_dim``). A metric's value is its last
    logged one: the last epoch's, or for ``best_*`` the best epoch's. Per-layer metrics
    follow :data:`g2g.models.network.LAYER_NAMES`."""
    from g2g.models.network import LAYER_NAMES  # noqa: PLC0415 (torch only when rows are made)

    def metrics(*metric_names: str) -> list[tuple[str, tuple[str, str]]]:
        return [(name, ("metric", name)) for name in metric_names]

    return tuple(
        _SETTINGS
        + metrics(names.METRIC_TEST_ACCURACY, BEST_TEST_ACCURACY, BEST_TEST_EPOCH, names.METRIC_VAL_ACCURACY,
                  BEST_VAL_ACCURACY,
                  names.METRIC_TRAIN_ACCURACY, names.METRIC_TRAIN_LOSS,
                  *(names.METRIC_FIRING_RATE_PREFIX + layer for layer in _FIRING_RATE_LAYERS),
                  *(names.METRIC_DENSITY_PREFIX + layer for layer in LAYER_NAMES),
                  *(names.METRIC_CONNECTIONS_PREFIX + layer for layer in LAYER_NAMES),
                  names.METRIC_CONNECTIONS_TOTAL, names.METRIC_PARAMETERS_TOTAL, names.METRIC_PARAMETERS_DENSE,
                  names.METRIC_SYNOPS_TOTAL, names.METRIC_MACS_TOTAL, names.METRIC_LIF_UPDATES,
                  names.METRIC_ANN_MACS, names.METRIC_ENERGY, names.METRIC_ENERGY_ANN,
                  names.METRIC_CV_VAL_ACCURACY_MEAN, names.METRIC_CV_VAL_ACCURACY_STD, names.METRIC_EPOCH_TIME)
        + [("hidden_width", ("metric", names.METRIC_HIDDEN_DIM))]
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
    ``train_time_s`` (sum of the per-epoch training times) and ``params`` (all its
    MLflow params: the flattened resolved config). Sweep parents and runs that only
    link a run of this experiment are left out (a link to a run of another experiment,
    or one that answers a request for fewer epochs from its history, is counted, with
    its original's training time); one run per configuration and seed (the latest).

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
    latest = {}
    for run in runs:
        tags = run.data.tags
        if tags.get(names.TAG_SWEEP) == "true" or names.METRIC_TEST_ACCURACY not in run.data.metrics:
            continue
        original = find_run(client, tags[names.TAG_REUSED_RUN_ID]) if names.TAG_REUSED_RUN_ID in tags else None
        answered = tags.get(names.TAG_ANSWERED_FROM_EPOCH)
        if original is not None and original.info.experiment_id == experiment.experiment_id and answered is None:
            continue  # a link to a run of this experiment, which is counted itself
        row = run_row(run)
        row["params"] = dict(run.data.params)
        timed = client.get_metric_history((original or run).info.run_id, names.METRIC_EPOCH_TIME)
        row["train_time_s"] = sum(m.value for m in timed if answered is None or m.step <= int(answered))
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


#: the value of an option that runs logged before it existed trained with
#: (``model.readout``, ``model.weight_init``, ``protocol.validation_fraction``)
DEFAULT_READOUT, LEGACY_WEIGHT_INIT, DEFAULT_VALIDATION_FRACTION = "masked", "uniform", 0.0
#: the default of ``model.weight_init`` (conf/model/dense.yaml; a test keeps them equal):
#: the p_inter and DST studies' runs have it
DEFAULT_WEIGHT_INIT = "fan_in"
#: models without masks, for which every ``model.weight_init`` gives the same weights
UNMASKED_MODELS = ("dense", "dense_matched")
#: the DST rule that uses a Hebbian score, and the score of runs that did not log one
#: (``g2g.sparse.dst.HEBBIAN_RULE``, the default of ``sparsity.hebbian_score``)
HEBBIAN_RULE, DEFAULT_HEBBIAN_SCORE = "hebb", "cosine"


class Configuration(NamedTuple):
    """What a run trained, less the seed: the runs of one configuration are its seeds.

    ``p_inter`` is None for ``dense``; ``prune`` and ``grow`` are None for static
    sparsity; ``readout`` (the last layer of a sparse model: masked or dense) is None for
    ``dense``, which has no masks; ``weight_init`` is None for :data:`UNMASKED_MODELS`
    (every scheme gives them the same weights). A run without the param
    ``model.readout``, ``model.weight_init`` or ``protocol.validation_fraction`` (logged
    before the option existed) trained with :data:`DEFAULT_READOUT`,
    :data:`LEGACY_WEIGHT_INIT`, :data:`DEFAULT_VALIDATION_FRACTION`.
    """

    model: str
    p_inter: float | None
    sparsity: str
    prune: str | None
    grow: str | None
    readout: str | None = DEFAULT_READOUT
    weight_init: str | None = DEFAULT_WEIGHT_INIT
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    hebbian_score: str | None = None


def configuration(row: dict) -> Configuration:
    """The :class:`Configuration` a row trained (params ``model.name``, ``model.p_inter``,
    ``sparsity.name``, ``sparsity.prune``, ``sparsity.grow``, ``model.readout``,
    ``model.weight_init``, ``protocol.validation_fraction``, and ``sparsity.hebbian_score``
    for a rule that uses the Hebbian score: ``cosine`` when not logged)."""
    dynamic = row.get("sparsity") == "dynamic"
    dense = row["model"] == "dense"
    hebbian = dynamic and HEBBIAN_RULE in (row.get("prune"), row.get("grow"))
    return Configuration(
        row["model"], None if dense or row.get("p_inter") is None else float(row["p_inter"]),
        row.get("sparsity") or "static", row.get("prune") if dynamic else None, row.get("grow") if dynamic else None,
        None if dense else row.get("readout") or DEFAULT_READOUT,
        None if row["model"] in UNMASKED_MODELS else row.get("weight_init") or LEGACY_WEIGHT_INIT,
        float(row.get("validation_fraction") or DEFAULT_VALIDATION_FRACTION),
        (row.get("hebbian_score") or DEFAULT_HEBBIAN_SCORE) if hebbian else None)


def configuration_label(key: Configuration) -> str:
    """``dense``, ``mixer p=0.15``, ``mixer p=0.15 set->hebb``; options other than the
    defaults follow as overrides: ``index p=0 readout=dense weight_init=fan_in
    validation_fraction=0.1``."""
    label = key.model if key.p_inter is None else f"{key.model} p={key.p_inter:g}"
    if key.prune is not None:
        label += f" {key.prune}->{key.grow}"
    if key.readout not in (None, DEFAULT_READOUT):
        label += f" readout={key.readout}"
    if key.weight_init not in (None, DEFAULT_WEIGHT_INIT):
        label += f" weight_init={key.weight_init}"
    if key.validation_fraction != DEFAULT_VALIDATION_FRACTION:
        label += f" validation_fraction={key.validation_fraction:g}"
    if key.hebbian_score not in (None, DEFAULT_HEBBIAN_SCORE):
        label += f" hebbian_score={key.hebbian_score}"
    return label


def group_by_configuration(rows: list[dict]) -> dict[Configuration, list[dict]]:
    """Finished rows grouped by :func:`configuration` (repeats = seeds), sorted by
    model, p_inter, static before dynamic, prune and grow rule, then the default
    readout, weight initialisation and no validation split before the others."""
    groups = defaultdict(list)
    for row in finished_rows(rows):
        groups[configuration(row)].append(row)
    return dict(sorted(groups.items(), key=lambda item: configuration_order(item[0])))


def configuration_order(key: Configuration) -> tuple:
    """Sort key of a configuration (see :func:`group_by_configuration`)."""
    return (*model_order(key.model), -1.0 if key.p_inter is None else key.p_inter,
            key.sparsity != "static", _rule_rank(key.prune), _rule_rank(key.grow),
            key.readout not in (None, DEFAULT_READOUT), str(key.readout),
            key.weight_init not in (None, DEFAULT_WEIGHT_INIT), str(key.weight_init), key.validation_fraction,
            key.hebbian_score not in (None, DEFAULT_HEBBIAN_SCORE), str(key.hebbian_score))


#: the params whose values the results page compares (besides ``seed``): the model
#: option (its name and builder, connectivity, p_inter, readout, weight
#: initialisation), the DST rule, and the validation split. The page puts runs that
#: differ in them into different :class:`Configuration`s, never into one mean.
VARIED_PARAMS = ("seed", "model.name", "model._target_", "model.connectivity", "model.p_inter", "model.readout",
                 "model.weight_init", "sparsity.name", "sparsity.prune", "sparsity.grow", "sparsity.hebbian_score",
                 "protocol.validation_fraction")
#: config groups whose options have different keys (a sparse model's ``num_groups``,
#: DST's ``update_interval``): a run without such a param is not compared on it
_OPTION_GROUPS = ("model.", "sparsity.")


def result_params(row: dict) -> dict[str, str]:
    """The row's params (``row["params"]``) that change results: without those under
    :data:`g2g.tracking.params.NON_RESULT_KEYS` (the keys the checkpoint hash leaves out),
    and with ``train.epochs`` the epochs the run has (tag ``g2g.epochs``: a finished run
    extended to more epochs keeps its first ``train.epochs`` param)."""
    params = {key: value for key, value in row["params"].items() if not is_non_result_key(key)}
    if "train.epochs" in params and row.get("epochs") is not None:
        params["train.epochs"] = str(row["epochs"])
    return params


def _runs_text(rows: list[dict], shown: int = 6) -> str:
    """``dense seeds 1, 2; mixer p=0.1 seed 1`` (configurations in the order of
    :func:`group_by_configuration`, at most ``shown`` of them)."""
    seeds = defaultdict(list)
    for row in rows:
        seeds[configuration(row)].append(str(row.get("seed")))
    parts = [f"{configuration_label(key)} seed{'s' if len(found) > 1 else ''} "
             f"{', '.join(sorted(found, key=lambda seed: (len(seed), seed)))}"
             for key, found in sorted(seeds.items(), key=lambda item: configuration_order(item[0]))]
    more = f"; and {len(parts) - shown} more configurations" if len(parts) > shown else ""
    return "; ".join(parts[:shown]) + more


def refuse_mixed_settings(rows: list[dict], varied: tuple[str, ...] = VARIED_PARAMS) -> None:
    """Refuse to pool runs that differ in a result-affecting param (:func:`result_params`)
    other than ``varied``: the studies vary those and nothing else, so any other
    difference would be counted as an effect of the model. A param that only some runs
    have is a difference (``not logged`` in the others), except under ``model.`` and
    ``sparsity.``, whose options have different keys.

    Raises:
        ResultsError: names each differing param, its values, and the configurations and
            seeds that have each value.
    """
    params = [result_params(row) for row in rows]
    differences = []
    for key in sorted(set().union(*params) - set(varied)):
        by_value = defaultdict(list)
        for row, values in zip(rows, params):
            if key in values:
                by_value[values[key]].append(row)
            elif not key.startswith(_OPTION_GROUPS):
                by_value["(not logged)"].append(row)
        if len(by_value) > 1:
            differences.append(f"  {key}: " + " | ".join(f"{value!s} in {_runs_text(found)}"
                                                         for value, found in sorted(by_value.items())))
    if differences:
        raise ResultsError(
            "the runs differ in settings that the results page does not compare (it varies only "
            f"{', '.join(varied)}):\n" + "\n".join(differences)
            + "\na results page summarises one setting: log each setting to its own tracking.experiment, "
            "or delete the runs that do not belong")


def open_store(tracking_uri: str) -> MlflowClient:
    """A client of an existing MLflow store (an SQLite file is not created just to read it).

    Raises:
        ValueError: an ``sqlite:///`` URI whose file does not exist, or whose ``?`` is not
            a query string (:func:`g2g.tracking.store.sqlite_uri_problem`).
    """
    from mlflow.tracking import MlflowClient  # noqa: PLC0415 (MLflow only once a store is read)

    from g2g.tracking.store import sqlite_path, sqlite_uri_problem  # noqa: PLC0415

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
    from g2g.tracking.store import deleted_experiment_message  # noqa: PLC0415

    if experiment.lifecycle_stage == "deleted":
        raise error(deleted_experiment_message(experiment.name, experiment.experiment_id, client.tracking_uri,
                                               "report another experiment: python -m g2g.report OTHER_NAME"))


def find_run(client: MlflowClient, run_id: str):
    """The MLflow run ``run_id``, or None when the store has no run of that id (or
    ``run_id`` cannot be one); any other failure of the store is raised."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415 (MLflow only once a store is read)

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
        raise ValueError(f"experiment {target!r} has no sweep runs")
    skipped = []
    for sweep in sweeps:
        if sweep_jobs(client, sweep.info.run_id):
            return sweep.info.run_id, skipped
        reason = sweep.data.tags.get(names.TAG_ERROR)
        skipped.append(f"skipped newer sweep {sweep.info.run_id} ({sweep.info.run_name}): {sweep.info.status}, "
                       f"no jobs{': ' + reason if reason else ''}")
    raise ValueError(f"experiment {target!r} has no sweep with jobs:\n" + "\n".join(skipped))
