"""The version matrix: the scenario suite against a foreign target in one virtual
environment per version, written up as ``docs/nvflare.md`` with its pinned expectation
``docs/nvflare-matrix.json`` beside it, and checked against that pin in CI.

``python -m pytest_flrelia.tools.nvflare_matrix --venv 2.7.2=VENV [--venv V=VENV ...]
[--write docs/nvflare.md] [--check VERSION]``

Each version runs ``VENV/bin/python -m pytest SCENARIOS --flrelia-target=TARGET -n JOBS
--flrelia-json=...`` (the venv has that version and this package installed); its
record (:mod:`pytest_flrelia.plugin.run_record`) gives every item's cell: ``pass``,
``caught`` by its leading check, ``xfail`` of a known issue on its check, ``skipped``
with the reason, ``xpass`` (a known issue that no longer reproduces) or ``error``.
``--write`` writes the page and the pin for the versions given; ``--check VERSION`` runs
that one version and fails naming every cell that differs from the pin.  A verdict that
hangs on a race (which of two violations is seen first) differs between runs: ``--runs N``
runs each version N times, and a cell seen with more than one outcome is pinned with every
outcome seen (the check accepts any of them) and shown on the page as varying, with its
counts, instead of being pinned to whichever the one run happened to give.  ``--extra
V=ARG`` passes ARG to that version's pytest: the tool's own tests use the reference
target's known-bug variants as stand-in versions that way.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_flrelia.plugin import run_record
from pytest_flrelia.tools import matrix_page

DEFAULT_OUT = Path("docs/nvflare.md")
DEFAULT_SCENARIOS = Path("scenarios")
DEFAULT_TARGET = "nvflare"
PIN_FORMAT = 2
"""2: a cell is one outcome or the list of the outcomes seen over the runs (1: one)."""
RUN_TIMEOUT = 3600.0
"""The longest one version's suite may take (a hung run must not hang CI)."""
PYTEST_OK = (0, 1)
"""pytest's exit codes with a record to read: all passed, some failed."""
WIRING = "nvflare-wiring.md"
FAULTS = "nvflare-faults.md"

PASS, CAUGHT, XFAIL, SKIPPED, XPASS, ERROR = "pass", "caught", "xfail", "skipped", "xpass", "error"
RACE = "race"
"""A failure the run's own timeline shows a known race of the target caused (an xfail of
that race): accepted on any cell, never pinned, listed per race on the page."""
_KINDS = {
    run_record.PASSED: PASS,
    run_record.FAILED: CAUGHT,
    run_record.XFAILED: XFAIL,
    run_record.SKIPPED: SKIPPED,
    run_record.XPASSED_STRICT: XPASS,
    run_record.ERROR: ERROR,
}


@dataclass(frozen=True)
class Cell:
    """One scenario item against one version."""

    item: str
    version: str
    kind: str
    check: str | None = None
    """The leading check of ``caught`` and ``xfail``."""
    reason: str | None = None
    """Why it was skipped (or the xfail's reason): shown, not pinned."""
    file: str | None = None
    issue: Mapping[str, Any] | None = None
    """The known issue an ``xfail``/``xpass`` is of (as the record has it)."""
    race: Mapping[str, Any] | None = None
    """The known race a ``race`` cell is of, with the run's evidence (as the record has it)."""

    @property
    def pinned(self) -> str:
        """What the pin compares: the kind and the leading check."""
        return self.kind if self.check is None else f"{self.kind}:{self.check}"

    def text(self) -> str:
        if self.kind == PASS:
            return matrix_page.passed()
        if self.kind == CAUGHT:
            return matrix_page.caught(self.check)
        if self.kind == XFAIL:
            return matrix_page.xfail(self.check)
        if self.kind == SKIPPED:
            return matrix_page.skipped(None)
        if self.kind == XPASS:
            return "**XPASS** (fixed: remove the known issue)"
        if self.kind == RACE:
            return f"known race [{self.check}](#{_anchor(self.race or {})})"
        return matrix_page.harness_error()


