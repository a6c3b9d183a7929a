"""How long the scenario suite takes to report each known bug.

In-process, as a session would: for one known-bug variant, run the shipped
scenarios through :func:`pytest_flrelia.harness.runner.run_scenario`, those whose
``catches`` names the bug first, and stop at the first :class:`ScenarioFailure`.
The figure is the wall time from the start of the first scenario to that
failure's report, pytest start-up and collection excluded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import REPO_ROOT
from benchmarks.figure import Figure, Goal
from pytest_flrelia.harness.runner import ScenarioFailure, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import Scenario
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS
from pytest_flrelia.tools.zoo import shipped_scenarios

SCENARIO_DIR = REPO_ROOT / "scenarios"
DETECT_GOAL = Goal("<=", 2.0)


def detection_order(slug: str, scenarios: Sequence[Scenario]) -> list[Scenario]:
    """The scenarios that claim to catch ``slug`` first, then the rest, each in suite order."""
    catchers = [s for s in scenarios if slug in s.catches]
    return catchers + [s for s in scenarios if slug not in s.catches]


@dataclass(frozen=True)
class Detection:
    """How a known bug was reported: after how long, by which scenario, through which checks."""

    seconds: float
    """``inf`` when no scenario failed."""
    scenario: str | None = None
    failed_checks: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.scenario is None:
            return "no scenario failed"
        return f"{self.scenario} failed {', '.join(self.failed_checks) or 'with no check named'}"


def detect(slug: str, scenarios: Sequence[Scenario]) -> Detection:
    """Run ``scenarios`` on variant ``slug``, catchers first, until one fails."""
    settings = Settings(known_bug=slug)
    started = time.perf_counter()
    for scenario in detection_order(slug, scenarios):
        try:
            run_scenario(scenario, settings)
        except ScenarioFailure as failure:
            seconds = time.perf_counter() - started
            checks = () if failure.verdict is None else failure.verdict.failures
            return Detection(seconds, scenario.name, tuple(c.name for c in checks))
    return Detection(math.inf)


def measure_detection(
    slugs: Sequence[str] = tuple(KNOWN_BUGS), directory: Path = SCENARIO_DIR
) -> list[Figure]:
    """``detect_seconds_<slug>`` for each known bug; the note says which scenario and checks."""
    scenarios = shipped_scenarios(directory)
    figures = []
    for slug in slugs:
        detection = detect(slug, scenarios)
        figures.append(
            Figure(
                f"detect_seconds_{slug}", detection.seconds, DETECT_GOAL, note=detection.describe()
            )
        )
    return figures
