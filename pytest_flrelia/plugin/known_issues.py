"""A target's known issues as strict xfails judged on their leading check.

An item that a :class:`~pytest_flrelia.contract.target.KnownIssue` of its target names
(scenario, params, version, variant) runs as usual; then its verdict decides:

* it fails, and the check that leads the report is the issue's: XFAIL, with the reason;
* it passes: the gate fails, because the bug no longer reproduces and the list must lose it;
* it fails with another leading check (or the harness failed): a plain failure, since
  that is not the bug the list describes.

A failure that is not a known issue's is then checked for the target's known races
(:class:`~pytest_flrelia.contract.target.KnownRace`): when the run's timeline holds a
race's evidence, the item is a non-strict xfail naming the race and that evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pytest

from pytest_flrelia.contract.target import KnownIssue, KnownRace, TargetInfo

if TYPE_CHECKING:
    from pytest_flrelia.judge.invariants import Verdict
    from pytest_flrelia.scenario.loader import Scenario


def base_name(scenario: Scenario) -> str:
    """The scenario's name as written in its file, without its matrix or repeat part."""
    return scenario.name.split("[", 1)[0]


def params_of(scenario: Scenario) -> Mapping[str, object]:
    return dict(scenario.matrix_case)


def issue_of(info: TargetInfo, scenario: Scenario, variant: str | None) -> KnownIssue | None:
    """The known issue of the target ``info`` declares that this item reproduces, if any."""
    return info.known_issue(base_name(scenario), params_of(scenario), variant)


def xfail_reason(issue: KnownIssue) -> str:
    return f"known issue ({issue.check}): {issue.reason} [{issue.anchor}]"


def fixed_message(issue: KnownIssue, version: str | None) -> str:
    return (
        f"known issue {issue.scenario} ({issue.check}: {issue.reason}) no longer reproduces "
        f"on {version or 'this target'}: remove it from the target's known_issues "
        f"(and its row, {issue.anchor})"
    )


def other_check_note(issue: KnownIssue, lead: str | None) -> str:
    return (
        f"known issue {issue.scenario} expects {issue.check} to lead the failure; "
        + ("no check led it (the harness failed)" if lead is None else f"{lead} led it")
        + ": this is a different failure"
    )


def judge_failure(issue: KnownIssue, verdict: Verdict | None) -> str | None:
    """After a failed run: the xfail reason if the issue's check led it, else ``None``."""
    lead = verdict.leading if verdict is not None else None
    if lead is not None and lead.name == issue.check:
        return xfail_reason(issue)
    return None


def expected_failure(issue: KnownIssue) -> None:
    pytest.xfail(xfail_reason(issue))


def fixed(issue: KnownIssue, version: str | None) -> None:
    pytest.fail(fixed_message(issue, version), pytrace=False)


def race_reason(race: KnownRace, evidence: str) -> str:
    return f"known race {race.name}: {race.reason}; this run: {evidence} [{race.anchor}]"


def race_hit(race: KnownRace, evidence: str) -> None:
    """A failure the run's own timeline shows the known race caused: a non-strict xfail
    (the race does not hit every run, so a pass says nothing about it)."""
    pytest.xfail(race_reason(race, evidence))


__all__ = [
    "base_name",
    "expected_failure",
    "fixed",
    "fixed_message",
    "issue_of",
    "judge_failure",
    "other_check_note",
    "params_of",
    "race_hit",
    "race_reason",
    "xfail_reason",
]
