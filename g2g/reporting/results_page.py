"""The results page (``docs/results.md``), generated from MLflow.

    python -m g2g.report g2g_results --page docs/results.md [--tracking-uri URI]

Reads every finished training run of one MLflow experiment (sweep parents and runs
that a re-run sweep only reused are left out) and writes the studies of
``g2g/reporting/studies.yaml``: each study selects runs by their params and compares
them with the engine of :mod:`g2g.reporting.comparison` (configurations derived from
the params that vary among the selected runs, mean ± std over seeds, paired differences
to the study's baselines with a 95% t-interval, the one-line answer, figures). A study
is data, not code: a new ablation is a new entry in the YAML file (its keys are listed
at the top of that file and in docs/comparisons.md).

The page: the params all runs share and those that vary, the seeds and devices; what the
numbers are; one section per study with runs; the model sizes at the original README's
architecture, measured from masks built now. Figures (PNG) go beside the page in
``figures/``. ``--section published`` writes the studies under ``published:`` instead.

Only the text between ``<!-- results:start -->`` and ``<!-- results:end -->`` (or the
published markers) is replaced, so hand-written discussion around it survives a
regeneration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from g2g.reporting import markdown
from g2g.reporting.comparison import (
    ABSENT,
    Column,
    Comparison,
    compare,
    headline,
    lif_columns,
    matches,
    notes,
    numeric_columns,
    parse_selector,
    shared_text,
    table,
)
from g2g.reporting.queries import experiment_rows, result_params
from g2g.tracking.names import METRIC_PARAMETERS_DENSE, METRIC_PARAMETERS_TOTAL, METRIC_TEST_ACCURACY

if TYPE_CHECKING:
    import matplotlib.figure
    from mlflow.tracking import MlflowClient

#: the studies of each section (see the comments at its top); its top-level keys are the
#: page's generated sections (``--section NAME``)
STUDIES = Path(__file__).with_name("studies.yaml")


def markers(section: str) -> tuple[str, str]:
    """The comments between which ``section`` is generated: ``<!-- NAME:start -->``, ``<!-- NAME:end -->``."""
    return f"<!-- {section}:start -->", f"<!-- {section}:end -->"


START, END = markers("results")
#: the markers of the published-setting section (``--section published``)
PUBLISHED_START, PUBLISHED_END = markers("published")


def sections(path: Path = STUDIES) -> list[str]:
    """The page's generated sections: the top-level keys of the studies file, in order."""
    import yaml  # only when a page is made

    return list(yaml.safe_load(Path(path).read_text()) or {})
#: the original README's architecture on Fashion-MNIST, for the mask-measured size table
SEED_ARCHITECTURE = {"input_dim": 784, "hidden_dim": 2048, "num_classes": 10, "mask_seed": 42}
_STUDY_KEYS = {"title", "prose", "select", "exclude", "show_if", "metric", "baselines", "paired_only", "columns",
               "figures", "reference", "metric_columns"}
_FIGURES = ("metric_vs_params", "accuracy_vs_cost", "heatmap")


@dataclass
class Study:
    """One study of the page (an entry of ``studies.yaml``; see its comments)."""

    title: str
    prose: str = ""
    select: dict = field(default_factory=dict)
    exclude: dict = field(default_factory=dict)
    show_if: dict = field(default_factory=dict)
    metric: str = METRIC_TEST_ACCURACY
    baselines: list = field(default_factory=list)
    paired_only: bool = False
    columns: list = field(default_factory=list)
    figures: list = field(default_factory=list)
    reference: dict | None = None
    metric_columns: bool = True


def _selection(mapping: dict | None) -> dict:
    """A study's ``select``-style mapping with group keys as ``G.name``."""
    return {key if "." in key or key == "seed" else f"{key}.name": value for key, value in (mapping or {}).items()}