def cell_of(entry: Mapping[str, Any], version: str) -> Cell:
    """An item of a run record as a matrix cell."""
    kind = _KINDS.get(str(entry.get("outcome")), ERROR)
    run = entry.get("run") or {}
    check = run.get("leading_check") if kind in (CAUGHT, XFAIL) else None
    if kind == CAUGHT and check is None:
        kind = ERROR  # failed without a verdict: the harness broke, nothing was caught
    race = run.get("known_race") if kind == XFAIL else None
    if race is not None:
        kind, check = RACE, str(race.get("name"))
    return Cell(
        item=str(entry["name"]),
        version=version,
        kind=kind,
        check=check,
        reason=entry.get("reason"),
        file=entry.get("file"),
        issue=run.get("known_issue"),
        race=race,
    )


@dataclass(frozen=True)
class Version:
    """One column: a version and the Python of the environment that has it."""

    name: str
    python: Path
    extra: tuple[str, ...] = ()


@dataclass
class Matrix:
    versions: list[str]
    runs: dict[tuple[str, str], list[Cell]] = field(default_factory=dict)
    """(item, version) -> its cell in each run of that version, in run order."""
    items: list[str] = field(default_factory=list)
    """Item names in the order pytest collected them (node id order)."""
    seconds: dict[str, list[float]] = field(default_factory=dict)
    """Version -> the wall time of each of its runs."""
    observed: dict[str, int] = field(default_factory=dict)
    """Version -> item runs added from other records (:meth:`observe`)."""

    def add(self, version: str, entries: Sequence[Mapping[str, Any]], seconds: float) -> None:
        """One more run of ``version``."""
        self.seconds.setdefault(version, []).append(seconds)
        for entry in entries:
            cell = cell_of(entry, version)
            if cell.item not in self.items:
                self.items.append(cell.item)
            self.runs.setdefault((cell.item, version), []).append(cell)

    def observe(self, version: str, entries: Sequence[Mapping[str, Any]]) -> int:
        """Items of another run of ``version`` (a CI run's kept record, some items
        repeated under load with pytest-repeat, whose ``[i-n]`` suffix is folded away):
        each adds to its item's outcomes, never to the suite's walls.  How many it added."""
        added = 0
        for entry in entries:
            cell = dataclasses.replace(cell_of(entry, version), item=repeated_item(entry["name"]))
            if (cell.item, version) in self.runs:
                self.runs[(cell.item, version)].append(cell)
                added += 1
        self.observed[version] = self.observed.get(version, 0) + added
        return added

    def cell(self, item: str, version: str) -> Cell | None:
        """The cell seen most often (the first seen of a tie), ``None`` if never run."""
        seen = self.runs.get((item, version))
        if not seen:
            return None
        counts = Counter(c.pinned for c in seen)
        return max(seen, key=lambda c: counts[c.pinned])

    def outcomes(self, item: str, version: str) -> list[tuple[str, int]]:
        """Every outcome of the item on ``version`` but a known race's, with how many
        runs gave it, the most frequent first (first seen first among equals)."""
        counts = Counter(c.pinned for c in self.runs.get((item, version), ()) if c.kind != RACE)
        return counts.most_common()

    def race_hits(self) -> list[Cell]:
        """Every run of an item that a known race failed, in item order."""
        return [c for item in self.items for v in self.versions
                for c in self.runs.get((item, v), ()) if c.kind == RACE]

    def cells(self) -> list[Cell]:
        """Every cell of every run."""
        return [c for seen in self.runs.values() for c in seen]

    def pin(self, target: str) -> dict[str, Any]:
        cells: dict[str, dict[str, str | list[str]]] = {}
        for item in self.items:
            row: dict[str, str | list[str]] = {}
            for v in self.versions:
                seen = [o for o, _ in self.outcomes(item, v)]
                if seen:
                    row[v] = seen[0] if len(seen) == 1 else seen
            cells[item] = row
        return {"format": PIN_FORMAT, "target": target, "versions": self.versions, "cells": cells}


