"""Run a job in a thread the way the harness does: bounded, aborted at the bound, and
nothing it started may outlive it."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.harness.processes import ProcessGuard

SETTLE = 1.0
"""After the run: how long its processes may take to exit before they count as survivors."""


def run_guarded(
    job: Callable[[ProcessGuard], JobResult],
    *,
    abort: threading.Event,
    bound: float,
    grace: float,
    name: str,
) -> JobResult:
    """``job(guard)`` in a thread; past ``bound`` it is aborted and given ``grace`` to
    unwind.  Re-raises what the job raised; fails if it did not end or left a process."""
    guard = ProcessGuard()
    box: list[JobResult | BaseException] = []

    def run() -> None:
        try:
            box.append(job(guard))
        except BaseException as exc:  # re-raised in the test's thread below
            box.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    try:
        thread.start()
        thread.join(bound)
        if thread.is_alive():
            abort.set()
            thread.join(grace)
        survivors = guard.settle(SETTLE)
    finally:
        guard.kill_all()
    assert box, f"{name}: the job did not unwind within {grace:g}s of its abort"
    if isinstance(box[0], BaseException):
        raise box[0]
    assert survivors == [], f"processes of the run survived it: {survivors}"
    return box[0]
