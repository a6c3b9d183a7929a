"""The fault catalog, proven: every fault injected into a small real job on the
correct reference runtime shows its timeline event and the effect its entry in
docs/faults.md promises; every parameter refuses a bad value clearly; and the
docs page is exactly what the catalog renders.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from _guarded_run import run_guarded

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.harness.processes import ProcessGuard
from pytest_flrelia.scenario.catalog import (
    AT_POINTS,
    CATALOG,
    SCOPE_KEYS,
    ParamError,
    validate_params,
)
from pytest_flrelia.scenario.loader import shipped_schema
from pytest_flrelia.targets.reference import ReferenceTarget
from pytest_flrelia.targets.reference.faults import AT_FAILPOINTS, LiveAction, build_plan
from pytest_flrelia.targets.reference.oracle import expected_global_model
from pytest_flrelia.tools import catalog_docs
from pytest_flrelia.tools.catalog_docs import (
    MECHANICS,
    SECTION_HEADING,
    current_section,
    render_catalog,
)

FAULTS_DOC = Path(__file__).resolve().parent.parent / "docs" / "faults.md"
RUN_BOUND = 30.0
"""Upper bound on one job here; every job below normally ends in about a second."""
SMALL = TensorSpec(count=1, size_bytes=16 * 1024)
CHUNK = 4096
"""Four chunks per tensor: room for a fault between chunks."""
HEARTBEAT = 5.0
"""Heartbeat timeout unless a test needs a short one.  The client's round handler counts
silence from before the process is launched, so a start slower than this (a loaded
machine) would fail the round "before init": see test_slow_start_longer_than_heartbeat."""

# -- running one job with faults ---------------------------------------------------


@dataclass
class Run:
    """One finished job: its result and its merged timeline."""

    job: JobConfig
    result: JobResult
    timeline: Timeline

    def events(self, kind: EventKind, **match: object) -> list[Event]:
        """Events of ``kind`` whose site/round/process/detail fields equal ``match``."""
        return [e for e in self.timeline.events(kind) if _fields_match(e, match)]

    def one(self, kind: EventKind, **match: object) -> Event:
        found = self.events(kind, **match)
        assert len(found) == 1, f"expected one {kind.value} {match}, got {found}"
        return found[0]

    def failpoints(self, name: str, **match: object) -> list[Event]:
        """The ``fault`` events of the harness's (tagged) failpoint ``name``: its acts."""
        acts = self.events(EventKind.FAULT, failpoint=name, **match)
        assert not self.events(EventKind.FAILPOINT, name=name), "an untagged harness failpoint"
        return acts

    def pids(self) -> list[int]:
        """Training process pids in launch order."""
        return [int(e.detail["pid"]) for e in self.timeline.events(EventKind.LAUNCH)]

    def signals(self, pid: int) -> list[str]:
        return [str(e.detail["signal"]) for e in self.events(EventKind.SIGNAL_SENT, pgid=pid)]


_EVENT_FIELDS = ("site", "round", "process")


def _fields_match(event: Event, match: Mapping[str, object]) -> bool:
    return all(
        (getattr(event, key) if key in _EVENT_FIELDS else event.detail.get(key)) == value
        for key, value in match.items()
    )


def fault_spec(entry: Mapping[str, object]) -> FaultSpec:
    """A ``faults`` entry as a user writes it, parsed the way the scenario loader does."""
    name = str(entry["fault"])
    site, round = entry.get("site"), entry.get("round")
    return FaultSpec(
        fault=name,
        site=None if site is None else str(site),
        round=None if round is None else int(str(round)),
        params=validate_params(name, entry, "faults[0]"),
        line=0,
    )