def load_studies(path: Path = STUDIES) -> dict[str, list[Study]]:
    """The studies of each section of the page.

    Raises:
        ValueError: a study key or figure that does not exist, or a study without a title
            (names the file and the study).
    """
    import yaml  # only when a page is made

    data = yaml.safe_load(Path(path).read_text()) or {}
    studies = {}
    for section, entries in data.items():
        studies[section] = []
        for entry in entries:
            unknown = set(entry) - _STUDY_KEYS
            if unknown or "title" not in entry:
                raise ValueError(f"{path}: study {entry.get('title', '(no title)')!r}: "
                                 + (f"unknown keys {sorted(unknown)} (known: {sorted(_STUDY_KEYS)})" if unknown
                                    else "a study needs a title"))
            for figure in entry.get("figures", []):
                if figure.split()[0] not in _FIGURES:
                    raise ValueError(f"{path}: study {entry['title']!r}: figure {figure!r} is not one of {_FIGURES}")
            study = Study(**entry)
            study.select, study.exclude, study.show_if = (_selection(study.select), _selection(study.exclude),
                                                          _selection(study.show_if))
            studies[section].append(study)
    return studies


def study_comparison(study: Study, rows: list[dict]) -> Comparison | None:
    """The study's comparison of ``rows`` (those matching ``select`` and not ``exclude``);
    None when no run is selected or none matches ``show_if``."""
    selected = [row for row in rows if matches(result_params(row), study.select)
                and not (study.exclude and matches(result_params(row), study.exclude))]
    shown = not study.show_if or any(matches(result_params(row), study.show_if) for row in selected)
    if not selected or not shown:
        return None
    baselines = [spec if isinstance(spec, str)
                 else (spec["select"], spec.get("metric", study.metric), spec.get("strict", False))
                 for spec in study.baselines]
    comparison = compare(selected, metric=study.metric, baselines=_present(baselines, selected))
    if study.paired_only and comparison.baselines:
        paired = set()
        for baseline in comparison.baselines:
            for index, reference in baseline.of.items():
                if reference is not None:
                    paired.add(index)
                    paired.add(next(i for i, c in enumerate(comparison.configurations) if c is reference))
        runs = [row for index in sorted(paired) for row in comparison.configurations[index].runs]
        if not runs:
            return None
        comparison = compare(runs, metric=study.metric, baselines=_present(baselines, runs))
    return comparison


def _present(baselines: list, rows: list[dict]) -> list:
    """The baselines some selected run matches (a study's baseline that none of its runs
    has is left out, not an error: a page shows the studies the experiment ran)."""
    return [spec for spec in baselines
            if any(matches(result_params(row), parse_selector(spec if isinstance(spec, str) else spec[0]))
                   for row in rows)]


def _columns(study: Study) -> list[Column]:
    return [Column(spec) if isinstance(spec, str) else Column(spec["key"], spec.get("header"))
            for spec in study.columns]


def _reference_column(study: Study, comparison: Comparison) -> tuple[str, list[str]] | None:
    if not study.reference:
        return None
    cells = []
    for configuration in comparison.configurations:
        texts = [entry["text"] for entry in study.reference["values"]
                 if matches(configuration.params, _selection(entry["select"]))]
        cells.append(texts[0] if texts else "")
    return study.reference["header"], cells


def _study_text(study: Study, comparison: Comparison, figures: Path, page: Path) -> str:
    headers, cells = table(comparison, _columns(study) + (lif_columns(comparison) if study.metric_columns else []),
                           with_metric=study.metric_columns)
    reference = _reference_column(study, comparison)
    if reference is not None:
        headers.append(reference[0])
        for row, cell in zip(cells, reference[1]):
            row.append(cell)
    images = "".join(_figure(figure, figures / f"results_{_slug(study.title)}_{name}.png", page, name)
                     for name, figure in _study_figures(study, comparison))
    lines = "".join(f"- {line}\n" for line in notes(comparison))
    return (f"### {study.title}\n\n" + (f"{study.prose.strip()}\n\n" if study.prose else "")
            + (f"**{headline(comparison)}**\n\n" if study.metric_columns else "") + images
            + markdown.table(headers, cells)
            + ("\n" + lines if lines else "") + "\n")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def _study_figures(study: Study, comparison: Comparison) -> list[tuple[str, matplotlib.figure.Figure]]:
    if not study.figures:
        return []
    from g2g.reporting.figures import accuracy_vs_cost_figure, heatmap_figure, metric_vs_param_figure

    found = []
    for spec in study.figures:
        kind, *arguments = spec.split()
        if kind == "metric_vs_params":
            found += [(f"{comparison.metric}_vs_{param}", metric_vs_param_figure(comparison, param))
                      for param in numeric_columns(comparison)]
        elif kind == "accuracy_vs_cost":
            found.append(("accuracy_vs_cost", accuracy_vs_cost_figure(comparison)))
        else:
            found.append((f"heatmap_{'_'.join(arguments)}", heatmap_figure(comparison, *arguments)))
    return [(name, figure) for name, figure in found if figure is not None]


def _figure(figure: matplotlib.figure.Figure, path: Path, page: Path, title: str) -> str:
    from g2g.reporting.figures import save  # matplotlib only for figures

    path.parent.mkdir(parents=True, exist_ok=True)
    save(figure, path, dpi=110)
    return f"![{title}]({path.relative_to(page.parent).as_posix()})\n\n"


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _ratio(part: float | None, whole: float | None) -> str:
    return "" if part is None or not whole else f"{100 * part / whole:.1f}%"


def seed_architecture_sizes_table(p_inters: list[float]) -> str:
    """Sizes of the original README's network (784 -> 2048 -> 2048 -> 10) measured from
    masks built now (seed 42), for each model of :data:`g2g.models.network.MODELS`
    (the sparse ones at each p_inter)."""
    from g2g.models.network import LAYER_NAMES, MODELS, SpikingNetwork  # torch

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


#: what the numbers are, below the setting table
EXPLANATION = """\
- **Accuracy** is the test accuracy after the last epoch, mean ± sample std over seeds: the
  primary number. The **best-epoch** column is the mean over seeds of each run's highest test
  accuracy over its epochs (`best_test_accuracy`); that epoch is picked on the test set, so the
  number is optimistic: it only tells how much the last epoch lost.
- **Configurations** are derived from what varies: each table has one column per result-affecting
  param that varies among its runs (less the seed), one row per configuration, and the runs of a
  row are its seeds; runs that differ in any param are never pooled (a param that moves with
  another of its group is named below the table instead of a column of its own).
- **Differences** (columns "vs SELECTOR") are paired by seed against the configuration that
  matches the selector and agrees with the row on the other varying params: for each seed that both
  configurations ran, the row's accuracy minus the reference's, in percentage points; the cell
  gives the mean difference, its 95% Student t confidence interval (mean ± t(0.975, n−1) · sd / √n)
  and n, the number of seeds paired (no interval for n = 1).
- **dense_matched** is fully connected and as wide as gives the parameter count of the G2G network
  at its p_inter ("hidden width": the width it was built with, metric `hidden_dim`;
  `model.hidden_dim` is the G2G width it matches).
- **Costs** are per inference (one test image, all time steps), from the evaluation on the test
  set: SynOps = accumulates of spike-driven layers, MACs = multiply-accumulates of the first
  layer for current-encoded input, LIF updates = membrane updates (one per neuron and time
  step), energy in nJ with the 45 nm figures of Horowitz (ISSCC 2014) as `g2g.training.synops`
  counts it. "Energy vs one-pass ANN" divides it by the energy of one forward pass of the fully
  connected non-spiking network of the same shape (`energy_ann_nj`): below 100% the spiking
  network costs less than that ANN.
- **Training time** is the sum of the epochs' training times of one run, on the devices above with
  the sweep's parallel jobs sharing the machine: indicative, not a benchmark (controlled timings:
  benchmarks/README.md).
- A blank cell: the runs did not log that metric.

"""


