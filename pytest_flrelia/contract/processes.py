"""Watching processes that are not our children: alive or not, and waiting for them to go.

Shared by every launcher's stop and by the harness's process guard, so they agree
on what "gone" means (a zombie has exited).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterable

import psutil


def is_alive(proc: psutil.Process) -> bool:
    """True while ``proc`` runs; a zombie has exited and only waits to be reaped."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for every process to exit; return those still alive.

    Not children of ours, so ``waitpid`` cannot wait on them; a pidfd becomes
    readable the moment its process exits, which is the wake-up event.
    """
    pending: dict[int, psutil.Process] = {}
    try:
        for proc in procs:
            try:
                fd = os.pidfd_open(proc.pid)
            except ProcessLookupError:
                continue
            if not is_alive(proc):  # exited, or the pid now names someone else
                os.close(fd)
                continue
            pending[fd] = proc
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                pending.pop(fd)
                os.close(fd)
        return list(pending.values())
    finally:
        for fd in pending:
            os.close(fd)


def group_members(pgid: int) -> list[psutil.Process]:
    """Every live (non-zombie) process whose process group is ``pgid``."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and is_alive(proc):
                members.append(proc)
        except (OSError, psutil.Error):
            continue  # gone while we looked, or not ours to inspect
    return members


__all__ = ["group_members", "is_alive", "wait_gone"]
