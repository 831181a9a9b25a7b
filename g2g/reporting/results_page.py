"""The results page (``docs/results.md``), generated from MLflow.

    python -m g2g.report g2g_results --page docs/results.md [--tracking-uri URI]

Reads every finished training run of one MLflow experiment (sweep parents and runs
that a re-run sweep only reused are left out), groups them by configuration
(:class:`g2g.reporting.queries.Configuration`: model, p_inter, static or DST rule,
readout, weight initialisation, validation split) and summarises each over its seeds.

Pooling is refused (:func:`g2g.reporting.queries.refuse_mixed_settings`): the runs
must share every result-affecting param (the checkpoint hash's keys: all but
:data:`g2g.tracking.params.NON_RESULT_KEYS`) except those the studies vary (seed, the
model option, the DST rule, the validation split); the error names the param, its
values and the configurations that have each.

The page:

- the setting the runs share;
- the p_inter study (static models with the default readout, weight initialisation and
  no validation split, with the dense baseline and the parameter-matched dense models
  ``dense_matched``): test accuracy after the last epoch (mean +- std over seeds, the
  primary number), the best epoch's test accuracy (mean; selected on the test set, so
  optimistic), the difference to ``dense`` and to ``dense_matched`` at the same p_inter
  **paired by seed** (mean of the per-seed differences with a 95% Student t-interval,
  :func:`g2g.reporting.statistics.paired_difference`), the hidden width (metric
  ``hidden_dim``), density and parameters measured from the masks, SynOps, MACs and
  LIF updates per inference, energy per inference and relative to one forward pass of
  the same-shape ANN (``energy_ann_nj``), training time;
- accuracy against inference cost (figure);
- the DST-rule study: each prune/grow rule against the static model it rewires,
  paired by seed;
- ablations, when such runs exist: the readout (sparse last layer ``masked`` against
  fully connected ``dense``: dense - masked, paired by seed) and the weight
  initialisation (``fan_in`` against ``uniform``: fan_in - uniform, paired by seed, on
  the validation accuracy of the last epoch when the runs held out a validation split,
  and on the test accuracy);
- model sizes per layer, measured from the masks at this setting and at the seed
  README's architecture (hidden 2048), where they replace its rough "~4M"/"~1-2M";
- figures (PNG, beside the page in ``figures/``): accuracy against p_inter, accuracy
  against inference cost, and the DST heatmap.

Metrics read (last logged value of each run): ``test_accuracy``, ``best_test_accuracy``,
``val_accuracy``, ``hidden_dim``, ``connections_total``, ``parameters_total``,
``parameters_dense``, ``density_*``, ``synops_total``, ``macs_total``, ``lif_updates``,
``energy_nj``, ``energy_ann_nj``, ``epoch_time_s`` (summed over epochs); a run without
one has a blank cell.

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
    BEST_TEST_ACCURACY, BEST_TEST_EPOCH, DEFAULT_READOUT, DEFAULT_VALIDATION_FRACTION, DEFAULT_WEIGHT_INIT,
    UNMASKED_MODELS, Configuration, configuration, configuration_label, experiment_rows, group_by_configuration,
    refuse_mixed_settings,
)
from g2g.reporting.statistics import mean_std, paired_difference
from g2g.tracking.names import (
    METRIC_CONNECTIONS_TOTAL, METRIC_DENSITY_PREFIX, METRIC_ENERGY, METRIC_ENERGY_ANN, METRIC_LIF_UPDATES,
    METRIC_MACS_TOTAL, METRIC_PARAMETERS_DENSE, METRIC_PARAMETERS_TOTAL, METRIC_SYNOPS_TOTAL,
    METRIC_TEST_ACCURACY, METRIC_VAL_ACCURACY,
)

if TYPE_CHECKING:
    import matplotlib.figure
    from mlflow.tracking import MlflowClient

START, END = "<!-- results:start -->", "<!-- results:end -->"
#: keys every run of the page shares (checked with all other result-affecting params by
#: :func:`g2g.reporting.queries.refuse_mixed_settings`), with their table headers
SETTING = (("dataset", "dataset"), ("hidden_dim", "hidden neurons"), ("num_steps", "time steps"),
           ("encoder", "encoder"), ("epochs", "epochs"), ("batch_size", "batch"), ("lr", "learning rate"))
#: the seed README's architecture on Fashion-MNIST, for the mask-measured size table
SEED_ARCHITECTURE = {"input_dim": 784, "hidden_dim": 2048, "num_classes": 10, "mask_seed": 42}
#: the parameter-matched dense model (``model=dense_matched``), compared at the same p_inter
DENSE_MATCHED = "dense_matched"
#: the two weight initialisations the ablation compares
UNIFORM, FAN_IN = "uniform", "fan_in"
#: the headers of the interval cells
_PAIRED = "points, paired by seed, 95% CI"
_LAST_EPOCH = "test accuracy % (last epoch, mean ± std)"
_BEST_EPOCH = "best-epoch test accuracy % (mean)"


def shared_setting(rows: list[dict]) -> dict:
    """The :data:`SETTING` values of the rows (one per key once
    :func:`~g2g.reporting.queries.refuse_mixed_settings` passed; otherwise the
    values joined with ``/``)."""
    return {key: " / ".join(sorted({str(row[key]) for row in rows})) for key, _ in SETTING}


def is_main_variant(key: Configuration) -> bool:
    """Whether a configuration has the default readout (masked) and weight initialisation
    (:data:`~g2g.reporting.queries.DEFAULT_WEIGHT_INIT`) and no validation split: the
    p_inter and DST studies' runs."""
    return (key.readout in (None, DEFAULT_READOUT) and key.weight_init in (None, DEFAULT_WEIGHT_INIT)
            and key.validation_fraction == DEFAULT_VALIDATION_FRACTION)


