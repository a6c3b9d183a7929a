"""Noticing a runtime thread that dies of an unhandled exception, the moment it does.

A heartbeat or deferred-stop thread that dies silently is how two historic
bugs hid (KB7, KB8): nothing fails at once, a round just waits out its
timeout.  While a scenario runs, this watch chains onto ``threading.excepthook``
(pytest's own hook still sees the exception), records the crash in the
timeline and aborts the run, so the report comes in seconds, not at the bound.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pytest_flrelia.contract.events import harness_lane
from pytest_flrelia.contract.timeline import EventKind, Timeline

THREAD_CRASH = "thread_crash"
"""The ``error`` detail that marks an ERROR event as an unhandled thread exception."""


@contextmanager
def watch_thread_crashes(timeline: Timeline, abort: threading.Event) -> Iterator[None]:
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else "?"
        timeline.record(
            EventKind.ERROR,
            process=harness_lane(),
            error=THREAD_CRASH,
            thread=name,
            exception=f"{args.exc_type.__name__}: {args.exc_value}",
        )
        abort.set()
        previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous
