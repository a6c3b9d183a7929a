"""The executor's round on real training subprocesses: results that race the process's
exit, the round-boundary fallback, the busy window and the derived stop wait."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.failpoints import FAILPOINTS_ENV
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from reference_impl.executor import LauncherExecutor
from reference_impl.job import run_job
from reference_impl.task_exchanger import AUX_DEFERRED

pytestmark = pytest.mark.slow

FAST = Timeouts.fast()
WAIT = 10.0
"""Upper bound of every wait of these tests on an event."""


def on_event(
    timeline: Timeline, kind: EventKind, where: Callable[[Event], bool]
) -> threading.Event:
    """An event set once ``timeline`` records a ``kind`` event matching ``where``."""
    seen = threading.Event()
    timeline.subscribe(lambda e: seen.set() if e.kind is kind and where(e) else None)
    return seen


@pytest.fixture
def clean_failpoints() -> Iterator[None]:
    yield
    failpoints.clear()


def test_a_result_queued_before_the_exit_is_taken_after_peer_gone(clean_failpoints: None) -> None:
    """The race of the flaky ``validate-round`` run, made deterministic: the client's
    reader is held back while the process sends its result and exits, so the heartbeat
    reports PEER_GONE and stops the handler before the result is read.  The result
    reached the pipe before the process exited: the round must take it."""
    timeline = Timeline("server")
    handler_stopped = on_event(
        timeline,
        EventKind.HANDLER_STOPPED,
        lambda e: e.process == "client-site-1" and e.detail.get("handler") == "site-1-round-1",
    )
    reader_held = threading.Event()

    def hold_reader() -> None:  # the client's reader, at its next read after arming
        reader_held.set()
        assert handler_stopped.wait(WAIT), "the handler was never stopped"

    def arm() -> None:  # the executor, just before it sends the task
        failpoints.add("pipe_handler.before_read[site=site-1,round=1]=1*call(hold_reader)")
        assert reader_held.wait(WAIT), "the reader never came back for its next read"

    failpoints.register_action("hold_reader", hold_reader)
    failpoints.register_action("arm", arm)
    failpoints.configure("executor.before_task_sent[site=site-1,round=1]=1*call(arm)")
    config = JobConfig(sites=1, rounds=1, validate_rounds=(1,), timeouts=FAST)

    result = run_job(config, timeline=timeline)

    assert reader_held.is_set() and handler_stopped.is_set()
    peer_gone = result.timeline.events(EventKind.STATUS_EVENT, site="site-1", round=1)
    assert [e.detail.get("topic") for e in peer_gone if e.process == "client-site-1"] == [
        "PEER_GONE"
    ]
    assert result.ok, result.error
    assert result.timeline.events(EventKind.LATE_MESSAGE, round=1), "taken from the pipe"
    assert result.timeline.events(EventKind.RESULT_RECEIVED, round=1)


CONTRADICTING = pytest.mark.filterwarnings(
    "ignore::pytest_flrelia.contract.timeout_checks.TimeoutConflictWarning"
)
"""For tests whose timeouts contradict on purpose (a stop shorter than the gate)."""


@CONTRADICTING
@pytest.mark.parametrize(
    ("stop_wait", "expected"), [(None, 1.0), (0.4, 0.4)], ids=["derived", "explicit"]
)
def test_the_executor_derives_stop_wait_from_download_complete_unless_set(
    stop_wait: float | None, expected: float
) -> None:
    """A drop-in user who sets only the gate's timeout gets a deferred stop that waits as
    long (it once stayed at the 1800 s default); an explicit ``stop_wait`` wins."""
    config = JobConfig(
        sites=1,
        rounds=1,
        tensors=TensorSpec(count=1, size_bytes=1024),
        timeouts=replace(FAST, download_complete=1.0, stop_wait=stop_wait, stop_grace=0.2),
    )
    result = run_job(config, subprocess_env={FAILPOINTS_ENV: "agent.before_exit[round=1]=hang"})
    assert result.ok, result.error
    (deferred,) = result.timeline.events(EventKind.DEFERRED_STOP_START, round=1)
    assert deferred.detail["wait"] == expected
    (pid,) = result.launched_pids
    stop = next(
        e for e in result.timeline.events(EventKind.STOP_REQUESTED) if e.detail.get("pid") == pid
    )
    assert expected <= stop.ts - deferred.ts < expected + 3.0, "the stop did not wait stop_wait"


def aux_events_deferred(
    points: dict[str, Callable[[Event], bool]], config: JobConfig, env: dict[str, str] | None = None
) -> tuple[JobResult, dict[str, str | None]]:
    """Run ``config``; deliver an auxiliary event named after each point from the thread
    that records the first event matching it (``before`` at start-up, before any
    ``execute()``).  Returns the job and, per point, the reason it was deferred (None:
    it was not deferred)."""
    timeline = Timeline("server")
    executors: dict[str, LauncherExecutor] = {}
    delivered: set[str] = set()

    def listener(event: Event) -> None:
        for name, matches in points.items():
            if name not in delivered and matches(event):
                delivered.add(name)
                executors["site-1"].exchanger.on_aux_event(name)

    def ready(site: str, executor: LauncherExecutor) -> None:
        executors[site] = executor
        if "before" in points:
            delivered.add("before")
            executor.exchanger.on_aux_event("before")

    timeline.subscribe(listener)
    result = run_job(config, timeline=timeline, on_site_ready=ready, subprocess_env=env)
    assert delivered == set(points), f"never delivered: {set(points) - delivered}"
    ignored = {
        e.detail["topic"]: e.detail["reason"]
        for e in result.timeline.events(EventKind.STATUS_IGNORED)
        if e.detail.get("topic") in points
    }
    return result, {name: ignored.get(name) for name in points}


def client(kind: EventKind, round: int) -> Callable[[Event], bool]:
    return lambda e: e.kind is kind and e.round == round and e.process == "client-site-1"


def test_the_busy_window_is_the_whole_execute() -> None:
    """Deferred from the launch step to the stop step; not before execute() or after it."""
    config = JobConfig(
        sites=1, rounds=1, tensors=TensorSpec(count=1, size_bytes=1024), timeouts=FAST
    )
    result, deferred = aux_events_deferred(
        {
            "before": lambda e: False,
            "launch": client(EventKind.PIPE_CLEARED, 1),
            "init": client(EventKind.INIT_SEEN, 1),
            "result": client(EventKind.TASK_SENT, 1),
            "stop-step": client(EventKind.DEFERRED_STOP_START, 1),
            "returned": lambda e: e.kind is EventKind.SUBMIT and e.round == 1,
        },
        config,
    )
    assert result.ok, result.error
    assert deferred == {
        "before": None,
        "launch": AUX_DEFERRED,
        "init": AUX_DEFERRED,
        "result": AUX_DEFERRED,
        "stop-step": AUX_DEFERRED,
        "returned": None,
    }


def test_the_busy_window_ends_when_execute_raises() -> None:
    """A launch that fails (the process dies before init) raises out of execute(): an
    aux event during that launch is deferred, one after the raise is not."""
    config = JobConfig(
        sites=1, rounds=1, tensors=TensorSpec(count=1, size_bytes=1024), timeouts=FAST
    )
    result, deferred = aux_events_deferred(
        {
            "launch": client(EventKind.PIPE_CLEARED, 1),
            "raised": lambda e: e.kind is EventKind.SUBMIT and e.round == 1,
        },
        config,
        env={FAILPOINTS_ENV: "agent.before_init=exit(3)"},
    )
    assert not result.ok and "has not called init" in str(result.site_errors.get("site-1"))
    assert deferred == {"launch": AUX_DEFERRED, "raised": None}


@CONTRADICTING
def test_a_deferred_stop_that_outlasts_its_bound_is_forced_once_and_round_two_runs(
    clean_failpoints: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Round 1's deferred stop hangs after it saw the exit: round 2 waits stop_wait +
    stop_grace + the margin, warns, forces the stop (reaping the old process once) and
    runs.  The hung stop wakes while round 2's process runs: it must leave that alone."""
    timeline = Timeline("server")
    released = threading.Event()

    def release(event: Event) -> None:
        if event.kind is EventKind.INIT_SEEN and event.round == 2 and not released.is_set():
            released.set()
            failpoints.release("executor.deferred_stop.after_wait")

    timeline.subscribe(release)
    config = JobConfig(
        sites=1,
        rounds=2,
        tensors=TensorSpec(count=1, size_bytes=1024),
        timeouts=replace(FAST, stop_wait=0.3, stop_grace=0.2),
    )
    with (
        caplog.at_level("WARNING", logger="reference_impl.executor"),
        failpoints.scoped("executor.deferred_stop.after_wait[round=1]=1*hang"),
    ):
        result = run_job(config, timeline=timeline)
    assert released.is_set()
    assert result.ok, result.error
    assert "the previous round's deferred stop did not finish within 1.5s; forcing it" in (
        caplog.text
    )
    first, second = result.launched_pids
    exits = [e for e in result.timeline.events(EventKind.REAPED) if e.process == "client-site-1"]
    assert [e.detail["pid"] for e in exits].count(first) == 1, "old process reaped once"
    assert [e.detail["returncode"] for e in exits if e.detail["pid"] == second] == [0]
    stops = result.timeline.events(EventKind.STOP_REQUESTED)
    round_two_result = result.timeline.events(EventKind.RESULT_RECEIVED, round=2)[0]
    assert not [
        e for e in stops if e.detail.get("pid") == second and e.ts < round_two_result.ts
    ], "round 1's late deferred stop stopped round 2's process"
    done = result.timeline.events(EventKind.DEFERRED_STOP_DONE, round=1)
    assert len(done) == 1
