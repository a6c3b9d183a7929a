"""The ``flrelia`` fixture as a user writes tests with it, run in real pytest subprocesses.

The inner tests assert what a test author relies on (result, timeline, check(),
marker defaults, errors); the outer tests assert they passed and what the
terminal showed.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from _targets import RAISING_TARGET, install_target

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")
INNER_TIMEOUT = 120.0
"""Upper bound on one inner session: a hang fails the test instead of the suite."""

HELPERS = '''
import os

import pytest

from pytest_flrelia.plugin.fixture import RunSpecError
from pytest_flrelia.harness.processes import RUN_ID_ENV, live_processes_where
from pytest_flrelia.harness.runner import ScenarioFailure
from pytest_flrelia.contract.timeline import EventKind

SMALL = {"count": 1, "size": "16KiB"}
LATE = {"fault": "delayed_download", "site": "site-1", "delay": "200ms"}


def run_processes():
    """Live processes of any scenario run started from this session."""
    mark = os.environ["FLRELIA_TEST_MARK"]
    return [
        process.pid
        for process in live_processes_where(
            lambda env: env.get("FLRELIA_TEST_MARK") == mark and RUN_ID_ENV in env
        )
    ]
'''

API_TESTS = (
    HELPERS
    + """

def test_passing_run_returns_the_result_and_the_timeline(flrelia):
    run = flrelia.run(
        sites=1, rounds=2, tensors=SMALL, faults=[LATE, {"fault": "orphan_child"}], within="10s"
    )

    assert run.ok and run.result.rounds[1].ok
    assert run.report is None and run.failures == []
    run.check()
    assert [r.round for r in run.result.rounds] == [1, 2]
    kinds = {e.kind for e in run.events}
    assert {EventKind.DOWNLOAD_DONE, EventKind.JOB_END} <= kinds
    assert run.scenario.name == "test_api.test_passing_run_returns_the_result_and_the_timeline"
    assert run_processes() == []  # the orphaned child too: nothing outlives the run


def test_failing_run_check_raises_the_report(flrelia):
    run = flrelia.run(tensors=SMALL, outcome="failure")

    assert not run.ok
    assert "expectation" in [c.name for c in run.failures]
    with pytest.raises(ScenarioFailure) as raised:
        run.check()
    assert raised.value.report == run.report
    assert raised.value.verdict is run.verdict


def test_failing_check_shows_the_report(flrelia):
    flrelia.run(tensors=SMALL, outcome="failure").check()


@pytest.mark.flrelia(rounds=2, tensors=SMALL, faults=[LATE], within="10s")
def test_marker_gives_defaults_and_a_call_overrides_them(flrelia):
    first = flrelia.run()
    second = flrelia.run(rounds=1, faults=[])

    assert first.ok and second.ok
    assert first.result.config.rounds == 2
    assert [f.fault for f in first.scenario.faults] == ["delayed_download"]
    assert first.scenario.expect.within == 10.0
    assert second.result.config.rounds == 1 and second.scenario.faults == ()
    assert second.scenario.name == first.scenario.name + "-2"
    assert flrelia.runs == [first, second]


def test_unknown_keyword_names_the_call_and_the_close_match(flrelia):
    with pytest.raises(RunSpecError, match=r"^flrelia.run\\(\\): unknown keyword 'site'; .*"
                       r"did you mean 'sites'\\?$"):
        flrelia.run(site=2)


@pytest.mark.flrelia(sites=0)
def test_bad_marker_value_names_the_marker(flrelia):
    with pytest.raises(RunSpecError) as raised:
        flrelia.run()
    assert str(raised.value) == "@pytest.mark.flrelia: sites: must be >= 1, got 0"


def test_bad_fault_parameter_is_reported_by_the_scenario_loader(flrelia):
    with pytest.raises(RunSpecError) as raised:
        flrelia.run(faults=[{"fault": "delayed_download", "delay": "soon"}])
    assert str(raised.value).startswith("flrelia.run(): faults[0].delay: invalid duration 'soon'")
"""
)

SETTINGS_TESTS = (
    HELPERS
    + """

def test_runs_use_the_session_settings(flrelia):
    run = flrelia.run(tensors=SMALL, faults=[LATE], within="5s")

    assert not run.ok  # against sync-stop the late pull finds the process gone
    assert "known bug 'sync-stop'" in run.report
    assert "pytest 'test_settings.py::test_runs_use_the_session_settings' " \\
        "--flrelia-known-bug=sync-stop" in run.report
    bound = next(c for c in run.verdict.checks if c.name == "within_bound")
    assert bound.expected == "the run ends within 10s"  # 5s at --flrelia-time-scale=2
    assert run_processes() == []
