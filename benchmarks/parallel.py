"""How much ``pytest -n 2`` (xdist) speeds up the scenario suite.

Both sessions run as real ``pytest`` subprocesses from the checkout, one after
the other and alternating when repeated, so the figure includes what a user
pays: interpreter and plugin start-up, collection, and xdist's worker start.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import REPO_ROOT
from benchmarks.figure import Figure, Goal

SPEEDUP_GOAL = Goal(">=", 1.6)
SESSION_TIMEOUT = 600.0


@dataclass(frozen=True)
class Session:
    seconds: float
    failures: str
    """pytest's summary line when the session did not pass, else empty."""


def suite_session(paths: Sequence[Path], workers: int | None) -> Session:
    """Wall time of ``pytest PATHS -q`` (``-n WORKERS`` when given), and whether it passed.

    A failing session is still timed (a scenario that hits its bound is slow, and
    that is part of the figure) but the failure is reported beside the figure.
    """
    command = [sys.executable, "-m", "pytest", *map(str, paths), "-q", "-p", "no:cacheprovider"]
    if workers is not None:
        command += ["-n", str(workers)]
    started = time.perf_counter()
    done = subprocess.run(
        command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=SESSION_TIMEOUT
    )
    seconds = time.perf_counter() - started
    if done.returncode == 0:
        return Session(seconds, "")
    summary = done.stdout.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return Session(seconds, "; ".join([*summary, *failed]))


def measure_xdist_speedup(
    *, repeats: int, paths: Sequence[Path] = (REPO_ROOT / "scenarios",), workers: int = 2
) -> list[Figure]:
    """``xdist_speedup`` = median serial wall time / median ``-n workers`` wall time."""
    serial: list[Session] = []
    parallel: list[Session] = []
    for _ in range(repeats):
        serial.append(suite_session(paths, None))
        parallel.append(suite_session(paths, workers))
    serial_s = statistics.median(s.seconds for s in serial)
    parallel_s = statistics.median(s.seconds for s in parallel)
    failures = "; ".join(
        f"{kind}: {s.failures}"
        for kind, sessions in (("serial", serial), (f"-n {workers}", parallel))
        for s in sessions
        if s.failures
    )
    return [
        Figure("suite_serial_seconds", serial_s),
        Figure(f"suite_n{workers}_seconds", parallel_s),
        Figure("xdist_speedup", serial_s / parallel_s, SPEEDUP_GOAL, note=failures),
    ]