_REPEAT = re.compile(r"(?:\[(\d+)-(\d+)\]|-(\d+)-(\d+)\])$")


def repeated_item(name: str) -> str:
    """An item's name without pytest-repeat's ``[i-n]`` (or ``-i-n]``) suffix."""
    found = _REPEAT.search(name)
    if found is None:
        return name
    return name[: found.start()] + ("]" if found.group(3) is not None else "")


def accepted(value: object) -> list[str]:
    """The outcomes a pinned cell accepts (format 1 pins one, format 2 one or a list)."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def python_of(venv: Path) -> Path:
    """A venv's interpreter (or ``venv`` itself when it names one)."""
    return venv if venv.is_file() else venv / "bin" / "python"


def run_version(
    version: Version,
    scenarios: Path | Sequence[str],
    target: str,
    jobs: int,
    *,
    keep: Path | None = None,
    cwd: Path | None = None,
    run: int = 1,
) -> tuple[list[dict[str, Any]], float]:
    """Run the suite (a directory, or node ids) in ``version``'s environment, from ``cwd``;
    its record's items and the wall time of the whole pytest run.  ``run`` numbers the
    record kept in ``keep`` (:func:`kept_record`)."""
    paths = [str(scenarios)] if isinstance(scenarios, Path) else list(scenarios)
    with tempfile.TemporaryDirectory(prefix="flrelia-matrix-") as tmp:
        record = kept_record(keep or Path(tmp), version.name, target, jobs, run)
        command = [
            str(version.python), "-m", "pytest", *paths, "-q", "-rfEsx",
            "-p", "no:randomly", "-p", "no:cacheprovider",
            f"--flrelia-target={target}", f"--flrelia-json={record}",
            *(("-n", str(jobs)) if jobs > 1 else ()),
            *version.extra,
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False, cwd=cwd
        )
        seconds = time.monotonic() - started
        if keep is not None:
            record.with_suffix(".log").write_text(done.stdout + done.stderr, encoding="utf-8")
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        if done.returncode not in PYTEST_OK or not record.exists():
            raise RuntimeError(
                f"{version.name}: pytest exited {done.returncode} without a record:\n{tail}"
            )
        print(f"{version.name}: {tail.splitlines()[-1] if tail else ''} ({seconds:.0f} s)")
        return run_record.load(record), seconds


def kept_record(keep: Path, version: str, target: str, jobs: int, run: int) -> Path:
    """Where run ``run`` of ``version`` keeps its record (its log beside it, ``.log``):
    run 1 as ``V-TARGET-nJOBS.json``, later runs with ``.runN`` before the suffix."""
    stem = f"{version}-{target}-n{jobs}" + ("" if run == 1 else f".run{run}")
    return keep / f"{stem}.json"


def kept_runs(keep: Path, version: str, target: str, jobs: int) -> list[Path]:
    """The records ``keep`` holds for ``version``, in run order (each with its log)."""
    found = []
    run = 1
    while (record := kept_record(keep, version, target, jobs, run)).exists():
        if record.with_suffix(".log").exists():
            found.append(record)
        run += 1
    return found


def kept_run(record: Path) -> tuple[list[dict[str, Any]], float]:
    """A kept record and its run's wall (pytest's own, read off the kept log's last
    line): rebuilding the page after one version was rerun needs no rerun of the others."""
    lines = record.with_suffix(".log").read_text(encoding="utf-8").strip().splitlines()
    found = re.search(r" in ([0-9.]+)s", lines[-1]) if lines else None
    return run_record.load(record), float(found.group(1)) if found else 0.0


