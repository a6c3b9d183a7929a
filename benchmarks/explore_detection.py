"""Does exploration alone find each bug, how fast, and how small does it shrink it?

For every planted bug of the test suite (``tests/planted``, target ``planted``) and
every known bug KB1-KB12 (target ``reference``): explore that variant with a budget
(5 minutes by default, issue #15), take the first failure, and check what it left:

- *time to find*: wall time from the start of the exploration until the progress
  line of the first failing schedule (that line comes after its rerun and shrink, so
  the figure includes them: it is the time until a user holds the minimal file);
- *drawn*: schedules drawn up to and including it (its index + 1);
- *shrunk faults*: faults in the minimal scenario (goal: at most 2);
- the minimal ``.scenario.yaml`` the explorer wrote is loaded and run again: it must
  fail on the variant and pass on the correct runtime (``replay`` says whether both held).

    python benchmarks/explore_detection.py [--budget 5m] [--count 200] [--jobs 2]
        [--seed 0] [--out DIR] [SLUG ...]
"""

from __future__ import annotations

import argparse
import importlib
import os
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
from pytest_flrelia.explore import ExploreReport, explore
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import load_scenarios
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS

TESTS = REPO_ROOT / "tests"
FIND_GOAL = Goal("<=", 300.0)
SHRINK_GOAL = Goal("<=", 2.0)


def planted() -> Any:
    """``tests/planted``: importable once ``tests`` is on the path, installed as the
    ``planted`` target (an entry point) for this process and the explorer's workers."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    install = importlib.import_module("planted.install")
    where = Path(tempfile.mkdtemp(prefix="flrelia-planted-ep-"))
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

    @property
    def found(self) -> bool:
        return self.kept is not None


def time_to_find(report: ExploreReport, stamps: Sequence[tuple[float, str]]) -> float:
    """When the first failure's progress line came (seconds since the start)."""
    first = report.first_failure()
    if first is None:
        return float("inf")
    for at, line in stamps:
        if first.item_id in line:
            return at
    return report.seconds  # no line named it: the whole exploration is the upper bound


def replay(target: str, variant: str, path: Path, targets: Callable[[str], Any]) -> str:
    """Run the kept scenario on the variant (must fail) and on the correct runtime (must pass)."""
    scenarios = load_scenarios(path)
    problems: list[str] = []
    for scenario in scenarios:
        try:
            run_scenario(scenario, Settings(target=target, known_bug=variant), targets=targets)
            problems.append(f"{scenario.name} passes on {variant}")
        except ScenarioFailure:
            pass
        except ScenarioUnsupported as skip:
            problems.append(f"{scenario.name} skipped: {skip}")
        try:
            run_scenario(scenario, Settings(target=target), targets=targets)
        except ScenarioFailure as failure:
            checks = [] if failure.verdict is None else failure.verdict.failures
            problems.append(
                f"{scenario.name} fails on the correct runtime: "
                f"{', '.join(c.name for c in checks)}"
            )
    return "; ".join(problems) or "fails on variant, passes on correct"


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
    stamps: list[tuple[float, str]] = []
    started = time.monotonic()

    def progress(line: str) -> None:
        stamps.append((time.monotonic() - started, line))

    report = explore(
        target, variant=variant, count=count, budget=budget, seed=seed,
        out_dir=out / variant, jobs=jobs, progress=progress,
    )
    first = report.first_failure()
    kept = None if first is None else first.scenario_path
    return Finding(
        target=target,
        variant=variant,
        seconds_to_find=time_to_find(report, stamps),
        drawn=len(report.ran) if first is None else first.index + 1,
        shrunk_faults=None if first is None else first.shrunk_faults,
        leading_check=None if first is None else first.leading_check,
        kept=kept,
        replay="not found" if kept is None else replay(target, variant, kept, targets),
        flaky=len(report.flaky),
    )


def table(findings: Sequence[Finding]) -> str:
    """The proof table of docs/explore.md: one row per variant."""
    rows = [
        "| variant | target | found? | time to find | drawn | shrunk faults | leading check "
        "| kept file | replay |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in findings:
        rows.append(
            f"| `{f.variant}` | {f.target} | {'yes' if f.found else '**no**'} "
            f"| {'-' if not f.found else f'{f.seconds_to_find:.0f} s'} | {f.drawn} "
            f"| {'-' if f.shrunk_faults is None else f.shrunk_faults} "
            f"| {f.leading_check or '-'} | {f.kept.name if f.kept else '-'} | {f.replay} |"
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
