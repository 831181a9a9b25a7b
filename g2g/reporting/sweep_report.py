"""Comparison report of a sweep, built from MLflow alone.

    python -m g2g.report <sweep-run-id | experiment-name> [--tracking-uri URI] [--out DIR]

Collects the sweep's child runs (tag ``mlflow.parentRunId``), writes a table of
every job's final metrics and key settings (``jobs.csv``, ``jobs.md``) and plots:
test accuracy against ``p_inter`` per model with the dense baseline as a line
(``accuracy_vs_p_inter.png``, mean +- std over seeds), test accuracy against the
energy and synaptic operations of one inference (``accuracy_vs_cost.png``), and,
when the sweep varied the DST rules, a prune x grow heatmap of test accuracy per
model (``dst_rules_heatmap.png``). The files go to ``--out`` (default:
``sweep_report``) and are logged to the parent run under ``report/``.

    python -m g2g.report <experiment-name> --page docs/results.md

instead writes the results page (:mod:`g2g.reporting.results_page`) from every finished run
of the experiment.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from g2g.reporting import markdown  # noqa: E402
from g2g.tracking.store import default_tracking_uri, sqlite_path  # noqa: E402

#: table columns: (header, where in the run: ("param"|"metric"|"info", key))
COLUMNS = [
    ("run_name", ("info", "run_name")),
    ("status", ("info", "status")),
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
    ("epochs", ("param", "train.epochs")),
    ("batch_size", ("param", "train.batch_size")),
    ("lr", ("param", "train.lr")),
    ("seed", ("param", "seed")),
    ("test_accuracy", ("metric", "test_accuracy")),
    ("train_accuracy", ("metric", "train_accuracy")),
    ("train_loss", ("metric", "train_loss")),
    ("firing_rate_lif1", ("metric", "firing_rate_lif1")),
    ("firing_rate_lif2", ("metric", "firing_rate_lif2")),
    ("density_fc1", ("metric", "density_fc1")),
    ("density_fc2", ("metric", "density_fc2")),
    ("density_fc3", ("metric", "density_fc3")),
    ("connections_fc1", ("metric", "connections_fc1")),
    ("connections_fc2", ("metric", "connections_fc2")),
    ("connections_fc3", ("metric", "connections_fc3")),
    ("connections_total", ("metric", "connections_total")),
    ("parameters_total", ("metric", "parameters_total")),
    ("parameters_dense", ("metric", "parameters_dense")),
    ("synops_total", ("metric", "synops_total")),
    ("macs_total", ("metric", "macs_total")),
    ("ops_dense_equivalent", ("metric", "ops_dense_equivalent")),
    ("energy_nj", ("metric", "energy_nj")),
    ("energy_dense_equivalent_nj", ("metric", "energy_dense_equivalent_nj")),
    ("cv_val_accuracy_mean", ("metric", "cv_val_accuracy_mean")),
    ("cv_val_accuracy_std", ("metric", "cv_val_accuracy_std")),
    ("epoch_time_s", ("metric", "epoch_time_s")),
    ("device", ("tag", "g2g.device")),
    ("num_threads", ("tag", "g2g.num_threads")),
    ("run_id", ("info", "run_id")),
]


def run_row(run) -> dict:
    """One MLflow run as a row of :data:`COLUMNS` (None where the run lacks a value)."""
    row = {}
    for header, (kind, key) in COLUMNS:
        if kind == "info":
            row[header] = getattr(run.info, key)
        elif kind == "param":
            row[header] = run.data.params.get(key)
        elif kind == "tag":
            row[header] = run.data.tags.get(key)
        else:
            row[header] = run.data.metrics.get(key)
    return row


def sweep_jobs(client: MlflowClient, parent_run_id: str) -> list[dict]:
    """One row per child run of the sweep, in run-name order (see :data:`COLUMNS`)."""
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=10000,
    )
    rows = [run_row(child) for child in children]
    return sorted(rows, key=lambda row: row["run_name"] or "")


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _add_job_labels(rows: list[dict]) -> None:
    """``job``: each run name without the overrides that every job of the sweep shares
    (e.g. ``model=index model.p_inter=0.1`` instead of the whole command line)."""
    token_sets = [set((row["run_name"] or "").split()) for row in rows]
    common = set.intersection(*token_sets) if token_sets and len(rows) > 1 else set()
    for row in rows:
        row["job"] = " ".join(t for t in (row["run_name"] or "").split() if t not in common) or row["run_name"]


def write_tables(rows: list[dict], folder: Path) -> list[Path]:
    """``jobs.csv`` and ``jobs.md`` with every column that has a value in some row
    (``job`` first: the run name less the overrides all jobs share)."""
    _add_job_labels(rows)
    headers = ["job"] + [h for h, _ in COLUMNS if h != "run_name" and any(row.get(h) is not None for row in rows)]
    csv_path, markdown_path = folder / "jobs.csv", folder / "jobs.md"
    with open(csv_path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=headers, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    markdown_path.write_text(markdown.table(headers, [[_format(row.get(h)) for h in headers] for row in rows]))
    return [csv_path, markdown_path]


def _finished(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "FINISHED" and r["test_accuracy"] is not None]


def accuracy_vs_p_inter_figure(rows: list[dict]) -> plt.Figure | None:
    """Test accuracy against p_inter per static sparse model (mean +- std over repeats),
    the dense baseline as a horizontal line; None when fewer than 2 p_inter values."""
    rows = _finished(rows)
    sparse = [r for r in rows if r["model"] != "dense" and r["p_inter"] is not None
              and r.get("sparsity") in (None, "static")]
    if len({r["p_inter"] for r in sparse}) < 2:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for model in sorted({r["model"] for r in sparse}, key=_model_order):
        by_p = defaultdict(list)
        for r in sparse:
            if r["model"] == model:
                by_p[float(r["p_inter"])].append(r["test_accuracy"])
        ps = sorted(by_p)
        means = [statistics.mean(by_p[p]) for p in ps]
        stds = [statistics.stdev(by_p[p]) if len(by_p[p]) > 1 else 0.0 for p in ps]
        axis.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=model, color=model_colour(model))
    dense = [r["test_accuracy"] for r in rows if r["model"] == "dense"]
    if dense:
        mean, std = mean_std(dense)
        spread = f" ± {std:.4f}" if len(dense) > 1 else ""
        axis.axhline(mean, color="black", linestyle="--", label=f"dense ({mean:.4f}{spread})")
        if std:
            axis.axhspan(mean - std, mean + std, color="black", alpha=0.1)
    axis.set(xlabel="p_inter (connection probability between groups)", ylabel="test accuracy",
             title="Test accuracy vs p_inter")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


#: the order of models and DST rules in tables (the seed README's order)
MODEL_ORDER = {"dense": 0, "index": 1, "random": 2, "mixer": 3}
RULE_ORDER = {"set": 0, "random": 1, "hebb": 2}


def _model_order(model: str) -> tuple:
    return MODEL_ORDER.get(model, len(MODEL_ORDER)), model


def model_colour(model: str) -> str:
    """One Matplotlib colour per model, the same in every figure."""
    return f"C{MODEL_ORDER.get(model, len(MODEL_ORDER))}"


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
    """Finished rows grouped by :func:`configuration` (repeats = seeds), sorted."""
    groups = defaultdict(list)
    for row in _finished(rows):
        groups[configuration(row)].append(row)
    def order(key: tuple) -> tuple:
        model, p_inter, sparsity, prune, grow = key
        return (MODEL_ORDER.get(model, len(MODEL_ORDER)), model, -1.0 if p_inter is None else p_inter,
                sparsity != "static", RULE_ORDER.get(prune, 9), RULE_ORDER.get(grow, 9))
    return dict(sorted(groups.items(), key=lambda item: order(item[0])))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def accuracy_vs_cost_figure(rows: list[dict]) -> plt.Figure | None:
    """Test accuracy (mean +- std over seeds) against the cost of one inference, per
    configuration: energy (nJ, 45 nm constants of :mod:`g2g.training.synops`) on the left,
    synaptic operations (accumulates + multiply-accumulates) on the right, one colour
    per model, each point labelled with p_inter (and the DST rule). None when no
    finished run has the SynOps metrics."""
    groups = {key: group for key, group in group_by_configuration(rows).items()
              if all(r.get("energy_nj") is not None for r in group)}
    if not groups:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    colours = {model: model_colour(model) for model in sorted({key[0] for key in groups}, key=_model_order)}
    for key, group in groups.items():
        accuracy, accuracy_std = mean_std([r["test_accuracy"] for r in group])
        costs = (statistics.mean(r["energy_nj"] for r in group),
                 statistics.mean(r["synops_total"] + r["macs_total"] for r in group))
        for axis, cost in zip(axes, costs):
            axis.errorbar(cost, accuracy, yerr=accuracy_std, fmt="o" if key[3] is None else "s",
                          color=colours[key[0]], capsize=3)
            axis.annotate(configuration_label(key).removeprefix(key[0]).strip() or key[0], (cost, accuracy),
                          textcoords="offset points", xytext=(4, 4), fontsize=7)
    for model, colour in colours.items():
        axes[0].plot([], [], "o", color=colour, label=model)
    axes[0].set(xlabel="energy per inference (nJ)", ylabel="test accuracy", xscale="log")
    axes[1].set(xlabel="synaptic operations per inference (AC + MAC)", xscale="log")
    for axis in axes:
        axis.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    dynamic = any(key[3] is not None for key in groups)
    figure.suptitle("Accuracy against inference cost" + (" (squares: dynamic sparsity)" if dynamic else ""))
    figure.tight_layout()
    return figure


def dst_rules_figure(rows: list[dict]) -> plt.Figure | None:
    """Prune x grow heatmap of mean test accuracy, one panel per model; None unless
    the sweep has dynamic runs with at least two rule pairs."""
    dynamic = [r for r in _finished(rows) if r["sparsity"] == "dynamic"]
    if len({(r["prune"], r["grow"]) for r in dynamic}) < 2:
        return None
    models = sorted({r["model"] for r in dynamic})
    prunes = [p for p in ("set", "random", "hebb") if any(r["prune"] == p for r in dynamic)]
    grows = [g for g in ("hebb", "random") if any(r["grow"] == g for r in dynamic)]
    figure, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.6), squeeze=False)
    for axis, model in zip(axes[0], models):
        grid = np.full((len(prunes), len(grows)), np.nan)
        for i, prune in enumerate(prunes):
            for j, grow in enumerate(grows):
                values = [r["test_accuracy"] for r in dynamic
                          if (r["model"], r["prune"], r["grow"]) == (model, prune, grow)]
                if values:
                    grid[i, j] = statistics.mean(values)
        image = axis.imshow(grid, cmap="viridis")
        middle = np.nanmean(grid)
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):  # dark text on the bright (high) end of viridis
                axis.text(j, i, f"{value:.3f}", ha="center", va="center",
                          color="black" if value > middle else "white")
        axis.set(xticks=range(len(grows)), xticklabels=grows, yticks=range(len(prunes)),
                 yticklabels=prunes, xlabel="grow", ylabel="prune", title=model)
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle("Test accuracy by DST rule")
    figure.tight_layout()
    return figure


#: the report's figures: (file name, function of the job rows returning a figure or None)
FIGURES = (("accuracy_vs_p_inter.png", accuracy_vs_p_inter_figure),
           ("accuracy_vs_cost.png", accuracy_vs_cost_figure),
           ("dst_rules_heatmap.png", dst_rules_figure))


def report_sweep(client: MlflowClient, parent_run_id: str, folder: Path | None = None) -> list[dict]:
    """Write the report files of a sweep into ``folder`` (a temporary one when None)
    and log them to the parent run under ``report/``. Returns the job rows."""
    rows = sweep_jobs(client, parent_run_id)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(folder or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        files = write_tables(rows, folder)
        for name, make in FIGURES:
            figure = make(rows)
            if figure is not None:
                figure.savefig(folder / name, dpi=120)
                plt.close(figure)
                files.append(folder / name)
        for path in files:
            client.log_artifact(parent_run_id, str(path), artifact_path="report")
    return rows


def open_store(tracking_uri: str) -> MlflowClient:
    """A client of an existing MLflow store (an SQLite file is not created just to read it).

    Raises:
        ValueError: an ``sqlite:///`` URI whose file does not exist.
    """
    path = sqlite_path(tracking_uri)
    if path is not None and not path.exists():
        raise ValueError(f"no MLflow store at {path} (tracking URI {tracking_uri}): run from the folder "
                         "where you ran the experiments, or pass --tracking-uri")
    return MlflowClient(tracking_uri)


def missing_experiment_message(client: MlflowClient, name: str, what: str) -> str:
    """``what`` plus the store's URI and the experiments it has."""
    names = sorted(e.name for e in client.search_experiments())
    return (f"{what} in the MLflow store {client.tracking_uri}; its experiments: "
            f"{', '.join(names) if names else 'none'} (another store: --tracking-uri)")


