"""Drawing schedule ``i`` of seed ``s``: a pure function of ``(s, i)``, and not the
minimal draw Hypothesis makes first for every seed (see ``explore/driver.py``)."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from pytest_flrelia.explore.driver import draw_schedule
from pytest_flrelia.explore.run import render
from pytest_flrelia.explore.strategy import Schedule, schedules
from pytest_flrelia.targets.reference.target import ReferenceTarget

INFO = ReferenceTarget.info


def _minimal() -> str:
    """The first example of a ``@given`` run: the same for every seed."""
    seen: list[str] = []

    @hypothesis_seed(12345)
    @settings(
        database=None,
        max_examples=1,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(schedules(INFO))
    def first(schedule: Schedule) -> None:
        seen.append(render(schedule.mapping))

    first()
    return seen[0]


def test_a_schedule_is_the_same_on_every_draw() -> None:
    assert [render(draw_schedule(INFO, 5, i).mapping) for i in range(10)] == [
        render(draw_schedule(INFO, 5, i).mapping) for i in range(10)
    ]


def test_schedules_differ_across_indexes_and_seeds_and_none_is_the_minimal_draw() -> None:
    drawn = [render(draw_schedule(INFO, s, i).mapping) for s in (1, 2) for i in range(20)]
    assert len(set(drawn)) == len(drawn)
    assert _minimal() not in drawn
