"""The training process's watchdog: if its client dies, the process group dies too.

A client killed without warning (SIGKILL, or pytest-timeout's ``os._exit``)
cannot stop its training processes.  The watchdog notices the re-parenting
that follows (``getppid()`` changes) and ends the process's whole group, so
data-loader children go with it and nothing is left on a CI runner.

A thread only watches while its process lives: a training process that dies
of its client's death (a write to the closed output pipe, a refused pipe
connection) before the next check would leave its children behind.
:func:`group_dies_with_client` closes that gap for a whole ``main()``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pytest_flrelia.contract import seams

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.5
CLIENT_PID_ENV = "FLRELIA_CLIENT_PID"
"""The launching client's pid: a parent that died before the watchdog started is still noticed."""


class ParentWatchdog:
    """A daemon thread that kills this process group once the parent is gone."""

    def __init__(self, interval: float = WATCH_INTERVAL) -> None:
        self._parent = client_pid()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="parent-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def parent_gone(self) -> bool:
        """True once this process was re-parented: the client it watches has died."""
        return os.getppid() != self._parent

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            if self.parent_gone():
                self.client_gone(f"parent {self._parent} is gone")
                return

    @staticmethod
    def client_gone(reason: str) -> None:
        """End this process and its children: SIGKILL the whole group when we lead it
        (the launcher made us leader), else only ourselves."""
        log.error("%s; ending process group %d", reason, os.getpgrp())
        if os.getpgrp() == os.getpid():
            seams.killpg(os.getpgrp(), signal.SIGKILL)
        else:
            seams.kill(os.getpid(), signal.SIGKILL)


def client_pid() -> int:
    """The launching client: named by the launcher, else the parent at this moment."""
    return int(os.environ.get(CLIENT_PID_ENV) or os.getppid())


@contextmanager
def group_dies_with_client(interval: float = WATCH_INTERVAL) -> Iterator[None]:
    """Watch the client while the block runs, and if the block ends (returns or raises)
    after the client died, end the process group on the way out."""
    watchdog = ParentWatchdog(interval)
    watchdog.start()
    try:
        yield
    finally:
        watchdog.stop()
        if watchdog.parent_gone():
            watchdog.client_gone("the client is gone as this process ends")