def _provenance(command: str, num_runs: int, experiment_name: str) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return (f"_Generated on {when} by {markdown.code(command)} from {num_runs} finished runs of the MLflow "
            f"experiment {markdown.code(experiment_name)}. Do not edit between the markers: rerun the command._\n\n")


def _devices(rows: list[dict]) -> str:
    return "; ".join(sorted({f"{row['device']}, {row['num_threads']} thread(s)" for row in rows}))


def _setting(everything: Comparison) -> str:
    """What all runs share (collapsed), what varies among them, the seeds and devices."""
    varying = [*everything.columns, *everything.followers]
    seeds = sorted({str(row.get("seed")) for row in everything.runs}, key=lambda seed: (len(seed), seed))
    return ("### Setting\n\n"
            + (f"The runs vary in {', '.join(f'`{key}`' for key in sorted(varying))}; each study below compares "
               "the runs it selects by the params that vary among them.\n\n" if varying else "")
            + f"Seeds: {', '.join(seeds)}. Devices: {_devices(everything.runs)}.\n\n" + shared_text(everything)
            + "\n")


def _page_rows(client: MlflowClient, experiment_name: str) -> tuple[list[dict], Comparison]:
    """The experiment's finished runs, the latest of each configuration and seed, and
    the comparison of all of them (its shared and varying params)."""
    everything = compare(experiment_rows(client, experiment_name), baselines=[])
    return everything.runs, everything


def generate(client: MlflowClient, experiment_name: str, page: Path, command: str, section: str = "results",
             studies: Path = STUDIES) -> str:
    """The generated Markdown of ``section`` (what goes between its markers): the setting,
    then each study of ``studies`` that has runs; the results section also explains the
    numbers and ends with the original README's architecture measured from masks. Writes the
    figures to ``page``'s folder under ``figures/results_*.png``.

    Raises:
        ResultsError: see :func:`~g2g.reporting.queries.experiment_rows`.
        ValueError: a study file that cannot be read (:func:`load_studies`).
    """
    rows, everything = _page_rows(client, experiment_name)
    parts = [_provenance(command, len(rows), experiment_name), _setting(everything)]
    if section == "results":
        parts.append(EXPLANATION)
    for study in load_studies(studies).get(section, []):
        comparison = study_comparison(study, rows)
        if comparison is not None:
            parts.append(_study_text(study, comparison, page.parent / "figures", page))
    if section == "results":
        p_inters = sorted({float(value) for row in rows
                           if (value := result_params(row).get("model.p_inter", ABSENT)) != ABSENT})
        parts += ["### Model sizes at the original README's architecture\n\n",
                  "At the original README's architecture on Fashion-MNIST (784 → 2048 → 2048 → 10, masks of "
                  "seed 42 built by this command), where it says \"~4M\" (dense) and \"~1-2M depending on "
                  "p_inter\" (sparse):\n\n", seed_architecture_sizes_table(p_inters or [0.15])]
    return "".join(parts)


DEFAULT_PAGE = """# Results

Produced by this tool and regenerated from MLflow with the command in the generated part.

{start}
{end}
"""


def write_page(client: MlflowClient, experiment_name: str, page: Path, command: str,
               section: str = "results") -> Path:
    """Regenerate one marked section of ``page`` (created with a bare header and that
    section's markers when missing): ``results``, ``published`` or another top-level key of
    the studies file, between its :func:`markers`, from its studies (:func:`generate`).

    Raises:
        ResultsError: see :func:`generate`; nothing is written then.
        ValueError: an unknown ``section``, or the page exists without its markers.
    """
    if section not in sections():
        raise ValueError(f"section={section!r} is not one of {sections()} (g2g/reporting/studies.yaml)")
    start, end = markers(section)
    page = Path(page)
    text = page.read_text() if page.exists() else DEFAULT_PAGE.format(start=start, end=end)
    if markdown.generated_block(text, start, end) is None:
        raise ValueError(f"{page} has no {start} ... {end} markers to replace")
    content = generate(client, experiment_name, page, command, section)
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown.replace_generated_block(text, start, end, content))
    return page
