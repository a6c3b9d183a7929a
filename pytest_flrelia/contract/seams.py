"""Seams: the few process-level side effects that tests must be able to replace.

Library code never calls ``os._exit`` or ``os.kill`` directly; it takes one of
these callables as a parameter whose default is the real thing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import NoReturn

ExitFn = Callable[[int], NoReturn]
KillFn = Callable[[int, int], None]


def exit_process(code: int) -> NoReturn:
    """Flush what the process wrote, then end it at once.

    ``os._exit`` skips interpreter shutdown, so a non-daemon thread left
    behind by user code (a data loader, a metrics pusher) cannot hold the
    process open after its work is done.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
            stream.flush()
    os._exit(code)


def kill(pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid``; the seam the stop strategies and faults use."""
    os.kill(pid, sig)


def killpg(pgid: int, sig: int) -> None:
    """Send ``sig`` to every process of group ``pgid``."""
    os.killpg(pgid, sig)
