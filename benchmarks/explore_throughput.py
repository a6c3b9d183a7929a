"""Explored schedules per minute on the correct reference runtime, serial and ``-j 2``.

One run measures both: the same seed and count through
:func:`pytest_flrelia.explore.explore` with ``jobs=1`` and then ``jobs=2`` (the
explorer's own worker processes, as ``pytest --flrelia-explore=N -n 2`` spreads
schedules over xdist workers).  The rate is schedules run (not skipped for the
budget) per minute of the exploration's wall time, start-up of the workers included.
A failure on the correct runtime is a harness or runtime bug: it is printed beside
the figure, never hidden.

    python benchmarks/explore_throughput.py [--count 60] [--budget 2m] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.figure import Figure, Goal, render_table
from pytest_flrelia.explore import ExploreReport, explore

RATE_GOAL = Goal(">=", 60.0)
"""Issue #15: at least 60 schedules a minute with two workers on 2 cores."""


@dataclass(frozen=True)
class Throughput:
    """One exploration's rate and what went wrong in it, if anything."""

    jobs: int
    ran: int
    seconds: float
    failed: int
    flaky: int

    @property
    def per_minute(self) -> float:
        return 60.0 * self.ran / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def of(cls, report: ExploreReport, jobs: int) -> Throughput:
        return cls(jobs, len(report.ran), report.seconds, len(report.failures), len(report.flaky))

    def note(self) -> str:
        if not (self.failed or self.flaky):
            return ""
        return f"{self.failed} failed, {self.flaky} flaky on the correct runtime"


def measure(count: int, budget: float, seed: int, jobs: Sequence[int] = (1, 2)) -> list[Throughput]:
    """Explore ``count`` schedules of ``seed`` once per entry of ``jobs``."""
    return [
        Throughput.of(explore("reference", count=count, budget=budget, seed=seed, jobs=j), j)
        for j in jobs
    ]


def figures(results: Sequence[Throughput]) -> list[Figure]:
    out = []
    for result in results:
        name = "explore_per_minute_" + (f"j{result.jobs}" if result.jobs > 1 else "serial")
        goal = RATE_GOAL if result.jobs == 2 else None
        out.append(Figure(name, result.per_minute, goal, note=result.note()))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds per exploration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = measure(args.count, args.budget, args.seed)
    for result in results:
        print(
            f"jobs={result.jobs}: {result.ran} schedules in {result.seconds:.1f}s "
            f"({result.per_minute:.1f}/min), {result.failed} failed, {result.flaky} flaky",
            flush=True,
        )
    found = figures(results)
    for figure in found:
        print(figure.line())
    print(render_table(found))
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
