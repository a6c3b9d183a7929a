"""Stress check: does the correct runtime pass the whole scenario suite on a busy machine?

Runs ``pytest scenarios/`` (a real pytest session in a subprocess, as a user runs it)
``-n`` times while CPU burners (processes that only spin) keep every core busy, and
reports each false failure: a scenario that failed on the correct runtime.  The
burners are started and always killed by this script; each one also exits by itself
once this script is gone, so a SIGKILL of the script leaves nothing spinning.

    python benchmarks/stress.py [-n 50] [--burners K] [--load L] [--json PATH]

The 1-minute load average is sampled during every run; the report gives its range
and says so when it stayed below ``--load`` (default: twice the cores, e.g. 4 on 2).
Exit status 1 if any run had a false failure, 2 if a run could not be judged.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pytest_flrelia.harness.termination import sigterm_exits

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = REPO_ROOT / "scenarios"
DEFAULT_REPEATS = 50
CORES = os.cpu_count() or 1
LOAD_SAMPLE_SECONDS = 5.0
WARMUP_LIMIT = 120.0
"""The longest the burners get to raise the load average before the first run."""
BURNER_CODE = (
    "import os, sys\n"
    "parent = int(sys.argv[1])\n"
    "n = 0\n"
    "while True:\n"
    "    n += 1\n"
    "    if n % 1000000 == 0 and os.getppid() != parent:\n"
    "        break\n"
)
"""A burner spins and leaves once its parent (this script) is gone."""
FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected)")


@dataclass(frozen=True)
class SuiteRun:
    """One ``pytest scenarios/`` session."""

    repeat: int
    returncode: int
    seconds: float
    counts: dict[str, int]
    failures: list[str] = field(default_factory=list)
    """``FAILED``/``ERROR`` lines of pytest's short summary: the false failures."""
    load: tuple[float, float] = (0.0, 0.0)
    """Lowest and highest 1-minute load average sampled during the run."""

    @property
    def judged(self) -> bool:
        """pytest ran the suite to its end (0: all passed, 1: some failed)."""
        return self.returncode in (0, 1) and bool(self.counts)


class Burners:
    """``count`` spinning processes, each in its own process group."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for _ in range(self.count):
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", BURNER_CODE, str(os.getpid())],
                    start_new_session=True,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

    def stop(self) -> None:
        for process in self.processes:
            with suppress(ProcessLookupError):  # it left by itself
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait()
        self.processes.clear()


@contextmanager
def burning(count: int) -> Iterator[Burners]:
    """Burners for the body of the ``with``; killed however it ends (Ctrl-C included)."""
    burners = Burners(count)
    with sigterm_exits():
        try:
            burners.start()
            yield burners
        finally:
            burners.stop()


class LoadSampler:
    """Samples the 1-minute load average every few seconds while a run goes on."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def __enter__(self) -> LoadSampler:
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def _run(self) -> None:
        while not self._stop.wait(LOAD_SAMPLE_SECONDS):
            self.samples.append(os.getloadavg()[0])

    @property
    def range(self) -> tuple[float, float]:
        return min(self.samples), max(self.samples)


def suite_command(scenarios: Path, pytest_args: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        str(scenarios),
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        *pytest_args,
    ]


def parse(output: str) -> tuple[dict[str, int], list[str]]:
    """pytest's final counts and its ``FAILED``/``ERROR`` summary lines."""
    failures = [line for line in output.splitlines() if FAILED_LINE.match(line)]
    counts: dict[str, int] = {}
    lines = [line for line in output.splitlines() if COUNT.search(line) and " in " in line]
    if lines:
        for number, what in COUNT.findall(lines[-1]):
            counts["errors" if what == "error" else what] = int(number)
    return counts, failures