def run_faults(
    faults: Sequence[Mapping[str, object]],
    *,
    sites: int = 1,
    rounds: int = 1,
    launch_once: bool = False,
    on_event: Callable[[Event], None] | None = None,
    **timeouts: float,
) -> Run:
    """Run a small job with ``faults`` on the correct runtime; no process may outlive it."""
    job = JobConfig(
        sites=sites,
        rounds=rounds,
        launch_once=launch_once,
        tensors=SMALL,
        chunk_bytes=CHUNK,
        timeouts=replace(Timeouts.fast(), **{"heartbeat": HEARTBEAT, **timeouts}),
    )
    plan = build_plan([fault_spec(f) for f in faults], job)
    timeline = Timeline("server")
    if on_event is not None:
        timeline.subscribe(on_event)
    abort = threading.Event()

    def run(guard: ProcessGuard) -> JobResult:
        return ReferenceTarget().run_plan(
            job, plan, known_bug=None, timeline=timeline, abort=abort, env=guard.env
        )

    result = run_guarded(
        run, abort=abort, bound=RUN_BOUND, grace=RUN_BOUND, name="fault-catalog-job"
    )
    return Run(job, result, timeline)


def assert_exact_model(run: Run) -> None:
    """The aggregate equals the weighted average recomputed without the server's code."""
    expected = expected_global_model(run.job)
    assert sorted(run.result.global_model) == sorted(expected)
    for name, array in expected.items():
        assert np.array_equal(run.result.global_model[name], array), name


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- each fault, injected ------------------------------------------------------------

PROVEN: dict[str, str] = {}
"""Fault name -> the test that proves it here (checked against the catalog below)."""


