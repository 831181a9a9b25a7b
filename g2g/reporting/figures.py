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
    DEFAULT_HEBBIAN_SCORE, DEFAULT_READOUT, DEFAULT_VALIDATION_FRACTION, DEFAULT_WEIGHT_INIT, HEBBIAN_RULE,
    configuration_label, group_by_configuration, model_order, model_rank,
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
    """Test accuracy against p_inter (mean +- std over seeds), one line per static model
    with p_inter (:func:`~g2g.reporting.queries.configuration` less p_inter: a readout,
    weight initialisation or validation split other than the default is its own line,
    dashed), each ``dense`` configuration as a horizontal line; None when fewer than 2
    p_inter values."""
    groups = {key: group for key, group in group_by_configuration(rows).items() if key.sparsity == "static"}
    series = defaultdict(dict)  # configuration less p_inter -> p_inter -> accuracies
    for key, group in groups.items():
        if key.p_inter is not None:
            series[key._replace(p_inter=None)][key.p_inter] = [r[METRIC_TEST_ACCURACY] for r in group]
    if len({p for by_p in series.values() for p in by_p}) < 2:
        return None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for line, by_p in series.items():
        ps = sorted(by_p)
        means, stds = zip(*(mean_std(by_p[p]) for p in ps))
        default = (line.readout in (None, DEFAULT_READOUT) and line.weight_init in (None, DEFAULT_WEIGHT_INIT)
                   and line.validation_fraction == DEFAULT_VALIDATION_FRACTION)
        axis.errorbar(ps, means, yerr=stds, marker="o", capsize=3, label=configuration_label(line),
                      color=model_colour(line.model), linestyle="-" if default else "--")
    for key, group in groups.items():
        if key.model != "dense":
            continue
        mean, std = mean_std([r[METRIC_TEST_ACCURACY] for r in group])
        spread = f" ± {std:.4f}" if len(group) > 1 else ""
        axis.axhline(mean, color="black", linestyle="--", label=f"{configuration_label(key)} ({mean:.4f}{spread})")
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
              if all(r.get(metric) is not None for r in group
                     for metric in (METRIC_ENERGY, METRIC_SYNOPS_TOTAL, METRIC_MACS_TOTAL))}
    if not groups:
        return None
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    colours = {model: model_colour(model) for model in sorted({key.model for key in groups}, key=model_order)}
    for key, group in groups.items():
        accuracy, accuracy_std = mean_std([r[METRIC_TEST_ACCURACY] for r in group])
        costs = (statistics.mean(r[METRIC_ENERGY] for r in group),
                 statistics.mean(r[METRIC_SYNOPS_TOTAL] + r[METRIC_MACS_TOTAL] for r in group))
        for axis, cost in zip(axes, costs):
            axis.errorbar(cost, accuracy, yerr=accuracy_std, fmt="o" if key.prune is None else "s",
                          color=colours[key.model], capsize=3)
            axis.annotate(configuration_label(key).removeprefix(key.model).strip() or key.model, (cost, accuracy),
                          textcoords="offset points", xytext=(4, 4), fontsize=7)
    for model, colour in colours.items():
        axes[0].plot([], [], "o", color=colour, label=model)
    axes[0].set(xlabel="energy per inference (nJ)", ylabel="test accuracy", xscale="log")
    axes[1].set(xlabel="synaptic operations per inference (AC + MAC)", xscale="log")
    for axis in axes:
        axis.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    dynamic = any(key.prune is not None for key in groups)
    figure.suptitle("Accuracy against inference cost" + (" (squares: dynamic sparsity)" if dynamic else ""))
    figure.tight_layout()
    return figure


def dst_rules_figure(rows: list[dict]) -> plt.Figure | None:
    """Prune x grow heatmap of mean test accuracy (the default Hebbian score), one panel per static configuration
    that the rules rewire (model, p_inter, readout, ...: runs of different p_inter are
    never averaged together); None unless the rows have dynamic runs with at least two
    rule pairs. Rules in the order of :data:`g2g.sparse.dst.PRUNE_RULES` and
    :data:`~g2g.sparse.dst.GROW_RULES`."""
    from g2g.sparse.dst import GROW_RULES, PRUNE_RULES  # noqa: PLC0415 (torch only when plotting rules)

    dynamic = {key: group for key, group in group_by_configuration(rows).items() if key.sparsity == "dynamic"}
    if len({(key.prune, key.grow) for key in dynamic}) < 2:
        return None
    bases = list(dict.fromkeys(key._replace(sparsity="static", prune=None, grow=None, hebbian_score=None)
                               for key in dynamic))
    prunes = [p for p in PRUNE_RULES if any(key.prune == p for key in dynamic)]
    grows = [g for g in GROW_RULES if any(key.grow == g for key in dynamic)]
    figure, axes = plt.subplots(1, len(bases), figsize=(4 * len(bases), 3.6), squeeze=False)
    for axis, base in zip(axes[0], bases):
        grid = np.full((len(prunes), len(grows)), np.nan)
        for i, prune in enumerate(prunes):
            for j, grow in enumerate(grows):
                score = DEFAULT_HEBBIAN_SCORE if HEBBIAN_RULE in (prune, grow) else None  # the default score only
                group = dynamic.get(base._replace(sparsity="dynamic", prune=prune, grow=grow, hebbian_score=score))
                if group:
                    grid[i, j] = statistics.mean(r[METRIC_TEST_ACCURACY] for r in group)
        image = axis.imshow(grid, cmap="viridis")
        middle = np.nanmean(grid)
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):  # dark text on the bright (high) end of viridis
                axis.text(j, i, f"{value:.3f}", ha="center", va="center",
                          color="black" if value > middle else "white")
        axis.set(xticks=range(len(grows)), xticklabels=grows, yticks=range(len(prunes)),
                 yticklabels=prunes, xlabel="grow", ylabel="prune", title=configuration_label(base))
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle("Test accuracy by DST rule")
    figure.tight_layout()
    return figure


#: the sweep report's figures: (file name, function of the job rows returning a figure or None)
SWEEP_FIGURES = (("accuracy_vs_p_inter.png", accuracy_vs_p_inter_figure),
                 ("accuracy_vs_cost.png", accuracy_vs_cost_figure),
                 ("dst_rules_heatmap.png", dst_rules_figure))
