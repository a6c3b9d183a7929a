"""Seeing the moment a child process dies, without reaping it.

``SubprocessLauncher`` owns its ``Popen``: whoever waits on the pid first takes the exit
status, and a watcher that reaped would change what NVFlare sees.  So one thread per pid
blocks on a pidfd (readable the instant the process exits), stamps that instant, and
reads the status with ``waitid(..., WEXITED | WNOWAIT)``, which leaves the zombie for
NVFlare to reap.  If NVFlare reaped first (its monitor polls every 10 ms), the status is
read from the ``Popen`` instead.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Death:
    """How a process ended: ``returncode`` as ``Popen`` gives it (``-N`` for signal N)."""

    pid: int
    ts: float
    """``time.monotonic()`` when its pidfd became readable: the moment of death."""
    returncode: int | None
    """``None`` when neither ``waitid`` nor the fallback could say (reaped by someone
    else who kept the status)."""

    @property
    def signal_name(self) -> str | None:
        if self.returncode is None or self.returncode >= 0:
            return None
        with contextlib.suppress(ValueError):
            return signal.Signals(-self.returncode).name
        return str(-self.returncode)


OnDeath = Callable[[Death], None]


def _status(pid: int, fallback: Callable[[], int | None]) -> int | None:
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:  # reaped already (by NVFlare's poll): it kept the status
        return fallback()
    if info is None:
        return fallback()
    if info.si_code == os.CLD_EXITED:
        return int(info.si_status)
    return -int(info.si_status)


def watch(pid: int, on_death: OnDeath, fallback: Callable[[], int | None] = lambda: None,
          *, name: str | None = None) -> threading.Thread:
    """Start a daemon thread that calls ``on_death`` once ``pid`` (a child of this process)
    has exited; ``fallback`` gives the status if the pid was reaped before it looked."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # gone and reaped before we looked
        fd = None

    def run() -> None:
        try:
            if fd is not None:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                while not poller.poll(1000):
                    pass
            ts = time.monotonic()
            on_death(Death(pid, ts, _status(pid, fallback)))
        finally:
            if fd is not None:
                os.close(fd)

    thread = threading.Thread(target=run, name=name or f"flrelia-exit-{pid}", daemon=True)
    thread.start()
    return thread


__all__ = ["Death", "OnDeath", "watch"]
