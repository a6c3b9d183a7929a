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
from pytest_flrelia.contract.events import client_lane, harness_lane, training_lane
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, TensorSpec
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.target import Target
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.errors import ScenarioFailure
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.judge.invariants import RunRecord, stale_events_ignored
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


def _stale_run(stop_at: float, tensors: int = 0) -> RunRecord:
    """Site-1 round 2 of a job whose rounds have no tensors: a stale PEER_GONE at 1.0 (it
    must be ignored), the process sends its result at 2.0 and says END at once, the
    handler stops at ``stop_at``, the client reads the result at 2.5."""
    stale = FaultSpec("stale_peer_gone", "site-1", 2, {}, line=3)
    client, train = client_lane("site-1"), training_lane("site-1")
    events = [
        Event(1.0, EventKind.FAULT, harness_lane(), 1, "site-1", 2,
              {"fault": "stale_peer_gone", "fault_id": 0, "affects_round": 2,
               "description": "stale PEER_GONE from round 1's handler"}),
        Event(2.0, EventKind.RESULT_SENT, train, 7, "site-1", 2, {"tensors": tensors}),
        Event(stop_at, EventKind.HANDLER_STOPPED, client, 1, "site-1", 2,
              {"close_pipe": False}),
        Event(2.5, EventKind.RESULT_RECEIVED, client, 1, "site-1", 2, {"tensors": 0}),
    ]
    job = JobConfig(rounds=2, tensors=TensorSpec(count=0))
    result = JobResult(config=job, ok=True, error=None, rounds=[], global_model={},
                       timeline=Timeline(), seconds=3.0)
    return RunRecord(result, events, [], 3.0, 10.0, False, "success", None, faults=[stale])


def test_a_goodbye_after_the_result_is_not_the_stale_events_doing() -> None:
    """Found by exploring the correct runtime: a round without tensors ends with END right
    after its result, which stops the handler before the client read the result; the
    stale PEER_GONE before it was ignored.  A stop before the result was sent still fails."""
    assert stale_events_ignored(_stale_run(2.1)).ok
    check = stale_events_ignored(_stale_run(1.5))
    assert not check.ok and check.seen == "the current handler was stopped by the stale event"
    # a process holding tensors says no goodbye before its gate opens: the stop is the
    # stale event's (KB4 under a fast round), however late after the result it comes
    check = stale_events_ignored(_stale_run(2.1, tensors=1))
    assert not check.ok and check.seen == "the current handler was stopped by the stale event"
