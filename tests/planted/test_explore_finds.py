"""Exploring alone finds planted bugs, shrinks them, and writes a file that proves them.

Each test explores one schedule: the first one of a seed whose schedule 0 reaches the
bug (found by drawing schedules with ``draw_schedule``, without running them), with a
short budget that bounds the shrink.  The written file must fail on the variant and
pass on the correct runtime.  ``benchmarks/explore_detection.py`` does the same for every
planted and known bug from seed 0, with the 5-minute budget of issue #15.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

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

Mapping = dict[str, Any]


def _aux_at_init(mapping: Mapping) -> bool:
    return any(f["fault"] == "aux_event" and f.get("at") == "init" for f in _faults(mapping))


def _orphan_of_one_process(mapping: Mapping) -> bool:
    return bool(mapping["job"].get("launch_once")) and any(
        f["fault"] == "orphan_child" for f in _faults(mapping)
    )


TRIGGERS: dict[str, tuple[Callable[[Mapping], bool], str, str]] = {
    # slug: (what its schedule must draw, the fault it needs, its leading check)
    "aux-before-task": (_aux_at_init, "aux_event", "stale_events_ignored"),
    "launch-once-unreaped": (_orphan_of_one_process, "orphan_child", "no_orphans"),
}
MAX_FAULTS = 2
"""Faults of the drawn schedule: the shrink may end early (its budget), so a schedule
already at the goal keeps the test about finding, not about how far a shrink gets."""


def _faults(mapping: Mapping) -> list[Mapping]:
    return list(mapping.get("faults", []))


def _seed_for(slug: str) -> int:
    """The first session seed whose schedule 0 reaches ``slug`` with at most
    :data:`MAX_FAULTS` faults and no fatal one (found by drawing, no run: a change of the
    strategy's draws moves it instead of breaking the test)."""
    reaches = TRIGGERS[slug][0]
    for seed in range(500):
        mapping = draw_schedule(TARGET.info, seed, 0).mapping
        benign = mapping["expect"]["outcome"] == "success"
        if benign and len(_faults(mapping)) <= MAX_FAULTS and reaches(mapping):
            return seed
    raise AssertionError(f"no seed in 0..499 reaches {slug} in its schedule 0")


@pytest.mark.parametrize("slug", sorted(TRIGGERS))
def test_an_early_seed_reaches_the_bug(slug: str) -> None:
    """Schedule 0 of some early seed draws what the bug needs (cheap: no run)."""
    schedule = draw_schedule(TARGET.info, _seed_for(slug), 0)
    assert TRIGGERS[slug][0](schedule.mapping), schedule.mapping


@pytest.mark.slow
@pytest.mark.parametrize("slug", sorted(TRIGGERS))
def test_exploring_finds_and_shrinks_it(
    slug: str, tmp_path: Path, no_leftover_children: None
) -> None:
    _, fault, leading = TRIGGERS[slug]
    seed = _seed_for(slug)
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
