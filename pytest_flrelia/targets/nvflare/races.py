"""NVFlare's races, declared per version with the evidence a failed run must hold.

A :class:`~pytest_flrelia.contract.target.KnownRace` fails a few runs of any item it can
reach, so it is judged per run: the plugin asks each detector here about a failed run's
whole timeline, and only a run whose own events show the race is reported as it.  The
detectors read events alone (no nvflare import): they are tested on built timelines, and
the forced interleavings of :mod:`.interleave` reproduce each race for real.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pytest_flrelia.contract.target import KnownRace
from pytest_flrelia.contract.timeline import Event, EventKind
from pytest_flrelia.targets.nvflare.known_issues import DEFERRED_STOP

MONITOR_ABORT = "Launcher failed at time"
"""The reason ``_monitor_launcher`` triggers the current task's abort with for an exit
with a non-zero code."""
_EXITS = (EventKind.REAPED, EventKind.EXIT_SEEN)


def _at(ts: float, start: float) -> str:
    return f"+{(ts - start) * 1000:.1f}ms"


def _paused_at(events: Sequence[Event], site: str, handler: str, ts: float) -> Event | None:
    """The pause that holds ``handler`` of ``site`` at ``ts``, if it is paused then."""
    state: Event | None = None
    for e in events:
        if e.ts > ts:
            break
        if e.site == site and e.detail.get("handler") == handler:
            if e.kind is EventKind.HANDLER_PAUSED:
                state = e
            elif e.kind in (EventKind.HANDLER_RESUMED, EventKind.HANDLER_STOPPED):
                state = None
    return state


def _resumed_after(events: Sequence[Event], site: str, handler: str, ts: float) -> bool:
    return any(
        e.kind is EventKind.HANDLER_RESUMED and e.site == site
        and e.detail.get("handler") == handler and e.ts > ts
        for e in events
    )


def handler_left_paused(events: Sequence[Event]) -> str | None:
    """F5, exit 0: a round's training process called ``init`` while its CJ's pipe
    handler was paused, and the handler was never resumed after it, so the process's
    messages were never read (the monitor that paused it waits for a result instead)."""
    events = sorted(events, key=lambda e: e.ts)
    if not events:
        return None
    start = events[0].ts
    handlers = [e for e in events if e.kind is EventKind.HANDLER_CREATED]
    for init in (e for e in events if e.kind is EventKind.INIT):
        site = init.site
        current = [h for h in handlers if site is not None and h.site == site
                   and h.round == init.round and h.ts < init.ts]
        if site is None or not current:
            continue
        handler = str(current[-1].detail.get("handler"))
        pause = _paused_at(events, site, handler, init.ts)
        if pause is None or _resumed_after(events, site, handler, init.ts):
            continue
        evidence = (
            f"{site}: round {init.round}'s pipe handler {handler} was paused at "
            f"{_at(pause.ts, start)} by {pause.detail.get('by', 'a thread')} and never "
            f"resumed; its training process (pid {init.pid}) called init at "
            f"{_at(init.ts, start)}, unread"
        )
        monitor = _monitor_at_failure(events, site, init.ts)
        return evidence if monitor is None else f"{evidence}; then the monitor: {monitor}"
    return None


def _monitor_at_failure(events: Sequence[Event], site: str, after: float) -> str | None:
    """Where the launcher monitor was when the executor gave up on the process's init
    (the target reads it from the monitor thread's stack then), if it was recorded."""
    return next(
        (str(e.detail["monitor"]) for e in events
         if e.kind is EventKind.ERROR and e.site == site and e.ts > after
         and "monitor" in e.detail),
        None,
    )


def _texts(event: Event) -> Iterator[str]:
    for value in event.detail.values():
        if isinstance(value, str):
            yield value


def stale_exit_aborted_task(events: Sequence[Event]) -> str | None:
    """F5, non-zero exit: a round's task was aborted for a failed launcher while the
    process launched for that round had not exited: the failed exit was an earlier
    round's process, which the monitor took for the current task's."""
    events = sorted(events, key=lambda e: e.ts)
    if not events:
        return None
    start = events[0].ts
    for failure in events:
        if failure.site is None or failure.round is None:
            continue
        if not any(MONITOR_ABORT in text for text in _texts(failure)):
            continue
        site, round_ = failure.site, failure.round
        before = [e for e in events if e.site == site and e.ts < failure.ts]
        launched = {e.detail.get("pid") for e in before
                    if e.kind is EventKind.LAUNCH and e.round == round_}
        exited = [e for e in before if e.kind in _EXITS]
        if any(e.detail.get("pid") in launched for e in exited):
            continue  # the round's own process failed: no race in that
        earlier = [e for e in exited if e.round is not None and e.round < round_
                   and e.detail.get("returncode") not in (0, None)]
        if not earlier:
            continue
        old = earlier[-1]
        return (
            f"{site}: round {round_}'s task was aborted ('{MONITOR_ABORT} ...') at "
            f"{_at(failure.ts, start)} while no process of round {round_} had exited; the "
            f"failed exit was round {old.round}'s pid {old.detail.get('pid')} "
            f"(returncode {old.detail.get('returncode')}, {old.kind.value} at "
            f"{_at(old.ts, start)})"
        )
    return None


def monitor_race(events: Sequence[Event]) -> str | None:
    """Either branch of F5 (the abort first: it also leaves the handler paused)."""
    return stale_exit_aborted_task(events) or handler_left_paused(events)


F5 = KnownRace(
    name="F5",
    reason="the launcher monitor pauses the current pipe handler for an exited process "
    "and then tests the deferred-stop event: a deferred stop that ends in between makes "
    "it take the previous round's exit for the current task's",
    anchor="docs/nvflare-faults.md#f5-the-launcher-monitor-takes-an-old-exit-for-the-current-task",
    detect=monitor_race,
    versions=DEFERRED_STOP,
    details=(
        "`LauncherExecutor._monitor_launcher` (every 10 ms, under its lock) asks "
        "`check_run_status`; for an exited process it calls `pause_pipe_handler()` on the "
        "*current* handler, already the next round's once `BEFORE_TASK_EXECUTION` made it, "
        "and only then tests `_deferred_stop_event.is_set()`. When the deferred stop "
        "thread's `stop_task` and its `finally` run between the two, the monitor goes on "
        "as if the current task's process had ended: with exit code 0 it blocks in "
        "`_received_result.wait(last_result_transfer_timeout)` (300 s) and never resumes "
        "the handler, so the next process's `init` is never read and the round fails "
        "(\"External process has not called flare.init within timeout\", \"Failed "
        "external setup for task (train).\"); with a non-zero code it aborts the current "
        "task (\"Launcher failed at time ...\") and its loop ends."
    ),
)

KNOWN_RACES: tuple[KnownRace, ...] = (F5,)


__all__ = [
    "F5",
    "KNOWN_RACES",
    "MONITOR_ABORT",
    "handler_left_paused",
    "monitor_race",
    "stale_exit_aborted_task",
]