def proves(fault: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def mark(test: Callable[..., None]) -> Callable[..., None]:
        PROVEN[fault] = test.__name__
        marked: Callable[..., None] = pytest.mark.slow(test)
        return marked

    return mark


@proves("delayed_download")
def test_delayed_download_starts_the_pull_late_and_loses_nothing() -> None:
    run = run_faults(
        [{"fault": "delayed_download", "site": "site-1", "round": 1, "delay": "500ms"}], sites=2
    )
    hit = run.failpoints("server.before_download", process="harness")
    assert [(e.site, e.round, e.detail["did"]) for e in hit] == [("site-1", 1, "sleep(500)")]
    result_in = run.one(EventKind.RESULT_RECEIVED, site="site-1")
    pull = run.one(EventKind.DOWNLOAD_START, site="site-1")
    assert pull.ts - result_in.ts >= 0.5
    assert run.events(EventKind.TENSOR_SERVED, site="site-1"), "the late pull found no process"
    assert run.result.ok, run.result.error
    assert_exact_model(run)


SIGTERM_ERRORS: dict[str, str | None] = {
    "before_init": "site-1: external process has not called init",
    "after_task_received": "site-1: training process ended",
    "after_result_sent": "failed to download from site-1",
    "mid_download": "failed to download from site-1",
    "after_download": None,
}
"""What a job shows when SIGTERM strikes at each ``at`` point (None: it succeeds)."""


@proves("early_sigterm")
@pytest.mark.parametrize(("at", "error"), SIGTERM_ERRORS.items())
def test_early_sigterm_strikes_at_its_point(at: str, error: str | None) -> None:
    """Before the download is done the job fails naming the site; after it, nothing is lost."""
    run = run_faults([{"fault": "early_sigterm", "at": at}])
    hit = run.failpoints(AT_FAILPOINTS[at], process="train-site-1")
    assert [e.detail["did"] for e in hit] == ["signal(SIGTERM)"]
    (pid,) = run.pids()
    assert run.one(EventKind.REAPED, process="client-site-1", pid=pid).detail["returncode"] == (
        -signal.SIGTERM
    )
    if error is None:
        assert run.result.ok, run.result.error
        assert_exact_model(run)
    else:
        assert not run.result.ok
        assert error in str(run.result.error)


def test_every_at_point_is_proven_for_early_sigterm() -> None:
    assert sorted(SIGTERM_ERRORS) == sorted(AT_POINTS)


@proves("stale_peer_gone")
def test_stale_peer_gone_is_ignored_by_the_current_handler() -> None:
    run = run_faults([{"fault": "stale_peer_gone", "round": 2}], rounds=2)
    fault = run.one(EventKind.FAULT, fault="stale_peer_gone")
    assert (fault.site, fault.detail["affects_round"]) == ("site-1", 2)
    ignored = run.one(EventKind.STATUS_IGNORED, topic="PEER_GONE")
    assert (ignored.round, ignored.detail["reason"]) == (1, "handler is not current")
    assert not run.events(EventKind.STATUS_EVENT, topic="PEER_GONE", handler="site-1-round-2"), (
        "round 2's handler saw a PEER_GONE"
    )
    assert run.result.ok, run.result.error
    assert_exact_model(run)


@proves("stuck_exit")
@pytest.mark.parametrize(("mode", "action"), [("hang", "hang"), ("thread", "call(linger_thread)")])
def test_stuck_exit_is_stopped_after_the_full_wait_and_round_two_runs(
    mode: str, action: str
) -> None:
    stop_wait = 0.5
    run = run_faults(
        [{"fault": "stuck_exit", "round": 1, "mode": mode}],
        rounds=2,
        download_complete=stop_wait,
        stop_wait=stop_wait,
    )
    hit = run.failpoints("agent.before_exit", process="train-site-1", round=1)
    assert [e.detail["did"] for e in hit] == [action]
    first, second = run.pids()
    deferred = run.one(EventKind.DEFERRED_STOP_START, round=1)
    stop = run.events(EventKind.STOP_REQUESTED, pid=first)[0]
    assert stop.ts - deferred.ts >= stop_wait, "the stop did not wait for a natural exit"
    assert run.signals(first) == ["SIGTERM"]
    sigterm = run.one(EventKind.SIGNAL_SENT, pgid=first)
    assert sigterm.ts >= stop.ts
    assert run.one(EventKind.REAPED, process="client-site-1", pid=first).detail["returncode"] == (
        -signal.SIGTERM
    )
    assert run.one(EventKind.LAUNCH, pid=second).ts > sigterm.ts
    assert run.one(EventKind.ROUND_END, round=2).detail["ok"] is True
    assert run.result.ok, run.result.error


@proves("slow_start")
def test_slow_start_calls_init_late_and_the_job_waits_for_it() -> None:
    run = run_faults([{"fault": "slow_start", "site": "site-1", "delay": "500ms"}])
    hit = run.failpoints("agent.before_init", process="train-site-1")
    assert [e.detail["did"] for e in hit] == ["sleep(500)"]
    assert run.one(EventKind.INIT).ts - run.one(EventKind.LAUNCH).ts >= 0.5
    assert run.result.ok, run.result.error


@pytest.mark.slow
def test_slow_start_longer_than_heartbeat_waits_for_pre_init() -> None:
    run = run_faults([{"fault": "slow_start", "delay": "800ms"}], heartbeat=0.5)
    assert run.result.ok, run.result.error


@proves("crash")
def test_crash_fails_the_round_promptly_saying_the_process_ended() -> None:
    execution = 20.0
    run = run_faults(
        [{"fault": "crash", "at": "after_task_received", "code": 3}], execution=execution
    )
    hit = run.failpoints("agent.after_task_received", process="train-site-1")
    assert [e.detail["did"] for e in hit] == ["exit(3)"]
    (pid,) = run.pids()
    assert run.one(EventKind.REAPED, process="client-site-1", pid=pid).detail["returncode"] == 3
    assert not run.result.ok
    assert "site-1: training process ended" in str(run.result.error)
    assert run.result.seconds < execution / 4, "the failure waited for the execution timeout"


@proves("heartbeat_loss")
@pytest.mark.parametrize(("duration", "peer_gone"), [(None, True), ("200ms", False)])
def test_heartbeat_loss_makes_the_client_report_peer_gone(
    duration: str | None, peer_gone: bool
) -> None:
    """One process for the job; aggregation outlasts the heartbeat timeout, so between the
    result and the job's end only heartbeats prove the process alive.  A pause shorter than
    the timeout changes nothing."""
    heartbeat = 2.0  # longer than a process start on a loaded machine
    entry: dict[str, object] = {"fault": "heartbeat_loss"}
    if duration is not None:
        entry["duration"] = duration
    run = run_faults(
        [entry, {"fault": "slow_aggregation", "delay": "2600ms"}],
        launch_once=True,
        heartbeat=heartbeat,
        heartbeat_interval=0.1,
        stop_wait=0.5,
    )
    hit = run.failpoints("pipe_handler.before_heartbeat", process="train-site-1")
    assert [e.detail["did"] for e in hit] == ["hang" if duration is None else "sleep(200)"]
    silence = [
        e
        for e in run.events(EventKind.STATUS_EVENT, process="client-site-1", topic="PEER_GONE")
        if "nothing heard from the peer" in str(e.detail["reason"])
    ]
    if peer_gone:
        (event,) = silence
        # The result was the last thing the agent sent, and it left after task_received.
        assert event.ts - run.one(EventKind.TASK_RECEIVED).ts >= heartbeat
    else:
        assert silence == []
    assert run.result.ok, run.result.error


@proves("broken_pipe")
def test_broken_pipe_fails_the_round_promptly() -> None:
    execution = 20.0
    run = run_faults([{"fault": "broken_pipe", "at": "after_task_received"}], execution=execution)
    hit = run.failpoints("agent.after_task_received", process="train-site-1")
    assert [e.detail["did"] for e in hit] == ["call(break_pipe)"]
    reported = run.one(EventKind.STATUS_EVENT, process="client-site-1", topic="PEER_GONE")
    assert "broken pipe" in str(reported.detail["reason"])
    assert not run.result.ok
    assert "pipe handler stopped" in str(run.result.error)
    assert run.result.seconds < execution / 4, "the failure waited for the execution timeout"


@proves("corrupt_chunk")
def test_corrupt_chunk_is_fetched_again_and_never_aggregated() -> None:
    run = run_faults(
        [{"fault": "corrupt_chunk", "site": "site-1", "round": 1, "times": 2}], sites=2
    )
    hit = run.failpoints("download.corrupt_chunk.1")
    assert [(e.process, e.detail["did"]) for e in hit] == [("train-site-1", "return")] * 2
    retries = run.events(EventKind.DOWNLOAD_RETRY, site="site-1")
    assert retries, "no corrupt chunk was caught"
    assert all("digest mismatch" in str(e.detail["reason"]) for e in retries)
    assert not run.events(EventKind.DOWNLOAD_RETRY, site="site-2")
    assert run.result.ok, run.result.error
    assert_exact_model(run)


def test_corrupt_chunk_times_is_the_number_of_failed_attempts_at_the_named_chunk() -> None:
    run = run_faults(
        [{"fault": "corrupt_chunk", "site": "site-1", "round": 1, "times": 3, "chunk": "last"}]
    )
    last = SMALL.size_bytes - CHUNK
    retries = run.events(EventKind.DOWNLOAD_RETRY, site="site-1")
    assert [(r.detail["offset"], r.detail["reason"]) for r in retries] == [
        (last, f"corrupt chunk at offset {last}: digest mismatch")
    ] * 3
    assert run.result.ok, run.result.error
    assert_exact_model(run)


@proves("slow_aggregation")
def test_slow_aggregation_aggregates_late() -> None:
    run = run_faults([{"fault": "slow_aggregation", "delay": "500ms"}], sites=2)
    hit = run.failpoints("server.before_aggregate", process="harness")
    assert [e.detail["did"] for e in hit] == ["sleep(500)"]
    last_download = max(e.ts for e in run.events(EventKind.DOWNLOAD_DONE))
    assert run.one(EventKind.AGGREGATED).ts - last_download >= 0.5
    assert run.result.ok, run.result.error
    assert_exact_model(run)


@proves("aux_event")
@pytest.mark.parametrize(
    ("at", "lands_on"),
    [
        (None, EventKind.TASK_SENT),
        ("during_execute", EventKind.TASK_SENT),
        ("launch", EventKind.PIPE_CLEARED),
        ("init", EventKind.INIT_SEEN),
    ],
)
def test_aux_event_anywhere_in_execute_is_deferred(
    at: str | None, lands_on: EventKind
) -> None:
    entry: dict[str, object] = {"fault": "aux_event", "round": 2}
    if at is not None:
        entry["at"] = at
    run = run_faults([entry], rounds=2)
    fault = run.one(EventKind.FAULT, fault="aux_event")
    point = run.one(lands_on, round=2, process="client-site-1")
    assert fault.round == 2 and fault.ts >= point.ts
    ignored = run.one(EventKind.STATUS_IGNORED, topic="aux-task")
    assert ignored.detail["reason"] == "execute() is running"
    assert ignored.round == 2
    assert run.one(EventKind.RESULT_RECEIVED, round=2).ts >= fault.ts
    assert run.result.ok, run.result.error


@proves("stop_error")
def test_stop_error_still_opens_the_round_boundary() -> None:
    stop_wait = 8.0
    run = run_faults(
        [{"fault": "stop_error", "round": 1}],
        rounds=2,
        download_complete=stop_wait,
        stop_wait=stop_wait,
    )
    hit = run.failpoints("executor.deferred_stop.before_stop", process="harness", round=1)
    assert [e.detail["did"] for e in hit] == ["raise(RuntimeError, injected stop_task failure)"]
    deferred = run.one(EventKind.DEFERRED_STOP_START, round=1)
    assert run.one(EventKind.DEFERRED_STOP_DONE, round=1).ts >= hit[0].ts
    _, second = run.pids()
    assert run.one(EventKind.LAUNCH, pid=second).ts - deferred.ts < stop_wait / 2
    assert run.result.ok, run.result.error
    assert run.result.seconds < stop_wait


@proves("slow_stop")
def test_slow_stop_reaps_late_and_the_next_launch_waits_for_it() -> None:
    run = run_faults([{"fault": "slow_stop", "round": 1, "delay": "500ms"}], rounds=2)
    hit = run.failpoints("executor.deferred_stop.after_wait", process="harness", round=1)
    assert [e.detail["did"] for e in hit] == ["sleep(500)"]
    seen = run.one(EventKind.EXIT_SEEN, round=1)
    first, second = run.pids()
    assert seen.detail["pid"] == first
    reaped = run.one(EventKind.REAPED, process="client-site-1", pid=first)
    assert reaped.ts - seen.ts >= 0.5, "the exited process was reaped on time"
    waited = run.events(EventKind.ROUND_BOUNDARY_WAIT, round=2)[0]  # the launch's, not the end's
    assert waited.ts < reaped.ts
    assert (
        run.one(EventKind.LAUNCH, pid=second).ts
        >= run.one(EventKind.DEFERRED_STOP_DONE, round=1).ts
    )
    assert not run.events(EventKind.LAUNCH_SKIPPED)
    assert run.result.ok, run.result.error


@proves("stale_pipe_message")
@pytest.mark.parametrize("topic", ["END", "PEER_GONE"])
def test_stale_pipe_message_is_cleared_before_the_next_round(topic: str) -> None:
    run = run_faults([{"fault": "stale_pipe_message", "round": 2, "topic": topic}], rounds=2)
    fault = run.one(EventKind.FAULT, fault="stale_pipe_message")
    assert fault.detail["affects_round"] == 2
    cleared = run.one(EventKind.PIPE_CLEARED, round=2)
    assert cleared.detail["dropped"] >= 1
    assert cleared.ts >= fault.ts
    result_in = run.one(EventKind.RESULT_RECEIVED, round=2)
    early = [
        e
        for e in run.events(EventKind.STATUS_EVENT, handler="site-1-round-2")
        if e.ts < result_in.ts
    ]
    assert early == [], "round 2's handler read the stale message"
    assert run.result.ok, run.result.error


@proves("ignore_sigterm")
def test_ignore_sigterm_makes_the_stop_escalate_to_sigkill() -> None:
    grace = 0.2
    run = run_faults(
        [{"fault": "stuck_exit", "round": 1}, {"fault": "ignore_sigterm"}],
        download_complete=0.5,
        stop_wait=0.5,
        stop_grace=grace,
    )
    (pid,) = run.pids()
    assert run.signals(pid) == ["SIGTERM", "SIGKILL"]
    sigterm, sigkill = run.events(EventKind.SIGNAL_SENT, pgid=pid)
    assert sigkill.ts - sigterm.ts >= grace
    ignored = run.one(EventKind.FAULT, fault="ignore_sigterm")  # acted: a SIGTERM swallowed
    assert (ignored.pid, ignored.detail["did"], ignored.detail["fault_id"]) == (
        pid, "ignored SIGTERM", 1
    )
    stop = run.events(EventKind.STOP_REQUESTED, pid=pid)[0]  # SIGTERM is recorded once sent
    assert stop.ts <= ignored.ts <= sigkill.ts
    assert run.one(EventKind.REAPED, process="client-site-1", pid=pid).detail["returncode"] == (
        -signal.SIGKILL
    )
    assert run.result.ok, run.result.error


@pytest.mark.slow
def test_ignore_sigterm_strikes_only_the_site_it_names() -> None:
    run = run_faults(
        [{"fault": "stuck_exit"}, {"fault": "ignore_sigterm", "site": "site-2"}],
        sites=2,
        download_complete=0.5,
        stop_wait=0.5,
        stop_grace=0.2,
    )
    one, two = (run.one(EventKind.LAUNCH, site=site).detail["pid"] for site in ("site-1", "site-2"))
    assert run.signals(one) == ["SIGTERM"], "site-1's process did not ignore SIGTERM"
    assert run.signals(two) == ["SIGTERM", "SIGKILL"]
    assert [e.site for e in run.events(EventKind.FAULT, fault="ignore_sigterm")] == ["site-2"]
    assert run.result.ok, run.result.error


@pytest.mark.slow
def test_a_script_behaviour_that_never_acts_records_nothing() -> None:
    """No stop ever signals a process that exits by itself: nothing was ignored."""
    run = run_faults([{"fault": "ignore_sigterm"}], rounds=2)
    assert all(run.signals(pid) == [] for pid in run.pids())
    assert run.events(EventKind.FAULT) == []
    assert run.result.ok, run.result.error


@proves("orphan_child")
def test_orphan_child_does_not_outlive_the_run() -> None:
    launched: list[int] = []
    children: list[psutil.Process] = []

    def find_children(event: Event) -> None:
        """At task_sent the process has called init(), so its child is running."""
        if event.kind is EventKind.LAUNCH:
            launched.append(int(event.detail["pid"]))
        elif event.kind is EventKind.TASK_SENT and launched:
            with contextlib.suppress(psutil.Error):  # asserted below: no child found
                children.extend(psutil.Process(launched[-1]).children())

    run = run_faults([{"fault": "orphan_child"}], on_event=find_children)
    assert len(children) == 1, "the training process should have started one child"
    started = run.one(EventKind.FAULT, fault="orphan_child")
    assert started.detail["child_pid"] == children[0].pid
    assert all(gone(child) for child in children)
    assert all("SIGKILL" in run.signals(pid) for pid in run.pids())
    assert run.result.ok, run.result.error


@pytest.mark.slow
def test_orphan_child_strikes_only_the_round_it_names() -> None:
    run = run_faults([{"fault": "orphan_child", "round": 2}], rounds=2)
    first, second = run.pids()
    assert [(e.round, e.pid) for e in run.events(EventKind.FAULT, fault="orphan_child")] == [
        (2, second)
    ]
    assert "SIGKILL" in run.signals(second)
    assert "SIGKILL" not in run.signals(first), "round 1's process had a child to kill"
    assert run.result.ok, run.result.error


def _live(act: Callable[[Event, Mapping[str, object], Timeline], str | None]) -> Timeline:
    """A timeline with one stale_peer_gone live action attached, triggered once."""
    spec = replace(fault_spec({"fault": "stale_peer_gone", "round": 2}), index=4)
    action = LiveAction(spec, "test", lambda e: e.kind is EventKind.TASK_SENT, act)
    timeline = Timeline("server")
    action.attach(timeline, {})
    timeline.record(EventKind.TASK_SENT, site="site-1", round=2)
    return timeline


def test_a_live_action_records_its_fault_only_when_it_acted() -> None:
    def fails(event: Event, executors: object, timeline: Timeline) -> str | None:
        timeline.record(EventKind.ERROR, reason="nothing to act on")
        return None

    def acts(event: Event, executors: object, timeline: Timeline) -> str | None:
        timeline.record(EventKind.STATUS_EVENT, site="site-1", round=2)  # what it caused
        return "did it"

    assert _live(fails).events(EventKind.FAULT) == []
    timeline = _live(acts)
    [fault] = timeline.events(EventKind.FAULT)
    assert (fault.site, fault.round, fault.detail["fault_id"], fault.detail["did"]) == (
        "site-1", 2, 4, "did it"
    )
    [caused] = timeline.events(EventKind.STATUS_EVENT)
    assert fault.ts <= caused.ts, "the act is stamped when it began, before what it caused"


def test_every_catalog_fault_is_proven_here() -> None:
    assert sorted(PROVEN) == sorted(CATALOG)
    assert all(name in globals() for name in PROVEN.values())


# -- parameter validation ------------------------------------------------------------------

BAD_VALUES: list[tuple[dict[str, object], str, str]] = [
    ({"fault": "delayed_download", "delay": "soon"}, "delay", "invalid duration 'soon'"),
    ({"fault": "early_sigterm", "at": "after_result_sent", "signal": "SIGTREM"}, "signal",
     "unknown signal 'SIGTREM'"),
    ({"fault": "stale_peer_gone", "round": 2, "from_round": 0}, "from_round", "must be >= 1"),
    ({"fault": "stuck_exit", "mode": "hangs"}, "mode", "invalid value 'hangs'"),
    ({"fault": "slow_start", "delay": "-1s"}, "delay", "negative duration '-1s'"),
    ({"fault": "crash", "at": "after_task_received", "code": "three"}, "code",
     "expected an integer, got 'three'"),
    ({"fault": "heartbeat_loss", "duration": True}, "duration", "expected a duration"),
    ({"fault": "broken_pipe", "at": "mid_downlaod"}, "at", "invalid value 'mid_downlaod'"),
    ({"fault": "corrupt_chunk", "times": 0}, "times", "must be >= 1"),
    ({"fault": "slow_aggregation"}, "delay", "needs parameter 'delay'"),
    ({"fault": "slow_stop", "round": 1}, "delay", "needs parameter 'delay'"),
    ({"fault": "aux_event", "delay": "1s"}, "delay", "unknown parameter 'delay'"),
    ({"fault": "stop_error", "times": 2}, "times", "unknown parameter 'times'"),
    ({"fault": "stale_pipe_message", "round": 2, "topic": "ENDS"}, "topic",
     "invalid value 'ENDS'"),
    ({"fault": "ignore_sigterm", "signal": "SIGTERM"}, "signal", "unknown parameter 'signal'"),
    ({"fault": "orphan_child", "count": 2}, "count", "unknown parameter 'count'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "key", "reason"), BAD_VALUES, ids=[str(e["fault"]) for e, _, _ in BAD_VALUES]
)
def test_a_bad_parameter_is_refused_naming_key_and_problem(
    entry: dict[str, object], key: str, reason: str
) -> None:
    with pytest.raises(ParamError) as caught:
        validate_params(str(entry["fault"]), entry, "faults[0]")
    assert caught.value.key == key
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{key}: ")


@pytest.mark.parametrize("fault", list(CATALOG))
def test_loader_schema_and_docs_take_exactly_the_scopes_the_catalog_declares(fault: str) -> None:
    scopes = CATALOG[fault].scopes
    [branch] = [
        b
        for b in shipped_schema()["$defs"]["fault"]["allOf"]
        if b["if"]["properties"]["fault"]["const"] == fault
    ]
    assert [k for k in SCOPE_KEYS if k in branch["then"]["properties"]] == list(scopes)
    taken = _doc_section(fault).split("**Scope:** ")[1].split("(")[0].split(".")[0]
    assert [k for k in SCOPE_KEYS if f"`{k}`" in taken] == list(scopes)
    example = dict(CATALOG[fault].example)
    for key in SCOPE_KEYS:
        entry = {**example, key: "site-1" if key == "site" else 2}
        if key in scopes:
            validate_params(fault, entry, "faults[0]")
            continue
        with pytest.raises(ParamError) as refused:
            validate_params(fault, entry, "faults[0]")
        assert refused.value.key == key
        assert f"does not take {key!r}" in refused.value.reason
        assert key not in refused.value.valid and set(scopes) <= set(refused.value.valid)


def test_close_typos_get_a_suggestion_and_the_valid_choices() -> None:
    cases = {
        "signal": ({"fault": "early_sigterm", "at": "after_download", "signal": "SIGTREM"},
                   "SIGTERM"),
        "mode": ({"fault": "stuck_exit", "mode": "hangs"}, "hang"),
        "at": ({"fault": "broken_pipe", "at": "mid_downlaod"}, "mid_download"),
        "topic": ({"fault": "stale_pipe_message", "topic": "ENDS"}, "END"),
    }  # fmt: skip
    for key, (entry, suggestion) in cases.items():
        with pytest.raises(ParamError) as caught:
            validate_params(str(entry["fault"]), entry, "faults[0]")
        assert (caught.value.key, caught.value.suggestion) == (key, suggestion)
        assert suggestion in caught.value.valid


def test_every_fault_has_a_bad_value_case() -> None:
    assert sorted({str(e["fault"]) for e, _, _ in BAD_VALUES}) == sorted(CATALOG)


# -- docs/faults.md ------------------------------------------------------------------------


def test_docs_hold_exactly_the_rendered_catalog_section() -> None:
    text = FAULTS_DOC.read_text()
    assert "## Failpoint syntax" in text.partition(SECTION_HEADING)[0]
    assert current_section(text) == render_catalog(), (
        "docs/faults.md is out of date: run "
        "python -m pytest_flrelia.tools.catalog_docs --write docs/faults.md"
    )


def _doc_section(fault: str) -> str:
    rendered = render_catalog()
    match = re.search(rf"^### {fault}\n(.*?)(?=^### |\Z)", rendered, re.S | re.M)
    assert match is not None, f"no section for {fault}"
    return match.group(1)


@pytest.mark.parametrize("fault", list(CATALOG))
def test_each_section_names_what_the_fault_plan_injects(fault: str) -> None:
    """The mechanics sentence cannot drift from faults.py: every failpoint, script
    behaviour and live action the plan builds from the example is named in it."""
    entry = CATALOG[fault].example
    plan = build_plan([fault_spec(entry)], JobConfig(rounds=3))
    section = _doc_section(fault)
    for failpoint in (*plan.local_failpoints, *plan.subprocess_failpoints):
        parts = re.fullmatch(r"([^\[=@]+)(?:\[[^\]]*\])?@[a-z_]+#0=(?:\d+\*)?(.*)", failpoint)
        assert parts is not None, failpoint
        name, action = parts.groups()
        if not action.startswith("call("):
            action = action.split("(")[0]
        if "at" in entry:
            assert name == AT_FAILPOINTS[str(entry["at"])], failpoint
            assert "`<at point>=" in section, failpoint
            assert f"| `{entry['at']}` | `{name}` |" in render_catalog()
        else:
            assert f"`{name}" in section, failpoint
        assert action in section, failpoint
        where = "In-process" if failpoint in plan.local_failpoints else "Subprocess"
        assert f"{where} failpoint" in section
    for behaviour in plan.script_behaviours:
        name, tag = re.split(r"(?:\[[^\]]*\])?@", behaviour)
        assert tag == f"{fault}#0", behaviour
        assert f"FLRELIA_SCRIPT_BEHAVIOUR={name}" in section
    assert ("Live action" in section) == bool(plan.live_actions)
    for invariant in CATALOG[fault].voids:
        assert f"`{invariant}`" in section.partition("**Voids:**")[2]
    for param in CATALOG[fault].params:
        assert f"| `{param}` |" in section


def test_rendered_examples_are_the_catalog_examples_and_valid() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", render_catalog(), re.S)
    examples = [yaml.safe_load(block)["faults"][0] for block in blocks]
    assert examples == [dict(f.example) for f in CATALOG.values()]
    for example in examples:
        validate_params(example["fault"], example, "example")


def test_mechanics_are_written_for_exactly_the_catalog() -> None:
    assert sorted(MECHANICS) == sorted(CATALOG)


def test_main_prints_the_section_and_writes_it_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert catalog_docs.main([]) == 0
    assert capsys.readouterr().out == render_catalog()
    page = tmp_path / "faults.md"
    page.write_text(f"# Faults\n\n## Failpoint syntax\n\nkept\n\n{SECTION_HEADING}\n\nold\n")
    assert catalog_docs.main(["--write", str(page)]) == 0
    assert page.read_text() == "# Faults\n\n## Failpoint syntax\n\nkept\n\n" + render_catalog()
