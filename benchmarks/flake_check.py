"""Flake check: does every scenario give the same outcome on every run?

Runs the shipped scenario suite ``-n`` times on the correct implementation and
on every known-bug variant, and reports each (scenario, variant) whose outcome
differed between runs: pass against fail, or failures with different sets of
failed checks.  A scenario that catches a bug only sometimes is as useless as one
that fails on the correct code sometimes.

    python benchmarks/flake_check.py [-n 50] [--quick] [--workers 2] [--budget S] [--json PATH]

Scenarios run in-process through :func:`pytest_flrelia.harness.runner.run_scenario`, one
at a time per worker process (failpoints are per process); ``--workers`` sets how
many run side by side.  More workers than cores adds load, and load is what makes
timing-bound scenarios flake, so the default is one per core.  Exit status 1 if any
outcome differed, or a promise broke: the correct implementation must pass every
scenario and a scenario must fail on every bug it ``catches``, on every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import queue
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from pathlib import Path

from pytest_flrelia.harness.runner import ScenarioFailure, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import Scenario, load_scenarios
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = REPO_ROOT / "scenarios"
CORRECT = "correct"
"""The variant name of the correct reference implementation."""
VARIANTS: tuple[str, ...] = (CORRECT, *KNOWN_BUGS)
DEFAULT_REPEATS = 50
QUICK_REPEATS = 3
PASS = "pass"
JOB_THREAD_PREFIX = "flrelia-job-"
DETAIL_CHARS = 600
RESULT_WAIT = 5.0
"""How often the coordinator looks up from the result queue to check its workers are alive."""


@dataclass(frozen=True)
class Task:
    """One run to make: a scenario (by file and name) against a variant."""

    repeat: int
    variant: str
    path: str
    name: str
    catches: tuple[str, ...] = ()
    """The known bugs the scenario says it catches: it must fail on each, every run."""


@dataclass(frozen=True)
class Run:
    """What one run gave: ``pass``, ``fail: check, check`` or ``error: ...``."""

    task: Task
    outcome: str
    seconds: float
    detail: str = ""
    """For a failure: what each failed check saw (to diagnose a flip without re-running)."""
    thread_errors: tuple[str, ...] = ()
    """Exceptions that escaped a thread of this process during the run."""


def outcome_of(scenario: Scenario, variant: str) -> tuple[str, str]:
    """The run's outcome, comparable between runs (for a failure, the failed checks),
    and what the failed checks saw."""
    settings = Settings(known_bug=None if variant == CORRECT else variant)
    try:
        run_scenario(scenario, settings)
    except ScenarioFailure as failure:
        failed = failure.verdict.failures if failure.verdict else []
        checks = sorted({c.name for c in failed})
        seen = "; ".join(f"{c.name}: {c.seen}" for c in failed)
        return "fail: " + ", ".join(checks), seen[:DETAIL_CHARS]
    except Exception as error:  # a harness error is an outcome too, and must repeat
        return f"error: {type(error).__name__}: {error}".splitlines()[0], ""
    return PASS, ""


def scenario_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.name.endswith((".scenario.yaml", ".scenario.yml"))
    )


def load_all(directory: Path) -> list[Scenario]:
    return [s for path in scenario_files(directory) for s in load_scenarios(path)]


def plan(scenarios: Sequence[Scenario], variants: Sequence[str], repeat: int) -> list[Task]:
    """One repeat: every scenario against every variant."""
    return [
        Task(repeat, variant, str(s.path), s.name, s.catches)
        for variant in variants
        for s in scenarios
    ]


# -- worker processes ------------------------------------------------------------------

Report = tuple[str, int, "Task | Run | None"]
"""What a worker tells the coordinator: (``start`` | ``done`` | ``retire``, worker id, payload)."""


def _worker(worker_id: int, tasks: Queue[Task | None], results: Queue[Report]) -> None:
    """Run tasks until told to stop; retire after a run whose job thread never unwound."""
    logging.getLogger().addHandler(logging.NullHandler())  # the runs' warnings are outcomes
    escaped: list[str] = []

    def note_thread_error(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        escaped.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

    threading.excepthook = note_thread_error  # a known-bug variant's thread may die by design
    cache: dict[str, dict[str, Scenario]] = {}
    while (task := tasks.get()) is not None:
        results.put(("start", worker_id, task))
        if task.path not in cache:
            cache[task.path] = {s.name: s for s in load_scenarios(Path(task.path))}
        started = time.monotonic()
        outcome, detail = outcome_of(cache[task.path][task.name], task.variant)
        run = Run(task, outcome, time.monotonic() - started, detail, tuple(escaped))
        escaped.clear()
        results.put(("done", worker_id, run))
        if _job_threads_left():
            # Its failpoints and processes might leak into the next run: start afresh.
            results.put(("retire", worker_id, None))
            return


def _job_threads_left() -> bool:
    return any(t.name.startswith(JOB_THREAD_PREFIX) and t.is_alive() for t in threading.enumerate())


class Pool:
    """Worker processes fed from one task queue; a retired or dead worker is replaced."""

    def __init__(self, workers: int) -> None:
        self._context = multiprocessing.get_context("spawn")
        self.tasks: Queue[Task | None] = self._context.Queue()
        self.results: Queue[Report] = self._context.Queue()
        self._workers: dict[int, SpawnProcess] = {}
        self._running: dict[int, Task] = {}
        self._next_id = 0
        for _ in range(workers):
            self._spawn()

    def _spawn(self) -> None:
        worker_id, self._next_id = self._next_id, self._next_id + 1
        process = self._context.Process(
            target=_worker,
            args=(worker_id, self.tasks, self.results),
            name=f"flake-worker-{worker_id}",
        )
        process.start()
        self._workers[worker_id] = process

    def runs(self, tasks: Iterable[Task]) -> Iterable[Run]:
        """Yield each run as it finishes."""
        pending = 0
        for task in tasks:
            self.tasks.put(task)
            pending += 1
        while pending:
            try:
                kind, worker_id, payload = self.results.get(timeout=RESULT_WAIT)
            except queue.Empty:
                for run in self._reap_dead():
                    pending -= 1
                    yield run
                continue
            if kind == "start":
                assert isinstance(payload, Task)
                self._running[worker_id] = payload
            elif kind == "done":
                assert isinstance(payload, Run)
                self._running.pop(worker_id, None)
                pending -= 1
                yield payload
            elif kind == "retire" and worker_id in self._workers:
                self._workers.pop(worker_id).join()
                self._spawn()

    def _reap_dead(self) -> Iterable[Run]:
        for worker_id, process in list(self._workers.items()):
            if process.is_alive():
                continue
            del self._workers[worker_id]
            task = self._running.pop(worker_id, None)
            self._spawn()
            if task is not None:
                yield Run(task, f"error: worker died (exit code {process.exitcode})", 0.0)

    def close(self) -> None:
        for _ in self._workers:
            self.tasks.put(None)
        for process in self._workers.values():
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
                process.join()


# -- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    repeats: int
    scenarios: int
    variants: int
    runs: int
    seconds: float
    workers: int
    load: tuple[float, float]
    """Lowest and highest 1-minute load average seen (start and after each repeat)."""
    differing: dict[str, dict[str, dict[str, int]]]
    """variant -> scenario -> outcome -> how many runs gave it, for pairs with >1 outcome."""
    per_variant: dict[str, dict[str, int]]
    """variant -> counts: pass, fail, error runs; ``flips`` (pairs that both passed and
    failed), ``check_sets`` (pairs that always failed, with different failed checks)."""
    always_failing: dict[str, list[str]]
    """variant -> scenarios that failed on every run (what catches it)."""
    broken_promises: dict[str, list[str]]
    """correct -> scenarios that did not pass every run; a known bug -> scenarios that
    declare ``catches`` it and did not fail every run."""


def summarize(
    runs: Sequence[Run], *, repeats: int, workers: int, seconds: float, load: Sequence[float]
) -> Summary:
    outcomes: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    catches: dict[str, tuple[str, ...]] = {}
    for run in runs:
        outcomes[(run.task.variant, run.task.name)][run.outcome] += 1
        catches[run.task.name] = run.task.catches
    variants = list(dict.fromkeys(run.task.variant for run in runs))
    differing: dict[str, dict[str, dict[str, int]]] = {}
    per_variant: dict[str, dict[str, int]] = {}
    always_failing: dict[str, list[str]] = {}
    broken: dict[str, list[str]] = {}
    for variant in variants:
        counts = dict.fromkeys(("pass", "fail", "error", "flips", "check_sets"), 0)
        for (v, name), seen in sorted(outcomes.items()):
            if v != variant:
                continue
            for outcome, n in seen.items():
                counts[outcome.split(":")[0]] += n
            if len(seen) > 1:
                counts["flips" if PASS in seen else "check_sets"] += 1
                differing.setdefault(variant, {})[name] = dict(seen.most_common())
            elif PASS not in seen:
                always_failing.setdefault(variant, []).append(name)
            promised = PASS if variant == CORRECT else "fail"
            if variant == CORRECT or variant in catches[name]:
                kept = set(seen) == {PASS} if promised == PASS else PASS not in seen
                if not kept:
                    broken.setdefault(variant, []).append(name)
        per_variant[variant] = counts
    return Summary(
        repeats=repeats,
        scenarios=len(catches),
        variants=len(variants),
        runs=len(runs),
        seconds=seconds,
        workers=workers,
        load=(min(load, default=0.0), max(load, default=0.0)),
        differing=differing,
        per_variant=per_variant,
        always_failing=always_failing,
        broken_promises=broken,
    )


def render(summary: Summary) -> str:
    lines = [
        f"flake check: {summary.repeats} repeats x {summary.scenarios} scenarios x "
        f"{summary.variants} variants = {summary.runs} runs in {summary.seconds:.0f} s "
        f"({summary.workers} workers; 1-min load average {summary.load[0]:.1f}.."
        f"{summary.load[1]:.1f} on {os.cpu_count()} cores)",
        "",
        f"{'variant':<30} {'pass':>5} {'fail':>5} {'error':>5} {'flips':>6} {'checks':>6}",
    ]
    for variant, c in summary.per_variant.items():
        lines.append(
            f"{variant:<30} {c['pass']:>5} {c['fail']:>5} {c['error']:>5} "
            f"{c['flips']:>6} {c['check_sets']:>6}"
        )
    pairs = sum(len(s) for s in summary.differing.values())
    flips = sum(c["flips"] for c in summary.per_variant.values())
    lines += [
        "",
        f"differing outcomes: {pairs} of {summary.scenarios * summary.variants} "
        f"(scenario, variant) pairs; {flips} flipped between pass and fail, "
        f"{pairs - flips} always failed but with different failed checks",
    ]
    for variant, scenarios in summary.differing.items():
        for name, seen in scenarios.items():
            shown = "; ".join(f"{outcome} x{n}" for outcome, n in seen.items())
            lines.append(f"  {variant} / {name}: {shown}")
    lines += ["", "broken promises (correct: pass every run; catches: fail every run):"]
    for variant, names in summary.broken_promises.items():
        lines.append(f"  {variant}: {', '.join(names)}")
    if not summary.broken_promises:
        lines.append("  none")
    lines += ["", "failing on every run:"]
    for variant in summary.per_variant:
        caught = summary.always_failing.get(variant, [])
        lines.append(f"  {variant}: {', '.join(caught) if caught else '-'}")
    return "\n".join(lines)


def write_json(path: Path, summary: Summary, runs: Sequence[Run]) -> None:
    """Every run so far and their summary (rewritten after each repeat)."""
    path.write_text(
        json.dumps({"summary": asdict(summary), "runs": [asdict(r) for r in runs]}, indent=1)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "-n", "--repeats", type=int, default=DEFAULT_REPEATS, help="runs per pair (default 50)"
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} repeats")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="runs side by side (default: cores)",
    )
    parser.add_argument(
        "--variant", action="append", choices=VARIANTS, help="only this variant (repeatable)"
    )
    parser.add_argument("--scenarios", type=Path, default=SCENARIOS, help="scenario directory")
    parser.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="stop after the last repeat that fits in this wall time (-n is then a maximum)",
    )
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    args = parser.parse_args(argv)
    repeats = QUICK_REPEATS if args.quick else args.repeats
    variants = args.variant or list(VARIANTS)
    scenarios = load_all(args.scenarios)
    print(
        f"up to {repeats} repeats x {len(scenarios)} scenarios x {len(variants)} variants"
        + (f", stopping before {args.budget:g} s" if args.budget else ""),
        file=sys.stderr,
    )
    started = time.monotonic()
    runs: list[Run] = []
    done = 0
    load = [os.getloadavg()[0]]

    def summarize_so_far() -> Summary:
        seconds = time.monotonic() - started
        return summarize(runs, repeats=done, workers=args.workers, seconds=seconds, load=load)

    pool = Pool(args.workers)
    try:
        while done < repeats:
            runs.extend(pool.runs(plan(scenarios, variants, done)))
            done += 1
            load.append(os.getloadavg()[0])
            elapsed = time.monotonic() - started
            print(f"  repeat {done}/{repeats} done at {elapsed:.0f} s", file=sys.stderr)
            if args.json is not None:
                write_json(args.json, summarize_so_far(), runs)
            if args.budget and elapsed + elapsed / done > args.budget:
                break  # another repeat would not fit
    finally:
        pool.close()
    summary = summarize_so_far()
    print(render(summary))
    return 1 if summary.differing or summary.broken_promises else 0


if __name__ == "__main__":
    sys.exit(main())
