"""Exploring alone finds planted bugs, shrinks them, and writes a file that proves them.

Each test explores one schedule: the first one of a seed whose schedule 0 reaches the
bug (found by drawing schedules with ``draw_schedule``, without running them), with a
short budget that bounds the shrink.  The written file must fail on the variant and
pass on the correct runtime.  ``benchmarks/explore_detection.py`` does the same for every
planted and known bug from seed 0, with the 5-minute budget of issue #15.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from planted.target import PLANTED_TARGET, PlantedTarget
from pytest_flrelia.errors import ScenarioFailure
from pytest_flrelia.explore import explore
from pytest_flrelia.explore.driver import draw_schedule
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import load_scenarios

TARGET = PlantedTarget()
SHRINK_BUDGET = 25.0
"""Seconds for the drawn run, its rerun and the shrink (which the budget ends)."""

SEEDS = {
    # slug: (seed whose schedule 0 reaches it, the fault it needs, its leading check)
    "aux-before-task": (17, "aux_event", "stale_events_ignored"),
    "launch-once-unreaped": (48, "orphan_child", "no_orphans"),
}


@pytest.mark.parametrize("slug", sorted(SEEDS))
def test_the_seeded_schedule_reaches_the_bug(slug: str) -> None:
    """Pins the seeds: schedule 0 of each draws the fault its bug needs (cheap: no run)."""
    seed, fault, _ = SEEDS[slug]
    schedule = draw_schedule(TARGET.info, seed, 0)
    assert fault in [f["fault"] for f in schedule.mapping.get("faults", [])], schedule.mapping


@pytest.mark.slow
@pytest.mark.parametrize("slug", sorted(SEEDS))
def test_exploring_finds_and_shrinks_it(
    slug: str, tmp_path: Path, no_leftover_children: None
) -> None:
    seed, fault, leading = SEEDS[slug]
    report = explore(TARGET, variant=slug, count=1, budget=SHRINK_BUDGET, seed=seed,
                     out_dir=tmp_path)

    (found,) = report.failures
    assert found.leading_check == leading, found
    assert found.shrunk_faults is not None and 1 <= found.shrunk_faults <= 2, found
    assert found.scenario_path is not None and found.scenario_path.parent == tmp_path
    (scenario,) = load_scenarios(found.scenario_path)
    assert fault in [f.fault for f in scenario.faults]
    header = found.scenario_path.read_text().splitlines()[1]
    assert f"variant: {slug}" in header and f"leading check: {leading}" in header, header

    with pytest.raises(ScenarioFailure):
        run_scenario(scenario, Settings(target=PLANTED_TARGET, known_bug=slug),
                     targets=lambda name: TARGET)
    run_scenario(scenario, Settings(target=PLANTED_TARGET), targets=lambda name: TARGET)
