"""What one ``launch_once=False`` round costs, next to what it cannot cost less than.

A round launches a fresh interpreter that imports the agent, so the floor is
``python -c "import reference_impl.agent"``.  Both are timed in the same run,
interleaved, so that load from other processes hits both alike.  The round time is
a whole job's wall time divided by its rounds, nothing subtracted: job set-up and
the last round's deferred stop are paid once per job and spread over its rounds.
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import time

from benchmarks import REPO_ROOT
from benchmarks.figure import Figure, Goal
from pytest_flrelia.contract.events import is_training
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.job import run_job

AGENT_IMPORT = (sys.executable, "-c", "import reference_impl.agent")
TINY_TENSORS = TensorSpec(count=1, size_bytes=1024)
"""One 1 KiB tensor per result: the download is there, its bytes cost nothing."""
ROUND_COST_GOAL = Goal("<=", 1.3)
PRODUCTION_STOP_POLL = Timeouts().stop_poll
IMPORT_TIMEOUT = 60.0


class BenchmarkError(RuntimeError):
    """A measured job did not succeed: its time would mean nothing."""


def interpreter_import_seconds() -> float:
    """Wall time of starting this interpreter and importing the agent module, once."""
    started = time.perf_counter()
    subprocess.run(AGENT_IMPORT, check=True, cwd=REPO_ROOT, timeout=IMPORT_TIMEOUT)
    return time.perf_counter() - started


def run_tiny_job(rounds: int, sites: int, timeouts: Timeouts | None = None) -> JobResult:
    """One ``launch_once=False`` job with tiny tensors (``Timeouts.fast()``); it must succeed."""
    config = JobConfig(
        sites=sites,
        rounds=rounds,
        launch_once=False,
        tensors=TINY_TENSORS,
        timeouts=timeouts or Timeouts.fast(),
    )
    result = run_job(config)
    if not result.ok:
        raise BenchmarkError(f"{sites} site(s) x {rounds} round(s) job failed: {result.error}")
    return result


def job_seconds(rounds: int, sites: int, timeouts: Timeouts | None = None) -> float:
    """Wall time of :func:`run_tiny_job`, set-up and the last deferred stop included."""
    started = time.perf_counter()
    run_tiny_job(rounds, sites, timeouts)
    return time.perf_counter() - started


def round_phases(timeline: Timeline) -> tuple[list[float], list[float]]:
    """Per round of a 1-site job: launch -> ``init()``, and the training process's exit ->
    the deferred stop noticing it (the poll latency)."""
    launches = [e.ts for e in timeline.events(EventKind.LAUNCH)]
    inits = [e.ts for e in timeline.events(EventKind.INIT)]
    exits = [e.ts for e in timeline.events(EventKind.EXIT) if is_training(e)]
    noticed = [e.ts for e in timeline.events(EventKind.DEFERRED_STOP_DONE)]
    return (
        [b - a for a, b in zip(launches, inits, strict=False)],
        [b - a for a, b in zip(exits, noticed, strict=False)],
    )


def measure_round_cost(*, rounds: int, repeats: int) -> list[Figure]:
    """``round_cost_ratio`` = median round / median interpreter-plus-import, same run.

    Also reports where a round goes (launch -> ``init()``, exit -> deferred stop noticed
    it; medians over every round) and the round with the production deferred-stop poll
    interval (1 s), the one setting of ``Timeouts.fast()`` that changes a healthy round.
    """
    imports: list[float] = []
    per_round: list[float] = []
    to_init: list[float] = []
    exit_noticed: list[float] = []
    for _ in range(repeats):
        imports.append(interpreter_import_seconds())
        started = time.perf_counter()
        result = run_tiny_job(rounds, 1)
        per_round.append((time.perf_counter() - started) / rounds)
        launch_to_init, exit_to_noticed = round_phases(result.timeline)
        to_init += launch_to_init
        exit_noticed += exit_to_noticed
    round_s = statistics.median(per_round)
    import_s = statistics.median(imports)
    production_poll = dataclasses.replace(Timeouts.fast(), stop_poll=PRODUCTION_STOP_POLL)
    slow_round_s = job_seconds(rounds, 1, production_poll) / rounds
    return [
        Figure("interpreter_import_seconds", import_s),
        Figure("round_seconds", round_s),
        Figure("round_cost_ratio", round_s / import_s, ROUND_COST_GOAL),
        Figure("round_launch_to_init_seconds", statistics.median(to_init)),
        Figure("round_exit_noticed_seconds", statistics.median(exit_noticed)),
        Figure("round_seconds_production_stop_poll", slow_round_s),
    ]
