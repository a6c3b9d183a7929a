"""The event contract: what a target records, in which lane, with which detail keys.

Every event has a *lane* (``Event.process``): the server, one site's client (the
launcher side), one site's training process, or the harness.  Lanes are built and
read by the functions here, never by string prefixes elsewhere.  ``Event.pid`` is
always the OS process that recorded the event; a process an event is *about* is
``detail["pid"]``.

:data:`CONTRACT` says, per :class:`EventKind`, which lane records it and which
detail keys it must carry; :func:`violations` checks a run's events against it.
Which checks read which kinds is the judge's to declare
(``pytest_flrelia.judge``); ``docs/events.md`` shows both, generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from pytest_flrelia.contract.timeline import Event, EventKind


class LaneKind(str, Enum):
    """Who records an event."""

    SERVER = "server"
    CLIENT = "client"
    """One site's client: the launcher, the executor, its pipe handler."""
    TRAINING = "train"
    """One site's training process (the subprocess the launcher started)."""
    HARNESS = "harness"
    """The harness itself: injected faults, bounds, live checks."""


@dataclass(frozen=True)
class Lane:
    kind: LaneKind
    site: str | None = None

    def __str__(self) -> str:
        return self.kind.value if self.site is None else f"{self.kind.value}-{self.site}"


def server_lane() -> str:
    return str(Lane(LaneKind.SERVER))


def harness_lane() -> str:
    return str(Lane(LaneKind.HARNESS))


def client_lane(site: str) -> str:
    return str(Lane(LaneKind.CLIENT, site))


def training_lane(site: str) -> str:
    return str(Lane(LaneKind.TRAINING, site))


def lane_of(process: str) -> Lane | None:
    """The lane a ``Event.process`` names, or ``None`` if it names none of the contract."""
    for kind in LaneKind:
        if process == kind.value and kind in (LaneKind.SERVER, LaneKind.HARNESS):
            return Lane(kind)
        prefix = f"{kind.value}-"
        if kind in (LaneKind.CLIENT, LaneKind.TRAINING) and process.startswith(prefix):
            return Lane(kind, process[len(prefix):])
    return None


def in_lane(event: Event, kind: LaneKind) -> bool:
    lane = lane_of(event.process)
    return lane is not None and lane.kind is kind


def is_training(event: Event) -> bool:
    """Recorded by a training process (not by the launcher that watches it)."""
    return in_lane(event, LaneKind.TRAINING)


@dataclass(frozen=True)
class EventSpec:
    """The contract of one event kind."""

    lanes: frozenset[LaneKind]
    """Who may record it."""
    required: tuple[str, ...] = ()
    """Detail keys it must carry."""
    meaning: str = ""
    """One line: what happened when it is recorded (and what ``detail["pid"]`` is, if any)."""
    any_of: tuple[str, ...] = ()
    """Keys of which it must carry at least one (two ways of saying the same thing)."""


_SERVER = frozenset({LaneKind.SERVER})
_CLIENT = frozenset({LaneKind.CLIENT})
_TRAINING = frozenset({LaneKind.TRAINING})
_PIPE_ENDS = frozenset({LaneKind.CLIENT, LaneKind.TRAINING})
"""Both ends of a site's pipe: the client side and the training process."""
_ANY = frozenset(LaneKind)
_TENSOR_DIGESTS = ("bytes_digest", "checksum")
"""How a tensor's content is named: the digest of its bytes, or the reference's chunk checksum."""


def _spec(lanes: frozenset[LaneKind], meaning: str, *required: str) -> EventSpec:
    return EventSpec(lanes=lanes, required=required, meaning=meaning)


