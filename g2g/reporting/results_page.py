"""The results page (``docs/results.md``), generated from MLflow.

    python -m g2g.report g2g_results --page docs/results.md [--tracking-uri URI]

Reads every finished training run of one MLflow experiment (sweep parents and runs
that a re-run sweep only reused are left out), groups them by configuration (model,
p_inter, static or DST rule) and summarises each over its seeds:

- the setting the runs share (refused when they differ: one experiment per setting);
- the p_inter study: static models by p_inter with the dense baseline, test accuracy
  mean +- std, the difference to dense, the density and parameter count measured from
  the masks, the synaptic operations and energy of one inference and the training time;
- the DST-rule study: each prune/grow rule against the static model it rewires;
- model sizes per layer, measured from the masks at this setting and at the seed
  README's architecture (hidden 2048), where they replace its rough "~4M"/"~1-2M";
- figures (PNG, beside the page in ``figures/``): accuracy against p_inter, accuracy
  against inference cost, and the DST heatmap.

Only the text between ``<!-- results:start -->`` and ``<!-- results:end -->`` is
replaced, so hand-written discussion around it survives a regeneration.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from g2g.reporting import markdown
from g2g.reporting.figures import accuracy_vs_cost_figure, accuracy_vs_p_inter_figure, dst_rules_figure, save
from g2g.reporting.queries import (
    ResultsError, configuration_label, experiment_rows, group_by_configuration,
)
from g2g.reporting.statistics import mean_std
from g2g.tracking.names import (
    METRIC_CONNECTIONS_TOTAL, METRIC_DENSITY_PREFIX, METRIC_ENERGY, METRIC_ENERGY_ANN,
    METRIC_MACS_TOTAL, METRIC_PARAMETERS_DENSE, METRIC_PARAMETERS_TOTAL, METRIC_SYNOPS_TOTAL,
    METRIC_TEST_ACCURACY,
)

if TYPE_CHECKING:
    import matplotlib.figure
    from mlflow.tracking import MlflowClient

START, END = "<!-- results:start -->", "<!-- results:end -->"
#: keys every run of the page must share, with their table headers
SETTING = (("dataset", "dataset"), ("hidden_dim", "hidden neurons"), ("num_steps", "time steps"),
           ("encoder", "encoder"), ("epochs", "epochs"), ("batch_size", "batch"), ("lr", "learning rate"))
#: the seed README's architecture on Fashion-MNIST, for the mask-measured size table
SEED_ARCHITECTURE = {"input_dim": 784, "hidden_dim": 2048, "num_classes": 10, "mask_seed": 42}


def shared_setting(rows: list[dict]) -> dict:
    """The :data:`SETTING` values all rows share.

    Raises:
        ResultsError: the rows differ in one of them (names the key and the values).
    """
    setting = {}
    for key, _ in SETTING:
        values = sorted({str(row[key]) for row in rows})
        if len(values) > 1:
            raise ResultsError(f"the runs differ in {key} ({', '.join(values)}); a results page summarises "
                               "one setting: log each setting to its own tracking.experiment")
        setting[key] = values[0]
    return setting


def _accuracy(group: list[dict]) -> str:
    """Mean ± std of the group's test accuracy in percent (the mean alone for one run)."""
    mean, std = mean_std([r[METRIC_TEST_ACCURACY] for r in group])
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if len(group) > 1 else f"{100 * mean:.2f}"


def _mean(group: list[dict], key: str) -> float | None:
    values = [row[key] for row in group if row.get(key) is not None]
    return statistics.mean(values) if values else None


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _ratio(part: float | None, whole: float | None) -> str:
    return "" if part is None or not whole else f"{100 * part / whole:.1f}%"


def _cost_cells(group: list[dict]) -> list[str]:
    energy, ann_energy = _mean(group, METRIC_ENERGY), _mean(group, METRIC_ENERGY_ANN)
    return [_number(_mean(group, METRIC_SYNOPS_TOTAL)), _number(_mean(group, METRIC_MACS_TOTAL)),
            _number(energy, 1), _ratio(energy, ann_energy), _number(_mean(group, "train_time_s"))]


def p_inter_table(groups: dict[tuple, list[dict]]) -> str | None:
    """Static models by p_inter with the dense baseline (None without static sparse runs)."""
    static = {key: group for key, group in groups.items() if key[2] == "static"}
    dense = static.get(("dense", None, "static", None, None))
    dense_accuracy = mean_std([r[METRIC_TEST_ACCURACY] for r in dense])[0] if dense else None
    if not any(key[0] != "dense" for key in static):
        return None
    rows = []
    for key, group in static.items():  # in the order of group_by_configuration
        accuracy = mean_std([r[METRIC_TEST_ACCURACY] for r in group])
        difference = "" if dense_accuracy is None or key[0] == "dense" else f"{100 * (accuracy[0] - dense_accuracy):+.2f}"
        rows.append([key[0], "" if key[1] is None else f"{key[1]:g}", _accuracy(group), difference, len(group),
                     _ratio(_mean(group, METRIC_CONNECTIONS_TOTAL), _dense_connections(group[0])),
                     _number(_mean(group, METRIC_PARAMETERS_TOTAL)), *_cost_cells(group)])
    return markdown.table(
        ["model", "p_inter", "test accuracy % (mean ± std)", "vs dense (points)", "seeds", "density",
         "parameters", "SynOps / inference", "MACs / inference", "energy / inference (nJ)",
         "energy vs one-pass ANN", "training time (s)"], rows)


