"""``--flrelia-json=PATH``: a machine-readable record of every scenario item of a session.

What the matrix tool (:mod:`pytest_flrelia.tools.nvflare_matrix`) and CI read instead of
pytest's terminal output.  Per item: node id, scenario file, name, params, target,
version, variant, outcome (``passed``, ``failed``, ``xfailed``, ``xpassed-strict``,
``skipped``, ``error``) with its reason, the check leading a failure, the known issue or
known race (with its evidence) an xfail is of, and which planned faults acted.  Like the
summary's figures, what an item knows travels in its ``user_properties`` (collection:
what it is; run: how it went), so under xdist it
reaches the controller, which alone writes the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_flrelia.contract.target import KnownIssue, KnownRace
    from pytest_flrelia.harness.runner import ScenarioOutcome
    from pytest_flrelia.harness.settings import Settings
    from pytest_flrelia.judge.invariants import Verdict
    from pytest_flrelia.scenario.loader import Scenario

ITEM = "flrelia_item"
"""The ``user_properties`` name of what an item is (set at collection)."""
RUN = "flrelia_run"
"""The ``user_properties`` name of how its run went (set by the run)."""
OPTION = "--flrelia-json"
DEST = "flrelia_json"
HELP = "write a JSON record of every scenario item (outcome, leading check, faults) to PATH"
RECORDER_NAME = "flrelia-json"
FORMAT = 1
"""The file's ``format``: bumped when a key changes meaning."""
PASSED, FAILED, XFAILED, XPASSED_STRICT, SKIPPED, ERROR = (
    "passed",
    "failed",
    "xfailed",
    "xpassed-strict",
    "skipped",
    "error",
)


def describe(
    item: pytest.Item, scenario: Scenario, settings: Settings, version: str | None
) -> None:
    """Attach what ``item`` is: it goes out with every one of its reports."""
    item.user_properties.append(
        (
            ITEM,
            {
                "file": str(scenario.path),
                "name": scenario.name,
                "scenario": scenario.name.split("[", 1)[0],
                "params": {k: _plain(v) for k, v in scenario.matrix_case},
                "target": scenario.target or settings.target,
                "version": version,
                "variant": settings.known_bug,
            },
        )
    )


def ran(
    item: pytest.Item,
    verdict: Verdict | None,
    outcome: ScenarioOutcome | None,
    issue: KnownIssue | None,
    race: tuple[KnownRace, str] | None,
) -> None:
    """Attach how the run went (``outcome`` ``None``: it gave no run, the harness failed;
    ``race``: the known race whose evidence its timeline holds, with that evidence)."""
    lead = verdict.leading if verdict is not None else None
    item.user_properties.append(
        (
            RUN,
            {
                "passed": verdict is not None and not verdict.failures,
                "leading_check": lead.name if lead is not None else None,
                "leading_seen": lead.seen if lead is not None else None,
                "failed_checks": [c.name for c in verdict.earliest_first()] if verdict else [],
                "faults": list(outcome.faults) if outcome is not None else None,
                "delivered": list(outcome.delivered) if outcome is not None else None,
                "known_issue": None
                if issue is None
                else {
                    "check": issue.check,
                    "reason": issue.reason,
                    "anchor": issue.anchor,
                    "versions": issue.versions,
                    "details": issue.details,
                },
                "known_race": None
                if race is None
                else {
                    "name": race[0].name,
                    "reason": race[0].reason,
                    "anchor": race[0].anchor,
                    "versions": race[0].versions,
                    "details": race[0].details,
                    "evidence": race[1],
                },
            },
        )
    )


def _plain(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _props(report: pytest.TestReport, name: str) -> dict[str, Any] | None:
    found = None
    for key, value in report.user_properties:
        if key == name and isinstance(value, dict):
            found = value  # the last one: a repeated run appends again
    return found


def _skip_reason(report: pytest.TestReport) -> str | None:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
        return text.removeprefix("Skipped: ")
    return None if longrepr is None else str(longrepr)


def _failure_text(report: pytest.TestReport) -> str:
    return (report.longreprtext or "").strip().splitlines()[-1:][0] if report.longreprtext else ""


class RunRecorder:
    """Builds one entry per scenario item from its reports; writes them at the end.
    Registered on the controller only (xdist workers send it their reports)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        item = _props(report, ITEM)
        if item is None:
            return
        entry = self.entries.setdefault(
            report.nodeid,
            {"nodeid": report.nodeid, **item, "outcome": None, "reason": None, "run": None},
        )
        run = _props(report, RUN)
        if run is not None:
            entry["run"] = run
        if report.when == "setup":
            if report.skipped:
                entry.update(outcome=SKIPPED, reason=_skip_reason(report))
            elif report.failed:
                entry.update(outcome=ERROR, reason=_failure_text(report))
        elif report.when == "call":
            entry.update(self._call_outcome(report, run))
        elif report.failed and entry["outcome"] in (None, PASSED):
            entry.update(outcome=ERROR, reason=_failure_text(report))

    @staticmethod
    def _call_outcome(report: pytest.TestReport, run: dict[str, Any] | None) -> dict[str, Any]:
        wasxfail = getattr(report, "wasxfail", None)
        if report.skipped and wasxfail is not None:
            return {"outcome": XFAILED, "reason": str(wasxfail)}
        if report.skipped:
            return {"outcome": SKIPPED, "reason": _skip_reason(report)}
        if report.passed:
            return {"outcome": PASSED, "reason": None}
        if run is not None and run.get("known_issue") and run.get("passed"):
            return {"outcome": XPASSED_STRICT, "reason": _failure_text(report)}
        lead = run.get("leading_check") if run else None
        return {"outcome": FAILED, "reason": lead or _failure_text(report)}

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.write()

    def write(self) -> None:
        entries = sorted(self.entries.values(), key=lambda e: str(e["nodeid"]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps({"format": FORMAT, "items": entries}, indent=1, sort_keys=True) + "\n",
            encoding="utf-8",
        )


def load(path: Path) -> list[dict[str, Any]]:
    """The items of a record :class:`RunRecorder` wrote."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: record format {data.get('format')!r}, expected {FORMAT}")
    items: list[dict[str, Any]] = data["items"]
    return items


__all__ = ["OPTION", "RunRecorder", "describe", "load", "ran"]
