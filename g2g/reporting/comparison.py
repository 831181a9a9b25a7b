"""Comparisons of configurations derived from what varies across runs.

A *configuration* is the set of result-affecting params (all MLflow params except those
under :data:`g2g.tracking.params.NON_RESULT_KEYS`, with ``train.epochs`` the epochs the
run has: :func:`g2g.reporting.queries.result_params`) that **vary** across the compared
runs, less ``seed``; the runs of one configuration are its seeds. Nothing is hand-listed:
a sweep over ``model.beta`` or ``train.batch_size`` gets a ``model.beta`` or
``train.batch_size`` column like one over ``model.p_inter``.

- A param only some runs have (``model.p_inter`` of a sparse model, absent for
  ``dense``) is :data:`ABSENT` (``—``) in the others: a value like any other.
- A varying param whose value is determined by its config group's option ``G.name``
  (``model._target_`` and ``model.connectivity`` by ``model.name``;
  ``sparsity.update_interval`` by ``sparsity.name`` when one interval was used) is not
  shown as a column of its own: it *follows* the option, and the report says so, with
  its value for each option (:attr:`Comparison.followers`). Only an option leads: two
  other params that happen to move together (``sparsity.prune`` and ``sparsity.grow``
  of two rules) both stay columns.
- Runs of the same configuration and seed are repeats: the latest counts, and the
  report says how many were left out (:attr:`Comparison.superseded`). Runs that differ
  in any result-affecting param are never pooled.

Each configuration is summarised over its seeds (:func:`summarise`): the last-epoch
metric's mean ± std and n, the best epoch's mean, and the paired difference to each
baseline (:func:`g2g.reporting.statistics.paired_difference`, a 95% Student t-interval
over the seeds both ran). A baseline is a selector ``key=value[,key=value...]`` in
Hydra's override style (``model=dense`` means ``model.name=dense``); a configuration's
baseline is the configuration that matches the selector and agrees with it on every
other shown param the baseline has (so ``sparsity=static`` compares each DST rule with
the static model it rewires, and ``model=dense_matched`` each sparse model with the
parameter-matched dense model at its p_inter); when none agrees and only one
configuration matches (``model=dense``), that one is the baseline of every row that
agrees with it within the selector's config groups (see :func:`_baseline`).

Importing this module imports neither MLflow, pandas nor matplotlib.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from g2g.reporting import markdown
from g2g.reporting.queries import model_rank, result_params
from g2g.reporting.statistics import PairedDifference, mean_std, paired_difference
from g2g.tracking import names

#: the value of a param that a run does not have (``model.p_inter`` of ``dense``)
ABSENT = "—"
#: the best epoch's value of a metric: ``best_`` + the metric (``best_test_accuracy``)
BEST_PREFIX = names.METRIC_BEST_ACCURACY_PREFIX
#: the baseline a comparison takes when none is given: the ``dense`` model, when exactly
#: one configuration is it
DEFAULT_BASELINE = "model=dense"
#: the metric compared when none is given
DEFAULT_METRIC = names.METRIC_TEST_ACCURACY


class SelectorError(ValueError):
    """A selector that cannot be read, or a baseline that matches no configuration."""


def parse_selector(text: str) -> dict[str, str]:
    """``model=dense,model.p_inter=0.1`` -> ``{"model.name": "dense", "model.p_inter": "0.1"}``.

    A key without a dot other than ``seed`` is a config group and means its ``.name``
    (as ``model=dense`` on Hydra's command line selects the option named ``dense``).

    Raises:
        SelectorError: an empty selector or a part without ``=``.
    """
    selector = {}
    for part in (part.strip() for part in text.split(",")):
        key, equals, value = part.partition("=")
        if not equals or not key.strip():
            raise SelectorError(f"selector {text!r}: {part!r} is not key=value (e.g. model=dense,model.p_inter=0.1)")
        selector[_param_key(key.strip())] = value.strip()
    if not selector:
        raise SelectorError("an empty selector: give key=value[,key=value...]")
    return selector


def _param_key(key: str) -> str:
    return key if "." in key or key == "seed" else f"{key}.name"


def same_value(a: str, b: str) -> bool:
    """Whether two param values are equal as text, or as numbers (``0.10`` is ``0.1``)."""
    if str(a) == str(b):
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    except (TypeError, ValueError):
        return False


def matches(params: dict[str, str], selector: dict[str, object]) -> bool:
    """Whether ``params`` (absent keys are :data:`ABSENT`) has each selector value; a
    selector value may be a list (any of them) and None or ``—`` means absent."""
    for key, wanted in selector.items():
        options = wanted if isinstance(wanted, (list, tuple)) else [wanted]
        value = params.get(key, ABSENT)
        if not any(same_value(value, ABSENT if option is None else option) for option in options):
            return False
    return True


def _value_order(key: str, value: str, appearance: dict | None = None) -> tuple:
    """Sort key of a param value: absent first, then numbers by value, then text (model
    names in the order of :data:`g2g.models.network.MODELS`, other text in the order the
    runs first have it: ``appearance`` maps (key, value) to that position)."""
    if value == ABSENT:
        return (0, 0.0, 0, 0, "")
    try:
        return (1, float(value), 0, 0, "")
    except ValueError:
        pass
    rank = model_rank(value) if key == "model.name" else 0  # the model registry (imports torch)
    return (2, 0.0, rank, (appearance or {}).get((key, value), 0), value)


def _column_preference(key: str) -> tuple:
    """The order in which varying params are considered: ``G.name`` (the options, which
    other params may follow) first, then keys not starting with ``_``, then shorter keys."""
    leaf = key.rsplit(".", 1)[-1]
    return (leaf != "name", leaf.startswith("_"), len(key), key)


def _display_order(key: str) -> tuple:
    """Column order: by config group, its ``name`` first, then the keys of the group."""
    group, _, leaf = key.partition(".")
    return (group, leaf != "name", key)


def override_label(settings: dict[str, str]) -> str:
    """``model=mixer model.p_inter=0.1`` (``G.name`` as ``G=``, absent params left out):
    the overrides that select the configuration; ``all runs`` for none."""
    parts = [f"{key.removesuffix('.name')}={value}" if key.endswith(".name") and key.count(".") == 1
             else f"{key}={value}" for key, value in settings.items() if value != ABSENT]
    return " ".join(parts) or "all runs"


@dataclass
class Configuration:
    """The runs of one configuration (its seeds, latest run per seed).

    settings: the shown varying params and their values (:data:`ABSENT` when missing).
    params: every result-affecting param of its runs less ``seed`` (what they share).
    runs: the rows (:func:`g2g.reporting.queries.run_row`), sorted by seed.
    """

    settings: dict[str, str]
    params: dict[str, str]
    runs: list[dict]

    @property
    def label(self) -> str:
        return override_label(self.settings)

    @property
    def seeds(self) -> list[str]:
        return [str(row.get("seed")) for row in self.runs]

    def values(self, metric: str) -> list[float] | None:
        """The runs' last value of ``metric``; None unless every run has it."""
        values = [row.get(metric) for row in self.runs]
        return None if not values or any(value is None for value in values) else values

    def by_seed(self, metric: str) -> dict:
        return {_seed_key(row.get("seed")): row[metric] for row in self.runs if row.get(metric) is not None}


def _seed_key(seed) -> object:
    try:
        return int(seed)
    except (TypeError, ValueError):
        return seed


@dataclass
class Baseline:
    """One baseline of a comparison: its selector, the metric it is compared on, and each
    configuration's baseline configuration (None: none matches, or it is one)."""

    selector: str
    metric: str
    strict: bool = False
    of: dict[int, Configuration | None] = field(default_factory=dict)

    def header(self, default_metric: str) -> str:
        on = "" if self.metric == default_metric else f", {self.metric}"
        same = ", the same other settings" if self.strict else ""
        return f"vs {self.selector}{on}{same} (points, paired by seed, 95% CI)"


@dataclass
class Comparison:
    """Configurations derived from the runs, with their baselines.

    metric: the compared metric (last epoch). columns: the shown varying params, in
    display order. followers: each varying param not shown -> the shown param it moves
    with. shared: the result-affecting params every run has with one value.
    configurations: sorted by the shown params' values. baselines: see :class:`Baseline`.
    superseded: older runs of a configuration and seed that a later one replaced.
    unfinished: rows left out because they did not finish with the metric.
    """

    metric: str
    columns: list[str]
    followers: dict[str, str]
    shared: dict[str, str]
    configurations: list[Configuration]
    baselines: list[Baseline]
    superseded: int = 0
    unfinished: int = 0

    @property
    def runs(self) -> list[dict]:
        return [row for configuration in self.configurations for row in configuration.runs]


def compare(rows: list[dict], *, metric: str = DEFAULT_METRIC, baselines: list | tuple | None = None) -> Comparison:
    """Derive the configurations of ``rows`` (see the module doc) and summarise them.

    Args:
        rows: run rows with ``params`` (all MLflow params), ``seed``, ``status``, the metrics
            and ``start_time`` (the latest of a configuration and seed counts); rows that did
            not finish with ``metric`` are counted in :attr:`Comparison.unfinished` only.
            Configurations are sorted by their shown params' values: absent first, numbers
            by value, model names in the registry's order, other text in the order the rows
            first have it.
        metric: the metric compared (its last logged value).
        baselines: selectors (``model=dense``), or ``(selector, metric[, strict])`` to
            compare on another metric (``best_test_accuracy``) or only with a baseline
            that agrees on every other shown param (see :func:`_baseline`); None:
            :data:`DEFAULT_BASELINE` when exactly one configuration matches it, else none.
    Raises:
        SelectorError: a given baseline that matches no configuration (names the key, the
            value and the values the runs have).
    """
    finished = [row for row in rows if row.get("status") == "FINISHED" and row.get(metric) is not None]
    params_of = [result_params(row) for row in finished]
    latest: dict[tuple, int] = {}
    for index in sorted(range(len(finished)), key=lambda i: finished[i].get("start_time") or 0):
        key = tuple(sorted((k, v) for k, v in params_of[index].items()))
        latest[key] = index
    kept = sorted(latest.values())
    rows_kept, params_kept = [finished[i] for i in kept], [params_of[i] for i in kept]
    keys = sorted(set().union(*params_kept) - {"seed"}) if params_kept else []
    varying, shared = [], {}
    for key in keys:
        values = {params.get(key, ABSENT) for params in params_kept}
        if len(values) > 1:
            varying.append(key)
        else:
            shared[key] = values.pop()
    columns, followers = _independent(varying, params_kept)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for index, params in enumerate(params_kept):
        groups[tuple(params.get(key, ABSENT) for key in columns)].append(index)
    configurations = []
    appearance: dict[tuple, int] = {}
    for index, params in enumerate(params_kept):
        for key in columns:
            appearance.setdefault((key, params.get(key, ABSENT)), index)
    for values, members in sorted(groups.items(), key=lambda item: [
            _value_order(key, value, appearance) for key, value in zip(columns, item[0])]):
        runs = sorted((rows_kept[i] for i in members), key=lambda row: _value_order("seed", str(row.get("seed"))))
        common = {key: value for key, value in params_kept[members[0]].items() if key != "seed"}
        configurations.append(Configuration(dict(zip(columns, values)), common, runs))
    comparison = Comparison(metric, columns, followers, shared, configurations, [],
                            superseded=len(finished) - len(kept), unfinished=len(rows) - len(finished))
    if baselines is None:
        default = parse_selector(DEFAULT_BASELINE)
        if sum(matches(c.params, default) for c in configurations) == 1 and len(configurations) > 1:
            baselines = [DEFAULT_BASELINE]
    for spec in baselines or []:
        selector, on, strict = (spec, metric, False) if isinstance(spec, str) else (*spec, False)[:3]
        comparison.baselines.append(_baseline(comparison, selector, on, strict))
    return comparison


def _independent(varying: list[str], params: list[dict]) -> tuple[list[str], dict[str, str]]:
    """Split varying params into shown columns and followers: a param whose value is a
    function of its config group's option (``G.name``, when that varies) follows it, and so
    does a param equal to a shown one in every run (``train.optimizer.lr``, an
    interpolation of ``train.lr``)."""
    shown, followers = [], {}
    for key in sorted(varying, key=_column_preference):
        for leader in shown:
            if all(values.get(key, ABSENT) == values.get(leader, ABSENT) for values in params):
                followers[key] = leader
                break
            if leader != f"{key.partition('.')[0]}.name":
                continue
            mapping: dict[str, set] = defaultdict(set)
            for values in params:
                mapping[values.get(leader, ABSENT)].add(values.get(key, ABSENT))
            if all(len(found) == 1 for found in mapping.values()):
                followers[key] = leader
                break
        else:
            shown.append(key)
    return sorted(shown, key=_display_order), followers


def _baseline(comparison: Comparison, text: str, metric: str, strict: bool = False) -> Baseline:
    """Each configuration's baseline for ``text``: the configuration that matches it and
    agrees with the row on every other shown param the baseline has; when none does and
    only one configuration matches (``model=dense``), that one, provided the row agrees
    with it on the shown params of the selector's config groups (``model=dense_matched``
    at p_inter 0.15 is not the baseline of p_inter 0), unless ``strict``."""
    selector = parse_selector(text)
    candidates = [c for c in comparison.configurations if matches(c.params, selector)]
    if not candidates:
        problems = []
        for key, value in selector.items():
            found = sorted({c.params.get(key, ABSENT) for c in comparison.configurations},
                           key=lambda v: _value_order(key, v))
            if not any(same_value(value, v) for v in found):
                problems.append(f"{key}={value} (the runs have {key}: {', '.join(found)})")
        raise SelectorError(f"baseline {text!r} matches no configuration: " + ("; ".join(problems) or
                            "no configuration has all of its values together; configurations: "
                            + "; ".join(c.label for c in comparison.configurations)))
    free = [key for key in comparison.columns
            if key not in selector and not any(comparison.followers.get(k) == key for k in selector)]
    groups = {key.partition(".")[0] for key in selector}
    baseline = Baseline(text, metric, strict)
    for index, configuration in enumerate(comparison.configurations):
        if any(c is configuration for c in candidates):
            baseline.of[index] = None  # a baseline itself
            continue
        agreeing = [c for c in candidates if _agrees(c, configuration, free)]
        if not agreeing and len(candidates) == 1 and not strict:  # the one baseline: everyone's, within its groups
            agreeing = [c for c in candidates
                        if _agrees(c, configuration, [key for key in free if key.partition(".")[0] in groups])]
        baseline.of[index] = agreeing[0] if len(agreeing) == 1 else None
    return baseline


def _agrees(candidate: Configuration, configuration: Configuration, keys: list[str]) -> bool:
    """Whether ``configuration`` has the value of ``candidate`` in each of ``keys`` the
    candidate has (a param it lacks, :data:`ABSENT`, agrees with any value)."""
    return all(candidate.settings[key] == ABSENT or same_value(candidate.settings[key], configuration.settings[key])
               for key in keys)


def difference(configuration: Configuration, reference: Configuration | None, metric: str) -> PairedDifference | None:
    """``configuration - reference`` of ``metric`` paired by seed; None without a common seed."""
    if reference is None:
        return None
    a, b = configuration.by_seed(metric), reference.by_seed(metric)
    return paired_difference(a, b) if set(a) & set(b) else None


def _signed(points: float) -> str:
    """``+0.41`` / ``−0.12`` (typographic minus)."""
    return f"{points:+.2f}".replace("-", "\u2212")


def difference_text(found: PairedDifference | None) -> str:
    """``+0.41 [−0.12, +0.94] (n=3)`` in points (100 x the fraction); ``+0.41 (n=1)``
    for one seed; blank for None."""
    if found is None:
        return ""
    if found.low is None:
        return f"{_signed(100 * found.mean)} (n={found.n})"
    return f"{_signed(100 * found.mean)} [{_signed(100 * found.low)}, {_signed(100 * found.high)}] (n={found.n})"


def mean_std_text(values: list[float] | None, scale: float = 100.0, digits: int = 2) -> str:
    """``83.33 ± 1.53`` (the mean alone for one value; blank for None)."""
    if not values:
        return ""
    mean, std = mean_std(values)
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}" if len(values) > 1 else f"{scale * mean:.{digits}f}"


