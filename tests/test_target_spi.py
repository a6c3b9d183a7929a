"""The harness speaks the target SPI: declared capabilities checked before a run, the
kinds each check reads, tolerances from the target's timing, the abort hook, the
event-contract check, and targets a ``conftest.py`` supplies.

The targets here are small Python classes written against the contract only; the
ones that start a process start a real one, in its own group, tagged by the run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from pytest_flrelia.contract import events as contract_events
from pytest_flrelia.contract.events import EventSpec, LaneKind, client_lane, training_lane
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, Timeouts
from pytest_flrelia.contract.result import JobResult, RoundOutcome
from pytest_flrelia.contract.target import (
    Abort,
    FaultSupport,
    RunContext,
    Target,
    TargetInfo,
    Timing,
)
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.harness.runner import (
    HarnessError,
    ScenarioFailure,
    ScenarioUnsupported,
    run_scenario,
)
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.harness.support import why_unsupported
from pytest_flrelia.judge import invariants
from pytest_flrelia.judge.invariants import (
    CHECKS,
    Check,
    RunRecord,
    evaluate,
    kinds_needed_by,
    kinds_read_by,
    prompt_exit,
)
from pytest_flrelia.judge.live_checks import PROMPT_EXIT, LiveWatch
from pytest_flrelia.judge.reads import reads
from pytest_flrelia.scenario.loader import Scenario, default_invariants, load_scenarios

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")
INNER_TIMEOUT = 120.0
NOT_RETURNED_WITHIN = 0.5

CRASH = """\
name: crash-r1
job: {rounds: 2}
faults:
  - {fault: crash, round: 1, at: after_task_received}
expect: {outcome: failure}
"""
PLAIN = """\
name: plain
expect:
  within: 5s
  invariants: [no_orphans, within_bound]
"""


def _scenario(tmp_path: Path, text: str) -> Scenario:
    path = tmp_path / "spi.scenario.yaml"
    path.write_text(text, encoding="utf-8")
    (scenario,) = load_scenarios(path)
    return scenario


def _info(**changes: object) -> TargetInfo:
    base: dict[str, object] = {
        "name": "mini",
        "faults": MappingProxyType({"crash": FaultSupport()}),
        "events": frozenset(EventKind),
    }
    base.update(changes)
    return TargetInfo(**base)  # type: ignore[arg-type]


def _ok_result(job: JobConfig, timeline: Timeline) -> JobResult:
    rounds = [RoundOutcome(r, "train", ok=True) for r in range(1, job.rounds + 1)]
    return JobResult(job, True, None, rounds, {}, timeline, 0.0)


# -- 1. declared capabilities ----------------------------------------------------------


def test_a_supported_scenario_has_no_reason(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, CRASH)
    assert why_unsupported(scenario, _info(), default_invariants("failure")) is None


def test_a_fault_the_target_does_not_declare_is_named_with_its_reason(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, CRASH)
    info = _info(
        faults=MappingProxyType({}),
        unsupported=MappingProxyType({"crash": "its child speaks no protocol"}),
    )

    reason = why_unsupported(scenario, info, ())

    assert reason == (
        "target 'mini' cannot deliver fault 'crash' (line 4): its child speaks no protocol"
    )
    bare = why_unsupported(scenario, _info(faults=MappingProxyType({})), ())
    assert bare is not None and bare.endswith("it does not declare it")


def test_a_scope_key_the_fault_does_not_honour_is_unsupported(tmp_path: Path) -> None:
    info = _info(faults=MappingProxyType({"crash": FaultSupport(scopes=frozenset({"site"}))}))

    reason = why_unsupported(_scenario(tmp_path, CRASH), info, ())

    assert reason is not None
    assert "does not honour the scope key round for it (it honours: site)" in reason


def test_an_at_point_outside_the_declared_ones_is_unsupported(tmp_path: Path) -> None:
    support = FaultSupport(at=frozenset({"after_result_sent"}))
    info = _info(faults=MappingProxyType({"crash": support}))

    reason = why_unsupported(_scenario(tmp_path, CRASH), info, ())

    assert reason is not None
    assert "cannot strike at: after_task_received (only at after_result_sent)" in reason


STUCK = """\
name: stuck
faults:
  - {{fault: stuck_exit, round: 1, mode: {mode}}}
