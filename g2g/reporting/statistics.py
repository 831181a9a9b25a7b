"""Summary statistics of repeated runs (seeds, cross-validation folds): the one place
where a mean +- std is computed."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; 0 for a single value).

    Raises:
        statistics.StatisticsError: ``values`` is empty.
    """
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