def build(
    versions: Sequence[Version],
    scenarios: Path,
    target: str,
    jobs: int,
    keep: Path | None = None,
    reuse: frozenset[str] = frozenset(),
    *,
    runs: int = 1,
    accumulate: bool = False,
) -> Matrix:
    """Each version run ``runs`` times (its records kept in ``keep``), or, in ``reuse``,
    taken from the runs ``keep`` holds.  With ``accumulate`` the new runs are added to the
    kept ones (more samples of the same code); without it they replace them."""
    matrix = Matrix([v.name for v in versions])
    for version in versions:
        kept = kept_runs(keep, version.name, target, jobs) if keep is not None else []
        if version.name in reuse:
            if not kept:
                raise SystemExit(
                    f"--reuse {version.name}: no kept record "
                    f"{kept_record(keep or Path('.'), version.name, target, jobs, 1)} "
                    "(and its .log)"
                )
            for record in kept:
                matrix.add(version.name, *kept_run(record))
            continue
        if accumulate:
            for record in kept:
                matrix.add(version.name, *kept_run(record))
        else:
            for record in kept:
                record.unlink()
                record.with_suffix(".log").unlink()
            kept = []
        for run in range(len(kept) + 1, len(kept) + runs + 1):
            entries, seconds = run_version(version, scenarios, target, jobs, keep=keep, run=run)
            matrix.add(version.name, entries, seconds)
    return matrix


def differences(pin: Mapping[str, Any], matrix: Matrix, version: str) -> list[str]:
    """Every outcome of ``version`` the pin does not accept, one line each (a cell pinned
    with several outcomes accepts any of them)."""
    pinned: Mapping[str, Mapping[str, object]] = pin.get("cells", {})
    if version not in pin.get("versions", ()):
        return [f"{version}: not a version of the pin ({', '.join(pin.get('versions', ()))})"]
    found = []
    for item in sorted(set(pinned) | set(matrix.items)):
        want = accepted(pinned.get(item, {}).get(version))
        got = matrix.outcomes(item, version)
        if not got and want and not matrix.runs.get((item, version)):
            found.append(f"{item} on {version}: pinned {' or '.join(want)}, "
                         "got nothing (the item is gone)")
        for outcome, _ in got:
            if outcome in want:
                continue
            cell = next(c for c in matrix.runs[(item, version)] if c.pinned == outcome)
            found.append(
                f"{item} on {version}: pinned {' or '.join(want) or 'nothing (a new item)'}, "
                f"got {outcome}" + (f" ({cell.reason})" if cell.reason else "")
            )
    return found


# -- the page ---------------------------------------------------------------------


def _anchor(issue: Mapping[str, Any]) -> str:
    return str(issue.get("anchor", "")).split("#", 1)[-1]


def render(matrix: Matrix, scenarios: Path, target: str, pin_name: str) -> str:
    """``docs/nvflare.md``: the matrix, its known issues, why items are skipped."""
    lines = [
        f"# The scenario suite against `{target}`, per version",
        "",
        "Generated by `python -m pytest_flrelia.tools.nvflare_matrix --write docs/nvflare.md "
        + " ".join(f"--venv {v}=VENV" for v in matrix.versions)
        + "`; do not edit. The same run pins what CI checks, cell by cell, in "
        f"[`{pin_name}`]({pin_name}) (`--check VERSION`).",
        f"How the target drives the real classes: [{WIRING}]({WIRING}); how each fault is",
        f"delivered: [{FAULTS}]({FAULTS}).",
        "",
        "Run the gate against the installed version:",
        "",
        "```bash",
        "pip install 'pytest-flrelia[nvflare]'      # nvflare>=2.7.1,<2.9",
        f"pytest {scenarios.as_posix()}/ --flrelia-target={target} -n 2",
        "```",
        "",
        "## Matrix",
        "",
        "*caught* names the check leading the failure report; *xfail* is a known issue of",
        "that version (below) that reproduced with its check leading; a known issue that",
        "stops reproducing fails the gate. A cell that gave different outcomes in different",
        "runs shows each with its count (see [Cells that vary](#cells-that-vary)). Wall time",
        "of each version's suite with `-n 2`: "
        + ", ".join(f"{v} {_walls(matrix.seconds.get(v, []))}" for v in matrix.versions)
        + ".",
        "",
    ]
    lines += matrix_page.table(
        ["scenario", *matrix.versions],
        [
            [f"`{item}`", *(_text(matrix, item, v) for v in matrix.versions)]
            for item in matrix.items
        ],
    )
    lines += _varying(matrix)
    lines += _races(matrix)
    lines += _issues(matrix, scenarios, target)
    lines += _skips(matrix)
    return "\n".join(lines) + "\n"


