"""Judging deadlines while a scenario runs, so a process that lingers or a stop that
hangs is reported in a second, not when the run ends or its bound passes.

Two invariants have a deadline that the in-process timeline shows as it happens
(sites are threads of this process; subprocess events arrive only when the job
ends, so they are not used here):

* ``prompt_exit`` (one process per round): after a site's round is released
  (its result had no tensors, or the server downloaded the last of them), the
  deferred stop must see that process exit (``exit_seen``, or the launcher's
  ``reaped``) within the target's ``Timing.exit_after_release`` plus one poll (plus
  its ``gate_lag`` after a download), and without a SIGTERM first: a process the
  deferred stop had to kill did not exit by itself (KB5, KB9).  Once the job's last
  round ended well (or any round failed) the job is being torn down: a SIGTERM then
  is the teardown's, not a violation (the deadlines already armed still hold).
* ``bounded_stop``: every ``stop_requested`` is followed by that pid's ``reaped``
  within ``stop_grace`` plus ``Timing.stop_margin`` (KB12 waits forever).

Each check is handed only the kinds it declares in :data:`LIVE_READS`.

Like :mod:`pytest_flrelia.harness.thread_watch`, a violation is recorded as an ERROR
event of the harness (marked :data:`LIVE_VIOLATION`, naming the invariant) and
aborts the run; :mod:`pytest_flrelia.judge.invariants` reports it.  Once the run is
aborted for any reason its teardown stops everything on purpose: no deadline
fires after that.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pytest_flrelia.contract.events import LaneKind, harness_lane, in_lane, is_training
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.target import Timing
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.judge.reads import Reads

LIVE_VIOLATION = "live_violation"
"""The ``error`` detail that marks an ERROR event as a violation a live check saw."""
PROMPT_EXIT = "prompt_exit"
BOUNDED_STOP = "bounded_stop"
LIVE_INVARIANTS = (PROMPT_EXIT, BOUNDED_STOP)
"""The invariants judged live; the watch arms only those a scenario checks."""

LIVE_READS: dict[str, Reads] = {
    PROMPT_EXIT: Reads(
        frozenset({EventKind.RESULT_RECEIVED, EventKind.DOWNLOAD_DONE}),
        frozenset(
            {EventKind.SIGNAL_SENT, EventKind.EXIT_SEEN, EventKind.REAPED, EventKind.ROUND_END}
        ),
    ),
    BOUNDED_STOP: Reads(
        frozenset({EventKind.STOP_REQUESTED}), frozenset({EventKind.REAPED, EventKind.EXIT})
    ),
}
"""The kinds each live check reads (``needs``, then ``optional``); it sees no other."""
JOIN_TIMEOUT = 5.0
"""How long closing the watch waits for its thread (it wakes at once when told to)."""

Key = tuple[str, str]
"""``(invariant, what)``: one armed deadline, e.g. ``("bounded_stop", "pid 123")``."""


@dataclass(order=True)
class Deadline:
    """A promise the runtime must keep by ``at`` (monotonic seconds)."""

    at: float
    key: Key = field(compare=False)
    invariant: str = field(compare=False)
    reason: str = field(compare=False)
    """What the ERROR event says if the promise is broken."""
    site: str | None = field(default=None, compare=False)
    round: int | None = field(default=None, compare=False)
    pid: int | None = field(default=None, compare=False)


@dataclass
class _SiteRound:
    """Where a per-round site is between its result and its process's exit."""

    round: int
    tensors: int
    downloaded: set[str] = field(default_factory=set)
    released_at: float | None = None
    exited: bool = False


