"""The judge's tolerances for a slower, real launcher, all derived from what the target
declares (``TargetInfo.timing``, ``error_aliases``), never from its name; each is shown
failing where it must and passing only where the declaration says so, and the
reference's defaults add nothing."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import pytest

from pytest_flrelia.contract.events import client_lane, server_lane, training_lane
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, Timeouts
from pytest_flrelia.contract.result import JobResult, RoundOutcome
from pytest_flrelia.contract.target import RunContext, TargetInfo, Timing
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.harness.runner import ScenarioFailure, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.judge.invariants import RunRecord, expectation, no_premature_stop
from pytest_flrelia.judge.live_checks import PROMPT_EXIT, LiveWatch
from pytest_flrelia.scenario.loader import Scenario, load_scenarios

PULL = "failed to download from site-2"
NVFLARE_WORDS = "EXECUTION_EXCEPTION from site-2"


def _result(job: JobConfig, ok: bool, error: str | None = None) -> JobResult:
    rounds = [RoundOutcome(r, "train", ok=ok) for r in range(1, job.rounds + 1)]
    return JobResult(job, ok, error, rounds, {}, Timeline(), 0.0)


def _record(
    events: Sequence[Event] = (),
    *,
    ok: bool = True,
    error: str | None = None,
    pattern: str | None = None,
    aliases: dict[str, str] | None = None,
) -> RunRecord:
    job = JobConfig(timeouts=Timeouts.fast())
    return RunRecord(
        _result(job, ok, error), list(events), [], 1.0, 10.0, False,
        "success" if ok else "failure", pattern, job=job, error_aliases=aliases or {},
    )


# -- expect.error in the target's words ------------------------------------------------


def test_an_error_in_the_scenarios_words_matches_and_says_so() -> None:
    check = expectation(_record(ok=False, error=f"{PULL}: timeout", pattern=PULL))
    assert check.ok and f"(matched /{PULL}/)" in check.seen


def test_an_error_in_the_targets_words_matches_only_through_its_declared_alias() -> None:
    error = f"round 1: {NVFLARE_WORDS}: execution exception in TaskExchanger"
    plain = expectation(_record(ok=False, error=error, pattern=PULL))
    assert not plain.ok

    aliased = expectation(
        _record(ok=False, error=error, pattern=PULL, aliases={PULL: NVFLARE_WORDS})
    )
    assert aliased.ok
    assert f"matched the target's alias /{NVFLARE_WORDS}/" in aliased.seen


def test_an_alias_that_does_not_match_either_fails_naming_both_patterns() -> None:
    check = expectation(
        _record(ok=False, error="task pipe stopped", pattern=PULL, aliases={PULL: NVFLARE_WORDS})
    )
    assert not check.ok
    assert PULL in check.expected and NVFLARE_WORDS in check.expected


# -- no_premature_stop: released once the server has every tensor ----------------------


def _stop_before_gate(downloaded: Sequence[str]) -> list[Event]:
    train, client, server = training_lane("site-1"), client_lane("site-1"), server_lane()
    events = [
        Event(10.0, EventKind.RESULT_SENT, train, 7, "site-1", 1, {"tensors": 2}),
        *(
            Event(10.1 + i / 10, EventKind.DOWNLOAD_DONE, server, 1, "site-1", 1, {"name": n})
            for i, n in enumerate(downloaded)
        ),
        # the job-end stop comes while the gate still waits for its 5 s monitor
        Event(10.5, EventKind.STOP_REQUESTED, client, 2, "site-1", 1, {"pid": 7}),
        Event(14.9, EventKind.GATE_OPEN, train, 7, "site-1", 1, {}),
    ]
    return events


def test_a_stop_after_the_server_has_every_tensor_is_not_premature() -> None:
    check = no_premature_stop(_record(_stop_before_gate(["T0", "T1"])))
    assert check.ok, check.seen


@pytest.mark.parametrize("downloaded", [[], ["T0"], ["T0", "T0"]], ids=["none", "one", "same"])
def test_a_stop_while_a_tensor_is_still_pending_is_premature(downloaded: list[str]) -> None:
    check = no_premature_stop(_record(_stop_before_gate(downloaded)))
    assert not check.ok
    assert "stop requested while the download gate was still closed" in check.seen


@pytest.mark.parametrize(
    ("dead_pid", "released"), [(7, True), (8, False)], ids=["its-own", "another-pid"]
)
def test_a_stop_after_the_launcher_saw_the_process_die_is_not_premature(
    dead_pid: int, released: bool
) -> None:
    """nvflare's monitor sees a SIGKILLed child die, then stops it: nothing is cut short."""
    events = _stop_before_gate([])
    events.insert(1, Event(10.2, EventKind.EXIT_SEEN, client_lane("site-1"), 2, "site-1", 1,
                           {"pid": dead_pid}))
    check = no_premature_stop(_record(events))
    assert check.ok is released, check.seen


@pytest.mark.parametrize(("did", "released"), [("signal(SIGKILL)", True), ("sleeps", False)])
def test_a_fault_that_ends_its_process_releases_it(did: str, released: bool) -> None:
    events = _stop_before_gate([])
    events.insert(1, Event(10.2, EventKind.FAULT, training_lane("site-1"), 7, "site-1", 1,
                           {"fault": "early_sigterm", "fault_id": 0, "did": did}))
    check = no_premature_stop(_record(events))
    assert check.ok is released, check.seen