def headline(comparison: Comparison) -> str:
    """The one-line answer: the best configuration by the mean of the last-epoch metric,
    its lead over the next best (and the first baseline), paired by seed, and whether
    the interval tells them apart."""
    configurations = comparison.configurations
    metric = comparison.metric
    if not configurations:
        return f"no finished run with {metric}"
    ranked = sorted(configurations, key=lambda c: -statistics.mean(c.values(metric)))
    best = ranked[0]
    spread = f"mean ± std over {len(best.runs)} seeds" if len(best.runs) > 1 else "1 seed"
    text = f"Best {metric}: {best.label} with {mean_std_text(best.values(metric))} % ({spread})"
    if len(ranked) == 1:
        return text + "; the only configuration."
    parts = [_lead(best, ranked[1], metric, "the next best")]
    for baseline in comparison.baselines[:1]:
        reference = baseline.of.get(configurations.index(best))
        if reference is not None and reference is not ranked[1] and baseline.metric == metric:
            parts.append(_lead(best, reference, metric, "the baseline"))
    return text + "; " + "; ".join(parts) + "."


def _lead(best: Configuration, other: Configuration, metric: str, what: str) -> str:
    found = difference(best, other, metric)
    if found is None:
        lead = 100 * (statistics.mean(best.values(metric)) - statistics.mean(other.values(metric)))
        return f"{_signed(lead)} points over {what} {other.label} (no common seed: not paired)"
    verdict = ("not distinguishable (the interval contains 0)" if found.low is None or found.low <= 0 <= found.high
               else "distinguishable at 95%")
    if found.low is None:
        verdict = "one common seed: no interval"
    return f"{difference_text(found)} points over {what} {other.label}, paired by seed: {verdict}"