def _accuracy(group: list[dict], metric: str = METRIC_TEST_ACCURACY) -> str:
    """Mean ± std of the group's ``metric`` in percent (the mean alone for one run; blank
    when a run lacks it)."""
    values = [r.get(metric) for r in group]
    if not values or None in values:
        return ""
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if len(group) > 1 else f"{100 * mean:.2f}"


def _best_epoch_accuracy(group: list[dict]) -> str:
    """Mean over seeds of the best epoch's test accuracy in percent; blank unless every
    run logged ``best_test_accuracy``."""
    values = [r.get(BEST_TEST_ACCURACY) for r in group]
    return "" if not values or None in values else f"{100 * statistics.mean(values):.2f}"


def _signed(points: float) -> str:
    """``+0.41`` / ``−0.12`` (typographic minus)."""
    return f"{points:+.2f}".replace("-", "−")


def paired_cell(a: list[dict] | None, b: list[dict] | None, metric: str = METRIC_TEST_ACCURACY) -> str:
    """``a - b`` of ``metric`` in points (100 x the fraction), paired by seed:
    ``+0.41 [−0.12, +0.94] (n=3)``, the mean difference with its 95% t-interval
    (:func:`g2g.reporting.statistics.paired_difference`); ``+0.41 (n=1)`` without an
    interval for one common seed; blank when no seed has ``metric`` in both groups."""
    def by_seed(group: list[dict] | None) -> dict[int, float]:
        return {int(r["seed"]): r[metric] for r in group or [] if r.get(metric) is not None}
    a_by_seed, b_by_seed = by_seed(a), by_seed(b)
    if not set(a_by_seed) & set(b_by_seed):
        return ""
    difference = paired_difference(a_by_seed, b_by_seed)
    if difference.low is None:
        return f"{_signed(100 * difference.mean)} (n={difference.n})"
    return (f"{_signed(100 * difference.mean)} [{_signed(100 * difference.low)}, "
            f"{_signed(100 * difference.high)}] (n={difference.n})")


def _mean(group: list[dict], key: str) -> float | None:
    values = [row[key] for row in group if row.get(key) is not None]
    return statistics.mean(values) if values else None


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _ratio(part: float | None, whole: float | None) -> str:
    return "" if part is None or not whole else f"{100 * part / whole:.1f}%"


def _hidden_width(group: list[dict]) -> str:
    """The width the runs were built with (metric ``hidden_dim``; the param
    ``model.hidden_dim`` for runs before the metric): one value, or ``min–max`` when the
    seeds differ (``dense_matched`` matches each seed's masks)."""
    widths = sorted({int(float(r["hidden_width"] if r.get("hidden_width") is not None else r["hidden_dim"]))
                     for r in group if r.get("hidden_width") is not None or r.get("hidden_dim") is not None})
    if not widths:
        return ""
    return f"{widths[0]:,}" if len(widths) == 1 else f"{widths[0]:,}–{widths[-1]:,}"


