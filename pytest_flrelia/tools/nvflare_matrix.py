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
that one version and fails naming every cell that differs from the pin.  ``--extra
V=ARG`` passes ARG to that version's pytest: the tool's own tests use the reference
target's known-bug variants as stand-in versions that way.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_flrelia.plugin import run_record
from pytest_flrelia.tools import matrix_page

DEFAULT_OUT = Path("docs/nvflare.md")
DEFAULT_SCENARIOS = Path("scenarios")
DEFAULT_TARGET = "nvflare"
PIN_FORMAT = 1
RUN_TIMEOUT = 3600.0
"""The longest one version's suite may take (a hung run must not hang CI)."""
PYTEST_OK = (0, 1)
"""pytest's exit codes with a record to read: all passed, some failed."""
WIRING = "nvflare-wiring.md"
FAULTS = "nvflare-faults.md"

PASS, CAUGHT, XFAIL, SKIPPED, XPASS, ERROR = "pass", "caught", "xfail", "skipped", "xpass", "error"
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
        return matrix_page.harness_error()


def cell_of(entry: Mapping[str, Any], version: str) -> Cell:
    """An item of a run record as a matrix cell."""
    kind = _KINDS.get(str(entry.get("outcome")), ERROR)
    run = entry.get("run") or {}
    check = run.get("leading_check") if kind in (CAUGHT, XFAIL) else None
    if kind == CAUGHT and check is None:
        kind = ERROR  # failed without a verdict: the harness broke, nothing was caught
    return Cell(
        item=str(entry["name"]),
        version=version,
        kind=kind,
        check=check,
        reason=entry.get("reason"),
        file=entry.get("file"),
        issue=run.get("known_issue"),
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
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    """(item, version) -> cell."""
    items: list[str] = field(default_factory=list)
    """Item names in the order pytest collected them (node id order)."""
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, version: str, entries: Sequence[Mapping[str, Any]], seconds: float) -> None:
        self.seconds[version] = seconds
        for entry in entries:
            cell = cell_of(entry, version)
            if cell.item not in self.items:
                self.items.append(cell.item)
            self.cells[(cell.item, version)] = cell

    def cell(self, item: str, version: str) -> Cell | None:
        return self.cells.get((item, version))

    def pin(self, target: str) -> dict[str, Any]:
        return {
            "format": PIN_FORMAT,
            "target": target,
            "versions": self.versions,
            "cells": {
                item: {
                    v: c.pinned for v in self.versions if (c := self.cell(item, v)) is not None
                }
                for item in self.items
            },
        }


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
) -> tuple[list[dict[str, Any]], float]:
    """Run the suite (a directory, or node ids) in ``version``'s environment, from ``cwd``;
    its record's items and the wall time of the whole pytest run."""
    paths = [str(scenarios)] if isinstance(scenarios, Path) else list(scenarios)
    with tempfile.TemporaryDirectory(prefix="flrelia-matrix-") as tmp:
        record = (keep or Path(tmp)) / f"{version.name}-{target}-n{jobs}.json"
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
            (keep / f"{record.stem}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        if done.returncode not in PYTEST_OK or not record.exists():
            raise RuntimeError(
                f"{version.name}: pytest exited {done.returncode} without a record:\n{tail}"
            )
        print(f"{version.name}: {tail.splitlines()[-1] if tail else ''} ({seconds:.0f} s)")
        return run_record.load(record), seconds


def kept_run(
    version: str, target: str, jobs: int, keep: Path
) -> tuple[list[dict[str, Any]], float]:
    """A version's record and wall as a previous ``--keep`` run left them (the wall is
    pytest's own, read off the kept log's last line): rebuilding the page after one
    version was rerun needs no rerun of the others."""
    record = keep / f"{version}-{target}-n{jobs}.json"
    log = record.with_suffix(".log")
    if not record.exists() or not log.exists():
        raise SystemExit(f"--reuse {version}: no kept record {record} (and its .log)")
    lines = log.read_text(encoding="utf-8").strip().splitlines()
    found = re.search(r" in ([0-9.]+)s", lines[-1]) if lines else None
    return run_record.load(record), float(found.group(1)) if found else 0.0


def build(
    versions: Sequence[Version],
    scenarios: Path,
    target: str,
    jobs: int,
    keep: Path | None = None,
    reuse: frozenset[str] = frozenset(),
) -> Matrix:
    matrix = Matrix([v.name for v in versions])
    for version in versions:
        if version.name in reuse and keep is not None:
            entries, seconds = kept_run(version.name, target, jobs, keep)
        else:
            entries, seconds = run_version(version, scenarios, target, jobs, keep=keep)
        matrix.add(version.name, entries, seconds)
    return matrix


def differences(pin: Mapping[str, Any], matrix: Matrix, version: str) -> list[str]:
    """Every cell of ``version`` that differs from ``pin``, one line each."""
    pinned: Mapping[str, Mapping[str, str]] = pin.get("cells", {})
    if version not in pin.get("versions", ()):
        return [f"{version}: not a version of the pin ({', '.join(pin.get('versions', ()))})"]
    found = []
    for item in sorted(set(pinned) | set(matrix.items)):
        want = pinned.get(item, {}).get(version)
        cell = matrix.cell(item, version)
        got = cell.pinned if cell is not None else None
        if want != got:
            found.append(
                f"{item} on {version}: pinned {want or 'nothing (a new item)'}, "
                f"got {got or 'nothing (the item is gone)'}"
                + (f" ({cell.reason})" if cell is not None and cell.reason else "")
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
        "stops reproducing fails the gate. Wall time of each version's suite with `-n 2`: "
        + ", ".join(f"{v} {matrix.seconds.get(v, 0.0):.0f} s" for v in matrix.versions)
        + ".",
        "",
    ]
    lines += matrix_page.table(
        ["scenario", *matrix.versions],
        [
            [f"`{item}`", *(_text(matrix.cell(item, v)) for v in matrix.versions)]
            for item in matrix.items
        ],
    )
    lines += _issues(matrix, scenarios, target)
    lines += _skips(matrix)
    return "\n".join(lines) + "\n"


def _text(cell: Cell | None) -> str:
    return matrix_page.NONE if cell is None else cell.text()


def _issues(matrix: Matrix, scenarios: Path, target: str) -> list[str]:
    issues: dict[str, tuple[Mapping[str, Any], list[Cell]]] = {}
    for cell in matrix.cells.values():
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
        if issue.get("details"):
            lines += ["", str(issue["details"]).rstrip()]
        lines.append("")
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
    for cell in matrix.cells.values():
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
    args = parser.parse_args(None if argv is None else list(argv))
    if not args.venv or (args.write is None and args.check is None):
        parser.error("give --venv VERSION=PATH and --write PAGE or --check VERSION")
    if args.reuse and (args.keep is None or args.check is not None):
        parser.error("--reuse needs --keep DIR and --write PAGE")
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
        cells = sum(1 for (_, v) in matrix.cells if v == args.check)
        print(
            f"{args.check}: {cells} cells, "
            + (f"{len(found)} unlike {pin_file}" if found else f"all as pinned in {pin_file}")
        )
        return 1 if found else 0
    matrix = build(versions, args.scenarios, args.target, args.jobs, args.keep,
                   frozenset(args.reuse))
    page: Path = args.write
    page.parent.mkdir(parents=True, exist_ok=True)
    pin_file = args.pin or pin_path(page)
    page.write_text(render(matrix, args.scenarios, args.target, pin_file.name), encoding="utf-8")
    pin_file.write_text(json.dumps(matrix.pin(args.target), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {page} and {pin_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
