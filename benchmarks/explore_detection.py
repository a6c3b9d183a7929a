"""Does exploration alone find each bug, how fast, and how small does it shrink it?

For every planted bug of the test suite (``tests/planted``, target ``planted``) and
every known bug KB1-KB12 (target ``reference``): explore that variant with a budget
(5 minutes by default, issue #15), take the first failure, and check what it left:

- *time to find*: wall time from the start of the exploration until the progress
  line of the first failing schedule (that line comes after its rerun and shrink, so
  the figure includes them: it is the time until a user holds the minimal file); the
  exploration stops there;
- *drawn*: schedules finished up to and including it;
- *shrunk faults*: faults in the minimal scenario (goal: at most 2);
- the minimal ``.scenario.yaml`` the explorer wrote is loaded and run again: it must
  fail on the variant and pass on the correct runtime (``replay`` says whether both held).

    python benchmarks/explore_detection.py [--budget 5m] [--count 200] [--jobs 2]
        [--seed 0] [--out DIR] [SLUG ...]
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import REPO_ROOT
from benchmarks.figure import Figure, Goal, render_table
from pytest_flrelia.contract.units import parse_duration
from pytest_flrelia.errors import ScenarioFailure, ScenarioUnsupported
from pytest_flrelia.explore import explore
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.harness.termination import sigterm_exits
from pytest_flrelia.scenario.loader import load_scenarios
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS

TESTS = REPO_ROOT / "tests"
FIND_GOAL = Goal("<=", 300.0)
SHRINK_GOAL = Goal("<=", 2.0)


def planted() -> Any:
    """``tests/planted``: importable once ``tests`` is on the path, installed as the
    ``planted`` target (an entry point) for this process and the explorer's workers; the
    entry point's directory goes when the process exits."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    install = importlib.import_module("planted.install")
    where = Path(tempfile.mkdtemp(prefix="flrelia-planted-ep-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    os.environ["PYTHONPATH"] = install.install_planted(where)
    sys.path.insert(0, str(where))
    return importlib.import_module("planted.registry")


@dataclass(frozen=True)
class Finding:
    """What exploring one variant gave."""

    target: str
    variant: str
    seconds_to_find: float
    """``inf`` when nothing failed within the budget."""
    drawn: int
    """Schedules drawn up to the first failure (all drawn when none failed)."""
    shrunk_faults: int | None
    leading_check: str | None
    kept: Path | None
    replay: str
    """``fails on variant, passes on correct`` when both held; what did not otherwise."""
    flaky: int
    false_findings: tuple[str, ...] = ()
    """Failures of the variant that also fail on the correct runtime (a harness or generator
    defect, not the bug): each is the kept file's name and the checks it failed there."""

    @property
    def found(self) -> bool:
        return self.kept is not None


class FirstFailure(Exception):
    """Raised by the progress callback at the first failed schedule: the benchmark stops
    there, as a user stops a session once it found something (``explore`` has no such
    option; it runs every schedule it was asked for)."""

    def __init__(self, at: float, line: str, drawn: int, kept: Path) -> None:
        super().__init__(line)
        self.at = at
        self.line = line
        self.drawn = drawn
        self.kept = kept


FAILED_LINE = re.compile(r"^\[(\d+)/\d+\] (s\d+-\d+) failed \((\w+)\)")
"""The progress line of a failed schedule (``pytest_flrelia.explore.api.progress_line``)."""


def fails_on(target: str, variant: str | None, path: Path,
             targets: Callable[[str], Any]) -> str | None:
    """The checks the kept scenario fails on ``variant`` (``None``: the correct runtime),
    comma-separated; ``None`` when it passes (a skip says so instead)."""
    try:
        for scenario in load_scenarios(path):
            run_scenario(scenario, Settings(target=target, known_bug=variant), targets=targets)
    except ScenarioFailure as failure:
        checks = [] if failure.verdict is None else failure.verdict.failures
        return ", ".join(c.name for c in checks) or "harness error"
    except ScenarioUnsupported as skip:
        return f"skipped: {skip}"
    return None


def hunt(
    target: str,
    variant: str,
    *,
    budget: float,
    count: int,
    jobs: int,
    seed: int,
    out: Path,
    targets: Callable[[str], Any],
) -> Finding:
    """Explore ``variant`` until its first failure that passes on the correct runtime (or
    until ``count`` / ``budget``).  The time spent checking a failure on the correct
    runtime is not counted in the time to find."""
    started = time.monotonic()
    paused = [0.0]
    done = [0]
    false_findings: list[str] = []
    where = out / variant

    def progress(line: str) -> None:
        done[0] += 1
        match = FAILED_LINE.match(line)
        if match is None:
            return
        found_at = time.monotonic() - started - paused[0]
        kept = sorted(where.glob(f"*{match.group(2)}.scenario.yaml"))
        if not kept:
            false_findings.append(f"{match.group(2)}: no file written")
            return
        checking = time.monotonic()
        on_correct = fails_on(target, None, kept[0], targets)
        paused[0] += time.monotonic() - checking
        if on_correct is not None:
            false_findings.append(f"{kept[0].name} fails on the correct runtime: {on_correct}")
            return
        raise FirstFailure(found_at, line, done[0], kept[0])

    try:
        report = explore(
            target, variant=variant, count=count, budget=budget, seed=seed,
            out_dir=where, jobs=jobs, progress=progress,
        )
    except FirstFailure as first:
        match = FAILED_LINE.match(first.line)
        assert match is not None
        on_variant = fails_on(target, variant, first.kept, targets)
        return Finding(
            target=target,
            variant=variant,
            seconds_to_find=first.at,
            drawn=first.drawn,
            shrunk_faults=faults_in(first.kept),
            leading_check=match.group(3),
            kept=first.kept,
            replay=(
                "fails on variant, passes on correct"
                if on_variant is not None and not on_variant.startswith("skipped")
                else f"kept file on the variant: {on_variant or 'passes'}"
            ),
            flaky=0,
            false_findings=tuple(false_findings),
        )
    return Finding(
        target=target, variant=variant, seconds_to_find=float("inf"), drawn=len(report.ran),
        shrunk_faults=None, leading_check=None, kept=None, replay="not found",
        flaky=len(report.flaky), false_findings=tuple(false_findings),
    )


def faults_in(path: Path) -> int:
    """How many faults the kept scenario file holds."""
    (scenario,) = load_scenarios(path)
    return len(scenario.faults)


def table(findings: Sequence[Finding]) -> str:
    """The proof table of docs/explore.md: one row per variant."""
    rows = [
        "| variant | target | found? | time to find | drawn | shrunk faults | leading check "
        "| kept file | replay | not counted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in findings:
        rows.append(
            f"| `{f.variant}` | {f.target} | {'yes' if f.found else '**no**'} "
            f"| {'-' if not f.found else f'{f.seconds_to_find:.0f} s'} | {f.drawn} "
            f"| {'-' if f.shrunk_faults is None else f.shrunk_faults} "
            f"| {f.leading_check or '-'} | {f.kept.name if f.kept else '-'} | {f.replay} "
            f"| {len(f.false_findings)} |"
        )
    return "\n".join(rows)


def figures(findings: Sequence[Finding]) -> list[Figure]:
    out = []
    for f in findings:
        out.append(Figure(f"explore_find_seconds_{f.variant}", f.seconds_to_find, FIND_GOAL,
                          note=f.replay if f.found else f"not found in {f.drawn} schedules"))
        shrunk = float("nan") if f.shrunk_faults is None else float(f.shrunk_faults)
        out.append(Figure(f"explore_shrunk_faults_{f.variant}", shrunk, SHRINK_GOAL))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    with sigterm_exits():  # a SIGTERM unwinds: temp dirs and children go
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slugs", nargs="*", help="variants (default: every planted and KB bug)")
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="where kept scenarios go")
    args = parser.parse_args(argv)
    registry = planted()
    target_class = importlib.import_module("planted.target").PlantedTarget
    built = {"planted": target_class()}

    def targets(name: str) -> Any:
        if name not in built:
            from pytest_flrelia.targets import load_target  # noqa: PLC0415

            built[name] = load_target(name)
        return built[name]

    slugs = args.slugs or [*registry.PLANTED, *KNOWN_BUGS]
    out = args.out or Path(tempfile.mkdtemp(prefix="flrelia-explore-detect-"))
    budget = parse_duration(args.budget, "--budget")
    findings = []
    for slug in slugs:
        target = "planted" if slug in registry.PLANTED else "reference"
        finding = hunt(target, slug, budget=budget, count=args.count, jobs=args.jobs,
                       seed=args.seed, out=out, targets=targets)
        findings.append(finding)
        print(f"{slug}: {'found' if finding.found else 'NOT FOUND'} "
              f"{finding.seconds_to_find:.0f}s drawn={finding.drawn} "
              f"shrunk={finding.shrunk_faults} leading={finding.leading_check} "
              f"kept={finding.kept} replay={finding.replay}", flush=True)
        for line in finding.false_findings:
            print(f"  not counted: {line}", flush=True)
    print(table(findings))
    found = figures(findings)
    for figure in found:
        print(figure.line())
    print(render_table(found))
    print(f"kept scenarios in {out}")
    ok = all(f.found and f.replay.startswith("fails on variant") and (f.shrunk_faults or 0) <= 2
             for f in findings)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
