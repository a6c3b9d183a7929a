"""The driver's logic with the run replaced by a rule: shrinking, the same leading
check, flakiness, the budget, the written file.  No process is started here; the real
runs are in ``test_explore_runs.py``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_flrelia.explore import driver
from pytest_flrelia.explore.run import RunResult
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import load_scenarios
from pytest_flrelia.targets.reference.target import ReferenceTarget

INFO = ReferenceTarget.info
Rule = Callable[[Mapping[str, Any]], RunResult]


def _faults(mapping: Mapping[str, Any]) -> list[str]:
    return [entry["fault"] for entry in mapping.get("faults", [])]


def _install(monkeypatch: pytest.MonkeyPatch, rule: Rule) -> list[Mapping[str, Any]]:
    runs: list[Mapping[str, Any]] = []

    def fake(mapping: Mapping[str, Any], *_: object) -> RunResult:
        runs.append(mapping)
        return rule(mapping)

    monkeypatch.setattr(driver, "run_schedule", fake)
    return runs


def _first_index(predicate: Callable[[Mapping[str, Any]], bool], seed: int = 3) -> int:
    for index in itertools.count():
        if predicate(driver.draw_schedule(INFO, seed, index).mapping):
            return index
    raise AssertionError("unreachable")


def _explore(index: int, out: Path | None, seed: int = 3, budget: float = 60.0) -> Any:
    return driver.explore_one(
        INFO, Settings(), seed, index, deadline=time.monotonic() + budget, out_dir=out
    )


def test_a_failure_shrinks_to_the_smallest_schedule_with_the_same_leading_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Rule: a schedule with a slow_start fails ``prompt_exit``; one with two or more
    sites fails ``no_orphans`` instead.  The shrink must keep ``prompt_exit``: one fault,
    and the smallest job (the shrinker prefers one site, one round)."""

    def rule(mapping: Mapping[str, Any]) -> RunResult:
        if "slow_start" in _faults(mapping):
            return RunResult("prompt_exit", ("prompt_exit",), "report")
        if mapping["job"]["sites"] > 1:
            return RunResult("no_orphans", ("no_orphans",), "other")
        return RunResult(None)

    index = _first_index(
        lambda m: (
            "slow_start" in _faults(m) and len(m.get("faults", [])) > 1 and m["job"]["sites"] > 1
        )
    )
    _install(monkeypatch, rule)
    result = _explore(index, tmp_path)

    assert result.verdict == "failed" and result.leading_check == "prompt_exit"
    assert result.shrunk_faults == 1 < result.faults
    (scenario,) = load_scenarios(result.scenario_path)
    assert [f.fault for f in scenario.faults] == ["slow_start"]
    assert (scenario.job.sites, scenario.job.rounds) == (1, 1)
    assert scenario.faults[0].params["delay"] == 0.05  # the shortest delay drawn
    text = result.scenario_path.read_text()
    assert "seed 3" in text and "leading check: prompt_exit" in text and "target: reference" in text


def test_a_failure_that_does_not_reproduce_is_flaky_and_not_shrunk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    verdicts = iter([RunResult("bounded_stop", ("bounded_stop",), "r"), RunResult(None)])
    runs = _install(monkeypatch, lambda _: next(verdicts))
    result = _explore(0, tmp_path)

    assert result.verdict == "flaky" and result.leading_check == "bounded_stop"
    assert "then held" in result.detail
    assert len(runs) == 2 and result.scenario_path is None and not list(tmp_path.iterdir())


def test_a_different_check_on_the_rerun_is_flaky_too(monkeypatch: pytest.MonkeyPatch) -> None:
    verdicts = iter([RunResult("bounded_stop", ("bounded_stop",)), RunResult("no_orphans")])
    _install(monkeypatch, lambda _: next(verdicts))
    assert _explore(0, None).verdict == "flaky"


def test_a_spent_budget_ends_the_shrink_on_the_drawn_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = _install(monkeypatch, lambda _: RunResult("prompt_exit", ("prompt_exit",)))
    result = _explore(1, None, budget=0.0)

    assert result.verdict == "failed"
    assert len(runs) == 2  # the drawn schedule and its rerun: no candidate was run
    assert result.shrunk_faults == result.faults


def test_a_passing_schedule_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _install(monkeypatch, lambda _: RunResult(None))
    result = _explore(4, None)
    assert (result.verdict, result.runs, len(runs)) == ("ok", 1, 1)
    assert runs[0] == driver.draw_schedule(INFO, 3, 4).named("explore-correct-s3-4")


def test_the_deletion_pass_sheds_the_faults_hypothesis_had_no_time_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no time left for Hypothesis (every candidate of it counts as passing), the
    fault-by-fault pass alone must leave only the fault the failure needs."""

    def rule(mapping: Mapping[str, Any]) -> RunResult:
        if "slow_start" in _faults(mapping):
            return RunResult("prompt_exit", ("prompt_exit",), "report")
        return RunResult(None)

    index = _first_index(lambda m: "slow_start" in _faults(m) and len(m.get("faults", [])) > 2)
    monkeypatch.setattr(driver, "DELETION_SECONDS", driver.MAX_SHRINK_SECONDS)
    runs = _install(monkeypatch, rule)
    result = _explore(index, tmp_path)

    assert result.verdict == "failed" and result.leading_check == "prompt_exit"
    assert result.shrunk_faults == 1 < result.faults
    (scenario,) = load_scenarios(result.scenario_path)
    assert [f.fault for f in scenario.faults] == ["slow_start"]
    # The drawn schedule, its rerun, one run per fault tried (none twice), the minimal again.
    assert len(runs) == 2 + result.faults + 1
    assert f"({result.faults} deleting faults); the minimal failed again" in result.detail


def test_a_minimal_schedule_that_does_not_fail_again_gives_way_to_the_one_before(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A candidate is run once, so a timing-dependent failure can make a schedule look
    minimal by chance: the kept file must be one that failed twice."""
    seen: dict[str, int] = {}

    def rule(mapping: Mapping[str, Any]) -> RunResult:
        faults = _faults(mapping)
        key = repr(mapping)
        seen[key] = seen.get(key, 0) + 1
        if "slow_start" in faults and (len(faults) > 1 or seen[key] == 1):
            return RunResult("prompt_exit", ("prompt_exit",), "report")
        return RunResult(None)

    index = _first_index(lambda m: "slow_start" in _faults(m) and len(m.get("faults", [])) > 2)
    monkeypatch.setattr(driver, "DELETION_SECONDS", driver.MAX_SHRINK_SECONDS)
    _install(monkeypatch, rule)
    result = _explore(index, tmp_path)

    assert result.verdict == "failed"
    assert result.shrunk_faults == 2  # the lone slow_start failed once only
    (scenario,) = load_scenarios(result.scenario_path)
    assert "slow_start" in [f.fault for f in scenario.faults]
    assert "confirmed after 1 smaller one(s) held on a second run" in result.detail


def test_deleting_a_fault_never_drops_the_fatal_one_of_a_failure() -> None:
    index = _first_index(
        lambda m: m["expect"]["outcome"] == "failure" and len(m.get("faults", [])) > 1
    )
    schedule = driver.draw_schedule(INFO, 3, index)
    last = schedule.faults - 1
    assert driver.without_fault(schedule, last) is None
    kept = driver.without_fault(schedule, 0)
    assert kept is not None and kept.faults == last
    assert kept.mapping["faults"] == schedule.mapping["faults"][1:]
    assert list(kept.mapping) == list(schedule.mapping)  # the file's key order holds
