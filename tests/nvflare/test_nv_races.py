"""F5's detectors on built timelines (no nvflare needed): each finds its branch of the
race in the events a run of it records, and stays silent on the runs that only look
alike: a handler paused and resumed as usual, a round whose own process failed, a
paused handler of a round whose process never called init."""

from __future__ import annotations

import threading
from typing import Any

from pytest_flrelia.contract.target import TargetInfo
from pytest_flrelia.contract.timeline import Event, EventKind
from pytest_flrelia.targets.nvflare.observe import monitor_whereabouts
from pytest_flrelia.targets.nvflare.races import (
    F5,
    MONITOR_ABORT,
    handler_left_paused,
    monitor_race,
    stale_exit_aborted_task,
)

MONITOR = "Thread-2 (_monitor_launcher)"


def _e(ts: float, kind: EventKind, round_: int | None, site: str = "site-1",
       process: str = "client-site-1", recorder: int = 10, **detail: Any) -> Event:
    """An event recorded by process ``recorder`` (the runner, 10, or a training process);
    a ``pid`` of ``detail`` is the training process it is about."""
    return Event(ts=ts, kind=kind, process=process, pid=recorder, site=site, round=round_,
                 detail=detail)


def _round_two(*, resumed: bool, init: bool = True) -> list[Event]:
    """Round 1's process exits in its deferred stop after round 2's handler exists; the
    monitor pauses that handler; round 2's process starts (and calls init)."""
    events = [
        _e(0.0, EventKind.HANDLER_CREATED, 1, handler="h1.1"),
        _e(1.0, EventKind.LAUNCH, 1, pid=100, launched_for=1),
        _e(5.0, EventKind.HANDLER_CREATED, 2, handler="h2.2"),
        _e(6.0, EventKind.HANDLER_PAUSED, 2, handler="h2.2", by=MONITOR),
        _e(6.2, EventKind.EXIT_SEEN, 1, pid=100, returncode=0),
        _e(6.3, EventKind.REAPED, 1, pid=100, returncode=0),
        _e(6.4, EventKind.LAUNCH, 2, pid=200, launched_for=2),
    ]
    if resumed:
        events.append(_e(6.45, EventKind.HANDLER_RESUMED, 2, handler="h2.2"))
    if init:
        events.append(_e(8.0, EventKind.INIT, 2, process="train-site-1", recorder=200))
    events.append(_e(36.0, EventKind.SUBMIT, 2, ok=False,
                     error="the task was aborted: Failed external setup for task (train)."))
    return events


def test_a_handler_left_paused_through_its_processs_init_is_f5() -> None:
    evidence = handler_left_paused(_round_two(resumed=False))
    assert evidence is not None
    assert "round 2's pipe handler h2.2 was paused at +6000.0ms" in evidence
    assert MONITOR in evidence
    assert "(pid 200) called init at +8000.0ms, unread" in evidence


def test_where_the_monitor_was_when_the_executor_gave_up_is_part_of_the_evidence() -> None:
    events = _round_two(resumed=False)
    wait = "_monitor_launcher line 548: if not self._received_result.wait(...):"
    events.append(_e(36.0, EventKind.ERROR, 2, reason="External process has not called "
                     "flare.init within timeout: 30.0", monitor=wait))
    evidence = handler_left_paused(events)
    assert evidence is not None and evidence.endswith(f"; then the monitor: {wait}")


def test_a_handler_resumed_when_its_process_started_is_not() -> None:
    assert handler_left_paused(_round_two(resumed=True)) is None


def test_a_paused_handler_whose_process_never_called_init_is_not() -> None:
    """Nothing was left unread: the round failed on something else (a slow start)."""
    assert handler_left_paused(_round_two(resumed=False, init=False)) is None


def test_a_handler_resumed_after_the_init_was_read_late_not_lost() -> None:
    events = _round_two(resumed=False)
    events.append(_e(9.0, EventKind.HANDLER_RESUMED, 2, handler="h2.2"))
    assert handler_left_paused(events) is None


def _sigterm_after_download(*, own_exit: bool) -> list[Event]:
    """Round 1's process is SIGTERM-killed after its download; round 2's task is
    aborted for a failed launcher."""
    events = [
        _e(1.0, EventKind.LAUNCH, 1, pid=100, launched_for=1),
        _e(5.0, EventKind.HANDLER_CREATED, 2, handler="h2.2"),
        _e(6.0, EventKind.EXIT_SEEN, 1, pid=100, returncode=-15),
        _e(6.1, EventKind.REAPED, 1, pid=100, returncode=-15),
        _e(6.2, EventKind.LAUNCH, 2, pid=200, launched_for=2),
    ]
    if own_exit:
        events.append(_e(7.0, EventKind.EXIT_SEEN, 2, pid=200, returncode=1))
    events.append(_e(8.0, EventKind.SUBMIT, 2, ok=False, error=(
        f"the task was aborted: {MONITOR_ABORT} 1796163997.04 ; Failed external setup "
        "for task (train).")))
    return events


def test_a_task_aborted_for_an_earlier_rounds_failed_exit_is_f5() -> None:
    evidence = stale_exit_aborted_task(_sigterm_after_download(own_exit=False))
    assert evidence is not None
    assert "round 2's task was aborted" in evidence
    assert "round 1's pid 100 (returncode -15, reaped at +5100.0ms)" in evidence


def test_a_task_aborted_because_its_own_process_failed_is_not() -> None:
    """``crash-mid-training``: the monitor is right, the round's process did fail."""
    assert stale_exit_aborted_task(_sigterm_after_download(own_exit=True)) is None


def test_an_abort_after_a_clean_earlier_exit_is_not() -> None:
    events = [
        e if e.kind not in (EventKind.EXIT_SEEN, EventKind.REAPED)
        else Event(e.ts, e.kind, e.process, e.pid, e.site, e.round,
                   {**e.detail, "returncode": 0})
        for e in _sigterm_after_download(own_exit=False)
    ]
    assert stale_exit_aborted_task(events) is None


def test_f5_is_declared_for_the_versions_with_the_deferred_stop_only() -> None:
    def info(version: str) -> TargetInfo:
        return TargetInfo(name="nvflare", faults={}, events=frozenset(), version=version,
                          known_races=(F5,))

    events = _round_two(resumed=False)
    for version in ("nvflare 2.7.2", "nvflare 2.8.3"):
        hit = info(version).known_race(events)
        assert hit is not None and hit[0] is F5
    for version in ("nvflare 2.7.1", "nvflare 2.7.2rc13"):
        assert info(version).known_race(events) is None
    assert monitor_race([]) is None
    assert info("nvflare 2.7.2").known_race(_round_two(resumed=True)) is None


class _Executor:
    """Holds a thread as ``LauncherExecutor`` holds its monitor."""

    def __init__(self, thread: threading.Thread) -> None:
        self._monitor_launcher_thread = thread


def test_the_monitors_whereabouts_are_read_from_its_stack() -> None:
    entered, release = threading.Event(), threading.Event()

    def _monitor_launcher() -> None:
        entered.set()
        release.wait(30.0)  # where the race leaves it: in a wait

    thread = threading.Thread(target=_monitor_launcher, daemon=True)
    executor = _Executor(thread)
    thread.start()
    try:
        assert entered.wait(30.0)
        where = monitor_whereabouts(executor)
        assert where.startswith("_monitor_launcher line ")
    finally:
        release.set()
        thread.join(30.0)
    assert monitor_whereabouts(executor) == "the monitor thread has ended"
    assert monitor_whereabouts(object()) == "no monitor thread"