def _walls(seconds: Sequence[float]) -> str:
    """One run's wall, or the range over several (``240-262 s over 3 runs``)."""
    if not seconds:
        return "0 s"
    if len(seconds) == 1:
        return f"{seconds[0]:.0f} s"
    return f"{min(seconds):.0f}-{max(seconds):.0f} s over {len(seconds)} runs"


def _text(matrix: Matrix, item: str, version: str) -> str:
    """A cell's words; a cell that varied between runs, every outcome with its count."""
    seen = matrix.runs.get((item, version))
    if not seen:
        return matrix_page.NONE
    outcomes = Counter(c.pinned for c in seen).most_common()
    if len(outcomes) == 1:
        return seen[0].text()
    return " or ".join(
        f"{next(c for c in seen if c.pinned == o).text()} {n}/{len(seen)}" for o, n in outcomes
    )


def _varying(matrix: Matrix) -> list[str]:
    """The cells whose outcome depended on the run, and what each run gave."""
    rows = [
        [f"`{item}`", v, ", ".join(f"{o} ({n}/{sum(k for _, k in got)})" for o, n in got)]
        for item in matrix.items
        for v in matrix.versions
        if len(got := matrix.outcomes(item, v)) > 1
    ]
    runs = {v: len(matrix.seconds.get(v, [])) for v in matrix.versions}
    lines = [
        "",
        '<a id="cells-that-vary"></a>',
        "## Cells that vary",
        "",
        "Runs behind this page: "
        + ", ".join(
            f"{v} {n}" + (f" (and {k} item runs observed)" if (k := matrix.observed.get(v)) else "")
            for v, n in runs.items()
        )
        + ". "
        "A cell is pinned with every outcome its runs gave, and CI accepts any of them: "
        "the order of two real violations (or whether a bound is met) hangs on timing, and "
        "pinning the one a single run gave would fail CI at random while claiming a "
        "precision the runs do not have. Why each of them varies, with its log lines: "
        "[docs/nvflare-faults.md](nvflare-faults.md#why-cells-vary).",
        "",
    ]
    if not rows:
        return [*lines, "None: every cell gave the same outcome in every run."]
    return lines + matrix_page.table(["scenario", "version", "outcomes (runs)"], rows)


def _details(declared: Mapping[str, Any]) -> list[str]:
    """A known issue's or race's ``details`` markdown, after a blank line (none: nothing)."""
    details = str(declared.get("details") or "").rstrip()
    return ["", details] if details else []


def _races(matrix: Matrix) -> list[str]:
    """Each known race a run hit: where, how often, and the evidence of one hit."""
    races: dict[str, list[Cell]] = {}
    for cell in matrix.race_hits():
        races.setdefault(str(cell.check), []).append(cell)
    if not races:
        return []
    lines = [
        "",
        "## Known races",
        "",
        "A race of the target can fail any item it reaches, in some runs only. A failed "
        "item is reported as a known race (a non-strict xfail) only when its run's own "
        "timeline holds the race's evidence; CI accepts such a run on any cell, and a "
        "failure without the evidence stays a failure.",
        "",
    ]
    for name, cells in sorted(races.items()):
        race = cells[0].race or {}
        hits = Counter((c.item, c.version) for c in cells)
        lines += [
            f'<a id="{_anchor(race)}"></a>',
            f"### {name}: {race.get('reason')}",
            "",
            f"- declared for versions `{race.get('versions') or 'all'}`; hit in these runs: "
            + ", ".join(
                f"`{item}` on {v} {n}/{len(matrix.runs[(item, v)])}"
                for (item, v), n in hits.items()
            ),
            f"- the evidence of one hit: {race.get('evidence')}",
            f"- write-up and deterministic reproduction: [{race.get('anchor')}]"
            f"({str(race.get('anchor')).removeprefix('docs/')})",
        ]
        lines += [*_details(race), ""]
    return lines[:-1]