"""


def test_a_parameter_value_the_target_refuses_is_unsupported(tmp_path: Path) -> None:
    support = FaultSupport(refused=MappingProxyType({"mode": {"thread": "no thread holds it"}}))
    info = _info(faults=MappingProxyType({"stuck_exit": support}))

    refused = why_unsupported(_scenario(tmp_path, STUCK.format(mode="thread")), info, ())
    accepted = why_unsupported(_scenario(tmp_path, STUCK.format(mode="hang")), info, ())

    assert refused is not None
    assert refused.endswith("cannot deliver mode: thread: no thread holds it")
    assert accepted is None


def test_an_invariant_whose_kinds_the_target_does_not_record_is_unsupported(
    tmp_path: Path,
) -> None:
    info = _info(events=frozenset(EventKind) - {EventKind.DOWNLOAD_DONE})

    reason = why_unsupported(_scenario(tmp_path, PLAIN), info, ("tensors_intact",))

    assert reason == (
        "target 'mini' does not record download_done, which invariant tensors_intact reads"
    )
    # The harness's own kinds (error) are never asked of a target.
    harnessless = _info(events=frozenset(EventKind) - {EventKind.ERROR})
    assert why_unsupported(_scenario(tmp_path, PLAIN), harnessless, ("no_thread_crash",)) is None


class RecordingTarget:
    """Records ``events`` (kind, lane, detail) and returns a successful result."""

    def __init__(
        self,
        info: TargetInfo,
        events: Sequence[tuple[EventKind, str, dict[str, Any]]] = (),
    ) -> None:
        self.info = info
        self.events = events
        self.runs = 0

    def run(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> JobResult:
        self.runs += 1
        for kind, lane, detail in self.events:
            context.timeline.record(kind, process=lane, site="site-1", **detail)
        return _ok_result(job, context.timeline)


def _only(target: Target) -> Callable[[str], Target]:
    """The session's targets: this one, whatever the name."""
    return lambda name: target


def test_run_scenario_refuses_what_the_target_cannot_deliver_and_runs_nothing(
    tmp_path: Path,
) -> None:
    target = RecordingTarget(_info(faults=MappingProxyType({})))

    with pytest.raises(ScenarioUnsupported, match="cannot deliver fault 'crash'"):
        run_scenario(_scenario(tmp_path, CRASH), Settings(), targets=_only(target))

    assert target.runs == 0


def test_a_variant_the_target_does_not_declare_is_unsupported(tmp_path: Path) -> None:
    target = RecordingTarget(_info(variants=MappingProxyType({"2.7": "nvflare 2.7"})))

    unsupported = r"has no variant 'sync-stop' \(its variants: 2.7\)"
    with pytest.raises(ScenarioUnsupported, match=unsupported):
        run_scenario(
            _scenario(tmp_path, PLAIN),
            Settings(known_bug="sync-stop"),
            targets=_only(target),
        )
    assert target.runs == 0


# -- 2. the judge declares what each check reads -----------------------------------------


def test_every_check_is_handed_only_the_kinds_it_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[EventKind] = []

    @reads(EventKind.LAUNCH, optional=(EventKind.REAPED,))
    def spy(run: RunRecord) -> Check:
        seen.extend(e.kind for e in run.events)
        return Check("spy", True, "", "")

    monkeypatch.setitem(CHECKS, "spy", spy)
    everything = [Event(float(i), kind, "client-site-1", 1) for i, kind in enumerate(EventKind)]
    record = RunRecord(None, everything, [], 1.0, 10.0, False, "success", None)

    evaluate(record, ["spy"])

    assert sorted(seen) == sorted([EventKind.LAUNCH, EventKind.REAPED])
    assert kinds_read_by(spy) == {EventKind.LAUNCH, EventKind.REAPED}
    assert kinds_needed_by(spy) == {EventKind.LAUNCH}