#: the cost columns of the study tables
_COST_HEADERS = ["SynOps / inference", "MACs / inference", "LIF updates / inference", "energy / inference (nJ)",
                 "energy vs one-pass ANN", "training time (s)"]


def _cost_cells(group: list[dict]) -> list[str]:
    energy = _mean(group, METRIC_ENERGY)
    return [_number(_mean(group, METRIC_SYNOPS_TOTAL)), _number(_mean(group, METRIC_MACS_TOTAL)),
            _number(_mean(group, METRIC_LIF_UPDATES)), _number(energy, 1),
            _ratio(energy, _mean(group, METRIC_ENERGY_ANN)), _number(_mean(group, "train_time_s"))]


def _dense_key(key: Configuration) -> Configuration:
    """The ``dense`` configuration ``key`` is compared with (same validation split)."""
    return Configuration("dense", None, "static", None, None, None, None, key.validation_fraction)


def p_inter_table(groups: dict[Configuration, list[dict]]) -> str | None:
    """Static configurations of the main variant (:func:`is_main_variant`) by model and
    p_inter, with the dense baseline and ``dense_matched``; each against ``dense`` and
    against ``dense_matched`` at its p_inter, paired by seed. None without static runs
    of a model other than dense."""
    static = {key: group for key, group in groups.items() if key.sparsity == "static" and is_main_variant(key)}
    if not any(key.model != "dense" for key in static):
        return None
    rows = []
    for key, group in static.items():  # in the order of group_by_configuration
        versus_dense = "" if key.model == "dense" else paired_cell(group, static.get(_dense_key(key)))
        versus_matched = ("" if key.model in ("dense", DENSE_MATCHED)
                          else paired_cell(group, static.get(key._replace(model=DENSE_MATCHED, weight_init=None))))
        rows.append([key.model, "" if key.p_inter is None else f"{key.p_inter:g}", _hidden_width(group),
                     _accuracy(group), _best_epoch_accuracy(group), versus_dense, versus_matched, len(group),
                     _density(group),
                     _number(_mean(group, METRIC_PARAMETERS_TOTAL)), *_cost_cells(group)])
    return markdown.table(
        ["model", "p_inter", "hidden width", _LAST_EPOCH, _BEST_EPOCH, f"vs dense ({_PAIRED})",
         f"vs dense_matched, same p_inter ({_PAIRED})", "seeds", "density", "parameters", *_COST_HEADERS], rows)


def _density(group: list[dict]) -> str:
    """Active connections over those of the fully connected network of the same shape,
    per run (a ``dense_matched`` run's width can differ by seed), mean over the runs."""
    ratios = [row[METRIC_CONNECTIONS_TOTAL] / _dense_connections(row) for row in group
              if row.get(METRIC_CONNECTIONS_TOTAL) is not None and _dense_connections(row)]
    return f"{100 * statistics.mean(ratios):.1f}%" if ratios else ""


def _dense_connections(row: dict) -> float | None:
    """Connections of the fully connected network of the row's shape: its dense
    parameter count less what is not a weight (biases, LIF scalars)."""
    dense, total, connections = (row.get(METRIC_PARAMETERS_DENSE), row.get(METRIC_PARAMETERS_TOTAL),
                                 row.get(METRIC_CONNECTIONS_TOTAL))
    return None if None in (dense, total, connections) else dense - (total - connections)


def dst_table(groups: dict[Configuration, list[dict]]) -> str | None:
    """Each DST rule (and Hebbian score, for the rules that use one) against its static
    baseline (the same configuration without rewiring), paired by seed; None without
    dynamic runs."""
    dynamic = {key: group for key, group in groups.items() if key.sparsity == "dynamic"}
    if not dynamic:
        return None

    def static_of(key: Configuration) -> Configuration:
        return key._replace(sparsity="static", prune=None, grow=None, hebbian_score=None)

    rows = []
    for base in dict.fromkeys(static_of(key) for key in dynamic):
        static = groups.get(base)
        if static:
            rows.append([configuration_label(base), "static", "", "", _accuracy(static),
                         _best_epoch_accuracy(static), "", len(static), *_cost_cells(static)])
        for key, group in dynamic.items():
            if static_of(key) != base:
                continue
            rows.append([configuration_label(base), key.prune, key.grow, key.hebbian_score or "",
                         _accuracy(group), _best_epoch_accuracy(group), paired_cell(group, static), len(group),
                         *_cost_cells(group)])
    return markdown.table(
        ["model", "prune", "grow", "Hebbian score", _LAST_EPOCH, _BEST_EPOCH, f"vs static ({_PAIRED})", "seeds",
         *_COST_HEADERS], rows)