@dataclass
class Column:
    """An extra column of the table: a metric's mean over the seeds (``scale`` 100 and
    ``mean ± std`` for accuracies), or ``a/b`` the mean per-run ratio in percent."""

    key: str
    header: str | None = None

    def cell(self, configuration: Configuration) -> str:
        numerator, _, denominator = self.key.partition("/")
        if denominator:
            ratios = [row[numerator] / row[denominator] for row in configuration.runs
                      if row.get(numerator) is not None and row.get(denominator)]
            return f"{100 * statistics.mean(ratios):.1f}%" if ratios else ""
        values = [row[self.key] for row in configuration.runs if row.get(self.key) is not None]
        if not values:
            return ""
        mean = statistics.mean(values)
        if "accuracy" in self.key:
            return f"{100 * mean:.2f}"
        if self.key.startswith((names.METRIC_LIF_BETA_PREFIX, names.METRIC_LIF_THRESHOLD_PREFIX,
                                names.METRIC_DENSITY_PREFIX)):
            return f"{mean:.4f}"
        return f"{mean:,.0f}" if abs(mean) >= 100 else f"{mean:.3g}"


def lif_columns(comparison: Comparison) -> list[Column]:
    """The learned LIF parameters the runs logged (``lif_beta_lif1``, ...), last epoch,
    mean over seeds."""
    found = sorted({key for row in comparison.runs for key in row
                    if key.startswith((names.METRIC_LIF_BETA_PREFIX, names.METRIC_LIF_THRESHOLD_PREFIX))})
    return [Column(key) for key in found]


