"""Timeouts that contradict each other are found by one set of rules and said where
they were written: a scenario file's warning names file:line, the job API warns too."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.timeout_checks import (
    RULES,
    TimeoutConflictWarning,
    timeout_conflicts,
    warn_timeout_conflicts,
)
from pytest_flrelia.scenario.loader import ScenarioError, ScenarioTimeoutWarning, load_scenarios
from reference_impl.job import run_job

ROOT = Path(__file__).resolve().parent.parent
FAST = Timeouts.fast()
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")


def rules_broken(**changes: float) -> list[str]:
    return [c.rule for c in timeout_conflicts(dataclasses.replace(FAST, **changes))]


def test_the_fast_and_the_production_timeouts_agree() -> None:
    assert timeout_conflicts(Timeouts.fast()) == []
    assert timeout_conflicts(Timeouts()) == []


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"stop_wait": 0.3, "stop_grace": 0.2}, "stop_wait_below_download_complete"),
        ({"download_complete": 1.0, "stop_wait": 1.0}, "download_complete_below_download_connect"),
        ({"stop_wait": 5.0, "stop_grace": 6.0}, "stop_wait_below_stop_grace"),
        ({"heartbeat": 0.2}, "heartbeat_not_above_interval"),
        ({"heartbeat": 0.1}, "heartbeat_not_above_interval"),
    ],
)
def test_each_rule_finds_its_contradiction_and_only_it(
    changes: dict[str, float], rule: str
) -> None:
    assert rules_broken(**changes) == [rule]


def test_an_unset_stop_wait_is_judged_as_the_gate_it_follows() -> None:
    """``stop_wait: None`` waits as long as ``download_complete`` (the executor's rule)."""
    unset = dataclasses.replace(FAST, stop_wait=None, download_complete=5.0, stop_grace=6.0)
    assert unset.deferred_stop_wait == 5.0
    assert [c.rule for c in timeout_conflicts(unset)] == ["stop_wait_below_stop_grace"]
    assert timeout_conflicts(dataclasses.replace(unset, stop_grace=1.0)) == []


def test_scaling_keeps_an_unset_stop_wait_unset() -> None:
    scaled = dataclasses.replace(FAST, stop_wait=None).scaled(2.0)
    assert scaled.stop_wait is None
    assert scaled.download_complete == FAST.download_complete * 2.0
    assert scaled.deferred_stop_wait == FAST.download_complete * 2.0
    assert FAST.scaled(3.0).stop_wait == FAST.deferred_stop_wait * 3.0


def test_equal_values_do_not_contradict_except_a_heartbeat() -> None:
    assert rules_broken(stop_wait=2.0, download_complete=2.0, download_connect=2.0) == []
    assert (
        rules_broken(stop_wait=1.0, stop_grace=1.0, download_complete=1.0, download_connect=1.0)
        == []
    )


def test_a_conflict_names_both_values_and_the_harm() -> None:
    [conflict] = timeout_conflicts(dataclasses.replace(FAST, stop_wait=0.3, stop_grace=0.2))
    assert conflict.message() == (
        "stop_wait (300ms) is shorter than download_complete (5s): the deferred stop SIGTERMs "
        "the training process while its download gate still waits, so a late pull fails "
        "('failed to download from site-N')"
    )
    assert not conflict.fatal
    assert [r.fatal for r in RULES].count(True) == 1  # only the heartbeat rule refuses


def test_run_job_warns_of_the_stop_wait_that_fails_a_late_pull() -> None:
    """Issue 16's repro: the stop wait SIGTERMs the process before the 1 s late pull."""
    config = JobConfig(
        sites=1,
        tensors=TensorSpec(count=1, size_bytes=16 * 1024),
        timeouts=dataclasses.replace(FAST, stop_wait=0.3, download_complete=5.0, stop_grace=0.2),
        download_retries=0,
    )
    with (
        pytest.warns(TimeoutConflictWarning) as warned,
        failpoints.scoped("server.before_download[site=site-1]=1*sleep(1000)"),
    ):
        result = run_job(config)

    assert [str(w.message) for w in warned] == [timeout_conflicts(config.timeouts)[0].message()]
    assert warned[0].filename == __file__  # it points at the caller's run_job line
    assert not result.ok
    assert "failed to download from site-1" in (result.error or "")


def test_run_job_with_timeouts_that_agree_is_silent() -> None:
    config = JobConfig(sites=1, tensors=TensorSpec(count=0), timeouts=FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_job(config)
    assert result.ok, result.error
    assert [w for w in caught if issubclass(w.category, TimeoutConflictWarning)] == []


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.scenario.yaml"
    path.write_text(text)
    return path


def test_a_scenario_with_contradicting_timeouts_warns_with_file_line_and_both_values(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        "name: late\njob:\n  timeouts:\n    download_complete: 5s\n    stop_wait: 300ms\n"
        "    stop_grace: 200ms\n",
    )
    with pytest.warns(ScenarioTimeoutWarning) as warned:
        [scenario] = load_scenarios(path)

    assert [str(w.message) for w in warned] == [
        f"{path}:5: job.timeouts.stop_wait: stop_wait (300ms) is shorter than "
        "download_complete (5s): the deferred stop SIGTERMs the training process while its "
        "download gate still waits, so a late pull fails ('failed to download from site-N')"
    ]
    assert (warned[0].filename, warned[0].lineno) == (str(path), 5)
    assert scenario.job.timeouts.stop_wait == 0.3  # a warning: the scenario still loads


def test_a_conflict_with_a_default_points_at_the_value_the_file_wrote(tmp_path: Path) -> None:
    path = write(tmp_path, "name: short-gate\njob:\n  timeouts: {download_complete: 1s}\n")
    with pytest.warns(ScenarioTimeoutWarning) as warned:
        load_scenarios(path)
    assert [str(w.message) for w in warned] == [
        f"{path}:3: job.timeouts.download_complete: download_complete (1s) is shorter than "
        "download_connect (2s): the gate closes before one download attempt may time out, "
        "so the retry of a failed attempt finds the training process gone"
    ]


def test_a_heartbeat_not_above_its_interval_is_still_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: hb\njob:\n  timeouts: {heartbeat: 200ms}\n")
    with pytest.raises(ScenarioError, match=r"heartbeat \(200ms\) must be longer than"):
        load_scenarios(path)


def test_shipped_scenarios_load_without_a_warning() -> None:
    paths = sorted((ROOT / "scenarios").rglob("*.scenario.y*ml"))
    assert len(paths) >= 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in paths:
            load_scenarios(path)


LATE_STOP = """\
name: stop-before-gate
job:
  tensors: {count: 1, size: 16KiB}
  timeouts: {download_complete: 5s, stop_wait: 3s}
expect: {within: 20s}
"""


def test_pytest_shows_the_scenario_warning_once_and_not_the_jobs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    (pytester.path / "late.scenario.yaml").write_text(LATE_STOP)

    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, *QUIET_ARGS, "-W", "always", timeout=60)

    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*late.scenario.yaml:4: ScenarioTimeoutWarning: *late.scenario.yaml:4: "
            "job.timeouts.stop_wait: stop_wait (3s) is shorter than download_complete (5s): *",
        ]
    )
    assert "TimeoutConflictWarning" not in result.stdout.str()


def test_both_warnings_rebuild_from_their_args_as_pytest_xdist_sends_them(
    tmp_path: Path,
) -> None:
    """xdist's controller rebuilds a worker's warning as ``cls(*message.args)``."""
    with pytest.warns(TimeoutConflictWarning) as job_warned:
        warn_timeout_conflicts(dataclasses.replace(FAST, stop_wait=0.3, stop_grace=0.2))
    path = write(tmp_path, "name: w\njob:\n  timeouts: {stop_wait: 300ms, stop_grace: 200ms}\n")
    with pytest.warns(ScenarioTimeoutWarning) as file_warned:
        load_scenarios(path)
    for original in (job_warned[0].message, file_warned[0].message):
        assert isinstance(original, Warning)
        rebuilt = type(original)(*original.args)
        assert str(rebuilt) == str(original)