def test_an_invariant_reads_the_kinds_of_its_live_check_too() -> None:
    bounded = kinds_read_by("bounded_stop")
    assert {EventKind.STOP_REQUESTED, EventKind.REAPED, EventKind.EXIT} <= bounded
    assert EventKind.ERROR not in kinds_needed_by("bounded_stop")  # the harness records it
    assert kinds_read_by(PROMPT_EXIT) >= {EventKind.RESULT_RECEIVED, EventKind.EXIT_SEEN}
    assert kinds_read_by("no_orphans") == frozenset()


SILENCED = {"tensors_intact", "no_premature_stop", "process_per_round", "prompt_exit",
            "bounded_stop"}


def test_a_target_that_declares_the_kinds_and_records_nothing_fails_naming_them(
    tmp_path: Path,
) -> None:
    scenario = _scenario(
        tmp_path, "name: silent\njob: {tensors: {count: 1, size: 16KiB}}\nexpect: {within: 5s}\n"
    )
    target = RecordingTarget(_info())

    with pytest.raises(ScenarioFailure) as raised:
        run_scenario(scenario, Settings(), targets=_only(target))

    verdict = raised.value.verdict
    assert verdict is not None
    failed = {c.name: c.seen for c in verdict.failures}
    assert set(failed) == SILENCED, verdict.lines()
    assert failed["tensors_intact"] == "1 rounds completed, yet no download_done was recorded"
    assert "no launch or stop_requested" in failed["bounded_stop"]
    # Not applicable only for reasons in the scenario: no stale event, no fault planned.
    assert [c.name for c in verdict.not_applicable] == ["stale_events_ignored", "faults_delivered"]


def test_stale_events_ignored_is_not_applicable_only_for_want_of_a_stale_fault() -> None:
    stale = FaultSpec("stale_peer_gone", "site-1", 2, {}, line=3)
    job = JobConfig(rounds=2)
    result = _ok_result(job, Timeline())

    planned = invariants.stale_events_ignored(
        RunRecord(result, [], [], 1.0, 10.0, False, "success", None, faults=[stale])
    )
    optional = invariants.stale_events_ignored(
        RunRecord(
            result,
            [],
            [],
            1.0,
            10.0,
            False,
            "success",
            None,
            faults=[FaultSpec("stale_peer_gone", "site-1", 2, {}, line=3, optional=True)],
        )
    )

    assert not planned.ok and "no fault event of stale_peer_gone" in planned.seen
    assert optional.ok and not optional.applicable


# -- 3. timing from the target -------------------------------------------------------------


def _lingering_run(timing: Timing, late: float) -> RunRecord:
    """A per-round process whose result had no tensors, exiting ``late`` after it."""
    job = JobConfig()
    lane = training_lane("site-1")
    events = [
        Event(10.0, EventKind.RESULT_SENT, lane, 7, "site-1", 1, {"tensors": 0}),
        Event(10.0 + late, EventKind.EXIT, lane, 7, "site-1", 1, {"returncode": 0}),
    ]
    return RunRecord(
        _ok_result(job, Timeline()), events, [], 1.0, 10.0, False, "success", None,
        timing=timing, job=job,
    )


def test_prompt_exit_takes_its_tolerance_from_the_targets_timing() -> None:
    late = Timing().exit_after_release + 0.5

    assert not prompt_exit(_lingering_run(Timing(), late)).ok
    slow = prompt_exit(_lingering_run(Timing(exit_after_release=late + 0.5), late))
    assert slow.ok, slow.seen


def test_the_live_prompt_exit_deadline_is_the_targets_exit_latency_plus_its_poll() -> None:
    timeline = Timeline("server")
    abort = threading.Event()
    fired = threading.Event()
    job = JobConfig(timeouts=Timeouts.fast())
    timing = Timing(exit_after_release=0.05, poll=0.05)
    watch = LiveWatch(
        timeline, abort, invariants=[PROMPT_EXIT], job=job,
        on_violation=lambda _: fired.set(), timing=timing, time_scale=2.0,
    )
    watch.start()
    try:
        released = timeline.record(
            EventKind.RESULT_RECEIVED, process=client_lane("site-1"), site="site-1", round=1,
            tensors=0,
        )
        assert fired.wait(5.0)
    finally:
        watch.close()
    assert watch.violation is not None
    limit = (0.05 + 0.05) * 2.0  # both stretch with the time scale
    assert limit <= watch.violation.ts - released.ts < Timing().exit_after_release
    assert f"{limit:.2f}s" in str(watch.violation.detail["reason"])


