"""``explore()``: the Python entry for hunt's benchmarks and the command line."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pytest_flrelia.contract.units import parse_duration
from pytest_flrelia.explore.report import ExploreReport, ScheduleResult


def explore(
    target: str = "reference",
    *,
    variant: str | None = None,
    count: int,
    budget: float | str,
    seed: int,
    out_dir: Path | None = None,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> ExploreReport:
    """Draw and run ``count`` schedules (or as many as ``budget`` allows) against
    ``target`` (its ``variant``: a known-bug slug for the reference); shrink each failure
    and write it to ``out_dir`` as ``<name>.scenario.yaml``.  ``jobs`` worker processes
    share the schedules; ``progress`` gets one line per schedule (count, elapsed,
    failures).  Schedule ``i`` of seed ``seed`` is the same schedule every time."""
    seconds = parse_duration(budget, "budget") if isinstance(budget, str) else float(budget)
    started = time.monotonic()
    results: list[ScheduleResult] = []
    del seconds, out_dir, jobs, progress  # skeleton: the driver lands in the next commit
    results.extend(ScheduleResult(seed, i, "skipped", detail="not implemented yet")
                   for i in range(count))
    return ExploreReport(target, variant, seed, tuple(results), time.monotonic() - started)


__all__ = ["explore"]
