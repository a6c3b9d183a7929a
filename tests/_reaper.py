"""Nothing a test starts outlives it, pass or fail.

A test hands every process it starts or finds to :class:`Reaper` (the
``reaper`` fixture of ``conftest.py``); at teardown, which runs after a failed
assertion too, the reaper SIGKILLs each one still alive, its descendants and
its process group, then waits until they are gone.  Processes are watched as
soon as they are known: once a parent dies its children are re-parented and
can no longer be found through it.
"""

from __future__ import annotations

import os
import signal
import subprocess

import psutil

from pytest_flrelia.contract.processes import is_alive, wait_gone

REAP_TIMEOUT = 10.0
Watchable = psutil.Process | subprocess.Popen[str] | subprocess.Popen[bytes] | int


class Reaper:
    def __init__(self) -> None:
        self._watched: list[psutil.Process] = []

    def watch(self, *processes: Watchable) -> None:
        for each in processes:
            pid = each if isinstance(each, int) else each.pid
            try:
                self._watched.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue

    def reap(self, timeout: float = REAP_TIMEOUT) -> list[psutil.Process]:
        """Kill every watched process still alive, with its tree and group; return survivors."""
        targets = {p.pid: p for p in self._watched if is_alive(p)}
        for proc in list(targets.values()):
            try:
                for child in proc.children(recursive=True):
                    targets.setdefault(child.pid, child)
            except psutil.Error:
                continue
        groups = set()
        for proc in targets.values():
            try:
                groups.add(os.getpgid(proc.pid))
            except ProcessLookupError:
                continue
        for group in groups - {os.getpgrp()}:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                continue
        for proc in targets.values():
            try:
                proc.kill()
            except psutil.Error:
                continue
        return wait_gone(targets.values(), timeout)
