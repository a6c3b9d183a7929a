"""How a launched process (and everything it started) is stopped.

The launcher does not decide *how* to stop; it hands its process to a
:class:`StopStrategy`.  The correct strategy, :class:`GroupStopStrategy`, is the
one trio documents for subprocesses: ask politely, wait a bounded grace, force,
and always reap.  It acts on the whole process group, because a training script
that ignores SIGTERM, or a data-loader grandchild holding the output pipe, must
not keep a stop waiting forever (known bug KB12, ``child-only-sigterm``).

Every signal goes through :mod:`pytest_flrelia.contract.seams`, looked up at call time,
so a test or a fault can replace ``seams.killpg`` / ``seams.kill``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import psutil

from pytest_flrelia.contract import seams
from pytest_flrelia.contract.processes import group_members, is_alive, wait_gone

logger = logging.getLogger(__name__)

SignalCallback = Callable[[int, str], None]
"""``on_signal(signal_number, target)``; ``target`` is ``"group"`` or ``"pid"``.

Called once for every signal that was delivered; a signal to a group or a pid
that no longer exists is not reported."""

TARGET_GROUP = "group"
TARGET_PID = "pid"

REAP_TIMEOUT = 10.0
"""How long to wait for a SIGKILLed process to die before giving up.

SIGKILL cannot be ignored, so only a process stuck in uninterruptible sleep
(a hung NFS mount, a wedged driver) runs into this bound."""


class ProcessStopError(RuntimeError):
    """The launched process was not reaped :data:`REAP_TIMEOUT` seconds after SIGKILL."""


class StopStrategy(ABC):
    """Ends a launched process and its descendants; returns the returncode."""

    @abstractmethod
    def stop(self, process: subprocess.Popen[bytes], on_signal: SignalCallback) -> int:
        """Stop ``process`` (already exited is fine), reap it, return its returncode."""


def descendants(pid: int) -> list[psutil.Process]:
    """Every live descendant of ``pid``, found by parent links at this instant.

    Take the snapshot *before* signalling: once a parent dies its children are
    reparented (to init or a subreaper) and can no longer be found from ``pid``.
    The :class:`psutil.Process` objects remember each start time, so later
    checks on them are not fooled by pid reuse.
    """
    try:
        return psutil.Process(pid).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def wait_child_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Block until our child ``process`` exits or ``timeout`` passes; True once it exited.

    ``Popen.wait(timeout)`` polls with sleeps of up to 50 ms; a pidfd wakes the
    moment the child exits.  The child is not reaped here: ``Popen.poll()``
    does that, so the returncode stays with the ``Popen``.
    """
    if process.poll() is None:
        try:
            child = psutil.Process(process.pid)
        except psutil.NoSuchProcess:  # reaped by another thread since the poll
            pass
        else:
            wait_gone([child], timeout)  # a zombie counts as gone: it has exited
    return process.poll() is not None


class GroupStopStrategy(StopStrategy):
    """SIGTERM the group -> wait up to ``grace`` -> SIGKILL the group and every
    descendant found with psutil (including ones that left the group) -> reap.

    The launcher starts its child with ``start_new_session=True``, so the child's
    pid is its process group id.  The grace covers the whole group: a data
    loader finishing its own SIGTERM handler a moment after the leader is not
    killed mid-cleanup.  A descendant that called ``setsid()`` is in another
    group: it gets no SIGTERM, only the SIGKILL, and only if it was found by
    parent links while its ancestors were alive.

    A process that had already exited is reaped and the leftover members of its
    group are killed; its escaped descendants can no longer be found.
    When :meth:`stop` returns, everything it killed has died (or a warning was
    logged after :data:`REAP_TIMEOUT`).
    """

    def __init__(self, grace: float) -> None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace!r}")
        self.grace = grace

    def stop(self, process: subprocess.Popen[bytes], on_signal: SignalCallback) -> int:
        pgid = process.pid
        # Only while unreaped does the pid surely name our child (no reuse).
        family = descendants(pgid) if process.poll() is None else []
        deadline = time.monotonic()
        if process.poll() is None:
            deadline += self.grace
            self._signal_group(pgid, signal.SIGTERM, on_signal)
            try:
                process.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                logger.info("pid %d outlived SIGTERM for %.2f s; killing", pgid, self.grace)
        if process.poll() is None:
            family += descendants(pgid)  # whatever it started during the grace
            self._signal_group(pgid, signal.SIGKILL, on_signal)
            returncode = self._reap(process)
        else:
            returncode = self._reap(process)
            leftovers = group_members(pgid)
            leftovers = wait_gone(leftovers, max(0.0, deadline - time.monotonic()))
            if leftovers:
                # The group id stays allocated while a member lives: no pid reuse here.
                self._signal_group(pgid, signal.SIGKILL, on_signal)
        escaped = self._kill_escaped(pgid, family, on_signal)
        stragglers = wait_gone([*group_members(pgid), *escaped], REAP_TIMEOUT)
        if stragglers:
            logger.warning(
                "processes %s of group %d survived SIGKILL for %.0f s",
                [p.pid for p in stragglers],
                pgid,
                REAP_TIMEOUT,
            )
        return returncode

    @staticmethod
    def _reap(process: subprocess.Popen[bytes]) -> int:
        try:
            return process.wait(timeout=REAP_TIMEOUT)
        except subprocess.TimeoutExpired as error:
            raise ProcessStopError(
                f"pid {process.pid} was not reaped {REAP_TIMEOUT:.0f} s after SIGKILL "
                "(uninterruptible sleep?)"
            ) from error

    def _kill_escaped(
        self, pgid: int, family: Sequence[psutil.Process], on_signal: SignalCallback
    ) -> list[psutil.Process]:
        """SIGKILL every snapshot member still alive outside the group, and what
        those survivors started since; returns the processes signalled."""
        survivors: dict[int, psutil.Process] = {}
        for proc in family:
            if is_alive(proc):
                survivors[proc.pid] = proc
        for proc in list(survivors.values()):
            for child in descendants(proc.pid):
                survivors.setdefault(child.pid, child)
        killed = []
        for proc in survivors.values():
            try:
                if os.getpgid(proc.pid) == pgid or not is_alive(proc):
                    continue  # the group SIGKILL already reached it
            except ProcessLookupError:
                continue
            if self._signal_pid(proc.pid, signal.SIGKILL, on_signal):
                killed.append(proc)
        return killed

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals, on_signal: SignalCallback) -> bool:
        try:
            seams.killpg(pgid, sig)
        except ProcessLookupError:
            return False
        on_signal(sig, TARGET_GROUP)
        return True

    @staticmethod
    def _signal_pid(pid: int, sig: signal.Signals, on_signal: SignalCallback) -> bool:
        try:
            seams.kill(pid, sig)
        except ProcessLookupError:
            return False
        on_signal(sig, TARGET_PID)
        return True
