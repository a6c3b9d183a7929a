"""The event contract holds: every kind is specified, the correct reference runtime keeps
it through every shipped scenario's faults, a broken event is reported, lanes are built
only by their functions, and docs/events.md is what the contract renders."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path

import pytest
from _guarded_run import run_guarded

from pytest_flrelia.contract.events import (
    CONTRACT,
    Lane,
    LaneKind,
    client_lane,
    harness_lane,
    in_lane,
    is_training,
    lane_of,
    server_lane,
    training_lane,
    violations,
)
from pytest_flrelia.contract.faults import acted
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.target import Abort, RunContext
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.harness.processes import ProcessGuard
from pytest_flrelia.judge.invariants import RunRecord, bounded_stop, prompt_exit
from pytest_flrelia.scenario.loader import Scenario, load_scenarios
from pytest_flrelia.targets.reference import ReferenceTarget
from pytest_flrelia.tools import events_doc

ROOT = Path(__file__).resolve().parent.parent
EVENTS_DOC = ROOT / "docs" / "events.md"
SHIPPED = sorted((ROOT / "scenarios").rglob("*.scenario.yaml"))
JOIN_GRACE = 15.0
"""After a scenario's bound: how long the aborted job may take to unwind."""


# -- the table ----------------------------------------------------------------------


def test_every_kind_has_a_contract_with_lanes_and_a_meaning() -> None:
    assert set(CONTRACT) == set(EventKind)
    for kind, spec in CONTRACT.items():
        assert spec.lanes, kind
        assert spec.meaning.strip(), kind
        assert len(set(spec.required)) == len(spec.required), kind


def test_a_kind_whose_meaning_names_detail_pid_says_what_it_is() -> None:
    """One pid meaning per event: where ``pid`` is a detail key, the line says whose."""
    for kind, spec in CONTRACT.items():
        if "pid" in spec.required or "`pid`" in spec.meaning:
            assert re.search(r"`pid`,? (if any, )?is ", spec.meaning), kind


def test_exit_is_the_process_s_own_and_reaped_the_launcher_s() -> None:
    assert CONTRACT[EventKind.EXIT].lanes == {LaneKind.TRAINING}
    assert CONTRACT[EventKind.REAPED].lanes == {LaneKind.CLIENT}
    assert "pid" in CONTRACT[EventKind.REAPED].required


# -- lanes --------------------------------------------------------------------------


def test_lanes_round_trip_through_their_functions() -> None:
    assert lane_of(server_lane()) == Lane(LaneKind.SERVER)
    assert lane_of(harness_lane()) == Lane(LaneKind.HARNESS)
    assert lane_of(client_lane("site-10")) == Lane(LaneKind.CLIENT, "site-10")
    assert lane_of(training_lane("site-2")) == Lane(LaneKind.TRAINING, "site-2")
    assert lane_of("agent-site-1") is None
    assert lane_of("servers") is None
    event = Event(0.0, EventKind.EXIT, training_lane("site-1"), 1, "site-1")
    assert is_training(event) and not in_lane(event, LaneKind.CLIENT)


LANE_BUILT_BY_HAND = re.compile(
    r"""(?x)
    (?:Timeline|for_process|from_environment)\(\s*f?["']   # a timeline named by a literal
    | process\s*=\s*f?["']                                 # an event's lane as a literal
    | \.process\.startswith\(                              # a lane read by its prefix
    | \.process\s*[!=]=\s*f?["']                           # or by comparing strings
    """
)


def test_no_lane_is_built_or_read_by_string_outside_the_contract() -> None:
    allowed = ROOT / "pytest_flrelia" / "contract" / "events.py"
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for package in ("reference_impl", "pytest_flrelia", "benchmarks")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path != allowed
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if LANE_BUILT_BY_HAND.search(line)
    ]
    assert found == []


def test_the_lane_pattern_catches_what_it_forbids() -> None:
    for line in (
        'timeline = Timeline("server")',
        'view = timeline.for_process(f"client-{site}")',
        'timeline.record(EventKind.ERROR, process="harness")',
        'if event.process.startswith("train-"):',
        'if event.process == "harness":',
    ):
        assert LANE_BUILT_BY_HAND.search(line), line
    assert not LANE_BUILT_BY_HAND.search("timeline = Timeline(server_lane())")


# -- violations ---------------------------------------------------------------------


def _event(kind: EventKind, process: str, **detail: object) -> Event:
    return Event(time.monotonic(), kind, process, os.getpid(), "site-1", 1, detail)


def test_a_kept_contract_has_no_violations() -> None:
    events = [
        _event(EventKind.STOP_REQUESTED, client_lane("site-1"), pid=42),
        _event(EventKind.REAPED, client_lane("site-1"), pid=42, returncode=-15),
        _event(EventKind.EXIT, training_lane("site-1"), returncode=0),
    ]
    assert violations(events) == []


def test_a_missing_key_a_wrong_lane_and_an_unknown_lane_are_each_reported() -> None:
    events = [
        _event(EventKind.REAPED, client_lane("site-1"), returncode=0),  # no pid
        _event(EventKind.EXIT, client_lane("site-1"), pid=42, returncode=0),  # the old exit
        _event(EventKind.RESULT_SENT, "agent-site-1", tensors=1),  # no lane of the contract
    ]
    found = violations(events)
    assert len(found) == 3, found
    assert "reaped" in found[0] and "'pid'" in found[0]
    assert "exit recorded in lane 'client-site-1'" in found[1] and "'train'" in found[1]
    assert "result_sent recorded in lane 'agent-site-1'" in found[2]


# -- the readers read the meaning they need ---------------------------------------

