"""The detection matrix: every shipped scenario against the correct runtime and
against every known-bug variant, written up as ``docs/bug-zoo.md``.

``python -m pytest_flrelia.tools.zoo [--out docs/bug-zoo.md] [--scenarios scenarios] [--jobs N]``

It answers what ``pytest scenarios/ --flrelia-known-bug=SLUG`` answers, for all
twelve bugs at once: which scenarios catch which bug, by which check, and how
long a user waits before the first failure is reported.  Each run goes through
:func:`pytest_flrelia.harness.runner.run_scenario`, the same call a scenario item makes.
It exits 1 when the correct runtime fails a scenario or a variant escapes the
scenarios whose ``catches`` name it, or fails them without the check each pins
for it (the page is written either way).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_flrelia.harness.runner import ScenarioFailure, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.judge.invariants import Verdict
from pytest_flrelia.plugin.collect import is_scenario_file
from pytest_flrelia.scenario.loader import Scenario, load_scenarios
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS
from pytest_flrelia.tools import matrix_page
from pytest_flrelia.tools.matrix_page import NONE

DEFAULT_OUT = Path("docs/bug-zoo.md")
DEFAULT_SCENARIOS = Path("scenarios")
HARNESS_FAILED = "the harness failed"
"""How the expectation check's ``seen`` starts when the harness itself crashed
(see :func:`pytest_flrelia.judge.invariants.expectation`): such a failure catches nothing."""
CORRECT = "correct"
"""The matrix column of the correct runtime (no known bug)."""


def shipped_scenarios(root: Path) -> list[Scenario]:
    """Every scenario under ``root``, matrices expanded, in the order pytest collects them."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_scenario_file(p))
    return [scenario for path in files for scenario in load_scenarios(path)]


def harness_failure(verdict: Verdict | None) -> str | None:
    """The harness crash a failed verdict reports, if any: a run that crashed the
    harness tells nothing about the runtime, whatever else failed."""
    if verdict is None:
        return "the run failed without a verdict"
    return next((c.seen for c in verdict.failures if c.seen.startswith(HARNESS_FAILED)), None)


@dataclass(frozen=True)
class Cell:
    """One scenario run against one runtime."""

    scenario: str
    variant: str
    """A known-bug slug, or :data:`CORRECT`."""
    failed: bool
    check: str | None
    """The check leading the failure report (the violation seen first); ``None`` if it passed."""
    seen: str | None
    harness_error: str | None
    seconds: float
    """Wall time of the whole ``run_scenario`` call, what a pytest user waits for."""
    failed_checks: tuple[str, ...] = ()
    """Every check that failed, the leading one first."""

    @property
    def caught(self) -> bool:
        """Failed for a reason the runtime gave, not because the harness broke."""
        return self.failed and self.harness_error is None

    def caught_by(self, check: str | None) -> bool:
        """Caught, and by ``check`` among others (any check when ``None``: nothing pinned)."""
        return self.caught and (check is None or check in self.failed_checks)


def run_cell(scenario: Scenario, variant: str, time_scale: float = 1.0) -> Cell:
    """Run ``scenario`` against ``variant`` (a slug or :data:`CORRECT`) and say how it went."""
    settings = Settings(known_bug=None if variant == CORRECT else variant, time_scale=time_scale)
    started = time.monotonic()
    try:
        run_scenario(scenario, settings)
    except ScenarioFailure as failure:
        seconds = time.monotonic() - started
        checks = sorted(
            failure.verdict.failures if failure.verdict else [],
            key=lambda c: (c.at is None, c.at or 0.0),
        )
        lead = checks[0] if checks else None
        return Cell(
            scenario=scenario.name,
            variant=variant,
            failed=True,
            check=lead.name if lead else None,
            seen=lead.seen if lead else None,
            harness_error=harness_failure(failure.verdict),
            seconds=seconds,
            failed_checks=tuple(c.name for c in checks),
        )
    except Exception as error:  # the harness broke: a matrix cell, not the end of the matrix
        return Cell(
            scenario.name, variant, True, None, None, repr(error), time.monotonic() - started
        )
    return Cell(scenario.name, variant, False, None, None, None, time.monotonic() - started)


@functools.cache
def _scenarios_in(path: Path) -> Mapping[str, Scenario]:
    return {s.name: s for s in load_scenarios(path)}


def _run_cell_in_worker(path: Path, name: str, variant: str, time_scale: float) -> Cell:
    """Pool entry point: a :class:`Scenario` does not pickle, its file and name do."""
    return run_cell(_scenarios_in(path)[name], variant, time_scale)


@dataclass(frozen=True)
class Detection:
    """How soon a variant shows when the suite runs in file order."""

    first: Cell | None
    """The first failing scenario in file order."""
    seconds_until_first: float | None
    """Wall time of every scenario up to and including ``first``."""
    fastest: Cell | None
    """The failing scenario that failed soonest after it started."""
    caught_by: tuple[str, ...]