def _dense_connections(row: dict) -> float | None:
    """Connections of the fully connected network of the row's shape: its dense
    parameter count less what is not a weight (biases, LIF scalars)."""
    dense, total, connections = (row.get(METRIC_PARAMETERS_DENSE), row.get(METRIC_PARAMETERS_TOTAL),
                                 row.get(METRIC_CONNECTIONS_TOTAL))
    return None if None in (dense, total, connections) else dense - (total - connections)


def dst_table(groups: dict[tuple, list[dict]]) -> str | None:
    """Each DST rule against its static baseline (same model and p_inter); None
    without dynamic runs."""
    dynamic = {key: group for key, group in groups.items() if key[2] == "dynamic"}
    if not dynamic:
        return None
    rows = []
    for base in dict.fromkeys(key[:2] for key in dynamic):  # in order, without repeats
        static = groups.get((*base, "static", None, None))
        static_accuracy = mean_std([r[METRIC_TEST_ACCURACY] for r in static]) if static else None
        if static:
            rows.append([configuration_label((*base, "static", None, None)), "static", "", _accuracy(static),
                         "", len(static), *_cost_cells(static)])
        for key, group in dynamic.items():
            if key[:2] != base:
                continue
            accuracy = mean_std([r[METRIC_TEST_ACCURACY] for r in group])
            difference = "" if not static else f"{100 * (accuracy[0] - static_accuracy[0]):+.2f}"
            rows.append([configuration_label(base + ("static", None, None)), key[3], key[4], _accuracy(group),
                         difference, len(group), *_cost_cells(group)])
    return markdown.table(
        ["model", "prune", "grow", "test accuracy % (mean ± std)", "vs static (points)", "seeds",
         "SynOps / inference", "MACs / inference", "energy / inference (nJ)", "energy vs one-pass ANN",
         "training time (s)"], rows)


def measured_sizes_table(groups: dict[tuple, list[dict]]) -> str:
    """Per static configuration: density of each layer
    (:data:`g2g.models.network.LAYER_NAMES`) and in all, active connections and
    parameters, as logged by each run from its masks (mean over seeds)."""
    from g2g.models.network import LAYER_NAMES  # noqa: PLC0415 (torch only when the page is made)

    rows = []
    for key, group in groups.items():
        if key[2] != "static":
            continue
        densities = [_mean(group, METRIC_DENSITY_PREFIX + layer) for layer in LAYER_NAMES]
        connections, parameters = _mean(group, METRIC_CONNECTIONS_TOTAL), _mean(group, METRIC_PARAMETERS_TOTAL)
        rows.append([configuration_label(key)] + ["" if value is None else f"{value:.4f}" for value in densities]
                    + [_ratio(connections, _dense_connections(group[0])), _number(connections),
                       _number(parameters), _ratio(parameters, _mean(group, METRIC_PARAMETERS_DENSE))])
    return markdown.table(["model"] + [f"density {layer}" for layer in LAYER_NAMES]
                          + ["density (all)", "connections", "parameters", "of dense"], rows)


def seed_architecture_sizes_table(p_inters: list[float]) -> str:
    """Sizes of the seed README's network (784 -> 2048 -> 2048 -> 10) measured from
    masks built now (seed 42), for each model of :data:`g2g.models.network.MODELS`
    (the sparse ones at each p_inter)."""
    from g2g.models.network import LAYER_NAMES, MODELS, SpikingNetwork  # noqa: PLC0415 (torch)

    rows = []
    for name in MODELS:
        for p_inter in [None] if name == "dense" else p_inters:
            network = SpikingNetwork(connectivity=name, p_inter=0.0 if p_inter is None else p_inter,
                                     **SEED_ARCHITECTURE)
            counts = network.parameter_counts()
            densities = [network.masked_layers()[layer].density() for layer in LAYER_NAMES]
            rows.append([name, "" if p_inter is None else f"{p_inter:g}"] + [f"{d:.4f}" for d in densities]
                        + [_number(counts[METRIC_PARAMETERS_TOTAL]),
                           _ratio(counts[METRIC_PARAMETERS_TOTAL], counts[METRIC_PARAMETERS_DENSE])])
    return markdown.table(["model", "p_inter"] + [f"density {layer}" for layer in LAYER_NAMES]
                          + ["parameters", "of dense"], rows)


