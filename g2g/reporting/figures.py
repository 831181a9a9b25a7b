"""Accuracy figures of the sweep report and the results page, one colour per model.

Each figure function takes job rows (:func:`g2g.reporting.queries.run_row`) and
returns a Matplotlib figure, or None when the rows have nothing to show.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from g2g.reporting.queries import (  # noqa: E402
    configuration_label, finished_rows, group_by_configuration, model_order, model_rank,
)
from g2g.reporting.statistics import mean_std  # noqa: E402
from g2g.tracking.names import (  # noqa: E402
    METRIC_ENERGY, METRIC_MACS_TOTAL, METRIC_SYNOPS_TOTAL, METRIC_TEST_ACCURACY,
)


def model_colour(model: str) -> str:
    """One Matplotlib colour per model, the same in every figure (by
    :func:`g2g.reporting.queries.model_rank`)."""
    return f"C{model_rank(model)}"


def save(figure: plt.Figure, path: Path, dpi: int) -> None:
    """Write ``figure`` to ``path`` (PNG at ``dpi``) and close it."""
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def accuracy_vs_p_inter_figure(rows: list[dict]) -> plt.Figure | None:
    """Test accuracy against p_inter per static sparse model (mean +- std over repeats),
    the dense baseline as a horizontal line; None when fewer than 2 p_inter values."""
    rows = finished_rows(rows)
    sparse = [r for r in rows if r["model"] != "dense" and r["p_inter"] is not None
              and r.get("sparsity") in (None, "static")]
    if len({r["p_inter"] for r in sparse}) < 2:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for model in sorted({r["model"] for r in sparse}, key=model_order):
        by_p = defaultdict(list)
        for r in sparse:
            if r["model"] == model:
                by_p[float(r["p_inter"])].append(r[METRIC_TEST_ACCURACY])
        ps = sorted(by_p)
        means, stds = zip(*(mean_std(by_p[p]) for p in ps))
        axis.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=model, color=model_colour(model))
    dense = [r[METRIC_TEST_ACCURACY] for r in rows if r["model"] == "dense"]
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


def accuracy_vs_cost_figure(rows: list[dict]) -> plt.Figure | None:
    """Test accuracy (mean +- std over seeds) against the cost of one inference, per
    configuration: energy (nJ, 45 nm constants of :mod:`g2g.training.synops`) on the left,
    synaptic operations (accumulates + multiply-accumulates) on the right, one colour
    per model, each point labelled with p_inter (and the DST rule). None when no
    finished run has the SynOps metrics."""
    groups = {key: group for key, group in group_by_configuration(rows).items()
              if all(r.get(METRIC_ENERGY) is not None for r in group)}
    if not groups:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    colours = {model: model_colour(model) for model in sorted({key[0] for key in groups}, key=model_order)}
    for key, group in groups.items():
        accuracy, accuracy_std = mean_std([r[METRIC_TEST_ACCURACY] for r in group])
        costs = (statistics.mean(r[METRIC_ENERGY] for r in group),
                 statistics.mean(r[METRIC_SYNOPS_TOTAL] + r[METRIC_MACS_TOTAL] for r in group))
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
    the rows have dynamic runs with at least two rule pairs. Rules in the order of
    :data:`g2g.sparse.dst.PRUNE_RULES` and :data:`~g2g.sparse.dst.GROW_RULES`."""
    from g2g.sparse.dst import GROW_RULES, PRUNE_RULES  # noqa: PLC0415 (torch only when plotting rules)

    dynamic = [r for r in finished_rows(rows) if r["sparsity"] == "dynamic"]
    if len({(r["prune"], r["grow"]) for r in dynamic}) < 2:
        return None
    models = sorted({r["model"] for r in dynamic})
    prunes = [p for p in PRUNE_RULES if any(r["prune"] == p for r in dynamic)]
    grows = [g for g in GROW_RULES if any(r["grow"] == g for r in dynamic)]
    figure, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.6), squeeze=False)
    for axis, model in zip(axes[0], models):
        grid = np.full((len(prunes), len(grows)), np.nan)
        for i, prune in enumerate(prunes):
            for j, grow in enumerate(grows):
                values = [r[METRIC_TEST_ACCURACY] for r in dynamic
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


#: the sweep report's figures: (file name, function of the job rows returning a figure or None)
SWEEP_FIGURES = (("accuracy_vs_p_inter.png", accuracy_vs_p_inter_figure),
                 ("accuracy_vs_cost.png", accuracy_vs_cost_figure),
                 ("dst_rules_heatmap.png", dst_rules_figure))
