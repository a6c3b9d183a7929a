"""``explore()``: the Python entry for the benchmarks, the command line and the plugin.

Schedules run one at a time in this process (``jobs=1``: the reference target's
failpoints are process-wide, so two runs must not share a process), or in ``jobs``
worker processes, each running one schedule at a time.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

from pytest_flrelia.contract.target import Target
from pytest_flrelia.contract.units import parse_duration
from pytest_flrelia.explore.driver import explore_one
from pytest_flrelia.explore.report import ExploreReport, ScheduleResult, schedule_id
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.harness.termination import exit_on_sigterm
from pytest_flrelia.targets import Targets

Progress = Callable[[str], None]


def explore(
    target: str | Target = "reference",
    *,
    variant: str | None = None,
    count: int,
    budget: float | str,
    seed: int,
    out_dir: Path | None = None,
    jobs: int = 1,
    progress: Progress | None = None,
) -> ExploreReport:
    """Draw and run ``count`` schedules (or as many as ``budget`` allows) against
    ``target`` (its ``variant``: a known-bug slug for the reference); shrink each failure
    and write it to ``out_dir`` as ``<name>.scenario.yaml``.  ``jobs`` worker processes
    share the schedules (``target`` must then be a name); ``progress`` gets one line per
    schedule (count, elapsed, failures).  Schedule ``i`` of seed ``seed`` is the same
    schedule every time, serial or not."""
    seconds = parse_duration(budget, "budget") if isinstance(budget, str) else float(budget)
    started = time.monotonic()
    deadline = started + seconds
    name = target if isinstance(target, str) else target.info.name
    results: list[ScheduleResult] = []
    tally = _Tally(count, started, progress)
    if jobs > 1:
        if not isinstance(target, str):
            raise ValueError("jobs > 1 needs the target by name: workers load it themselves")
        results = _in_workers(name, variant, count, seed, deadline, out_dir, jobs, tally)
    else:
        find = (lambda _: target) if not isinstance(target, str) else Targets()
        for index in range(count):
            results.append(
                _one(find, name, variant, seed, index, deadline, out_dir)
                if time.monotonic() < deadline
                else _skipped(seed, index)
            )
            tally.add(results[-1])
    results.sort(key=lambda r: r.index)
    return ExploreReport(name, variant, seed, tuple(results), time.monotonic() - started)


def _skipped(seed: int, index: int) -> ScheduleResult:
    return ScheduleResult(seed, index, "skipped", detail="budget spent")


def _one(
    find: Callable[[str], Target],
    name: str,
    variant: str | None,
    seed: int,
    index: int,
    deadline: float,
    out_dir: Path | None,
) -> ScheduleResult:
    settings = Settings(target=name, known_bug=variant)
    info = find(name).info
    return explore_one(
        info, settings, seed, index, deadline=deadline, out_dir=out_dir, targets=find
    )


def _worker(
    name: str, variant: str | None, seed: int, index: int, deadline: float, out_dir: Path | None
) -> dict[str, object]:
    """One schedule in a worker process (``time.monotonic`` is system-wide on Linux)."""
    if time.monotonic() >= deadline:
        return _skipped(seed, index).to_json()
    return _one(Targets(), name, variant, seed, index, deadline, out_dir).to_json()


def _in_workers(
    name: str,
    variant: str | None,
    count: int,
    seed: int,
    deadline: float,
    out_dir: Path | None,
    jobs: int,
    tally: _Tally,
) -> list[ScheduleResult]:
    context = multiprocessing.get_context("spawn")  # no threads of ours are forked
    results: list[ScheduleResult] = []
    with concurrent.futures.ProcessPoolExecutor(
        jobs, mp_context=context, initializer=exit_on_sigterm
    ) as pool:
        futures = [
            pool.submit(_worker, name, variant, seed, i, deadline, out_dir) for i in range(count)
        ]
        try:
            for future in concurrent.futures.as_completed(futures):
                results.append(ScheduleResult.from_json(future.result()))
                tally.add(results[-1])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


class _Tally:
    """The progress line: one per schedule, with the count, the time and the failures."""

    def __init__(self, count: int, started: float, progress: Progress | None) -> None:
        self.count = count
        self.started = started
        self.progress = progress
        self.done = 0
        self.failed = 0

    def add(self, result: ScheduleResult) -> None:
        self.done += 1
        self.failed += result.verdict == "failed"
        if self.progress is not None:
            self.progress(
                progress_line(
                    result, self.done, self.count, time.monotonic() - self.started, self.failed
                )
            )


def progress_line(
    result: ScheduleResult, done: int, count: int, elapsed: float, failed: int
) -> str:
    """``[12/200] s1-11 failed (no_premature_stop) 3.1s | 34s elapsed, 1 failure``."""
    what = result.verdict + (f" ({result.leading_check})" if result.leading_check else "")
    if result.verdict == "failed":
        what += f", shrunk in {result.shrink_seconds:.1f}s"
    return (
        f"[{done}/{count}] {schedule_id(result.seed, result.index)} {what} "
        f"{result.seconds:.1f}s | {elapsed:.0f}s elapsed, {failed} "
        f"failure{'' if failed == 1 else 's'}"
    )


__all__ = ["explore", "progress_line"]
