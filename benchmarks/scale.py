"""How a job's cost grows with rounds x sites.

Each case is one ``launch_once=False`` job with tiny tensors; the figure per case
is its wall time divided by rounds x sites.  The growth figure is the exponent
``k`` of ``time ~ (rounds x sites) ** k``, fitted by least squares over the cases
in log-log space: ``k <= 1`` means no faster than linear.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from benchmarks.figure import Figure, Goal
from benchmarks.round_cost import job_seconds

GROWTH_GOAL = Goal("<=", 1.0)


def growth_exponent(points: Sequence[tuple[int, float]]) -> float:
    """Least-squares slope of log(seconds) over log(units) for (units, seconds) points."""
    if len({units for units, _ in points}) < 2:
        raise ValueError("a growth exponent needs cases of at least two different sizes")
    xs = [math.log(units) for units, _ in points]
    ys = [math.log(seconds) for _, seconds in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    variance = sum((x - mean_x) ** 2 for x in xs)
    return covariance / variance


def measure_scale(cases: Sequence[tuple[int, int]]) -> list[Figure]:
    """``scale_rounds_sites_RxS`` per (rounds, sites) case, and ``scale_rounds_sites_growth``."""
    figures: list[Figure] = []
    points: list[tuple[int, float]] = []
    for rounds, sites in cases:
        seconds = job_seconds(rounds, sites)
        units = rounds * sites
        points.append((units, seconds))
        figures.append(Figure(f"scale_rounds_sites_{rounds}x{sites}", seconds / units))
    figures.append(Figure("scale_rounds_sites_growth", growth_exponent(points), GROWTH_GOAL))
    return figures