CHILD = 4321
"""The training process's pid: ``Event.pid`` of its own events, ``detail["pid"]`` of the
launcher's."""


def _at(ts: float, kind: EventKind, lane: str, **detail: object) -> Event:
    pid = CHILD if lane == training_lane("site-1") else os.getpid()
    return Event(100.0 + ts, kind, lane, pid, "site-1", 1, detail)


def _judge(*events: Event) -> RunRecord:
    config = JobConfig()
    result = JobResult(config, True, None, [], {}, Timeline(), 1.0)
    return RunRecord(result, events, [], 1.0, 60.0, False, "success", None)


def _result_sent() -> Event:
    return _at(0.0, EventKind.RESULT_SENT, training_lane("site-1"), tensors=0)


def test_prompt_exit_reads_the_process_s_own_exit_first() -> None:
    """Its own ``exit`` says when it left, whatever the launcher noticed later."""
    check = prompt_exit(_judge(
        _result_sent(),
        _at(0.05, EventKind.EXIT, training_lane("site-1"), returncode=0),
        _at(3.0, EventKind.REAPED, client_lane("site-1"), pid=CHILD, returncode=0),
    ))
    assert check.ok and check.applicable, check


def test_prompt_exit_falls_back_on_the_reap_of_a_process_that_never_said_so() -> None:
    prompt = prompt_exit(_judge(
        _result_sent(),
        _at(0.1, EventKind.REAPED, client_lane("site-1"), pid=CHILD, returncode=0),
    ))
    assert prompt.ok, prompt
    late = prompt_exit(_judge(
        _result_sent(),
        _at(2.0, EventKind.REAPED, client_lane("site-1"), pid=CHILD, returncode=-15),
    ))
    assert not late.ok and late.seen == "reaped 2.00s later"
    other = prompt_exit(_judge(
        _result_sent(),
        _at(0.1, EventKind.REAPED, client_lane("site-1"), pid=CHILD + 1, returncode=0),
    ))
    assert not other.ok and other.seen == "never exited", "another process's reap says nothing"


def test_bounded_stop_reads_the_reap_not_the_process_s_own_exit() -> None:
    stop = _at(0.0, EventKind.STOP_REQUESTED, client_lane("site-1"), pid=CHILD)
    own_exit = _at(0.1, EventKind.EXIT, training_lane("site-1"), returncode=0)
    end = _at(30.0, EventKind.JOB_END, server_lane(), ok=True, error=None)
    unreaped = bounded_stop(_judge(stop, own_exit, end))
    assert not unreaped.ok and unreaped.seen == "reaped never"
    reaped = _at(0.2, EventKind.REAPED, client_lane("site-1"), pid=CHILD, returncode=0)
    assert bounded_stop(_judge(stop, own_exit, reaped, end)).ok


# -- the correct reference runtime keeps it, through real runs with faults ----------


def _shipped() -> list[Scenario]:
    return [scenario for path in SHIPPED for scenario in load_scenarios(path)]


def _run(scenario: Scenario, workdir: Path) -> tuple[JobResult | None, list[Event]]:
    """Run ``scenario`` on the correct reference target through the SPI, as the harness
    does (a thread, the run tag, an abort at the bound); no process may outlive it."""
    faults = tuple(dataclasses.replace(f, index=i) for i, f in enumerate(scenario.faults))
    within = scenario.expect.within_or(60.0)
    timeline = Timeline(server_lane())
    abort = Abort()

    def job(guard: ProcessGuard) -> JobResult:
        context = RunContext(
            timeline=timeline,
            abort=abort,
            env=guard.env,
            workdir=workdir,
            deadline=time.monotonic() + within,
            variant=None,
        )
        return ReferenceTarget().run(scenario.job, faults, context)

    result = run_guarded(
        job, abort=abort, bound=within, grace=JOIN_GRACE, name=f"contract-{scenario.name}"
    )
    return result, timeline.events()


@pytest.mark.slow
@pytest.mark.parametrize("scenario", _shipped(), ids=lambda s: s.name)
def test_the_correct_runtime_keeps_the_contract_in_every_shipped_scenario(
    scenario: Scenario, tmp_path: Path
) -> None:
    result, events = _run(scenario, tmp_path)
    assert result is not None
    assert acted(events) == set(range(len(scenario.faults))), "every planned fault acted"
    kinds = {e.kind for e in events}
    assert {EventKind.LAUNCH, EventKind.INIT, EventKind.REAPED} <= kinds, "a real run"
    assert violations(events) == []


def test_the_shipped_scenarios_exercise_faults() -> None:
    """The run above is worth something only if the scenarios inject faults."""
    assert sum(len(s.faults) for s in _shipped()) >= 20


# -- docs/events.md ------------------------------------------------------------------


def test_docs_events_is_what_the_contract_renders() -> None:
    assert EVENTS_DOC.read_text() == events_doc.render_page(), (
        f"docs/events.md is out of date: run {events_doc.COMMAND}"
    )


def test_the_page_has_one_row_per_kind_with_its_lanes_and_keys() -> None:
    page = events_doc.render_page()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \|", page, re.MULTILINE)
    by_kind = {kind: (lanes, keys) for kind, lanes, keys in rows}
    assert [k for k in by_kind if k in {e.value for e in EventKind}] == [e.value for e in EventKind]
    lanes, keys = by_kind["reaped"]
    assert lanes == "`client`" and keys == "`pid`"


def test_the_generator_prints_or_writes_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert events_doc.main([]) == 0
    assert capsys.readouterr().out == events_doc.render_page()
    page = tmp_path / "events.md"
    assert events_doc.main(["--write", str(page)]) == 0
    assert page.read_text() == events_doc.render_page()