class LiveWatch:
    """Arms deadlines from timeline events; one thread fires the first broken one.

    The listener runs in whichever thread recorded the event and only updates
    the table under a lock; the watcher thread waits on a condition with the
    next deadline as its timeout and is woken when a deadline is armed or the
    watch closes.
    """

    def __init__(
        self,
        timeline: Timeline,
        abort: threading.Event,
        *,
        invariants: Collection[str],
        job: JobConfig,
        on_violation: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        time_scale: float = 1.0,
        timing: Timing | None = None,
    ) -> None:
        timing = timing or Timing()
        self._timeline = timeline
        self._abort = abort
        self._job = job
        self._on_violation = on_violation
        self._clock = clock
        self._prompt_exit_seconds = timing.exit_after_release * time_scale
        self._poll = timing.poll_of(job, time_scale)
        self._gate_lag = timing.release_slack(time_scale)
        self._torn_down = False
        self._stop_margin = timing.stop_margin * time_scale
        self._prompt_exit = PROMPT_EXIT in invariants and not job.launch_once
        self._bounded_stop = BOUNDED_STOP in invariants
        self._cond = threading.Condition()
        self._heap: list[Deadline] = []
        self._armed: dict[Key, Deadline] = {}
        self._sites: dict[str, _SiteRound] = {}
        self._closed = False
        self.violation: Event | None = None
        """The ERROR event this watch recorded, if a deadline was broken."""
        self._thread = threading.Thread(target=self._run, name="flrelia-live-checks", daemon=True)
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def armed(self) -> bool:
        """Whether any invariant is judged live in this run."""
        return self._prompt_exit or self._bounded_stop

    def pending(self) -> list[Deadline]:
        """The deadlines armed now, soonest first (what a test or a report may look at)."""
        with self._cond:
            return sorted(self._armed.values())

    def start(self) -> None:
        if not self.armed:
            return
        self._unsubscribe = self._timeline.subscribe(self._on_event)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and end the watcher thread; deadlines still armed are left to
        the checks after the run."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(JOIN_TIMEOUT)

    # -- the listener: runs in the recording thread, must be quick ----------------

    def _on_event(self, event: Event) -> None:
        if is_training(event) or in_lane(event, LaneKind.HARNESS):
            return
        with self._cond:
            if self._prompt_exit and event.kind in LIVE_READS[PROMPT_EXIT].kinds:
                self._track_round(event)
            if self._bounded_stop and event.kind in LIVE_READS[BOUNDED_STOP].kinds:
                self._track_stop(event)

    def _track_round(self, event: Event) -> None:
        if event.kind is EventKind.ROUND_END:
            if not event.detail.get("ok") or event.round == self._job.rounds:
                self._torn_down = True  # what stops a process now is the job's teardown
            return
        site = event.site
        if site is None:
            return
        if event.kind is EventKind.RESULT_RECEIVED and event.round is not None:
            fresh = _SiteRound(event.round, int(event.detail.get("tensors", 0)))
            self._sites[site] = fresh
            if fresh.tensors == 0:
                self._release(site, fresh, event, "its result (nothing to download)")
            return
        state = self._sites.get(site)
        if state is None:
            return
        if event.kind is EventKind.DOWNLOAD_DONE and event.round == state.round:
            state.downloaded.add(str(event.detail.get("name")))
            if len(state.downloaded) == state.tensors and state.released_at is None:
                self._release(
                    site,
                    state,
                    event,
                    f"the download of its {state.tensors} tensors",
                    self._gate_lag,
                )
        elif event.kind is EventKind.SIGNAL_SENT and event.detail.get("signal") == "SIGTERM":
            if state.released_at is not None and not state.exited and not self._torn_down:
                # Killed, not exited: the violation is already certain.
                self._arm(
                    Deadline(
                        event.ts,
                        (PROMPT_EXIT, site),
                        PROMPT_EXIT,
                        f"{site} round {state.round}: its process was sent SIGTERM "
                        f"{event.ts - state.released_at:.2f}s after its round ended "
                        "instead of exiting by itself",
                        site,
                        state.round,
                    )
                )
        elif event.kind in (EventKind.EXIT_SEEN, EventKind.REAPED):
            state.exited = True
            self._disarm((PROMPT_EXIT, site))

    def _release(
        self, site: str, state: _SiteRound, event: Event, after: str, lag: float = 0.0
    ) -> None:
        state.released_at = event.ts
        if state.exited:  # the exit was recorded before the release was (a slow recorder)
            return
        limit = self._prompt_exit_seconds + self._poll + lag
        self._arm(
            Deadline(
                event.ts + limit,
                (PROMPT_EXIT, site),
                PROMPT_EXIT,
                f"{site} round {state.round}: its process had not exited {limit:.2f}s after "
                f"{after}",
                site,
                state.round,
            )
        )

    def _track_stop(self, event: Event) -> None:
        pid = event.detail.get("pid")
        if not isinstance(pid, int):
            return
        key = (BOUNDED_STOP, f"pid {pid}")
        if event.kind is EventKind.STOP_REQUESTED:
            limit = self._job.timeouts.stop_grace + self._stop_margin
            self._arm(
                Deadline(
                    event.ts + limit,
                    key,
                    BOUNDED_STOP,
                    f"the stop of pid {pid} had not reaped it {limit:.2f}s after it was "
                    f"requested (stop_grace {self._job.timeouts.stop_grace:g}s)",
                    event.site,
                    None,
                    pid,
                )
            )
        elif event.kind is EventKind.REAPED:
            self._disarm(key)

    def _arm(self, deadline: Deadline) -> None:
        self._armed[deadline.key] = deadline
        heapq.heappush(self._heap, deadline)
        self._cond.notify_all()

    def _disarm(self, key: Key) -> None:
        self._armed.pop(key, None)  # its heap entry is skipped when it comes up

    # -- the watcher thread ---------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                broken = self._next_broken()
            if broken is None:
                return
            self._fire(broken)

    def _next_broken(self) -> Deadline | None:
        """Wait for the first armed deadline to pass; None once the watch is closed."""
        while not self._closed:
            while self._heap and self._armed.get(self._heap[0].key) is not self._heap[0]:
                heapq.heappop(self._heap)  # kept, or replaced by a later deadline
            if not self._heap:
                self._cond.wait()  # woken by _arm or close
                continue
            remaining = self._heap[0].at - self._clock()
            if remaining <= 0:
                deadline = heapq.heappop(self._heap)
                del self._armed[deadline.key]
                return deadline
            self._cond.wait(remaining)
        return None

    def _fire(self, deadline: Deadline) -> None:
        if self._abort.is_set() or self.violation is not None:
            return  # aborted: the teardown stops everything, by design
        self.violation = self._timeline.record(
            EventKind.ERROR,
            process=harness_lane(),
            site=deadline.site,
            round=deadline.round,
            error=LIVE_VIOLATION,
            invariant=deadline.invariant,
            reason=deadline.reason,
            **({"pid": deadline.pid} if deadline.pid is not None else {}),
        )
        self._abort.set()
        if self._on_violation is not None:
            self._on_violation(self.violation)


