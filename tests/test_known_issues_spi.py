"""The SPI additions a foreign target declares: known issues (matched by scenario,
params, version and variant) and the timing fields a real launcher is slow at, whose
defaults (the reference's) add no slack anywhere."""

from __future__ import annotations

import dataclasses

import pytest
from packaging.specifiers import InvalidSpecifier

from pytest_flrelia.contract.job import JobConfig, Timeouts
from pytest_flrelia.contract.target import (
    KnownIssue,
    TargetInfo,
    Timing,
    version_number,
)

KB12 = KnownIssue(
    scenario="stubborn-process-is-killed",
    check="bounded_stop",
    reason="the stop never escalates to SIGKILL",
    anchor="docs/nvflare.md#kb12",
    versions=">=2.7.1,<2.9",
)


def _info(version: str | None, *issues: KnownIssue) -> TargetInfo:
    return TargetInfo(
        name="t", faults={}, events=frozenset(), version=version, known_issues=issues
    )


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("nvflare 2.7.2", True),
        ("nvflare 2.7.2rc13", True),  # pre-releases are versions too
        ("nvflare 2.8.3", True),
        ("nvflare 2.7.0", False),
        ("nvflare 2.9.0", False),
        (None, False),  # a target that says no version is not of the affected ones
        ("reference", False),
    ],
)
def test_a_known_issue_applies_to_the_versions_of_its_specifier(
    version: str | None, expected: bool
) -> None:
    assert (_info(version, KB12).known_issue("stubborn-process-is-killed", {}) is KB12) is expected


def test_a_known_issue_of_every_version_applies_without_a_version() -> None:
    every = dataclasses.replace(KB12, versions="")
    assert _info(None, every).known_issue("stubborn-process-is-killed", {}) is every


def test_a_known_issue_is_only_of_its_scenario_its_params_and_its_variants() -> None:
    issue = dataclasses.replace(KB12, params={"launch_once": False}, variants=frozenset({"v1"}))
    info = _info("nvflare 2.7.2", issue)
    name = "stubborn-process-is-killed"
    assert info.known_issue(name, {"launch_once": False}, "v1") is issue
    assert info.known_issue(name, {"launch_once": True}, "v1") is None
    assert info.known_issue(name, {}, "v1") is None  # the item has no such param
    assert info.known_issue(name, {"launch_once": False}, "v2") is None
    assert info.known_issue("late-pull", {"launch_once": False}, "v1") is None


def test_a_malformed_specifier_fails_where_it_is_declared() -> None:
    with pytest.raises(InvalidSpecifier):
        dataclasses.replace(KB12, versions="2.7.x")


def test_the_version_number_is_the_last_word_of_the_declared_version() -> None:
    assert str(version_number("nvflare 2.7.2rc13")) == "2.7.2rc13"
    assert version_number("nvflare") is None
    assert version_number(None) is None


def _job(*, launch_once: bool = False, rounds: int = 3, heartbeat: float = 2.0) -> JobConfig:
    timeouts = dataclasses.replace(Timeouts.fast(), heartbeat=heartbeat)
    return dataclasses.replace(
        JobConfig(), rounds=rounds, launch_once=launch_once, timeouts=timeouts
    )


def test_the_reference_timing_adds_no_slack() -> None:
    timing = Timing()
    for job in (_job(), _job(launch_once=True), _job(rounds=1, heartbeat=0.5)):
        assert timing.bound_slack(job) == 0.0
        assert timing.release_slack() == 0.0


def test_a_slow_launcher_s_slack_counts_rounds_launches_and_its_heartbeat_floor() -> None:
    timing = Timing(poll=1.0, gate_lag=5.0, launch=1.5, task_lag=5.0, heartbeat_floor=15.0)
    per_round = _job(rounds=3, heartbeat=2.0)
    poll = 1.0 - per_round.timeouts.stop_poll
    assert timing.bound_slack(per_round) == pytest.approx(3 * (5.0 + poll) + 3 * 6.5 + 13.0)
    once = _job(rounds=3, launch_once=True, heartbeat=20.0)  # above the floor: nothing added
    assert timing.bound_slack(once) == pytest.approx(3 * (5.0 + poll) + 6.5)
    assert timing.bound_slack(per_round, 2.0) == pytest.approx(
        3 * (10.0 + 2.0 - per_round.timeouts.stop_poll) + 3 * 13.0 + 30.0 - 2.0
    )
