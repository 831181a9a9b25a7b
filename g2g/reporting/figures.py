"""Figures of a comparison (:class:`g2g.reporting.comparison.Comparison`): the metric
against each numeric varying param, against the cost of one inference, and a heatmap
over two varying params. One point per configuration: configurations that differ in
any param are never averaged together; error bars are the std over seeds.

Each figure function returns a Matplotlib figure, or None when there is nothing to show.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from g2g.reporting.comparison import ABSENT, Comparison, numeric_columns, override_label
from g2g.reporting.queries import model_rank
from g2g.reporting.statistics import mean_std
from g2g.tracking.names import METRIC_ENERGY, METRIC_MACS_TOTAL, METRIC_SYNOPS_TOTAL


def model_colour(model: str) -> str:
    """One Matplotlib colour per model, the same in every figure (by
    :func:`g2g.reporting.queries.model_rank`)."""
    return f"C{model_rank(model)}"


def save(figure: plt.Figure, path: Path, dpi: int) -> None:
    """Write ``figure`` to ``path`` (PNG at ``dpi``) and close it."""
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def metric_vs_param_figure(comparison: Comparison, param: str) -> plt.Figure | None:
    """``comparison.metric`` (mean ± std over seeds) against the numeric param ``param``,
    one line per combination of the other shown params (its label: their overrides);
    configurations without ``param`` (``dense`` for ``model.p_inter``) are horizontal
    dashed lines. None when ``param`` has fewer than two numeric values."""
    if param not in numeric_columns(comparison):
        return None
    metric = comparison.metric
    lines: dict[tuple, dict[float, list[float]]] = defaultdict(dict)
    flat = []
    for configuration in comparison.configurations:
        others = tuple((key, value) for key, value in configuration.settings.items() if key != param)
        if configuration.settings[param] == ABSENT:
            flat.append((others, configuration.values(metric)))
        else:
            lines[others][float(configuration.settings[param])] = configuration.values(metric)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for index, (others, by_x) in enumerate(lines.items()):
        xs = sorted(by_x)
        means, stds = zip(*(mean_std(by_x[x]) for x in xs))
        model = dict(others).get("model.name")
        axis.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=override_label(dict(others)),
                      color=model_colour(model) if model else f"C{index}")
    for others, values in flat:
        mean, std = mean_std(values)
        spread = f" ± {std:.4f}" if len(values) > 1 else ""
        axis.axhline(mean, color="black", linestyle="--", label=f"{override_label(dict(others))} ({mean:.4f}{spread})")
        if std:
            axis.axhspan(mean - std, mean + std, color="black", alpha=0.1)
    axis.set(xlabel=param, ylabel=metric, title=f"{metric} vs {param} (mean ± std over seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def accuracy_vs_cost_figure(comparison: Comparison) -> plt.Figure | None:
    """``comparison.metric`` (mean ± std over seeds) against the cost of one inference,
    one point per configuration: energy (nJ, 45 nm constants of
    :mod:`g2g.training.synops`) on the left, synaptic operations (accumulates +
    multiply-accumulates) on the right, each point labelled with its configuration. None
    when no configuration's runs all have the cost metrics."""
    costly = [c for c in comparison.configurations
              if all(row.get(metric) is not None for row in c.runs
                     for metric in (METRIC_ENERGY, METRIC_SYNOPS_TOTAL, METRIC_MACS_TOTAL))]
    if not costly:
        return None
    metric = comparison.metric
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for index, configuration in enumerate(costly):
        accuracy, accuracy_std = mean_std(configuration.values(metric))
        costs = (statistics.mean(r[METRIC_ENERGY] for r in configuration.runs),
                 statistics.mean(r[METRIC_SYNOPS_TOTAL] + r[METRIC_MACS_TOTAL] for r in configuration.runs))
        model = configuration.params.get("model.name")
        colour = model_colour(model) if model else f"C{index}"
        for axis, cost in zip(axes, costs):
            axis.errorbar(cost, accuracy, yerr=accuracy_std, fmt="o", color=colour, capsize=3)
            axis.annotate(configuration.label, (cost, accuracy), textcoords="offset points", xytext=(4, 4),
                          fontsize=7)
    axes[0].set(xlabel="energy per inference (nJ)", ylabel=metric, xscale="log")
    axes[1].set(xlabel="synaptic operations per inference (AC + MAC)", xscale="log")
    for axis in axes:
        axis.grid(alpha=0.3, which="both")
    figure.suptitle(f"{metric} against inference cost (one point per configuration, mean ± std over seeds)")
    figure.tight_layout()
    return figure


def heatmap_figure(comparison: Comparison, rows: str, columns: str) -> plt.Figure | None:
    """Mean ``comparison.metric`` over ``rows`` x ``columns`` (two shown params), one
    panel per combination of the other shown params; None unless both are shown and
    the grid has at least two cells with runs."""
    if rows not in comparison.columns or columns not in comparison.columns:
        return None
    panels: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    for configuration in comparison.configurations:
        settings = configuration.settings
        if ABSENT in (settings[rows], settings[columns]):
            continue
        others = tuple((key, value) for key, value in settings.items() if key not in (rows, columns))
        panels[others][(settings[rows], settings[columns])] = statistics.mean(
            configuration.values(comparison.metric))
    if sum(len(cells) for cells in panels.values()) < 2:
        return None
    row_values = list(dict.fromkeys(r for cells in panels.values() for r, _ in cells))
    column_values = list(dict.fromkeys(c for cells in panels.values() for _, c in cells))
    # one colour scale for every panel, so that a colour means the same number in each
    low, high = (function(value for cells in panels.values() for value in cells.values()) for function in (min, max))
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8), squeeze=False, layout="constrained")
    for axis, (others, cells) in zip(axes[0], panels.items()):
        grid = np.full((len(row_values), len(column_values)), np.nan)
        for (r, c), value in cells.items():
            grid[row_values.index(r), column_values.index(c)] = value
        image = axis.imshow(grid, cmap="viridis", vmin=low, vmax=high)
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):  # dark text on the bright (high) end of viridis
                axis.text(j, i, f"{value:.3f}", ha="center", va="center",
                          color="black" if value > (low + high) / 2 else "white")
        axis.set(xticks=range(len(column_values)), xticklabels=column_values, yticks=range(len(row_values)),
                 yticklabels=row_values, xlabel=columns, ylabel=rows)
        axis.set_title("\n".join(override_label({key: value}) for key, value in others), fontsize="medium")
    figure.colorbar(image, ax=axes[0].tolist(), fraction=0.046 / len(panels) ** 0.5)
    figure.suptitle(f"{comparison.metric} (mean over seeds)")
    return figure


def comparison_figures(comparison: Comparison) -> list[tuple[str, plt.Figure]]:
    """The figures of a sweep report: ``METRIC_vs_PARAM.png`` for each numeric shown
    param, and ``accuracy_vs_cost.png``; (file name, figure) of those with something
    to show."""
    figures = [(f"{comparison.metric}_vs_{param}.png", metric_vs_param_figure(comparison, param))
               for param in numeric_columns(comparison)]
    figures.append(("accuracy_vs_cost.png", accuracy_vs_cost_figure(comparison)))
    return [(name, figure) for name, figure in figures if figure is not None]