@contextmanager
def watch_live(
    timeline: Timeline,
    abort: threading.Event,
    *,
    invariants: Collection[str],
    job: JobConfig,
    on_violation: Callable[[Event], None] | None = None,
    time_scale: float = 1.0,
    timing: Timing | None = None,
) -> Iterator[LiveWatch]:
    """Judge ``invariants`` (those of :data:`LIVE_INVARIANTS` among them) while the block runs;
    the margins come from the target's ``timing``, stretched by ``time_scale`` like the
    scenario's own durations."""
    watch = LiveWatch(
        timeline,
        abort,
        invariants=invariants,
        job=job,
        on_violation=on_violation,
        time_scale=time_scale,
        timing=timing,
    )
    watch.start()
    try:
        yield watch
    finally:
        watch.close()


def live_violations(events: Collection[Event], invariant: str) -> list[Event]:
    """The ERROR events a live check recorded for ``invariant``, in the order given."""
    return [
        e
        for e in events
        if e.kind is EventKind.ERROR
        and e.detail.get("error") == LIVE_VIOLATION
        and e.detail.get("invariant") == invariant
    ]


__all__ = [
    "BOUNDED_STOP",
    "LIVE_INVARIANTS",
    "LIVE_READS",
    "LIVE_VIOLATION",
    "PROMPT_EXIT",
    "LiveWatch",
    "live_violations",
    "watch_live",
]