# -- 6. abort hook -------------------------------------------------------------------------


class SleepyTarget:
    """Starts a real child that would sleep for a minute, then waits to be aborted; its
    abort hook notes whether the child was still alive when the hook ran."""

    info = TargetInfo(name="sleepy", faults=MappingProxyType({}), events=frozenset())

    def __init__(self) -> None:
        self.alive_in_hook: bool | None = None
        self.child: subprocess.Popen[bytes] | None = None

    def run(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> JobResult:
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            env={**os.environ, **context.env},
            start_new_session=True,
        )
        self.child = child

        def hook() -> None:
            self.alive_in_hook = child.poll() is None

        context.abort.on_abort(hook)
        context.abort.wait(max(0.0, context.deadline - time.monotonic()) + 30.0)
        child.wait(10.0)
        return JobResult(job, False, "aborted", [], {}, context.timeline, 0.0)


@pytest.mark.usefixtures("no_leftover_children")
def test_the_abort_hook_runs_while_the_targets_child_is_still_alive(tmp_path: Path) -> None:
    scenario = _scenario(
        tmp_path, "name: sleepy\nexpect: {within: 1s, invariants: [within_bound]}\n"
    )
    target = SleepyTarget()

    with pytest.raises(ScenarioFailure) as raised:
        run_scenario(scenario, Settings(), targets=_only(target))

    assert raised.value.verdict is not None
    assert [c.name for c in raised.value.verdict.failures] == ["expectation", "within_bound"]
    assert target.alive_in_hook is True  # the hook ran before the sweep killed it
    assert target.child is not None and target.child.returncode is not None


# -- 7. the event contract -------------------------------------------------------------------


def test_a_target_that_breaks_the_event_contract_is_a_harness_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        contract_events,
        "CONTRACT",
        MappingProxyType({EventKind.LAUNCH: EventSpec(frozenset({LaneKind.CLIENT}), ("pid",))}),
    )
    info = _info(events=frozenset())
    scenario = _scenario(tmp_path, PLAIN)
    good = RecordingTarget(info, [(EventKind.LAUNCH, client_lane("site-1"), {"pid": 1})])
    bad = RecordingTarget(
        info,
        [
            (EventKind.LAUNCH, client_lane("site-1"), {}),
            (EventKind.LAUNCH, training_lane("site-1"), {"pid": 1}),
        ],
    )

    run_scenario(scenario, Settings(), targets=_only(good))
    with pytest.raises(HarnessError) as raised:
        run_scenario(scenario, Settings(), targets=_only(bad))

    report = raised.value.report
    assert raised.value.verdict is None
    assert "target 'mini' broke the event contract:" in report
    assert "launch in lane client-site-1 lacks ['pid']" in report
    assert "launch recorded in lane 'train-site-1'; the contract allows ['client']" in report


# -- 4 and 5. a conftest.py target; reports name target, variant and version ------------------

