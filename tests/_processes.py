"""Process checks shared by the tests that start real training processes."""

from __future__ import annotations

import psutil

from pytest_flrelia.contract.result import JobResult

WAIT = 10.0
"""Upper bound for reaping what a test left behind; normally met in milliseconds."""


def kill_leftover_children() -> list[psutil.Process]:
    """Kill and reap every descendant of this process; return those that were still there."""
    leftovers = psutil.Process().children(recursive=True)
    for proc in leftovers:
        proc.kill()
    psutil.wait_procs(leftovers, timeout=WAIT)
    return leftovers


def assert_no_process_left(result: JobResult) -> None:
    """Every training process the job launched is gone (a zombie counts as gone)."""
    alive = [
        pid
        for pid in result.launched_pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == [], f"training processes still alive: {alive}"
