"""The planted bugs are real, observable defects that the shipped scenarios miss.

For each planted variant: its hand-written case (``cases/<slug>.yaml``) passes on the
correct runtime and fails on the variant with the check that names the defect; the
shipped scenarios that exercise the part it breaks still pass on it (``check_shipped``
runs every shipped scenario on every variant, see docs/explore.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from planted.registry import PLANTED, PlantedBug
from planted.target import PLANTED_TARGET, PlantedTarget
from pytest_flrelia.contract.target import Target
from pytest_flrelia.errors import ScenarioFailure
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import Scenario, load_scenarios
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS
from pytest_flrelia.tools.zoo import shipped_scenarios

ROOT = Path(__file__).resolve().parents[2]
TARGET = PlantedTarget()
SHIPPED = {s.name: s for s in shipped_scenarios(ROOT / "scenarios")}


def _targets(name: str) -> Target:
    assert name == PLANTED_TARGET, name
    return TARGET


def run(scenario: Scenario, variant: str | None) -> None:
    """Run ``scenario`` on the planted target's ``variant``; raises ScenarioFailure."""
    run_scenario(scenario, Settings(target=PLANTED_TARGET, known_bug=variant), targets=_targets)


def failed_checks(scenario: Scenario, variant: str) -> set[str]:
    with pytest.raises(ScenarioFailure) as caught:
        run(scenario, variant)
    verdict = caught.value.verdict
    assert verdict is not None, caught.value.report
    return {check.name for check in verdict.failures}


def case(bug: PlantedBug) -> Scenario:
    (scenario,) = load_scenarios(bug.case)
    return scenario


def test_there_are_at_least_six_planted_bugs_each_with_a_case() -> None:
    assert len(PLANTED) >= 6
    assert set(PLANTED).isdisjoint(KNOWN_BUGS)
    assert sorted(p.stem for p in PLANTED["escalates-once"].case.parent.glob("*.yaml")) == sorted(
        PLANTED
    )
    for bug in PLANTED.values():
        assert bug.parts and bug.summary and bug.trigger, bug.slug
        assert set(bug.neighbours) <= set(SHIPPED), bug.slug
        bug.parts_loaded()  # every part resolves


def test_the_planted_target_offers_the_known_bugs_and_the_planted_ones() -> None:
    assert TARGET.info.name == PLANTED_TARGET
    assert set(TARGET.info.variants) == set(KNOWN_BUGS) | set(PLANTED)
    assert TARGET.runtime_for(None) == TARGET.runtime_for(None)  # the correct runtime
    for slug, bug in PLANTED.items():
        runtime = TARGET.runtime_for(slug)
        for field, part in bug.parts_loaded().items():
            assert getattr(runtime, field) is part, (slug, field)


@pytest.mark.slow
@pytest.mark.parametrize("slug", sorted(PLANTED))
def test_the_case_passes_on_the_correct_runtime_and_fails_on_the_bug(
    slug: str, no_leftover_children: None
) -> None:
    bug = PLANTED[slug]
    scenario = case(bug)
    run(scenario, None)
    assert bug.shows in failed_checks(scenario, slug)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("slug", "shipped"),
    [(slug, name) for slug, bug in sorted(PLANTED.items()) for name in bug.neighbours],
)
def test_the_shipped_scenarios_of_its_part_pass_on_the_bug(
    slug: str, shipped: str, no_leftover_children: None
) -> None:
    run(SHIPPED[shipped], slug)