def _issues(matrix: Matrix, scenarios: Path, target: str) -> list[str]:
    issues: dict[str, tuple[Mapping[str, Any], list[Cell]]] = {}
    for cell in matrix.cells():
        if cell.issue is not None:
            issues.setdefault(_anchor(cell.issue), (cell.issue, []))[1].append(cell)
    if not issues:
        return []
    lines = ["", "## Known issues", ""]
    for anchor, (issue, cells) in sorted(issues.items()):
        reproduced = sorted({c.version for c in cells if c.kind == XFAIL})
        fixed = sorted({c.version for c in cells if c.kind == XPASS})
        items = sorted({c.item for c in cells})
        first = next(c for c in cells if c.item == items[0])
        lines += [
            f'<a id="{anchor}"></a>',
            f"### {issue.get('reason')}",
            "",
            f"- items: {', '.join(f'`{i}`' for i in items)}; leading check `{issue.get('check')}`",
            f"- declared for versions `{issue.get('versions') or 'all'}`; reproduced here on "
            + (", ".join(reproduced) or "none")
            + (f"; **no longer reproduces on {', '.join(fixed)}**" if fixed else ""),
            f"- reproduce: `pytest '{_shown(first.file, scenarios)}::{first.item}' "
            f"--flrelia-target={target}` in an environment with that version",
        ]
        lines += [*_details(issue), ""]
    return lines[:-1]


def _shown(file: str | None, scenarios: Path) -> str:
    if file is None:
        return scenarios.as_posix()
    path = Path(file)
    for parent in path.parents:
        if parent.name == scenarios.name:
            return (scenarios / path.relative_to(parent)).as_posix()
    return path.as_posix()


def _skips(matrix: Matrix) -> list[str]:
    reasons: dict[str, set[str]] = {}
    for cell in matrix.cells():
        if cell.kind == SKIPPED:
            reasons.setdefault(cell.reason or "no reason given", set()).add(cell.version)
    if not reasons:
        return []
    lines = ["", "## Why items are skipped", ""]
    lines += matrix_page.table(
        ["reason", "on"],
        [[reason, ", ".join(v for v in matrix.versions if v in on)] for reason, on in sorted(
            reasons.items()
        )],
    )
    return lines


# -- the command ------------------------------------------------------------------


def _pairs(values: Iterable[str], what: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"{what} takes VERSION=VALUE, got {value!r}")
        pairs.append((name, rest))
    return pairs