"""
)


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose subprocess sessions import this checkout and carry a fresh mark."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FLRELIA_TEST_MARK", uuid.uuid4().hex)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *QUIET_ARGS, *args, timeout=INNER_TIMEOUT)


def test_fixture_runs_checks_and_takes_marker_defaults(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_api=API_TESTS)

    result = run(inner, "-rf")

    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_failing_check_shows_the_report _*",
            "E   *ScenarioFailure: scenario test_api.test_failing_check_shows_the_report "
            "(*test_api.py:*) failed against the correct reference implementation after *s",
            "E       expectation at +*ms",
            "E         expected: outcome failure",
            "E         seen:     success",
            "E       reproduce:",
            "E         pytest 'test_api.py::test_failing_check_shows_the_report'",
            # 5 runs; the faults of the passing run (2) and of the marker's first run (1)
            "flrelia: 5 scenarios against *, 3 faults delivered, * invariants checked (* failed)",
            "FAILED test_api.py::test_failing_check_shows_the_report*",
        ]
    )


def test_fixture_runs_with_the_known_bug_time_scale_and_report_dir(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_settings=SETTINGS_TESTS)

    result = run(
        inner,
        "--flrelia-known-bug=sync-stop",
        "--flrelia-time-scale=2",
        "--flrelia-report=reports",
    )

    result.assert_outcomes(passed=1)
    name = "test_settings.test_runs_use_the_session_settings"
    assert sorted(p.name for p in (inner.path / "reports").iterdir()) == [
        f"{name}.mmd",
        f"{name}.timeline.jsonl",
        f"{name}.verdict.txt",
    ]


HARNESS_ERROR_TESTS = '''
import pytest

from pytest_flrelia.harness.runner import HarnessError


def test_a_target_that_raises_raises_the_harness_error(flrelia):
    with pytest.raises(HarnessError) as raised:
        flrelia.run(tensors={"count": 1, "size": "16KiB"})
    assert raised.value.verdict is None
    assert "KeyError: 'site-1'" in raised.value.report


def test_the_harness_error_shows_as_the_test_failure(flrelia):
    flrelia.run(tensors={"count": 1, "size": "16KiB"})
'''


def test_fixture_reports_a_target_that_raises_as_a_harness_error(inner: pytest.Pytester) -> None:
    install_target(inner.path, "raising", "raising_target", RAISING_TARGET)
    inner.makepyfile(test_harness=HARNESS_ERROR_TESTS)

    result = run(inner, "--flrelia-target=raising")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_the_harness_error_shows_as_the_test_failure _*",
            "E   *HarnessError: scenario test_harness.test_the_harness_error_shows_as_the_test_"
            "failure (*test_harness.py:*): harness error against target 'raising' after *s",
            "E * the harness or the target raised; no invariant was judged",
            "E * Traceback (most recent call last):",
            "E * KeyError: 'site-1'",
            "E * reproduce:",
            "E * pytest 'test_harness.py::test_the_harness_error_shows_as_the_test_failure'"
            " --flrelia-target=raising",
        ]
    )


CUT_TESTS = '''
def test_a_run_past_the_pytest_timeout_is_cut_and_reported(flrelia):
    flrelia.run(
        rounds=2,
        tensors={"count": 1, "size": "16KiB"},
        timeouts={"download_complete": "10s", "stop_wait": "10s"},
        faults=[{"fault": "stuck_exit", "round": 1}],
        within="30s",
    )
'''


def test_fixture_run_cut_by_pytest_timeout_fails_with_the_cut_report(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(test_cut=CUT_TESTS)

    result = run(inner, "--timeout=3", "--timeout-method=thread")

    assert result.ret == pytest.ExitCode.TESTS_FAILED  # a failure, not os._exit(1)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E   *ScenarioCut: scenario test_cut.test_a_run_past_the_pytest_timeout_is_cut_and_"
            "reported (*test_cut.py:*) was cut by pytest-timeout against the correct reference "
            "implementation after *s",
            "E * Timeout (>3.0s) from pytest-timeout.",
        ]
    )


WARNING_TESTS = '''
def test_contradicting_timeouts_are_said_of_the_keyword(flrelia):
    run = flrelia.run(
        tensors={"count": 1, "size": "16KiB"},
        timeouts={"download_complete": "5s", "stop_wait": "3s"},
    )
    assert run.ok
'''


def test_fixture_warns_of_contradicting_timeouts_in_the_callers_words(
    inner: pytest.Pytester,
) -> None:
    inner.makepyfile(test_warn=WARNING_TESTS)

    result = run(inner, "-W", "always")

    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*test_warn.py:2: ScenarioTimeoutWarning: flrelia.run(): timeouts.stop_wait: "
            "stop_wait (3s) is shorter than download_complete (5s): the deferred stop *",
        ]
    )
    assert "TimeoutConflictWarning" not in result.stdout.str()  # the job does not repeat it
