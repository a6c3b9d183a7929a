"""A typed, thread-safe record of what happened in a job, from every process.

Every component records :class:`Event` objects with a ``time.monotonic()``
timestamp.  On Linux that clock is system-wide (``CLOCK_MONOTONIC``), so events
recorded in the training subprocess and in the client/server process can be
merged and ordered.  Subprocesses append JSON lines to a file named by
:data:`TIMELINE_ENV` (one ``write`` per line on an ``O_APPEND`` file, so
concurrent writers never interleave inside a line); the job runner merges the
file into its in-memory :class:`Timeline` when the job ends.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

TIMELINE_ENV = "FLRELIA_TIMELINE"

log = logging.getLogger(__name__)


class EventKind(str, Enum):
    """What happened.  The value is the stable name used in reports and files."""

    JOB_START = "job_start"
    JOB_END = "job_end"
    ROUND_START = "round_start"
    ROUND_END = "round_end"
    LAUNCH = "launch"
    LAUNCH_SKIPPED = "launch_skipped"
    INIT = "init"
    INIT_SEEN = "init_seen"
    """The executor saw its fresh training process call ``init()`` (its HELLO)."""
    TASK_SENT = "task_sent"
    TASK_RECEIVED = "task_received"
    RESULT_SENT = "result_sent"
    RESULT_RECEIVED = "result_received"
    SUBMIT = "submit"
    DOWNLOAD_START = "download_start"
    DOWNLOAD_CHUNK = "download_chunk"
    DOWNLOAD_RETRY = "download_retry"
    DOWNLOAD_DONE = "download_done"
    DOWNLOAD_FAILED = "download_failed"
    TENSOR_SERVED = "tensor_served"
    GATE_WAIT = "gate_wait"
    GATE_OPEN = "gate_open"
    GATE_TIMEOUT = "gate_timeout"
    GATE_CLOSED = "gate_closed"
    """The gate was released because the download service closed (neither opened nor timed out)."""
    AGGREGATED = "aggregated"
    STOP_REQUESTED = "stop_requested"
    SIGNAL_SENT = "signal_sent"
    EXIT = "exit"
    """A training process is exiting by itself (recorded by that process, just before)."""
    REAPED = "reaped"
    """The launcher reaped the process ``detail["pid"]`` (``returncode``): it is gone."""
    DEFERRED_STOP_START = "deferred_stop_start"
    EXIT_SEEN = "exit_seen"
    """The deferred stop saw its process exit by itself (before it reaps it)."""
    DEFERRED_STOP_DONE = "deferred_stop_done"
    ROUND_BOUNDARY_WAIT = "round_boundary_wait"
    HANDLER_CREATED = "handler_created"
    HANDLER_STOPPED = "handler_stopped"
    HANDLER_PAUSED = "handler_paused"
    """A pipe handler stopped reading its pipe for a while (it is not stopped)."""
    HANDLER_RESUMED = "handler_resumed"
    STATUS_EVENT = "status_event"
    STATUS_IGNORED = "status_ignored"
    LATE_MESSAGE = "late_message"
    """A stopped handler handed out a message its peer sent before it went away."""
    PIPE_CLEARED = "pipe_cleared"
    FRAME_REJECTED = "frame_rejected"
    FAILPOINT = "failpoint"
    FAULT = "fault"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    """One thing that happened, in one process, at one monotonic instant."""

    ts: float
    kind: EventKind
    process: str
    pid: int
    site: str | None = None
    round: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "ts": self.ts,
                "kind": self.kind.value,
                "process": self.process,
                "pid": self.pid,
                "site": self.site,
                "round": self.round,
                "detail": dict(self.detail),
            },
            default=str,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, line: str) -> Event:
        raw = json.loads(line)
        return cls(
            ts=float(raw["ts"]),
            kind=EventKind(raw["kind"]),
            process=str(raw["process"]),
            pid=int(raw["pid"]),
            site=raw.get("site"),
            round=raw.get("round"),
            detail=raw.get("detail") or {},
        )


Listener = Callable[[Event], None]


class Timeline:
    """In-memory, thread-safe event log with optional listeners and file sink.

    Listeners run synchronously in the recording thread; the harness uses them
    to inject a fault the moment an event is seen (for example a signal right
    after ``result_received``).  A listener must be quick and must not raise.
    """

    def __init__(self, process: str = "main", sink: Path | None = None) -> None:
        self.process = process
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._sink_fd: int | None = None
        if sink is not None:
            self._sink_fd = os.open(sink, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    @classmethod
    def from_environment(cls, process: str) -> Timeline:
        """A timeline for a subprocess, writing to the file the launcher named."""
        path = os.environ.get(TIMELINE_ENV)
        return cls(process, Path(path) if path else None)

    def record(
        self,
        kind: EventKind,
        /,
        *,
        site: str | None = None,
        round: int | None = None,
        process: str | None = None,
        **detail: Any,
    ) -> Event:
        event = Event(
            ts=time.monotonic(),
            kind=kind,
            process=process or self.process,
            pid=os.getpid(),
            site=site,
            round=round,
            detail=detail,
        )
        self.add(event)
        return event

    def for_process(self, process: str) -> Timeline:
        """A view that records into this timeline under another process label.

        The server and every site's client run in one OS process; their
        events share a store but keep their own lane in reports.
        """
        view = Timeline.__new__(Timeline)
        view.__dict__.update(self.__dict__)
        view.process = process
        return view

    def add(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            listeners = list(self._listeners)
            fd = self._sink_fd
            if fd is not None:
                os.write(fd, (event.to_json() + "\n").encode())
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener's failure must not break the recording thread
                log.exception("timeline listener %r failed on %s", listener, event.kind.value)

    def extend(self, events: Iterable[Event]) -> None:
        with self._lock:
            self._events.extend(events)
            self._events.sort(key=lambda e: e.ts)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` for every later event; returns the unsubscribe function."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def events(
        self,
        kind: EventKind | None = None,
        *,
        site: str | None = None,
        round: int | None = None,
    ) -> list[Event]:
        with self._lock:
            snapshot = list(self._events)
        return [
            e
            for e in sorted(snapshot, key=lambda e: e.ts)
            if (kind is None or e.kind is kind)
            and (site is None or e.site == site)
            and (round is None or e.round == round)
        ]

    def kinds(self) -> set[EventKind]:
        return {e.kind for e in self.events()}

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events())

    def __bool__(self) -> bool:
        """A timeline is a thing, not a collection: an empty one is still true."""
        return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def merge_file(self, path: Path) -> int:
        """Add the events a subprocess wrote to ``path``; returns how many."""
        if not path.exists():
            return 0
        events = [
            Event.from_json(line)
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        self.extend(events)
        return len(events)

    def write_jsonl(self, path: Path) -> None:
        path.write_text("".join(e.to_json() + "\n" for e in self.events()))

    def close(self) -> None:
        with self._lock:
            if self._sink_fd is not None:
                os.close(self._sink_fd)
                self._sink_fd = None