CONFTEST = '''
from types import MappingProxyType
from typing import Any

from pytest_flrelia.contract.result import JobResult, RoundOutcome
from pytest_flrelia.contract.target import FaultSupport, TargetInfo
from pytest_flrelia.contract.timeline import EventKind


class Mini:
    info = TargetInfo(
        name="mini",
        faults=MappingProxyType({}),
        events=frozenset({EventKind.JOB_END}),
        variants=MappingProxyType({"v2": "the second one"}),
        version="0.1",
        unsupported=MappingProxyType({"crash": "its child speaks no protocol"}),
    )

    def run(self, job, faults, context):
        context.timeline.record(EventKind.JOB_END, ok=True)
        rounds = [RoundOutcome(r, "train", ok=True) for r in range(1, job.rounds + 1)]
        return JobResult(job, True, None, rounds, {}, context.timeline, 0.0)


def pytest_flrelia_make_target(name, config):
    return Mini() if name == "mini" else None
'''
FAILS = """\
name: expects-failure
expect:
  outcome: failure
  within: 5s
  invariants: [no_orphans, within_bound]
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pytester.makeconftest(CONFTEST)
    return pytester


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *QUIET_ARGS, *args, timeout=INNER_TIMEOUT)


def test_a_conftest_target_runs_what_it_supports_and_skips_the_rest(
    inner: pytest.Pytester,
) -> None:
    (inner.path / "plain.scenario.yaml").write_text(PLAIN)
    (inner.path / "crash.scenario.yaml").write_text(CRASH)

    result = _run(inner, "--flrelia-target=mini", "-rs")

    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "flrelia: 1 scenario against target 'mini' 0.1, 0 faults delivered, "
            "* invariants checked (0 failed)",
            "SKIPPED * crash.scenario.yaml: target 'mini' cannot deliver fault 'crash' "
            "(line 4): its child speaks no protocol",
        ]
    )


def test_a_scenario_names_its_own_target(inner: pytest.Pytester) -> None:
    (inner.path / "own.scenario.yaml").write_text("target: mini\n" + FAILS)

    result = _run(inner)  # the session's target is the reference

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "scenario expects-failure (*own.scenario.yaml:2) failed against "
            "target 'mini' 0.1 after *s",
            "reproduce:",
            "  pytest 'own.scenario.yaml::expects-failure' --flrelia-target=mini",
        ]
    )


def test_a_variant_the_session_target_does_not_declare_is_a_usage_error(
    inner: pytest.Pytester,
) -> None:
    (inner.path / "plain.scenario.yaml").write_text(PLAIN)

    result = _run(inner, "--flrelia-target=mini", "--flrelia-known-bug=sync-stop")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--flrelia-known-bug: target 'mini' has no variant 'sync-stop'; valid: v2*"]
    )
    unknown = _run(inner, "--flrelia-target=nope")
    assert unknown.ret == pytest.ExitCode.USAGE_ERROR
    unknown.stderr.fnmatch_lines(["*--flrelia-target: unknown target 'nope'*"])


def test_the_verdict_file_names_the_target(inner: pytest.Pytester) -> None:
    (inner.path / "plain.scenario.yaml").write_text(PLAIN)

    (inner.path / "fails.scenario.yaml").write_text(FAILS)

    result = _run(inner, "--flrelia-target=mini", "--flrelia-known-bug=v2", "--flrelia-report=r")

    result.assert_outcomes(passed=1, failed=1)
    verdict = (inner.path / "r" / "plain.verdict.txt").read_text().splitlines()
    assert verdict[0] == "against target 'mini' 0.1, variant 'v2'"
    result.stdout.fnmatch_lines(
        [
            "scenario expects-failure (*) failed against target 'mini' 0.1, variant 'v2' after *s",
            "  pytest 'fails.scenario.yaml::expects-failure' --flrelia-target=mini "
            "--flrelia-known-bug=v2",
        ]
    )


def test_an_abort_from_a_second_thread_returns_only_after_the_first_ones_hooks() -> None:
    assert second_abort_saw_the_hook_done(Abort()) == [True]


def second_abort_saw_the_hook_done(abort: Abort) -> list[bool]:
    """Abort from one thread, whose hook is running when a second thread aborts: whether
    the second one's ``set`` returned after the hook was done (a sweep follows it)."""
    in_hook, second_returned, hook_done = threading.Event(), threading.Event(), threading.Event()
    seen_by_second: list[bool] = []

    def hook() -> None:
        in_hook.set()
        # Proving the second abort does NOT return while a hook runs needs an upper bound:
        # it returns at once if it does not wait for the hooks (then this hook sees it).
        second_returned.wait(NOT_RETURNED_WITHIN)
        hook_done.set()

    def second() -> None:
        abort.set()
        seen_by_second.append(hook_done.is_set())
        second_returned.set()

    abort.on_abort(hook)
    first = threading.Thread(target=abort.set)
    first.start()
    assert in_hook.wait(10.0)
    later = threading.Thread(target=second)
    later.start()
    first.join(10.0)
    later.join(10.0)
    return seen_by_second


def test_a_hook_that_aborts_again_does_not_wait_on_itself() -> None:
    abort = Abort()
    abort.on_abort(abort.set)
    done = threading.Thread(target=abort.set)
    done.start()
    done.join(5.0)
    assert not done.is_alive()