def readout_table(groups: dict[Configuration, list[dict]]) -> str | None:
    """The readout ablation: each static configuration trained with a fully connected
    last layer (``model.readout=dense``) against the same configuration with the masked
    one; dense - masked of the test accuracy, paired by seed. None without such runs."""
    dense_readout = [key for key in groups if key.sparsity == "static" and key.readout == "dense"]
    if not dense_readout:
        return None
    rows = []
    for key in dense_readout:
        masked_key = key._replace(readout=DEFAULT_READOUT)
        dense, masked = groups[key], groups.get(masked_key)
        rows.append([configuration_label(masked_key), _accuracy(masked or []), _accuracy(dense),
                     paired_cell(dense, masked), _number(_mean(masked or [], METRIC_PARAMETERS_TOTAL)),
                     _number(_mean(dense, METRIC_PARAMETERS_TOTAL))])
    return markdown.table(
        ["model", "masked readout: " + _LAST_EPOCH, "dense readout: " + _LAST_EPOCH,
         f"dense − masked ({_PAIRED})", "parameters, masked readout", "parameters, dense readout"], rows)


def weight_init_table(groups: dict[Configuration, list[dict]]) -> str | None:
    """The weight-initialisation ablation: each static configuration trained with both
    ``model.weight_init=uniform`` and ``fan_in``, on the last epoch's validation accuracy
    (``val_accuracy``, when the runs held out a validation split: the number to select
    by) and test accuracy; fan_in - uniform, paired by seed. None without such pairs."""
    rows = []
    for key in groups:
        fan_in_key = key._replace(weight_init=FAN_IN)
        if key.sparsity != "static" or key.weight_init != UNIFORM or fan_in_key not in groups:
            continue
        old, new = groups[key], groups[fan_in_key]
        validation = key.validation_fraction > 0
        rows.append([configuration_label(key._replace(weight_init=None, validation_fraction=0.0)),
                     f"{key.validation_fraction:g}",
                     _accuracy(old, METRIC_VAL_ACCURACY) if validation else "",
                     _accuracy(new, METRIC_VAL_ACCURACY) if validation else "",
                     paired_cell(new, old, METRIC_VAL_ACCURACY) if validation else "",
                     _accuracy(old), _accuracy(new), paired_cell(new, old)])
    if not rows:
        return None
    accuracy = "% (last epoch, mean ± std)"
    return markdown.table(
        ["model", "validation fraction", f"uniform: validation accuracy {accuracy}",
         f"fan_in: validation accuracy {accuracy}", f"validation: fan_in − uniform ({_PAIRED})",
         f"uniform: test accuracy {accuracy}", f"fan_in: test accuracy {accuracy}",
         f"test: fan_in − uniform ({_PAIRED})"], rows)