@dataclass(frozen=True)
class Matrix:
    scenarios: tuple[Scenario, ...]
    variants: tuple[str, ...]
    """:data:`CORRECT` first, then the known-bug slugs in SPEC order."""
    cells: Mapping[tuple[str, str], Cell]
    """(scenario name, variant) -> cell."""
    time_scale: float = 1.0

    def cell(self, scenario: Scenario, variant: str) -> Cell:
        return self.cells[(scenario.name, variant)]

    def detection(self, variant: str) -> Detection:
        cells = [self.cell(s, variant) for s in self.scenarios]
        caught = [c for c in cells if c.caught]
        first = caught[0] if caught else None
        until = None
        if first is not None:
            until = sum(c.seconds for c in cells[: cells.index(first) + 1])
        fastest = min(caught, key=lambda c: c.seconds, default=None)
        return Detection(first, until, fastest, tuple(c.scenario for c in caught))

    def problems(self) -> list[str]:
        """Everything that breaks the zoo's promise (SPEC §3): the correct runtime
        passes every scenario, each variant fails one of the scenarios meant to catch it,
        and no run crashes the harness."""
        found: list[str] = []
        for scenario in self.scenarios:
            for variant in self.variants:
                cell = self.cell(scenario, variant)
                if cell.harness_error:
                    found.append(
                        f"{scenario.name} x {variant}: harness error: {cell.harness_error}"
                    )
                elif variant == CORRECT and cell.failed:
                    found.append(
                        f"{scenario.name}: the correct runtime failed {cell.check}: {cell.seen}"
                    )
        for slug in self.variants:
            if slug == CORRECT:
                continue
            meant = [s for s in self.scenarios if slug in s.catches]
            if not any(self.cell(s, slug).caught_by(s.pinned.get(slug)) for s in meant):
                names = ", ".join(_meant(s, slug) for s in meant) or "none lists it in catches"
                found.append(
                    f"{slug}: not caught by the scenarios meant to catch it, with the check "
                    f"each pins ({names})"
                )
        return found


def build_matrix(
    scenarios: Sequence[Scenario],
    variants: Sequence[str],
    *,
    jobs: int = 1,
    time_scale: float = 1.0,
    progress: logging.Logger | None = None,
) -> Matrix:
    """Run every scenario against every variant; ``jobs > 1`` uses a process pool.

    Runs in one process go one after another: fault plans may configure the
    process's failpoints, so two runs never share a process at the same time.
    """
    cells: dict[tuple[str, str], Cell] = {}

    def done(cell: Cell) -> None:
        cells[(cell.scenario, cell.variant)] = cell
        if progress is not None:
            progress.info(
                "%3d/%d %-28s %-42s %-22s %6.2fs",
                len(cells),
                len(scenarios) * len(variants),
                cell.variant,
                cell.scenario,
                _verdict_text(cell),
                cell.seconds,
            )

    pairs = [(s, v) for v in variants for s in scenarios]
    if jobs <= 1:
        for scenario, variant in pairs:
            done(run_cell(scenario, variant, time_scale))
    else:
        context = multiprocessing.get_context("spawn")  # no forked copies of live threads
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = [
                pool.submit(_run_cell_in_worker, s.path, s.name, v, time_scale) for s, v in pairs
            ]
            for future in concurrent.futures.as_completed(futures):
                done(future.result())
    return Matrix(tuple(scenarios), tuple(variants), cells, time_scale)


# -- the page ---------------------------------------------------------------------


def _verdict_text(cell: Cell) -> str:
    if cell.harness_error:
        return "harness error"
    if not cell.failed:
        return "passed"
    return f"caught ({cell.check})" if cell.variant != CORRECT else f"FAILED ({cell.check})"


def _matrix_cell(cell: Cell, meant: bool) -> str:
    if cell.harness_error:
        return matrix_page.harness_error()
    if not cell.failed:
        return matrix_page.passed()
    if cell.variant == CORRECT:
        return matrix_page.failed(cell.check)
    return matrix_page.caught(cell.check, bold=meant)


def _meant(scenario: Scenario, slug: str) -> str:
    """``name (check)``: a scenario meant to catch ``slug`` and the check it pins."""
    check = scenario.pinned.get(slug)
    return scenario.name if check is None else f"{scenario.name} ({check})"


def _seconds(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f} s"


def _column(variant: str) -> str:
    return CORRECT if variant == CORRECT else KNOWN_BUGS[variant].kb