def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_flrelia.tools.nvflare_matrix",
        description="Run the scenario suite against a target in one venv per version; "
        "write the matrix page and its pin, or check one version against the pin.",
    )
    parser.add_argument("--venv", action="append", default=[], metavar="VERSION=PATH",
                        help="a version and the venv (or python) that has it; repeatable")
    parser.add_argument("--extra", action="append", default=[], metavar="VERSION=ARG",
                        help="one more pytest argument for that version; repeatable")
    parser.add_argument("--write", type=Path, metavar="PAGE",
                        help="write the page and its pin (PAGE's stem + '-matrix.json')")
    parser.add_argument("--check", metavar="VERSION",
                        help="run VERSION only; exit 1 naming every cell unlike the pin")
    parser.add_argument("--pin", type=Path, help="the pin to check (default: beside the page)")
    parser.add_argument("--scenarios", type=Path, default=DEFAULT_SCENARIOS)
    parser.add_argument("--target", default=DEFAULT_TARGET)
    parser.add_argument("--jobs", type=int, default=2, help="pytest -n (default 2)")
    parser.add_argument("--keep", type=Path, help="keep each version's record and log here")
    parser.add_argument("--reuse", action="append", default=[], metavar="VERSION",
                        help="with --write: take VERSION's column from the record --keep "
                        "holds instead of running it again; repeatable")
    parser.add_argument("--runs", type=int, default=1, metavar="N",
                        help="with --write: run each version N times; a cell whose outcome "
                        "differs between runs is pinned with every outcome seen (default 1)")
    parser.add_argument("--accumulate", action="store_true",
                        help="with --write and --keep: add the new runs to the runs --keep "
                        "already holds for each version instead of replacing them")
    parser.add_argument("--observe", action="append", default=[], metavar="VERSION=RECORD",
                        help="with --write: add the items of another run's record of VERSION "
                        "(--flrelia-json; pytest-repeat's [i-n] folded) to their outcomes")
    args = parser.parse_args(None if argv is None else list(argv))
    if not args.venv or (args.write is None and args.check is None):
        parser.error("give --venv VERSION=PATH and --write PAGE or --check VERSION")
    if args.reuse and (args.keep is None or args.check is not None):
        parser.error("--reuse needs --keep DIR and --write PAGE")
    if args.runs < 1 or (args.check is not None and args.runs != 1):
        parser.error("--runs takes N >= 1, and only with --write")
    if args.observe and args.check is not None:
        parser.error("--observe goes with --write")
    if args.accumulate and (args.keep is None or args.check is not None):
        parser.error("--accumulate needs --keep DIR and --write PAGE")
    return args


def pin_path(page: Path) -> Path:
    return page.with_name(f"{page.stem}-matrix.json")


def main(argv: Iterable[str] | None = None) -> int:
    args = _parse(argv)
    extra: dict[str, list[str]] = {}
    for name, arg in _pairs(args.extra, "--extra"):
        extra.setdefault(name, []).append(arg)
    versions = [
        Version(name, python_of(Path(path)), tuple(extra.get(name, ())))
        for name, path in _pairs(args.venv, "--venv")
    ]
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    if args.check is not None:
        chosen = [v for v in versions if v.name == args.check]
        if not chosen:
            raise SystemExit(f"--check {args.check}: no --venv {args.check}=PATH given")
        pin_file = args.pin or pin_path(args.write or DEFAULT_OUT)
        pin = json.loads(pin_file.read_text(encoding="utf-8"))
        matrix = build(chosen, args.scenarios, pin.get("target", args.target), args.jobs,
                       args.keep)
        found = differences(pin, matrix, args.check)
        for line in found:
            print(f"differs: {line}", file=sys.stderr)
        for hit in matrix.race_hits():
            print(f"known race {hit.check} on {hit.item}: {(hit.race or {}).get('evidence')}")
        cells = sum(1 for (_, v) in matrix.runs if v == args.check)
        print(
            f"{args.check}: {cells} cells, "
            + (f"{len(found)} unlike {pin_file}" if found else f"all as pinned in {pin_file}")
        )
        return 1 if found else 0
    matrix = build(versions, args.scenarios, args.target, args.jobs, args.keep,
                   frozenset(args.reuse), runs=args.runs, accumulate=args.accumulate)
    for name, record in _pairs(args.observe, "--observe"):
        if name not in matrix.versions:
            raise SystemExit(f"--observe {name}: no --venv {name}=PATH given")
        added = matrix.observe(name, run_record.load(Path(record)))
        print(f"{name}: {added} item runs observed from {record}")
    page: Path = args.write
    page.parent.mkdir(parents=True, exist_ok=True)
    pin_file = args.pin or pin_path(page)
    page.write_text(render(matrix, args.scenarios, args.target, pin_file.name), encoding="utf-8")
    pin_file.write_text(json.dumps(matrix.pin(args.target), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {page} and {pin_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