CONTRACT: Mapping[EventKind, EventSpec] = MappingProxyType({
    EventKind.JOB_START: _spec(_SERVER, "The job began (before any site started)."),
    EventKind.JOB_END: _spec(_SERVER, "The job ended, every site joined (`ok`, `error`)."),
    EventKind.ROUND_START: _spec(_SERVER, "The server sent round `round`'s task to every site."),
    EventKind.ROUND_END: _spec(
        _SERVER, "Round `round` ended: `ok`, and the `error` that failed it (or null).",
        "ok", "error",
    ),
    EventKind.LAUNCH: _spec(
        _CLIENT, "The launcher started a training process; `pid` is that new process.", "pid"
    ),
    EventKind.LAUNCH_SKIPPED: _spec(
        _CLIENT, "No launch: `pid` is the training process still running that takes the task."
    ),
    EventKind.INIT: _spec(
        _TRAINING, "The training process called `init()` (its client API is up)."
    ),
    EventKind.INIT_SEEN: _spec(
        _CLIENT, "The client saw a fresh training process's HELLO; `pid` is that process."
    ),
    EventKind.TASK_SENT: _spec(
        _CLIENT, "The client sent round `round`'s task to its training process."
    ),
    EventKind.TASK_RECEIVED: _spec(_TRAINING, "The training process received its task."),
    EventKind.RESULT_SENT: _spec(
        _TRAINING, "The training process sent its result, with `tensors` left to download.",
        "tensors",
    ),
    EventKind.RESULT_RECEIVED: _spec(
        _CLIENT, "The client received the result (`tensors`: how many to download).", "tensors"
    ),
    EventKind.SUBMIT: _spec(_SERVER, "A site's result (`ok`) or failure reached the server."),
    EventKind.DOWNLOAD_START: _spec(_SERVER, "The server began downloading tensor `name`."),
    EventKind.DOWNLOAD_CHUNK: _spec(_SERVER, "The server received one chunk (`offset`, `nbytes`)."),
    EventKind.DOWNLOAD_RETRY: _spec(
        _SERVER, "A download attempt failed (`reason`); the server tries again from `offset`."
    ),
    EventKind.DOWNLOAD_DONE: EventSpec(
        _SERVER,
        ("name",),
        "Tensor `name` arrived whole: the `bytes_digest` of what the server added (byte-exact),"
        " or the `checksum` over its chunk digests.",
        any_of=_TENSOR_DIGESTS,
    ),
    EventKind.DOWNLOAD_FAILED: _spec(_SERVER, "A tensor's download gave up (`reason`)."),
    EventKind.TENSOR_SERVED: EventSpec(
        _TRAINING,
        ("name",),
        "The site served tensor `name` in full: the `bytes_digest` of what it published,"
        " or the `checksum` over its chunk digests (`tensors_intact` compares like with like).",
        any_of=_TENSOR_DIGESTS,
    ),
    EventKind.GATE_WAIT: _spec(
        _TRAINING, "The training process waits for the server to download its tensors."
    ),
    EventKind.GATE_OPEN: _spec(_TRAINING, "The download gate opened: every tensor was downloaded."),
    EventKind.GATE_TIMEOUT: _spec(_TRAINING, "The download gate timed out (`timeout`, `pending`)."),
    EventKind.GATE_CLOSED: _spec(
        _TRAINING, "The download gate was released because the download service closed."
    ),
    EventKind.AGGREGATED: _spec(_SERVER, "The server aggregated round `round`'s results."),
    EventKind.STOP_REQUESTED: _spec(
        _CLIENT, "The launcher begins to stop a training process; `pid` is that process.", "pid"
    ),
    EventKind.SIGNAL_SENT: _spec(
        _CLIENT, "The launcher sent `signal` to `target` (process group `pgid`).", "signal", "pgid"
    ),
    EventKind.EXIT: _spec(
        _TRAINING,
        "A training process exits by itself (`returncode`), recorded by it just before; "
        "`Event.pid` is that process.",
    ),
    EventKind.REAPED: _spec(
        _CLIENT,
        "The launcher reaped a training process: `pid` is that process, now gone (`returncode`).",
        "pid",
    ),
    EventKind.DEFERRED_STOP_START: _spec(
        _CLIENT, "The client waits (`wait`) for this round's process to exit by itself."
    ),
    EventKind.EXIT_SEEN: _spec(
        _CLIENT, "The deferred stop saw its process exit by itself; `pid` is that process."
    ),
    EventKind.DEFERRED_STOP_DONE: _spec(_CLIENT, "The deferred stop ended: its process is gone."),
    EventKind.ROUND_BOUNDARY_WAIT: _spec(
        _CLIENT, "The next task waits for the previous round's deferred stop (`timeout`)."
    ),
    EventKind.HANDLER_CREATED: _spec(_PIPE_ENDS, "A pipe handler (`handler`) was created."),
    EventKind.HANDLER_STOPPED: _spec(_PIPE_ENDS, "A pipe handler (`handler`) stopped."),
    EventKind.HANDLER_PAUSED: _spec(
        _PIPE_ENDS, "A pipe handler (`handler`) paused: it reads nothing until it resumes."
    ),
    EventKind.HANDLER_RESUMED: _spec(_PIPE_ENDS, "A paused pipe handler (`handler`) resumed."),
    EventKind.STATUS_EVENT: _spec(
        _PIPE_ENDS, "A pipe handler took a status message (`topic`, `reason`) and stops."
    ),
    EventKind.STATUS_IGNORED: _spec(
        _PIPE_ENDS, "A status message (`topic`) was ignored (`reason`: stale, deferred, filtered)."
    ),
    EventKind.LATE_MESSAGE: _spec(
        _PIPE_ENDS, "A stopped handler handed out a message its peer sent before it went away."
    ),
    EventKind.PIPE_CLEARED: _spec(
        _CLIENT, "The client dropped a previous round's messages (`dropped`)."
    ),
    EventKind.FRAME_REJECTED: _spec(
        _PIPE_ENDS, "A malformed or unauthenticated frame was rejected (`reason`)."
    ),
    EventKind.FAILPOINT: _spec(
        frozenset({LaneKind.HARNESS, LaneKind.TRAINING}),
        "A failpoint `name` acted (`action`) with no fault behind it.",
        "action",
    ),
    EventKind.FAULT: _spec(
        _ANY,
        "Planned fault `fault_id` (`fault`) acted: `did` says what it did, recorded by the "
        "process that delivered it (a fault that signals or ends its own process says so "
        "in the failpoint action words, `signal(SIGKILL)`, `exit(3)`: the judge reads them); "
        "`child_pid`, if any, is a process the fault started.",
        "fault", "fault_id", "did",
    ),
    EventKind.ERROR: _spec(
        _ANY,
        "Something failed (`reason` or `error`); a live violation names its `invariant`, and "
        "its `pid`, if any, is the process whose stop overran.",
    ),
})
"""Every kind's contract: the lanes that may record it, the detail keys a reader relies on
(each emitter always sets them), and what it means."""


def violations(events: Iterable[Event]) -> list[str]:
    """Each event that breaks :data:`CONTRACT`, one line each (empty: all keep it)."""
    problems: list[str] = []
    for event in events:
        spec = CONTRACT.get(event.kind)
        if spec is None:
            continue
        lane = lane_of(event.process)
        if lane is None or lane.kind not in spec.lanes:
            problems.append(
                f"{event.kind.value} recorded in lane {event.process!r}; "
                f"the contract allows {sorted(k.value for k in spec.lanes)}"
            )
        missing = [key for key in spec.required if key not in event.detail]
        if missing:
            problems.append(f"{event.kind.value} in lane {event.process} lacks {missing}")
        if spec.any_of and not any(key in event.detail for key in spec.any_of):
            problems.append(
                f"{event.kind.value} in lane {event.process} lacks one of {list(spec.any_of)}"
            )
    return problems


__all__ = [
    "CONTRACT",
    "EventSpec",
    "Lane",
    "LaneKind",
    "client_lane",
    "harness_lane",
    "in_lane",
    "is_training",
    "lane_of",
    "server_lane",
    "training_lane",
    "violations",
]
