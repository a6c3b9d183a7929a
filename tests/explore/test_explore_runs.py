"""Exploring for real: a known bug is found, shrunk and kept as a file that fails on the
variant and passes on the correct runtime; the command line and the budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_flrelia.errors import ScenarioFailure
from pytest_flrelia.explore import explore
from pytest_flrelia.explore.run import RunResult
from pytest_flrelia.harness.runner import run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.loader import load_scenarios

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_known_bug_is_found_shrunk_and_kept_as_a_regression_file(
    tmp_path: Path, no_leftover_children: None
) -> None:
    report = explore(
        "reference", variant="sync-stop", count=2, budget="3m", seed=1, out_dir=tmp_path
    )

    found = report.first_failure()
    assert found is not None, report.summary_lines()
    assert found.scenario_path is not None and found.scenario_path.parent == tmp_path
    text = found.scenario_path.read_text()
    assert "variant: sync-stop" in text and f"leading check: {found.leading_check}" in text
    (scenario,) = load_scenarios(found.scenario_path)
    with pytest.raises(ScenarioFailure) as failed:
        run_scenario(scenario, Settings(known_bug="sync-stop"))
    assert failed.value.verdict is not None
    assert found.leading_check in {c.name for c in failed.value.verdict.failures}
    run_scenario(scenario, Settings())  # the correct runtime: it holds
    assert found.shrunk_faults is not None and found.shrunk_faults <= found.faults


def test_a_spent_budget_skips_every_schedule_and_passes_none() -> None:
    report = explore("reference", count=3, budget=0, seed=2)
    assert [s.verdict for s in report.schedules] == ["skipped"] * 3
    assert "0 failed, 0 flaky, 3 skipped (budget spent)" in report.summary_lines()[-1]


def test_the_command_line_prints_the_summary_and_exits_zero_without_failures() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_flrelia.explore",
            "-n",
            "2",
            "--budget",
            "0s",
            "--seed",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "[2/2] s4-1 skipped" in done.stdout
    assert "explored 0 schedules" in done.stdout and "seed 4" in done.stdout


def test_a_schedule_result_survives_the_trip_through_json() -> None:
    from pytest_flrelia.explore.report import ScheduleResult  # noqa: PLC0415

    result = ScheduleResult(1, 2, "failed", "prompt_exit", Path("/x.scenario.yaml"), 1.5, 3)
    assert ScheduleResult.from_json(result.to_json()) == result
    assert RunResult(None).ok and not RunResult("x").ok