def resolve_sweep(client: MlflowClient, target: str) -> str:
    """A run id of a sweep parent, or an experiment name whose latest sweep is meant.

    Raises:
        ValueError: neither a run nor an experiment with a sweep.
    """
    try:
        run = client.get_run(target)
        return run.info.run_id
    except Exception:  # not a run id: try an experiment name
        pass
    experiment = client.get_experiment_by_name(target)
    if experiment is None:
        raise ValueError(missing_experiment_message(client, target,
                                                    f"{target!r} is neither a run id nor an experiment name"))
    sweeps = client.search_runs([experiment.experiment_id], filter_string="tags.`g2g.sweep` = 'true'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    if not sweeps:
        raise ValueError(f"experiment {target!r} has no sweep runs")
    return sweeps[0].info.run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m g2g.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="sweep parent run id, or experiment name (its latest sweep; "
                                       "with --page: every finished run of it)")
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///$PWD/mlflow.db")
    parser.add_argument("--out", default="sweep_report", help="folder for the files (default: sweep_report)")
    parser.add_argument("--page", default=None, metavar="PATH",
                        help="write the results page (e.g. docs/results.md) of experiment TARGET instead")
    args = parser.parse_args(argv)
    try:
        client = open_store(args.tracking_uri or default_tracking_uri())
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.page:
        from g2g.reporting.results_page import ResultsError, write_page

        command = " ".join(["python -m g2g.report", args.target, "--page", args.page]
                           + (["--tracking-uri", args.tracking_uri] if args.tracking_uri else []))
        try:
            page = write_page(client, args.target, Path(args.page), command)
        except (ResultsError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"wrote {page} and its figures in {page.parent / 'figures'}")
        return 0
    try:
        parent = resolve_sweep(client, args.target)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = report_sweep(client, parent, Path(args.out))
    print((Path(args.out) / "jobs.md").read_text(), end="")
    print(f"{len(rows)} jobs; files in {Path(args.out).resolve()} and in MLflow run {parent} (report/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