def run_suite(repeat: int, command: Sequence[str]) -> SuiteRun:
    started = time.monotonic()
    with LoadSampler() as load:
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "COLUMNS": "400"},  # pytest cuts summary lines to the width
        )
    counts, failures = parse(done.stdout)
    if not counts:  # pytest could not even start: keep what it said
        failures = (done.stdout + done.stderr).strip().splitlines()[-5:]
    return SuiteRun(
        repeat, done.returncode, time.monotonic() - started, counts, failures, load.range
    )


def warm_up(target: float, limit: float) -> float:
    """Wait until the 1-minute load average reaches ``target`` (at most ``limit`` s)."""
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] < target and time.monotonic() < deadline:
        time.sleep(1.0)  # the load average itself moves once per 5 s: nothing to wait on
    return os.getloadavg()[0]


def render(runs: Sequence[SuiteRun], *, command: str, burners: int, target: float) -> str:
    loads = [x for run in runs for x in run.load]
    low, high = (min(loads), max(loads)) if loads else (0.0, 0.0)
    false_failures = sum(len(run.failures) for run in runs if run.judged)
    failed_runs = sum(1 for run in runs if run.judged and run.failures)
    lines = [
        f"stress: {len(runs)} runs of the scenario suite on the correct runtime, "
        f"{burners} CPU burners on {CORES} cores, 1-min load average {low:.1f}..{high:.1f}",
        f"command: {command}",
        "",
        f"{'run':>4} {'passed':>7} {'failed':>7} {'errors':>7} {'seconds':>8} {'load':>10}",
    ]
    for run in runs:
        c = run.counts
        lines.append(
            f"{run.repeat:>4} {c.get('passed', 0):>7} {c.get('failed', 0):>7} "
            f"{c.get('errors', 0):>7} {run.seconds:>8.1f} "
            f"{run.load[0]:>4.1f}..{run.load[1]:<4.1f}"
        )
    lines += [
        "",
        f"false failures: {false_failures} in {failed_runs} of {len(runs)} runs",
    ]
    for run in runs:
        for failure in run.failures:
            lines.append(f"  run {run.repeat}: {failure}")
    unjudged = [run for run in runs if not run.judged]
    for run in unjudged:
        lines.append(f"  run {run.repeat}: not judged (pytest exit code {run.returncode})")
    if loads and low < target:
        lines.append(f"note: the load average was below {target:g} at times")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "-n", "--repeats", type=int, default=DEFAULT_REPEATS, help="suite runs (default 50)"
    )
    parser.add_argument(
        "--burners",
        type=int,
        default=2 * CORES,
        help=f"spinning processes (default: twice the cores, {2 * CORES})",
    )
    parser.add_argument(
        "--load",
        type=float,
        default=2.0 * CORES,
        help=f"the 1-minute load average to reach before the first run (default {2 * CORES})",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=WARMUP_LIMIT,
        metavar="SECONDS",
        help=f"longest wait for --load before the first run (default {WARMUP_LIMIT:g})",
    )
    parser.add_argument("--scenarios", type=Path, default=SCENARIOS, help="scenario directory")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument(
        "pytest_args", nargs="*", help="passed to each pytest run (after --)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.burners < 0:
        parser.error("-n must be >= 1 and --burners >= 0")
    command = suite_command(args.scenarios, args.pytest_args)
    shown = shlex.join(["python", "benchmarks/stress.py", *(argv or sys.argv[1:])])
    runs: list[SuiteRun] = []
    with burning(args.burners):
        reached = warm_up(args.load, args.warmup) if args.burners else os.getloadavg()[0]
        print(f"{args.burners} burners; load average {reached:.1f}", file=sys.stderr)
        for repeat in range(1, args.repeats + 1):
            run = run_suite(repeat, command)
            runs.append(run)
            print(
                f"  run {repeat}/{args.repeats}: {run.counts} in {run.seconds:.0f} s",
                file=sys.stderr,
            )
            if args.json is not None:
                args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print(render(runs, command=shown, burners=args.burners, target=args.load))
    if any(not run.judged for run in runs):
        return 2
    return 1 if any(run.failures for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