def test_another_sites_downloads_do_not_release_a_process() -> None:
    events = _stop_before_gate([])
    server = server_lane()
    events[1:1] = [
        Event(10.1, EventKind.DOWNLOAD_DONE, server, 1, "site-2", 1, {"name": "T0"}),
        Event(10.2, EventKind.DOWNLOAD_DONE, server, 1, "site-2", 1, {"name": "T1"}),
    ]
    assert not no_premature_stop(_record(events)).ok


# -- live prompt_exit: the gate lag, and the teardown's SIGTERMs ------------------------


def _watch(
    job: JobConfig, timing: Timing, fired: threading.Event | None = None
) -> tuple[LiveWatch, Timeline]:
    timeline = Timeline("server")
    watch = LiveWatch(
        timeline, threading.Event(), invariants=[PROMPT_EXIT], job=job, timing=timing,
        on_violation=None if fired is None else (lambda _: fired.set()),
    )
    watch.start()
    return watch, timeline


def _downloaded_then_sigterm(timeline: Timeline, rounds_ended: int) -> tuple[Event, Event]:
    client, server = client_lane("site-1"), server_lane()
    timeline.record(
        EventKind.RESULT_RECEIVED, process=client, site="site-1", round=1, tensors=1
    )
    done = timeline.record(
        EventKind.DOWNLOAD_DONE, process=server, site="site-1", round=1, name="T0", checksum="c"
    )
    for r in range(1, rounds_ended + 1):
        timeline.record(EventKind.ROUND_END, process=server, round=r, ok=True, error=None)
    term = timeline.record(
        EventKind.SIGNAL_SENT, process=client, site="site-1", signal="SIGTERM", target="pid"
    )
    return done, term


SLOW = Timing(exit_after_release=30.0, poll=1.0, gate_lag=5.0)
"""Deadlines far enough away that none passes during a test: what is armed is looked at."""


def test_the_release_deadline_is_exit_latency_plus_poll_plus_gate_lag() -> None:
    job = JobConfig(rounds=1, timeouts=Timeouts.fast())
    for timing, lag in ((SLOW, 5.0), (Timing(exit_after_release=30.0, poll=1.0), 0.0)):
        watch, timeline = _watch(job, timing)
        try:
            done, _ = _downloaded_then_sigterm(timeline, rounds_ended=1)  # teardown: exempt
            (deadline,) = watch.pending()
        finally:
            watch.close()
        assert deadline.at == pytest.approx(done.ts + 30.0 + 1.0 + lag)


def test_a_sigterm_after_the_last_round_ended_is_the_teardowns() -> None:
    job = JobConfig(rounds=2, timeouts=Timeouts.fast())
    watch, timeline = _watch(job, SLOW)
    try:
        done, _ = _downloaded_then_sigterm(timeline, rounds_ended=2)
        pending = watch.pending()
    finally:
        watch.close()
    # only the release deadline remains: a process that lingers is still caught
    assert [d.at for d in pending] == [pytest.approx(done.ts + 36.0)]
    assert watch.violation is None


def test_a_sigterm_after_an_earlier_round_is_a_violation_at_once() -> None:
    job = JobConfig(rounds=2, timeouts=Timeouts.fast())
    fired = threading.Event()
    watch, timeline = _watch(job, SLOW, fired)
    try:
        _downloaded_then_sigterm(timeline, rounds_ended=1)
        assert fired.wait(5.0)
    finally:
        watch.close()
    assert watch.violation is not None
    assert "sent SIGTERM" in str(watch.violation.detail["reason"])


# -- the runner's bound: the scenario's plus the target's declared slack ---------------


class SlowStart:
    """Takes 1.2 s to do one round (a slow launcher), unless aborted first."""

    def __init__(self, timing: Timing) -> None:
        self.info = TargetInfo(
            name="slow-start", faults=MappingProxyType({}), events=frozenset(EventKind),
            timing=timing,
        )

    def run(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> JobResult:
        context.timeline.record(EventKind.JOB_START, process=server_lane())
        aborted = context.abort.wait(1.2)
        context.timeline.record(EventKind.JOB_END, process=server_lane(), ok=not aborted)
        return _result(job, not aborted, "aborted" if aborted else None)


BOUNDED = """\
name: bounded
job: {rounds: 1}
expect:
  within: 600ms
  invariants: [within_bound]
"""


def _bounded(tmp_path: Path) -> Scenario:
    path = tmp_path / "bounded.scenario.yaml"
    path.write_text(BOUNDED, encoding="utf-8")
    (scenario,) = load_scenarios(path)
    return scenario


def test_the_bound_grows_by_what_the_target_declares_and_only_by_that(tmp_path: Path) -> None:
    scenario = _bounded(tmp_path)
    with pytest.raises(ScenarioFailure) as failed:
        run_scenario(scenario, Settings(), targets=lambda _: SlowStart(Timing()))
    assert failed.value.verdict is not None
    assert [c.name for c in failed.value.verdict.failures] == ["expectation", "within_bound"]

    outcome = run_scenario(scenario, Settings(), targets=lambda _: SlowStart(Timing(launch=2.0)))
    (bound,) = [c for c in outcome.verdict.checks if c.name == "within_bound"]
    assert bound.expected == (
        "the run ends within 2.6s (the scenario's 0.6s + 2s the target's timing declares)"
    )
