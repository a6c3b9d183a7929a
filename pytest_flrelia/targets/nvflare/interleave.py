"""Forced interleavings of NVFlare's own threads: deterministic reproductions of its races.

A race of NVFlare (``docs/nvflare-faults.md#why-cells-vary``) hits a few runs in many,
when the OS happens to preempt one thread at one line.  An interleaving here holds that
thread at that line until the other thread has done what the race needs, so every run
that reaches the line takes the losing order.  Nothing of NVFlare is edited: a class
attribute is wrapped, as :mod:`.observe` does, and the wrapper only waits.

``FLRELIA_NVFLARE_INTERLEAVE=f5`` (names separated by commas) makes the runner install
them; they are for reproducing a race, never part of a gate run.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from pytest_flrelia.targets.nvflare import nv

log = logging.getLogger(__name__)

INTERLEAVE_ENV = "FLRELIA_NVFLARE_INTERLEAVE"
HOLD_LIMIT = 30.0
"""The longest a held thread waits for the other one (it then goes on, unforced)."""
MONITOR_THREAD = "_monitor_launcher"
"""Python names a thread after its target: ``Thread-5 (_monitor_launcher)``."""


def hold_monitor_until_deferred_stop_ends() -> None:
    """F5: ``LauncherExecutor._monitor_launcher`` pauses the current pipe handler for an
    exited process, then tests ``_deferred_stop_event``.  Hold it between the two, while
    the next round's ``execute()`` has begun (so the paused handler is the next round's),
    until the deferred stop has finished: the monitor then takes the old process's exit
    for the current task's end, as the race does when the stop ends in that window."""
    cls = nv.module("app_common.executors.task_exchanger").TaskExchanger
    real_pause = cls.pause_pipe_handler

    def pause_pipe_handler(self: Any) -> None:
        real_pause(self)
        if MONITOR_THREAD not in threading.current_thread().name:
            return
        deferred = getattr(self, "_deferred_stop_event", None)
        executing = getattr(self, "_executing", None)
        if deferred is None or executing is None or deferred.is_set() or not executing.is_set():
            return
        log.warning("interleave f5: holding the launcher monitor after its pause until the "
                    "deferred stop ends")
        ended = deferred.wait(HOLD_LIMIT)
        log.warning("interleave f5: released the launcher monitor (deferred stop %s)",
                    "ended" if ended else f"still running after {HOLD_LIMIT:g}s")

    cls.pause_pipe_handler = pause_pipe_handler


INTERLEAVINGS: Mapping[str, Callable[[], None]] = MappingProxyType({
    "f5": hold_monitor_until_deferred_stop_ends,
})


def requested(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The interleavings ``FLRELIA_NVFLARE_INTERLEAVE`` names, each once (a wrapper
    installed twice would hold twice); an unknown one is an error naming the known ones."""
    names = list(dict.fromkeys(
        n.strip() for n in environ.get(INTERLEAVE_ENV, "").split(",") if n.strip()
    ))
    unknown = [n for n in names if n not in INTERLEAVINGS]
    if unknown:
        raise ValueError(f"{INTERLEAVE_ENV}: unknown interleaving {', '.join(unknown)}; "
                         f"known: {', '.join(INTERLEAVINGS)}")
    return names


def install_requested(environ: Mapping[str, str] = os.environ) -> list[str]:
    """Install what ``FLRELIA_NVFLARE_INTERLEAVE`` names (before any NVFlare object is
    built); the names installed."""
    names = requested(environ)
    for name in names:
        INTERLEAVINGS[name]()
        log.warning("interleave %s installed: a reproduction run, not a gate run", name)
    return names


__all__ = [
    "HOLD_LIMIT",
    "INTERLEAVE_ENV",
    "INTERLEAVINGS",
    "hold_monitor_until_deferred_stop_ends",
    "install_requested",
    "requested",
]
