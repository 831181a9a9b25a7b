"""Summary statistics of repeated runs (seeds, cross-validation folds): the one place
where a mean +- std or a confidence interval is computed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value).

    Raises:
        statistics.StatisticsError: ``values`` is empty.
    """
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences ``a(seed) - b(seed)`` with its two-sided confidence
    interval, in the unit of the values.

    Attributes:
        mean: mean of the n differences.
        low, high: bounds of the t-interval, ``mean -+ t_{1-alpha/2, n-1} * sd / sqrt(n)``
            (sd: sample standard deviation of the differences); None when n < 2.
        n: number of seeds in both ``a`` and ``b``.
        seeds: those seeds, sorted.
    """

    mean: float
    low: float | None
    high: float | None
    n: int
    seeds: tuple


def paired_difference(a_by_seed: Mapping, b_by_seed: Mapping, confidence: float = 0.95) -> PairedDifference:
    """Paired comparison of two configurations trained with the same seeds: for each
    seed in both mappings, ``a[seed] - b[seed]``; their mean and the Student t
    confidence interval of the mean (the interval of the paired t-test,
    ``scipy.stats.ttest_rel(a, b).confidence_interval(confidence)``). Pairing by seed
    removes what the two share through the seed (data order, encoder noise) from the
    spread. Seeds in only one mapping are left out.

    Args:
        a_by_seed, b_by_seed: seed -> value (e.g. test accuracy).
        confidence: coverage of the interval, in (0, 1).

    Raises:
        ValueError: no seed is in both mappings (names both seed sets), or
            ``confidence`` outside (0, 1).
    """
    from scipy.stats import t  # SciPy only when an interval is computed

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    seeds = tuple(sorted(set(a_by_seed) & set(b_by_seed)))
    if not seeds:
        raise ValueError(f"no seed in both: {sorted(a_by_seed)} and {sorted(b_by_seed)}")
    differences = [a_by_seed[seed] - b_by_seed[seed] for seed in seeds]
    mean = statistics.mean(differences)
    if len(differences) < 2:
        return PairedDifference(mean, None, None, 1, seeds)
    half_width = (t.ppf(0.5 + confidence / 2, len(differences) - 1) * statistics.stdev(differences)
                  / math.sqrt(len(differences)))
    return PairedDifference(mean, mean - half_width, mean + half_width, len(differences), seeds)
