"""Live checks report a lingering process or a hung stop while the run goes on.

Real jobs for the known bugs they exist for (KB5, KB9, KB12) and for the correct
runtime; the post-hoc half of ``bounded_stop`` and the reporting of a live
violation on hand-built timelines; the watch itself on a real timeline with
events recorded by hand.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_flrelia.contract.job import JobConfig, Timeouts
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.target import Timing
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.harness.runner import ScenarioFailure, ScenarioOutcome, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.judge.invariants import Check, RunRecord, bounded_stop, prompt_exit
from pytest_flrelia.judge.live_checks import (
    BOUNDED_STOP,
    LIVE_VIOLATION,
    PROMPT_EXIT,
    LiveWatch,
    live_violations,
)
from pytest_flrelia.scenario.loader import Scenario, load_scenarios

PROMPT_EXIT_SECONDS = Timing().exit_after_release
"""The reference's timing: the default every tolerance derives from."""
STOP_MARGIN = Timing().stop_margin

WITHIN = 10.0
STOP_WAIT = 4.0
"""Long, so the deferred stop cannot end a lingering process before the live check judges it."""
VALIDATE = f"""\
name: validate-after-train
job:
  sites: 1
  rounds: 2
  validate_rounds: [2]
  tensors: {{count: 1, size: 16KiB}}
  timeouts: {{download_complete: {STOP_WAIT}s, stop_wait: {STOP_WAIT}s}}
expect: {{outcome: success, within: {WITHIN}s}}
"""
STUBBORN = f"""\
name: stubborn-one-round
job:
  sites: 1
  rounds: 1
  tensors: {{count: 1, size: 16KiB}}
  timeouts: {{download_complete: 500ms, stop_wait: 500ms, stop_grace: 200ms}}
faults:
  - {{fault: stuck_exit}}
  - {{fault: ignore_sigterm}}
expect: {{outcome: success, within: {WITHIN}s}}
"""
STOP_GRACE = 0.2


def _scenario(tmp_path: Path, text: str) -> Scenario:
    path = tmp_path / "live.scenario.yaml"
    path.write_text(text, encoding="utf-8")
    (scenario,) = load_scenarios(path)
    return scenario


def _failure(scenario: Scenario, known_bug: str) -> ScenarioFailure:
    with pytest.raises(ScenarioFailure) as caught:
        run_scenario(scenario, Settings(known_bug=known_bug))
    assert caught.value.outcome is not None, caught.value.report
    return caught.value


def _only(events: tuple[Event, ...] | list[Event], kind: EventKind, **match: object) -> Event:
    found = [
        e
        for e in events
        if e.kind is kind
        and not e.process.startswith("train-")
        and all(e.round == v if k == "round" else e.detail.get(k) == v for k, v in match.items())
    ]
    assert len(found) == 1, found
    return found[0]


def _first_block(report: str) -> str:
    """The first check block of a failure report: the violation seen first."""
    return next(line for line in report.splitlines() if line.startswith(("invariant", "expect")))


def _assert_no_live_violation(outcome: ScenarioOutcome) -> None:
    marked = [e for e in outcome.events if e.detail.get("error") == LIVE_VIOLATION]
    assert marked == []


# -- real jobs ------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["fast-path-skips-exit", "validate-waits"])
def test_a_validate_round_process_that_lingers_is_reported_live(tmp_path: Path, slug: str) -> None:
    failure = _failure(_scenario(tmp_path, VALIDATE), slug)
    assert failure.outcome is not None and failure.verdict is not None
    events = failure.outcome.events
    (violation,) = live_violations(events, PROMPT_EXIT)
    released = _only(events, EventKind.RESULT_RECEIVED, round=2)
    assert released.detail["tensors"] == 0
    # Judged no earlier than one exit limit plus a poll after the result, and while the
    # process still lingered: before any stop reached it (the deferred stop would have
    # killed it after STOP_WAIT) and before the bound. Ordered by events, not by a wall
    # clock a loaded machine stretches.
    limit = PROMPT_EXIT_SECONDS + Timeouts.fast().stop_poll
    assert limit <= violation.ts - released.ts
    pid = _only(events, EventKind.LAUNCH, task="validate-round-2").detail["pid"]
    ends = [
        e
        for e in events
        if e.kind in (EventKind.STOP_REQUESTED, EventKind.SIGNAL_SENT, EventKind.REAPED)
        and pid in (e.detail.get("pid"), e.detail.get("pgid"))
    ]
    assert ends and all(violation.ts < e.ts for e in ends), (violation, ends)
    assert "within_bound" not in {c.name for c in failure.verdict.failures}
    check = next(c for c in failure.verdict.failures if c.name == PROMPT_EXIT)
    assert check.at == violation.ts
    assert _first_block(failure.report).startswith("invariant prompt_exit at ")


