"""Finding and reaping every process a scenario run started, wherever it went.

Each run tags the processes it starts with a unique environment variable,
inherited by every descendant: a grandchild that changed process group or
was re-parented to init is still found by its tag.  Zombies count as gone
(their parent or init reaps them).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping

import psutil

from pytest_flrelia.contract.processes import wait_gone

RUN_ID_ENV = "FLRELIA_RUN_ID"
REAP_TIMEOUT = 5.0


class ProcessGuard:
    """The processes of one run: list the survivors, kill them."""

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex

    @property
    def env(self) -> dict[str, str]:
        """Environment to give every process of the run."""
        return {RUN_ID_ENV: self.run_id}

    def survivors(self) -> list[psutil.Process]:
        """Live (non-zombie) processes carrying this run's tag."""
        return live_processes_where(lambda env: env.get(RUN_ID_ENV) == self.run_id)

    def settle(self, timeout: float) -> list[psutil.Process]:
        """Survivors that are still alive after waiting up to ``timeout`` for them to exit."""
        survivors = self.survivors()
        if survivors and timeout > 0:
            _, alive = psutil.wait_procs(survivors, timeout=timeout)
            survivors = [p for p in alive if _alive(p)]
        return survivors

    def kill_all(self) -> list[int]:
        """SIGKILL every survivor and wait for them; returns the pids killed."""
        survivors = self.survivors()
        for process in survivors:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        # Exited is gone: an orphan's zombie waits for init, which may reap it late.
        wait_gone(survivors, REAP_TIMEOUT)
        return [p.pid for p in survivors]


def live_processes_where(
    matches: Callable[[Mapping[str, str]], bool],
) -> list[psutil.Process]:
    """This user's live (non-zombie) processes whose environment ``matches``."""
    uid = os.getuid()
    found = []
    for process in psutil.process_iter(["uids", "status"]):
        try:
            if process.info["uids"].real != uid or process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if matches(process.environ()):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid} ({' '.join(process.cmdline())[:80]})"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"pid {process.pid}"