def measured_sizes_table(groups: dict[Configuration, list[dict]]) -> str:
    """Per static configuration: density of each layer
    (:data:`g2g.models.network.LAYER_NAMES`) and in all, active connections and
    parameters, as logged by each run from its masks (mean over seeds)."""
    from g2g.models.network import LAYER_NAMES  # noqa: PLC0415 (torch only when the page is made)

    rows = []
    for key, group in groups.items():
        if key.sparsity != "static":
            continue
        densities = [_mean(group, METRIC_DENSITY_PREFIX + layer) for layer in LAYER_NAMES]
        connections, parameters = _mean(group, METRIC_CONNECTIONS_TOTAL), _mean(group, METRIC_PARAMETERS_TOTAL)
        rows.append([configuration_label(key)] + ["" if value is None else f"{value:.4f}" for value in densities]
                    + [_density(group), _number(connections),
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
    schedule = values("fraction_schedule")
    stop = values("stop_fraction")
    return (f"Rewiring every {values('update_interval')} optimizer steps, replacing a fraction "
            f"{values('prune_fraction')} of each layer's active connections per update"
            + (f" (schedule `{schedule}`: decaying to 0 at the stop)" if "cosine" in schedule else "")
            + (f", until {stop} of the run's optimizer steps" if stop not in ("None", "1.0") else ", until the end")
            + f"; grown connections start at `{values('grow_init')}`. The static row is the same model without "
            "rewiring.\n\n")


def _figure(figure: matplotlib.figure.Figure | None, path: Path, page: Path, title: str) -> str:
    if figure is None:
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    save(figure, path, dpi=110)
    return f"![{title}]({path.relative_to(page.parent).as_posix()})\n\n"


#: what the numbers are, below the setting table
EXPLANATION = """\
- **Accuracy** is the test accuracy after the last epoch, mean ± sample std over seeds: the
  primary number. The **best-epoch** column is the mean over seeds of each run's highest test
  accuracy over its epochs (`best_test_accuracy`); that epoch is picked on the test set, so the
  number is optimistic: it only tells how much the last epoch lost.
- **Differences** (columns "vs ..." and "... − ...") are paired by seed: for each seed that both
  configurations ran, the row's accuracy minus the reference's, in percentage points; the cell
  gives the mean difference, its 95% Student t confidence interval (mean ± t(0.975, n−1) · sd / √n)
  and n, the number of seeds paired (no interval for n = 1).
- **dense_matched** is fully connected and as wide as gives the parameter count of the G2G network
  at its p_inter ("hidden width": the width it was built with, metric `hidden_dim`; "hidden
  neurons" above is `model.hidden_dim`, the G2G width it matches).
- **Costs** are per inference (one test image, all time steps), from the evaluation on the test
  set: SynOps = accumulates of spike-driven layers, MACs = multiply-accumulates of the first
  layer for current-encoded input, LIF updates = membrane updates (one per neuron and time
  step), energy in nJ with the 45 nm figures of Horowitz (ISSCC 2014) as `g2g.training.synops`
  counts it. "Energy vs one-pass ANN" divides it by the energy of one forward pass of the fully
  connected non-spiking network of the same shape (`energy_ann_nj`): below 100% the spiking
  network costs less than that ANN.
- **Training time** is the sum of the epochs' training times of one run, on the device above with
  the sweep's parallel jobs sharing the machine: indicative, not a benchmark (controlled timings:
  benchmarks/README.md).
- A blank cell: the runs did not log that metric.

"""


def _poolable_rows(client: MlflowClient, experiment_name: str) -> list[dict]:
    """The experiment's finished runs, once :func:`refuse_mixed_settings` let them be pooled."""
    rows = experiment_rows(client, experiment_name)
    refuse_mixed_settings(rows)
    return rows


def _provenance(command: str, num_runs: int, experiment_name: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return (f"_Generated on {when} by {markdown.code(command)} from {num_runs} finished runs of the MLflow "
            f"experiment {markdown.code(experiment_name)}. Do not edit between the markers: rerun the command._\n\n")


def _devices(rows: list[dict]) -> str:
    return "; ".join(sorted({f"{row['device']}, {row['num_threads']} thread(s)" for row in rows}))


def generate(client: MlflowClient, experiment_name: str, page: Path, command: str) -> str:
    """The generated Markdown (what goes between the markers); writes the figures to
    ``page``'s folder under ``figures/results_*.png``.

    Raises:
        ResultsError: see :func:`~g2g.reporting.queries.experiment_rows` and
            :func:`~g2g.reporting.queries.refuse_mixed_settings`.
    """
    rows = _poolable_rows(client, experiment_name)
    setting = shared_setting(rows)
    groups = group_by_configuration(rows)
    main_rows = [row for row in rows if is_main_variant(configuration(row))]
    seeds = sorted({int(row["seed"]) for row in rows})
    figures = page.parent / "figures"
    parts = [
        _provenance(command, len(rows), experiment_name),
        "### Setting\n\n",
        markdown.table([header for _, header in SETTING] + ["seeds", "device"],
                       [[setting[key] for key, _ in SETTING] + [", ".join(map(str, seeds)), _devices(rows)]]),
        "\nThe runs share every other result-affecting setting (the page refuses to pool runs that "
        "differ in one).\n\n" + EXPLANATION,
    ]
    table = p_inter_table(groups)
    if table:
        parts += ["### p_inter study\n\n",
                  f"Static masks, masked readout, `{DEFAULT_WEIGHT_INIT}` weight initialisation (the default), "
                  "no validation split.\n\n",
                  _figure(accuracy_vs_p_inter_figure(main_rows), figures / "results_accuracy_vs_p_inter.png",
                          page, "test accuracy against p_inter"), table, "\n"]
    parts += ["### Accuracy against inference cost\n\n",
              _figure(accuracy_vs_cost_figure(main_rows), figures / "results_accuracy_vs_cost.png", page,
                      "test accuracy against energy and synaptic operations per inference")]
    table = dst_table(groups)
    if table:
        parts += ["### DST-rule study\n\n", _rewiring_sentence(rows), table, "\n",
                  _figure(dst_rules_figure(rows), figures / "results_dst_rules.png", page,
                          "test accuracy by prune and grow rule")]
    table = readout_table(groups)
    if table:
        parts += ["### Ablation: readout layer\n\n",
                  "The last layer (fc3) with the G2G mask (`model.readout=masked`, the seed README's "
                  "Sparse(classes)) against fully connected (`model.readout=dense`, as the public "
                  "re-implementation); the difference is dense − masked, paired by seed.\n\n", table, "\n"]
    table = weight_init_table(groups)
    if table:
        parts += ["### Ablation: weight initialisation\n\n",
                  "`model.weight_init=uniform` (nn.Linear's bound from the full fan-in, then masked) against "
                  "`fan_in` (the bound from each neuron's active fan-in); the difference is fan_in − "
                  "uniform, paired by seed. With a validation split (`protocol.validation_fraction` > 0) "
                  "the runs trained on the rest of the training set, so their accuracies are not those "
                  "of the studies above; the validation accuracy of the last epoch is the one to choose "
                  "by, the test accuracy is shown beside it.\n\n", table, "\n"]
    p_inters = sorted({key.p_inter for key in groups if key.p_inter is not None and is_main_variant(key)})
    parts += ["### Model sizes measured from the masks\n\n",
              "At this setting (each run logs `connections_*`, `parameters_*` and `density_*` from its "
              "masks; mean over seeds):\n\n", measured_sizes_table(groups),
              "\nAt the seed README's architecture on Fashion-MNIST (784 → 2048 → 2048 → 10, masks of "
              "seed 42 built by this command), where it says \"~4M\" (dense) and \"~1-2M depending on "
              "p_inter\" (sparse):\n\n", seed_architecture_sizes_table(p_inters or [0.15])]
    return "".join(parts)


#: the markers of the published-setting section (``--section published``)
PUBLISHED_START, PUBLISHED_END = "<!-- published:start -->", "<!-- published:end -->"
#: what the public spiking re-implementation (github.com/APapafragkakis/G2G-Sparse-Spiking-Neural-Net)
#: reported at ``experiment=fmnist_h1024``: best-epoch test accuracy in percent, one seed, the
#: sparse models over p_inter 0 to 0.25; its dense network was 447 wide (parameter-matched to
#: its own 4-layer G2G network), so it sits beside ``dense_matched``
PUBLIC_BEST_EPOCH = {"dense_matched": "87.04 (dense, 447 wide)", "index": "87.7–88.8 (p_inter 0–0.25)",
                     "random": "87.4–88.3 (p_inter 0–0.25)", "mixer": "88.5–89.2 (p_inter 0–0.25)"}


def _best_epochs(group: list[dict]) -> str:
    """The best epoch of each run (metric ``best_test_epoch``), in seed order."""
    epochs = [row.get(BEST_TEST_EPOCH) for row in sorted(group, key=lambda row: int(row["seed"]))]
    return "" if None in epochs else ", ".join(f"{epoch:.0f}" for epoch in epochs)


def _minutes_per_run(group: list[dict]) -> str:
    """Mean over the runs of the summed epoch training times, in minutes."""
    seconds = _mean(group, "train_time_s")
    return "" if seconds is None else f"{seconds / 60:.0f}"


def published_table(groups: dict[Configuration, list[dict]]) -> str:
    """Every configuration of the published-setting study: last- and best-epoch test
    accuracy, the best epoch, the difference to ``dense`` (last and best epoch), to
    ``dense_matched`` at the same p_inter and, for a DST rule, to the static model it
    rewires, each paired by seed; the public re-implementation's number beside it
    (:data:`PUBLIC_BEST_EPOCH`)."""
    dense = groups.get(_dense_key(Configuration("dense", None, "static", None, None)))
    rows = []
    for key, group in groups.items():
        static_key = key._replace(sparsity="static", prune=None, grow=None, hebbian_score=None)
        matched = (None if key.model in UNMASKED_MODELS
                   else groups.get(static_key._replace(model=DENSE_MATCHED, weight_init=None)))
        static = groups.get(static_key) if key.sparsity == "dynamic" else None
        seeds = ", ".join(str(seed) for seed in sorted(int(row["seed"]) for row in group))
        rows.append([configuration_label(key), _hidden_width(group), seeds, _accuracy(group),
                     _best_epoch_accuracy(group), _best_epochs(group),
                     "" if key.model == "dense" else paired_cell(group, dense),
                     "" if key.model == "dense" else paired_cell(group, dense, BEST_TEST_ACCURACY),
                     "" if matched is None else paired_cell(group, matched),
                     "" if static is None else paired_cell(group, static),
                     PUBLIC_BEST_EPOCH.get(key.model, "") if key.sparsity == "static" else "",
                     _density(group), _ratio(_mean(group, METRIC_ENERGY), _mean(group, METRIC_ENERGY_ANN)),
                     _minutes_per_run(group)])
    return markdown.table(
        ["model", "hidden width", "seeds", _LAST_EPOCH, _BEST_EPOCH, "best epoch (per seed)",
         f"vs dense, last epoch ({_PAIRED})", f"vs dense, best epoch ({_PAIRED})",
         f"vs dense_matched, last epoch ({_PAIRED})", f"vs static, last epoch ({_PAIRED})",
         "public re-implementation: best-epoch test accuracy % (one seed)", "density", "energy vs one-pass ANN",
         "training time per run (min)"], rows)


def generate_published(client: MlflowClient, experiment_name: str, command: str) -> str:
    """The generated Markdown of the published-setting section: the setting the runs
    share, what ran (seeds per configuration) and :func:`published_table`.

    Raises:
        ResultsError: see :func:`~g2g.reporting.queries.experiment_rows` and
            :func:`~g2g.reporting.queries.refuse_mixed_settings`.
    """
    rows = _poolable_rows(client, experiment_name)
    setting = shared_setting(rows)
    return "".join([
        _provenance(command, len(rows), experiment_name),
        markdown.table([header for _, header in SETTING] + ["device"],
                       [[setting[key] for key, _ in SETTING] + [_devices(rows)]]),
        "\n", published_table(group_by_configuration(rows)), "\n"])


DEFAULT_PAGE = """# Results

Produced by this tool and regenerated from MLflow with the command in the generated part.

{start}
{end}
"""


#: the page's generated sections: their markers
SECTIONS = {"results": (START, END), "published": (PUBLISHED_START, PUBLISHED_END)}


def write_page(client: MlflowClient, experiment_name: str, page: Path, command: str,
               section: str = "results") -> Path:
    """Regenerate one marked section of ``page`` (created with a bare header and that
    section's markers when missing): ``results`` (:func:`generate`, between :data:`START` and :data:`END`) or
    ``published`` (:func:`generate_published`, between :data:`PUBLISHED_START` and
    :data:`PUBLISHED_END`).

    Raises:
        ResultsError: see :func:`generate`; nothing is written then.
        ValueError: an unknown ``section``, or the page exists without its markers.
    """
    if section not in SECTIONS:
        raise ValueError(f"section={section!r} is not one of {sorted(SECTIONS)}")
    start, end = SECTIONS[section]
    page = Path(page)
    text = page.read_text() if page.exists() else DEFAULT_PAGE.format(start=start, end=end)
    if markdown.generated_block(text, start, end) is None:
        raise ValueError(f"{page} has no {start} ... {end} markers to replace")
    content = (generate(client, experiment_name, page, command) if section == "results"
               else generate_published(client, experiment_name, command))
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown.replace_generated_block(text, start, end, content))
    return page