def table(comparison: Comparison, extra: list[Column] | None = None,
          with_metric: bool = True) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the comparison table: each shown varying param, the metric
    (last epoch, mean ± std in %), n seeds, the best epoch's mean, the paired difference to
    each baseline, then ``extra`` columns (default: the learned LIF parameters). Without
    ``with_metric``: the varying params, the seeds and ``extra`` only (a table of sizes)."""
    metric = comparison.metric
    extra = lif_columns(comparison) if extra is None else extra
    best = BEST_PREFIX + metric
    has_best = with_metric and any(row.get(best) is not None for row in comparison.runs)
    baselines = comparison.baselines if with_metric else []
    headers = [*comparison.columns, *([f"{metric} % (last epoch, mean ± std)", "n"] if with_metric else []), "seeds"]
    headers += [f"{best} % (mean)"] if has_best else []
    headers += [baseline.header(metric) for baseline in baselines]
    headers += [column.header or column.key for column in extra]
    cells = []
    for index, configuration in enumerate(comparison.configurations):
        row = [configuration.settings[key] for key in comparison.columns]
        row += [mean_std_text(configuration.values(metric)), str(len(configuration.runs))] if with_metric else []
        row.append(", ".join(configuration.seeds))
        if has_best:
            values = configuration.values(best)
            row.append("" if values is None else f"{100 * statistics.mean(values):.2f}")
        for baseline in baselines:
            row.append(difference_text(difference(configuration, baseline.of.get(index), baseline.metric)))
        row += [column.cell(configuration) for column in extra]
        cells.append(row)
    return headers, cells


def notes(comparison: Comparison) -> list[str]:
    """What a reader must know to trust the table: the params that follow a shown one,
    repeats and unfinished runs left out."""
    lines = []
    by_leader = defaultdict(list)
    for follower, leader in comparison.followers.items():
        by_leader[leader].append(follower)
    for leader, followers in by_leader.items():
        per_value = {}
        for configuration in comparison.configurations:
            per_value.setdefault(configuration.settings[leader], ", ".join(
                f"{follower}={configuration.params.get(follower, ABSENT)}" for follower in sorted(followers)))
        verb = "varies" if len(followers) == 1 else "vary"
        lines.append(f"{', '.join(sorted(followers))} {verb} with {leader} (no column of their own): "
                     + "; ".join(f"{leader}={value}: {text}" for value, text in per_value.items()))
    if comparison.superseded:
        lines.append(f"{comparison.superseded} older run(s) of a configuration and seed left out (the latest counts)")
    if comparison.unfinished:
        lines.append(f"{comparison.unfinished} run(s) without a finished {comparison.metric} left out")
    return lines


def csv_rows(comparison: Comparison) -> tuple[list[str], list[list[object]]]:
    """The comparison as numbers (fractions, not percent): for ``comparison.csv``."""
    metric, best = comparison.metric, BEST_PREFIX + comparison.metric
    lif = [column.key for column in lif_columns(comparison)]
    headers = [*comparison.columns, "label", "n", "seeds", f"{metric}_mean", f"{metric}_std", f"{best}_mean"]
    for baseline in comparison.baselines:
        stem = f"vs[{baseline.selector}]" + ("" if baseline.metric == metric else f"[{baseline.metric}]")
        headers += [f"{stem}_mean", f"{stem}_low", f"{stem}_high", f"{stem}_n"]
    headers += [f"{key}_mean" for key in lif]
    rows = []
    for index, configuration in enumerate(comparison.configurations):
        mean, std = mean_std(configuration.values(metric))
        bests = configuration.values(best)
        row = [configuration.settings[key] for key in comparison.columns]
        row += [configuration.label, len(configuration.runs), " ".join(configuration.seeds), mean, std,
                None if bests is None else statistics.mean(bests)]
        for baseline in comparison.baselines:
            found = difference(configuration, baseline.of.get(index), baseline.metric)
            row += [None, None, None, None] if found is None else [found.mean, found.low, found.high, found.n]
        for key in lif:
            values = [r[key] for r in configuration.runs if r.get(key) is not None]
            row.append(statistics.mean(values) if values else None)
        rows.append(row)
    return headers, rows


def numeric_columns(comparison: Comparison) -> list[str]:
    """The shown params whose values (other than absent) are all numbers, with at least
    two of them: what a figure can put on an x axis."""
    found = []
    for key in comparison.columns:
        values = {c.settings[key] for c in comparison.configurations} - {ABSENT}
        try:
            numbers = {float(value) for value in values}
        except ValueError:
            continue
        if len(numbers) > 1 and not key.endswith(".name"):
            found.append(key)
    return found


def shared_text(comparison: Comparison) -> str:
    """The params every compared run shares, as a Markdown table inside a collapsed
    ``<details>`` block."""
    rows = [[key, value] for key, value in sorted(comparison.shared.items())]
    return (f"<details><summary>Settings all {len(comparison.runs)} runs share ({len(rows)} params)</summary>\n\n"
            + markdown.table(["param", "value"], rows) + "\n</details>\n")


def render(comparison: Comparison, extra: list[Column] | None = None) -> str:
    """The comparison in Markdown: the one-line answer, the table, then the notes."""
    headers, cells = table(comparison, extra)
    lines = "".join(f"- {line}\n" for line in notes(comparison))
    return f"**{headline(comparison)}**\n\n" + markdown.table(headers, cells) + ("\n" + lines if lines else "")