def render(matrix: Matrix, scenarios_dir: Path) -> str:
    """``docs/bug-zoo.md``: what a variant is, the twelve bugs, the matrix, detection times."""
    slugs = [v for v in matrix.variants if v != CORRECT]
    lines = [
        "# The bug zoo",
        "",
        "Every bug below shipped in a real federated-learning launcher (KB1-KB11 in NVFlare in",
        "March 2026, KB12 still there). Each one also",
        "exists here as a *known-bug variant*: the reference runtime with one part replaced by",
        "a subclass that overrides one step the way the buggy launcher did",
        "(`pytest_flrelia/targets/reference/known_bugs.py`; the registry of slugs is",
        "`pytest_flrelia/targets/reference/variants.py`).",
        "The correct classes carry no switch for any of them.",
        "Run the scenario suite against a variant to see the bug the way a user first met it:",
        "",
        "```bash",
        "pytest scenarios/ --flrelia-known-bug=SLUG   # e.g. --flrelia-known-bug=sync-stop",
        "pytest --flrelia-known-bugs                  # list the slugs, one line each",
        "```",
        "",
        "The scenarios whose `catches` name the slug fail, each with a report of what happened",
        "and with the check its `catches` pins for the slug among the failures; on the correct",
        "runtime (no option) every scenario passes. `tests/test_known_bugs.py` checks both on",
        "every test run.",
        "",
        "## The bugs",
        "",
        "| id | slug | the bug | scenarios meant to catch it (the check each pins) |",
        "|---|---|---|---|",
    ]
    for slug in slugs:
        bug = KNOWN_BUGS[slug]
        meant = (
            ", ".join(
                f"`{s.name}`" + (f" (`{s.pinned[slug]}`)" if slug in s.pinned else "")
                for s in matrix.scenarios
                if slug in s.catches
            )
            or NONE
        )
        lines.append(f"| {bug.kb} | `{slug}` | {bug.summary} | {meant} |")
    lines += [
        "",
        "## Detection matrix",
        "",
        f"Every scenario under `{scenarios_dir.as_posix()}/` against the correct runtime and every",
        "variant. *caught* names the check that leads the failure report (the violation seen",
        "first); **bold** marks a scenario that lists the bug in `catches`. Generated by",
        "`python -m pytest_flrelia.tools.zoo`; regenerate it after adding or changing a scenario.",
        "",
    ]
    lines += matrix_page.table(
        ["scenario", *(_column(v) for v in matrix.variants)],
        [
            [
                f"`{scenario.name}`",
                *(
                    _matrix_cell(matrix.cell(scenario, v), v in scenario.catches)
                    for v in matrix.variants
                ),
            ]
            for scenario in matrix.scenarios
        ],
    )
    lines += [
        "",
        "## Time to detection",
        "",
        "How long a user waits, running the suite in file order (one scenario at a time), until",
        "the first failure is reported: the wall time of every scenario up to and including the",
        "first one that fails; and the fastest failing scenario on its own",
        "(`pytest scenarios/ -k NAME --flrelia-known-bug=SLUG`). Wall times from one run on a",
        f"machine with {os.cpu_count()} cores"
        + ("" if matrix.time_scale == 1.0 else f", every duration scaled by {matrix.time_scale:g}")
        + "; they move a little from run to run.",
        "",
        "| id | slug | first failing scenario | until reported | fastest failing scenario | "
        "its wall time | scenarios that catch it |",
        "|---|---|---|---|---|---|---|",
    ]
    for slug in slugs:
        found = matrix.detection(slug)
        first = f"`{found.first.scenario}`" if found.first else "**not caught**"
        fastest = f"`{found.fastest.scenario}`" if found.fastest else NONE
        lines.append(
            f"| {KNOWN_BUGS[slug].kb} | `{slug}` | {first} | "
            f"{_seconds(found.seconds_until_first)} | {fastest} | "
            f"{_seconds(found.fastest.seconds if found.fastest else None)} | "
            f"{len(found.caught_by)} of {len(matrix.scenarios)} |"
        )
    correct = sum(matrix.cell(s, CORRECT).seconds for s in matrix.scenarios)
    lines += [
        "",
        f"The whole suite on the correct runtime: {_seconds(correct)} of wall time, one scenario",
        "at a time.",
    ]
    problems = matrix.problems()
    if problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


# -- the command ------------------------------------------------------------------


def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_flrelia.tools.zoo",
        description="Run every shipped scenario against the correct runtime and every "
        "known-bug variant; write the detection matrix.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="page to write")
    parser.add_argument(
        "--scenarios", type=Path, default=DEFAULT_SCENARIOS, help="directory of scenario files"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes running scenarios at once (default 1: timings as a user sees them)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply every scenario duration, as --flrelia-time-scale (>1 on a slow machine)",
    )
    return parser.parse_args(None if argv is None else list(argv))


def main(argv: Iterable[str] | None = None) -> int:
    """Write the page; 1 if the zoo's promise is broken (the problems go to stderr)."""
    args = _parse(argv)
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    progress = logging.getLogger("flrelia.zoo")
    progress.setLevel(logging.INFO)
    scenarios = shipped_scenarios(args.scenarios)
    if not scenarios:
        print(f"no *.scenario.yaml under {args.scenarios}", file=sys.stderr)
        return 2
    matrix = build_matrix(
        scenarios,
        (CORRECT, *KNOWN_BUGS),
        jobs=args.jobs,
        time_scale=args.time_scale,
        progress=progress,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(matrix, args.scenarios), encoding="utf-8")
    print(f"wrote {args.out}")
    for problem in matrix.problems():
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if matrix.problems() else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CORRECT",
    "HARNESS_FAILED",
    "Cell",
    "Detection",
    "Matrix",
    "build_matrix",
    "harness_failure",
    "main",
    "render",
    "run_cell",
    "shipped_scenarios",
]
