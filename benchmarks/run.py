"""Run every benchmark and print its figures: ``python benchmarks/run.py [--quick]``.

Prints one ``name: value`` line per figure as it is measured, then a table of
figure, value, goal and whether the goal was met.  Every figure that has a goal
is a ratio of two things measured in the same run (or a time bounded by the
spec), so that a busy machine moves both sides.  ``docs/performance.md`` says how
each figure is taken and what limits it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the checkout, not benchmarks/ itself
    _here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.detect import measure_detection
from benchmarks.download import measure_download
from benchmarks.failpoint_bench import measure_failpoint_off_ns
from benchmarks.figure import Figure, Goal, render_table
from benchmarks.parallel import measure_xdist_speedup
from benchmarks.round_cost import measure_round_cost
from benchmarks.scale import measure_scale

FAILPOINT_GOAL = Goal("<", 1000.0)
GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class Profile:
    """How hard each benchmark works; ``--quick`` measures everything, with fewer repeats."""

    failpoint_number: int
    failpoint_repeat: int
    round_rounds: int
    round_repeats: int
    download_bytes: int
    download_repeats: int
    scale_cases: tuple[tuple[int, int], ...]
    xdist_repeats: int


FULL = Profile(
    failpoint_number=200_000,
    failpoint_repeat=7,
    round_rounds=8,
    round_repeats=5,
    download_bytes=GiB,
    download_repeats=3,
    scale_cases=((1, 1), (4, 5), (8, 10)),
    xdist_repeats=2,
)
QUICK = Profile(
    failpoint_number=50_000,
    failpoint_repeat=5,
    round_rounds=4,
    round_repeats=3,
    download_bytes=256 * MiB,
    download_repeats=2,
    scale_cases=((1, 1), (2, 3), (4, 5)),
    xdist_repeats=1,
)


def failpoint_figures(profile: Profile) -> list[Figure]:
    ns = measure_failpoint_off_ns(profile.failpoint_number, profile.failpoint_repeat)
    return [Figure("failpoint_off_ns", ns, FAILPOINT_GOAL)]


BENCHMARKS: dict[str, Callable[[Profile], list[Figure]]] = {
    # failpoints first: the later benchmarks configure failpoints (and restore them)
    "failpoint": failpoint_figures,
    "round_cost": lambda p: measure_round_cost(rounds=p.round_rounds, repeats=p.round_repeats),
    "download": lambda p: measure_download(nbytes=p.download_bytes, repeats=p.download_repeats),
    "scale": lambda p: measure_scale(p.scale_cases),
    "detect": lambda p: measure_detection(),
    "xdist": lambda p: measure_xdist_speedup(repeats=p.xdist_repeats),
}


def _groups(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark {', '.join(map(repr, unknown)) or repr(value)}; choose from "
            f"{', '.join(BENCHMARKS)}"
        )
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats, 256 MiB, smaller jobs (< 3 min)"
    )
    parser.add_argument(
        "--only",
        type=_groups,
        default=list(BENCHMARKS),
        metavar="NAMES",
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the runtime's log (known-bug runs are loud)"
    )
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
        return _run(args.only, QUICK if args.quick else FULL, escaped=None)
    escaped: list[str] = []
    with _quiet(escaped):
        return _run(args.only, QUICK if args.quick else FULL, escaped)


@contextmanager
def _quiet(escaped: list[str]) -> Iterator[None]:
    """No runtime log, and exceptions that escape threads (known-bug variants KB7 and
    KB8 do that on purpose) are counted instead of printed; both restored after."""
    root, silent = logging.getLogger(), logging.NullHandler()
    previous_hook = threading.excepthook
    root.addHandler(silent)
    threading.excepthook = lambda hook: escaped.append(
        hook.thread.name if hook.thread is not None else "?"
    )
    try:
        yield
    finally:
        threading.excepthook = previous_hook
        root.removeHandler(silent)


def _run(names: Sequence[str], profile: Profile, escaped: list[str] | None) -> int:
    """Measure, print each figure's line as it comes, then the table; 1 if one broke."""
    started, load_before = time.monotonic(), os.getloadavg()[0]
    figures: list[Figure] = []
    broken: list[str] = []
    for name in names:
        try:
            measured = BENCHMARKS[name](profile)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            broken.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"benchmark {name} failed: {exc}", file=sys.stderr, flush=True)
            continue
        for figure in measured:
            print(figure.line(), flush=True)
            figures.append(figure)
    print()
    print(render_table(figures))
    for line in broken:
        print(f"FAILED {line}")
    print(
        f"\n{'quick' if profile is QUICK else 'full'} run: {time.monotonic() - started:.0f} s "
        f"on {os.cpu_count()} CPUs; load average {load_before:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end"
    )
    if escaped:
        print(f"{len(escaped)} exception(s) escaped threads of known-bug variants (--verbose)")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("PYTHONDONTWRITEBYTECODE is set: subprocesses compile uncached modules from source")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