def _rewiring_sentence(rows: list[dict]) -> str:
    """How the dynamic runs rewired (their ``sparsity.*`` settings), as one sentence."""
    dynamic = [row for row in rows if row.get("sparsity") == "dynamic"]

    def values(key: str) -> str:
        return " / ".join(sorted({str(row.get(key)) for row in dynamic}))
    return (f"Rewiring every {values('update_interval')} optimizer steps, replacing a fraction "
            f"{values('prune_fraction')} of each layer's active connections per update; grown connections "
            f"start at `{values('grow_init')}`. The static row is the same model without rewiring.\n\n")


def _figure(figure: matplotlib.figure.Figure | None, path: Path, page: Path, title: str) -> str:
    if figure is None:
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    save(figure, path, dpi=110)
    return f"![{title}]({path.relative_to(page.parent).as_posix()})\n\n"


def generate(client: MlflowClient, experiment_name: str, page: Path, command: str) -> str:
    """The generated Markdown (what goes between the markers); writes the figures to
    ``page``'s folder under ``figures/results_*.png``.

    Raises:
        ResultsError: see :func:`experiment_rows` and :func:`shared_setting`.
    """
    rows = experiment_rows(client, experiment_name)
    setting = shared_setting(rows)
    groups = group_by_configuration(rows)
    seeds = sorted({int(row["seed"]) for row in rows})
    devices = sorted({f"{row['device']}, {row['num_threads']} thread(s)" for row in rows})
    figures = page.parent / "figures"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    parts = [
        f"_Generated on {when} by `{command}` from {len(rows)} finished runs of the MLflow experiment "
        f"`{experiment_name}`. Do not edit between the markers: rerun the command._\n\n",
        "### Setting\n\n",
        markdown.table([header for _, header in SETTING] + ["seeds", "device"],
                       [[setting[key] for key, _ in SETTING] + [", ".join(map(str, seeds)), "; ".join(devices)]]),
        "\nAccuracy is the test accuracy after the last epoch. Costs are per inference (one test image, "
        "all time steps), from the evaluation on the test set: SynOps = accumulates of spike-driven "
        "layers, MACs = multiply-accumulates of the first layer for current-encoded input, energy with "
        "0.9 pJ per accumulate and 4.6 pJ per multiply-accumulate (45 nm, Horowitz 2014), relative to "
        "the same network computed densely with MACs. Training time is the sum of the epochs' training "
        "times of one run, on the device above with the sweep's parallel jobs sharing the machine: "
        "indicative, not a benchmark (controlled timings: benchmarks/README.md).\n\n",
    ]
    table = p_inter_table(groups)
    if table:
        parts += ["### p_inter study\n\n",
                  _figure(accuracy_vs_p_inter_figure(rows), figures / "results_accuracy_vs_p_inter.png", page,
                          "test accuracy against p_inter"), table, "\n"]
    parts += ["### Accuracy against inference cost\n\n",
              _figure(accuracy_vs_cost_figure(rows), figures / "results_accuracy_vs_cost.png", page,
                      "test accuracy against energy and synaptic operations per inference")]
    table = dst_table(groups)
    if table:
        parts += ["### DST-rule study\n\n", _rewiring_sentence(rows), table, "\n",
                  _figure(dst_rules_figure(rows), figures / "results_dst_rules.png", page,
                          "test accuracy by prune and grow rule")]
    p_inters = sorted({key[1] for key in groups if key[1] is not None})
    parts += ["### Model sizes measured from the masks\n\n",
              "At this setting (each run logs `connections_*`, `parameters_*` and `density_*` from its "
              "masks; mean over seeds):\n\n", measured_sizes_table(groups),
              "\nAt the seed README's architecture on Fashion-MNIST (784 → 2048 → 2048 → 10, masks of "
              "seed 42 built by this command), where it says \"~4M\" (dense) and \"~1-2M depending on "
              "p_inter\" (sparse):\n\n", seed_architecture_sizes_table(p_inters or [0.15])]
    return "".join(parts)


DEFAULT_PAGE = """# Results

Produced by this tool and regenerated from MLflow with the command in the generated part.

{start}
{end}
"""


def write_page(client: MlflowClient, experiment_name: str, page: Path, command: str) -> Path:
    """Regenerate the marked part of ``page`` (created with a bare header when missing).

    Raises:
        ResultsError: see :func:`generate`; nothing is written then.
        ValueError: the page exists without the markers.
    """
    page = Path(page)
    text = page.read_text() if page.exists() else DEFAULT_PAGE.format(start=START, end=END)
    if markdown.generated_block(text, START, END) is None:
        raise ValueError(f"{page} has no {START} ... {END} markers to replace")
    content = generate(client, experiment_name, page, command)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown.replace_generated_block(text, START, END, content))
    return page
