"""Headroom: how far each shipped scenario stays from its ``within`` bound.

A bound the correct runtime comes close to fails it on a slow host.  Every
shipped scenario should keep at least 2x headroom: its bound at least twice its
typical (median) duration on the correct runtime, measured under whatever load
the machine has.

    python benchmarks/headroom.py [-n 3] [--only NAME ...] [--goal 2.0]

Scenarios run in-process through :func:`pytest_flrelia.harness.runner.run_scenario`,
as a pytest session runs them.  Prints one line per scenario, lowest headroom
first; exit status 1 if a scenario failed or its headroom is below the goal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from pytest_flrelia.harness.runner import ScenarioFailure, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import Scenario
from pytest_flrelia.tools.zoo import shipped_scenarios

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "scenarios"
HEADROOM_GOAL = 2.0
DEFAULT_REPEATS = 3


@dataclass(frozen=True)
class Headroom:
    """One scenario's durations on the correct runtime against its bound."""

    name: str
    within: float
    seconds: tuple[float, ...]
    failures: int

    @property
    def typical(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ratio(self) -> float:
        """Bound over typical duration: 2.0 means the run may take twice as long."""
        return self.within / self.typical if self.typical > 0 else float("inf")


def measure(scenario: Scenario, repeats: int, settings: Settings) -> Headroom:
    seconds = []
    failures = 0
    for _ in range(repeats):
        try:
            outcome = run_scenario(scenario, settings)
        except ScenarioFailure as failure:
            failures += 1
            if failure.outcome is not None:
                seconds.append(failure.outcome.seconds)
            continue
        seconds.append(outcome.seconds)
    within = scenario.expect.within_or(settings.default_within)
    return Headroom(scenario.name, within, tuple(seconds), failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=DEFAULT_REPEATS, help="runs per scenario")
    parser.add_argument("--only", nargs="*", default=(), help="scenario names to measure")
    parser.add_argument(
        "--goal", type=float, default=HEADROOM_GOAL, help="smallest bound/typical ratio"
    )
    args = parser.parse_args(argv)
    settings = Settings()
    scenarios = [
        s for s in shipped_scenarios(SCENARIO_DIR) if not args.only or s.name in args.only
    ]
    rows = [measure(scenario, args.n, settings) for scenario in scenarios]
    print(f"{'scenario':58} {'typical':>8} {'max':>7} {'within':>7} {'headroom':>9}")
    bad = 0
    for row in sorted(rows, key=lambda r: r.ratio):
        short = row.ratio < args.goal or row.failures
        bad += bool(short)
        print(
            f"{row.name:58} {row.typical:7.2f}s {max(row.seconds, default=0):6.2f}s"
            f" {row.within:6.1f}s {row.ratio:8.1f}x"
            + (f"  FAILED {row.failures}/{args.n}" if row.failures else "")
            + ("  < goal" if row.ratio < args.goal else "")
        )
    print(f"{len(rows)} scenarios, {bad} below {args.goal:g}x headroom or failing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
