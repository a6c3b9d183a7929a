"""``pytest --flrelia-explore=N`` as a user runs it (real pytest subprocesses)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")
FAILING_TEST = "def test_would_fail():\n    assert False\n"


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    (pytester.path / "test_other.py").write_text(FAILING_TEST)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *QUIET_ARGS, *args, timeout=300)


def test_without_paths_only_the_schedules_are_collected_with_the_seed_in_their_ids(
    inner: pytest.Pytester,
) -> None:
    result = run(inner, "--flrelia-explore=3", "--flrelia-explore-seed=7", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    ids = [line for line in result.outlines if line.startswith("explore[")]
    assert ids == ["explore[s7-0]", "explore[s7-1]", "explore[s7-2]"]
    assert "test_would_fail" not in result.stdout.str()


def test_with_a_path_the_schedules_come_on_top(inner: pytest.Pytester) -> None:
    result = run(inner, "--flrelia-explore=1", "test_other.py", "--collect-only", "-q")
    assert any("test_would_fail" in line for line in result.outlines)
    assert any(re.match(r"explore\[s\d+-0\]", line) for line in result.outlines)


def test_a_spent_budget_skips_the_schedules_never_passes_them(inner: pytest.Pytester) -> None:
    result = run(inner, "--flrelia-explore=2", "--flrelia-explore-budget=0s", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*explored 0 schedules*2 skipped*", "SKIPPED*budget spent"])


def test_a_bad_value_is_a_usage_error_naming_its_option(inner: pytest.Pytester) -> None:
    result = run(inner, "--flrelia-explore=many")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--flrelia-explore: expected an integer, got 'many'*"])


def test_the_ini_twin_asks_for_the_exploration(inner: pytest.Pytester) -> None:
    inner.makeini("[pytest]\nflrelia_explore = 2\nflrelia_explore_seed = 9\n")
    result = run(inner, "--collect-only", "-q")
    assert [line for line in result.outlines if line.startswith("explore[")] == [
        "explore[s9-0]",
        "explore[s9-1]",
    ]


@pytest.mark.slow
def test_schedules_run_under_xdist_with_progress_and_a_summary(inner: pytest.Pytester) -> None:
    result = run(inner, "--flrelia-explore=2", "--flrelia-explore-seed=21", "-n", "2")
    out = result.stdout.str()
    assert re.search(r"\[1/2\] s21-\d (ok|failed|flaky)", out), out
    assert re.search(r"\[2/2\] s21-\d", out), out
    assert "explored 2 schedules" in out and "seed 21" in out
    result.assert_outcomes(passed=2)


def test_help_lists_the_explore_options_and_their_ini_twins(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(*PLUGIN_ARGS, *QUIET_ARGS, "--help")
    result.stdout.fnmatch_lines_random(
        [
            "*--flrelia-explore=N*",
            "*--flrelia-explore-budget=DURATION*",
            "*--flrelia-explore-seed=SEED*",
            "*--flrelia-explore-out=DIR*",
            "*flrelia_explore (string)*",
            "*flrelia_explore_budget (string)*",
            "*flrelia_explore_seed (string)*",
            "*flrelia_explore_out (string)*",
        ]
    )
