"""SIGTERM as an unwinding exit, for the harness's own long-running commands.

Python's default SIGTERM action ends the process at once: no ``finally``, no ``with``
exit, no ``atexit``, so the temporary directories and the children a run made stay
behind.  Here SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``: it unwinds
the stack the way Ctrl-C does, and passes through what lets Ctrl-C through (Hypothesis
takes a ``SystemExit`` in a test body for a failure of that example and replays it).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGTERM_STATUS = 128 + signal.SIGTERM
"""The exit status a shell reports for a process SIGTERM ended."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived."""


def exit_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in the main thread (a worker
    process's initializer; Python installs handlers only from the main thread)."""
    signal.signal(signal.SIGTERM, _terminated)


def unwind_on_sigterm() -> Callable[[], None] | None:
    """SIGTERM raises :class:`Terminated` from now on, if nobody handles SIGTERM yet (the
    default action) and this is the main thread; the function that restores the default,
    or ``None`` when nothing was installed.  For pytest itself: CI runners and
    ``timeout(1)`` stop a job with SIGTERM, and this lets the session unwind as Ctrl-C
    does (the running scenario's cleanup, then "Terminated" and exit status 2)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None  # someone else's handler: theirs to keep
    signal.signal(signal.SIGTERM, _terminated)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is _terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return restore


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM unwinds the body, then exits with status 143; the previous action is
    restored after the body."""
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    except Terminated:
        raise SystemExit(SIGTERM_STATUS) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


__all__ = [
    "SIGTERM_STATUS",
    "Terminated",
    "exit_on_sigterm",
    "sigterm_exits",
    "unwind_on_sigterm",
]