def test_a_stop_that_never_escalates_is_reported_live(tmp_path: Path) -> None:
    failure = _failure(_scenario(tmp_path, STUBBORN), "child-only-sigterm")
    assert failure.outcome is not None and failure.verdict is not None
    events = failure.outcome.events
    (violation,) = live_violations(events, BOUNDED_STOP)
    stop = _only(events, EventKind.STOP_REQUESTED, pid=violation.detail["pid"])
    limit = STOP_GRACE + STOP_MARGIN
    assert limit <= violation.ts - stop.ts
    # while the stop still hung: nothing had reaped the process (the harness's abort
    # reaps it after the violation), and the run was ended long before its bound
    pid = stop.detail["pid"]
    reaped = [e for e in events if e.kind is EventKind.REAPED and e.detail.get("pid") == pid]
    assert reaped and all(violation.ts < e.ts for e in reaped), (violation, reaped)
    check = next(c for c in failure.verdict.failures if c.name == BOUNDED_STOP)
    assert check.at == violation.ts
    assert stop in check.evidence
    assert _first_block(failure.report).startswith("invariant bounded_stop at ")
    assert "within_bound" not in {c.name for c in failure.verdict.failures}


def test_the_correct_runtime_exits_and_stops_within_the_live_limits(tmp_path: Path) -> None:
    for text in (VALIDATE, STUBBORN):
        outcome = run_scenario(_scenario(tmp_path, text), Settings())
        _assert_no_live_violation(outcome)
        checks = {c.name: c for c in outcome.verdict.checks}
        assert checks[BOUNDED_STOP].ok and checks[BOUNDED_STOP].applicable
        if text is VALIDATE:
            assert checks[PROMPT_EXIT].ok and checks[PROMPT_EXIT].applicable
        else:
            assert PROMPT_EXIT not in checks  # stuck_exit voids it
            signals = [
                e.detail["signal"] for e in outcome.events if e.kind is EventKind.SIGNAL_SENT
            ]
            assert signals[:2] == ["SIGTERM", "SIGKILL"]  # the stop really escalated


# -- bounded_stop after the run, on hand-built timelines -------------------------------

PID = 4242
T0 = 1000.0


def _ev(ts: float, kind: EventKind, process: str = "client-site-1", **detail: object) -> Event:
    return Event(T0 + ts, kind, process, 1, "site-1", None, detail)


def _record(events: list[Event], *, finished: bool = True) -> RunRecord:
    config = JobConfig(timeouts=Timeouts(stop_grace=STOP_GRACE))
    result = JobResult(config, True, None, [], {}, Timeline(), 1.0) if finished else None
    return RunRecord(result, events, [], 1.0, WITHIN, False, "success", None)


def _stop_then_exit(after: float | None, last: float = 2.0) -> list[Event]:
    events = [_ev(0.0, EventKind.STOP_REQUESTED, pid=PID)]
    events.append(_ev(0.01, EventKind.SIGNAL_SENT, signal="SIGTERM", target="group", pgid=PID))
    if after is not None:
        # The training process's own exit event does not count: only the reap does.
        events.append(_ev(after / 2, EventKind.EXIT, process="train-site-1", returncode=0))
        events.append(_ev(after, EventKind.REAPED, pid=PID, returncode=-9))
    events.append(_ev(last, EventKind.JOB_END, process="server", ok=True))
    return events


def test_bounded_stop_holds_for_a_stop_reaped_within_grace_and_margin() -> None:
    check = bounded_stop(_record(_stop_then_exit(after=STOP_GRACE + STOP_MARGIN - 0.05)))
    assert check.ok and check.applicable


def test_bounded_stop_fails_for_a_reap_later_than_grace_and_margin() -> None:
    check = bounded_stop(_record(_stop_then_exit(after=1.5)))
    assert not check.ok
    assert check.at == pytest.approx(T0 + STOP_GRACE + STOP_MARGIN)
    assert check.seen == "reaped 1.50s later"
    assert [e.kind for e in check.evidence] == [EventKind.STOP_REQUESTED, EventKind.REAPED]


def test_the_stop_margin_stretches_with_the_time_scale() -> None:
    late = STOP_GRACE + STOP_MARGIN + 0.2
    assert not bounded_stop(_record(_stop_then_exit(after=late))).ok
    stretched = dataclasses.replace(_record(_stop_then_exit(after=late)), time_scale=2.0)
    assert bounded_stop(stretched).ok


def test_bounded_stop_fails_for_a_stop_never_reaped_while_the_run_went_on() -> None:
    check = bounded_stop(_record(_stop_then_exit(after=None, last=3.0)))
    assert not check.ok and check.seen == "reaped never"


def test_bounded_stop_is_not_applicable_without_a_stop() -> None:
    check = bounded_stop(_record([_ev(0.0, EventKind.JOB_END, process="server")]))
    assert check.ok and not check.applicable


@pytest.mark.parametrize("check", [bounded_stop, prompt_exit], ids=["bounded_stop", "prompt_exit"])
def test_a_live_violation_is_reported_even_when_the_run_never_finished(
    check: Callable[[RunRecord], Check],
) -> None:
    name = check.__name__
    violation = _ev(
        0.7,
        EventKind.ERROR,
        process="harness",
        error=LIVE_VIOLATION,
        invariant=name,
        reason="too late",
        **({"pid": PID} if name == BOUNDED_STOP else {}),
    )
    events = [*_stop_then_exit(after=None, last=0.5), violation]
    found = check(_record(events, finished=False))
    assert not found.ok and found.applicable
    assert found.at == violation.ts and found.seen == "too late"
    assert found.evidence[-1] == violation


# -- the watch, on a real timeline ----------------------------------------------------


def _watch(
    timeline: Timeline, invariants: tuple[str, ...], *, launch_once: bool = False
) -> tuple[LiveWatch, threading.Event]:
    fired = threading.Event()
    watch = LiveWatch(
        timeline,
        threading.Event(),
        invariants=invariants,
        job=JobConfig(launch_once=launch_once, timeouts=Timeouts.fast()),
        on_violation=lambda _: fired.set(),
    )
    watch.start()
    return watch, fired


def test_the_watch_arms_only_invariants_the_scenario_checks() -> None:
    timeline = Timeline("server")
    for invariants, launch_once, armed in (
        ((), False, False),
        ((PROMPT_EXIT,), True, False),  # one process for all rounds: nothing exits per round
        ((PROMPT_EXIT,), False, True),
        ((BOUNDED_STOP,), True, True),
    ):
        watch, _ = _watch(timeline, invariants, launch_once=launch_once)
        try:
            assert watch.armed is armed
        finally:
            watch.close()


def test_the_live_deadlines_stretch_with_the_time_scale() -> None:
    timeline = Timeline("server")
    client = timeline.for_process("client-site-1")
    fired = threading.Event()
    job = JobConfig(timeouts=Timeouts.fast())
    watch = LiveWatch(
        timeline,
        threading.Event(),
        invariants=(PROMPT_EXIT,),
        job=job,
        on_violation=lambda _: fired.set(),
        time_scale=3.0,
    )
    watch.start()
    try:
        released = client.record(EventKind.RESULT_RECEIVED, site="site-1", round=1, tensors=0)
        assert fired.wait(WITHIN)
    finally:
        watch.close()
    assert watch.violation is not None
    limit = 3.0 * PROMPT_EXIT_SECONDS + job.timeouts.stop_poll
    assert watch.violation.ts - released.ts >= limit
    assert f"{limit:.2f}s" in watch.violation.detail["reason"]


def test_a_sigterm_to_a_released_process_is_a_violation_at_once() -> None:
    timeline = Timeline("server")
    client = timeline.for_process("client-site-1")
    watch, fired = _watch(timeline, (PROMPT_EXIT,))
    try:
        released = client.record(EventKind.RESULT_RECEIVED, site="site-1", round=1, tensors=0)
        client.record(EventKind.SIGNAL_SENT, site="site-1", signal="SIGTERM", pgid=PID)
        assert fired.wait(5.0)
    finally:
        watch.close()
    assert watch.violation is not None
    assert watch.violation.ts - released.ts < PROMPT_EXIT_SECONDS  # not the exit deadline
    assert "SIGTERM" in watch.violation.detail["reason"]


def test_an_exit_recorded_before_the_last_download_is_not_a_violation() -> None:
    """The deferred stop may reap the process before the downloader records its last
    ``download_done``: the release then finds the exit already done."""
    timeline = Timeline("server")
    now = time.monotonic() - 10.0  # every deadline armed from these events is long past
    watch, fired = _watch(timeline, (PROMPT_EXIT,))
    try:
        for ts, kind, process, site, round, detail in (
            (now, EventKind.RESULT_RECEIVED, "client-site-1", "site-1", 1, {"tensors": 1}),
            (now + 0.1, EventKind.REAPED, "client-site-1", "site-1", None, {"pid": PID}),
            (now + 0.2, EventKind.DOWNLOAD_DONE, "server", "site-1", 1, {"name": "layer-0"}),
            # A sentinel that must fire: its deadline comes after the one site-1 would have.
            (now + 0.3, EventKind.RESULT_RECEIVED, "client-site-2", "site-2", 1, {"tensors": 0}),
        ):
            timeline.add(Event(ts, kind, process, 1, site, round, detail))
        assert fired.wait(5.0), "the sentinel's deadline never fired"
    finally:
        watch.close()
    assert watch.violation is not None
    assert watch.violation.site == "site-2", "site-1's exit before its release was not counted"
