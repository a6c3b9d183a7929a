"""Scenario files run as a user runs them: failure reports, artifacts, xdist, bounds, bad files.

Every session here is a real ``pytest`` subprocess running real jobs; the
scenarios are the smallest that show each behaviour (1 site, 16 KiB tensors).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest
from _scenarios import STUCK_PAST_BOUND
from _targets import RAISING_TARGET, install_target

from pytest_flrelia.harness.processes import RUN_ID_ENV, live_processes_where

ROOT = Path(__file__).resolve().parent.parent
# Works whether or not the package is installed: block the entry point, load the module.
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")
INNER_TIMEOUT = 120.0
"""Upper bound on one inner session: a hang fails the test instead of the suite."""
MARK_ENV = "FLRELIA_TEST_MARK"
"""Set to a fresh value per test: every process the inner session starts inherits it."""

LATE_PULL = """\
name: late-pull-small
description: The server pulls the tensors 300 ms late; the process must still serve them.
job:
  sites: 1
  tensors: {count: 1, size: 16KiB}
faults:
  - {fault: delayed_download, site: site-1, delay: 300ms}
expect:
  within: 10s
"""
SMALL_OK = """\
name: small-ok
job: {tensors: {count: 1, size: 16KiB}}
expect: {within: 10s}
"""
FOUR = """\
- name: late-pull-small
  job: {tensors: {count: 1, size: 16KiB}}
  faults:
    - {fault: delayed_download, delay: 300ms}
  expect: {within: 10s, invariants: [all_rounds_complete]}
- name: two-rounds-small
  job: {rounds: 2, tensors: {count: 1, size: 16KiB}}
  expect: {within: 10s, invariants: [all_rounds_complete]}
- name: sigkill-small
  job: {tensors: {count: 1, size: 16KiB}}
  faults:
    - {fault: early_sigterm, at: after_task_received, signal: SIGKILL}
  expect:
    outcome: failure
    error: "site-1: (training process ended|pipe handler stopped)"
    within: 10s
    invariants: [clean_failure, within_bound]
- name: crash-small
  job: {tensors: {count: 1, size: 16KiB}}
  faults:
    - {fault: crash, at: after_task_received, code: 3}
  expect:
    outcome: failure
    error: "site-1: (training process ended|pipe handler stopped)"
    within: 10s
    invariants: [clean_failure, within_bound]
"""
"""Invariants named, so every check applies in every run and the figures are exact: under
sync-stop the first two fail their expectation and all_rounds_complete (whether the job
fails or hangs to its bound); the other two expect the failure they get.  Every result
carries a tensor: a process with nothing to download exits at once, and under a heavy
load the executor may see the exit before the result.  A process that dies before its
result is reported by whichever the executor sees first: its exit or its pipe closing."""
FOUR_SUMMARY = (
    "flrelia: 4 scenarios against the reference target, known bug 'sync-stop', "
    "3 faults delivered, 13 invariants checked (4 failed)"
)
MATRIX = """\
name: pair
job: {tensors: {count: 1, size: 16KiB}}
matrix:
  launch_once: [false, true]
"""
NEVER_FIRES = """\
- name: crash-in-validate-rounds
  description: Both rounds validate, so no download ever ends and after_download never comes.
  job: &validate {rounds: 2, launch_once: true, validate_rounds: [1, 2], tensors: {count: 1}}
  faults:
    - {fault: crash, at: after_download}
  expect: {within: 10s}
- name: optional-crash-in-validate-rounds
  job: *validate
  faults:
    - {fault: crash, at: after_download, optional: true}
  expect: {within: 10s}
"""
"""The issue's repro, with one process for both rounds: a per-round process with nothing
to download exits at once, and its exit may still race its result on a loaded host."""
NAMED_NOTHING = """\
name: named-but-nothing-to-judge
job: {tensors: {count: 0}}
expect:
  within: 10s
  invariants: [tensors_intact, stale_events_ignored, no_premature_stop]
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose subprocess sessions import this checkout and carry a fresh mark."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(MARK_ENV, uuid.uuid4().hex)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*PLUGIN_ARGS, *QUIET_ARGS, *args, timeout=INNER_TIMEOUT)


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Node id -> PASSED/FAILED from the ``-rpf`` short summary."""
    found = {}
    for line in result.outlines:
        match = re.match(r"(PASSED|FAILED) (\S+)", line)
        if match:
            found[match.group(2)] = match.group(1)
    return found


def summary_line(result: pytest.RunResult) -> str:
    lines = [line for line in result.outlines if re.match(r"flrelia: \d+ scenario", line)]
    assert len(lines) == 1, result.stdout.str()
    return lines[0]


def marked_survivors(mark: str) -> list[str]:
    """Live processes of a scenario run (run id) that carry this test's mark."""
    return [
        f"pid {process.pid}: {' '.join(process.cmdline())}"
        for process in live_processes_where(
            lambda env: env.get(MARK_ENV) == mark and RUN_ID_ENV in env
        )
    ]


def test_failing_scenario_report_shows_the_invariant_the_swimlane_and_how_to_reproduce(
    inner: pytest.Pytester,
) -> None:
    (inner.path / "late-pull.scenario.yaml").write_text(LATE_PULL)

    result = run(inner, "--flrelia-known-bug=sync-stop")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*_ scenario: late-pull-small _*",
            "scenario late-pull-small (*late-pull.scenario.yaml:1) failed against "
            "the reference target, known bug 'sync-stop' after *s",
            "  The server pulls the tensors 300 ms late; the process must still serve them.",
            "invariant all_rounds_complete at +*ms",
            "  expected: rounds 1..1 complete",
            "  seen: *0 of 1 complete; round 1: failed to download from site-1*",
            "timeline around the violation:",
            "   time * | server * | client-site-1 *",
            "reproduce:",
            "  pytest 'late-pull.scenario.yaml::late-pull-small' --flrelia-known-bug=sync-stop",
            "flrelia: 1 scenario against the reference target, known bug 'sync-stop', "
            "1 fault delivered, * invariants checked (* failed)",
            "FAILED late-pull.scenario.yaml::late-pull-small*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_report_dir_gets_a_timeline_and_a_mermaid_diagram_per_scenario(
    inner: pytest.Pytester,
) -> None:
    (inner.path / "plain.scenario.yaml").write_text(SMALL_OK)
    (inner.path / "matrix.scenario.yaml").write_text(MATRIX)

    result = run(inner, "--flrelia-report=reports")

    result.assert_outcomes(passed=3)
    reports = inner.path / "reports"
    stems = ["small-ok", "pair_launch_once_false_", "pair_launch_once_true_"]
    assert sorted(p.name for p in reports.iterdir()) == sorted(
        f"{stem}{suffix}"
        for stem in stems
        for suffix in (".timeline.jsonl", ".mmd", ".verdict.txt")
    )
    for stem in stems:
        events = [
            json.loads(line)
            for line in (reports / f"{stem}.timeline.jsonl").read_text().splitlines()
        ]
        kinds = [event["kind"] for event in events]
        assert kinds[-1] == "job_end", kinds
        assert "launch" in kinds
        diagram = (reports / f"{stem}.mmd").read_text().splitlines()
        assert diagram[0] == "sequenceDiagram"
        assert any(line.strip().startswith("participant lane_server") for line in diagram)
        verdict = (reports / f"{stem}.verdict.txt").read_text().splitlines()
        assert verdict[0] == "against the correct reference implementation"
        assert verdict[1] == "passed  expectation: success"
        # Nothing stale was injected, no fault planned: said, not passed silently.
        assert "n/a     stale_events_ignored: the scenario injects no stale event" in verdict
        assert "n/a     faults_delivered: the scenario injects no fault" in verdict


def test_count_runs_each_repetition_with_its_own_report_files(inner: pytest.Pytester) -> None:
    (inner.path / "plain.scenario.yaml").write_text(SMALL_OK)

    result = run(inner, "-p", "repeat", "--count", "2", "-rp", "--flrelia-report=reports")

    result.assert_outcomes(passed=2)
    assert outcomes(result) == {
        "plain.scenario.yaml::small-ok[1-2]": "PASSED",
        "plain.scenario.yaml::small-ok[2-2]": "PASSED",
    }
    assert summary_line(result).startswith("flrelia: 2 scenarios against ")
    timelines = sorted(p.name for p in (inner.path / "reports").glob("*.timeline.jsonl"))
    assert timelines == ["small-ok_1-2_.timeline.jsonl", "small-ok_2-2_.timeline.jsonl"]


def test_xdist_gives_each_scenario_the_outcome_it_has_serially(inner: pytest.Pytester) -> None:
    (inner.path / "four.scenario.yaml").write_text(FOUR)
    expected = {  # the two that download fail against sync-stop; the others fail as expected
        "four.scenario.yaml::late-pull-small": "FAILED",
        "four.scenario.yaml::two-rounds-small": "FAILED",
        "four.scenario.yaml::sigkill-small": "PASSED",
        "four.scenario.yaml::crash-small": "PASSED",
    }

    serial = run(inner, "-rpf", "--flrelia-known-bug=sync-stop")
    parallel = run(inner, "-rpf", "--flrelia-known-bug=sync-stop", "-p", "xdist", "-n", "2")

    assert outcomes(serial) == expected
    assert outcomes(parallel) == expected
    assert parallel.ret == serial.ret == pytest.ExitCode.TESTS_FAILED
    # Figures travel from the workers inside the reports; the controller sums them.
    assert summary_line(serial) == FOUR_SUMMARY
    assert summary_line(parallel) == FOUR_SUMMARY


def test_run_past_its_bound_is_stopped_reported_and_leaves_no_process(
    inner: pytest.Pytester,
) -> None:
    (inner.path / "stuck.scenario.yaml").write_text(STUCK_PAST_BOUND)

    result = run(inner)

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "scenario stuck-past-bound (*) failed against the correct reference implementation "
            "after *s",
            "invariant within_bound",
            "  expected: the run ends within 1.5s",
            "  seen: *still running after *s; stopped by the harness",
            "*| stop_requested pid*",
        ]
    )
    assert marked_survivors(os.environ[MARK_ENV]) == []


@pytest.mark.slow
def test_a_fault_that_never_fires_fails_its_scenario_unless_optional(
    inner: pytest.Pytester,
) -> None:
    (inner.path / "validate.scenario.yaml").write_text(NEVER_FIRES)

    result = run(inner, "-rpf")

    assert outcomes(result) == {
        "validate.scenario.yaml::crash-in-validate-rounds": "FAILED",
        "validate.scenario.yaml::optional-crash-in-validate-rounds": "PASSED",
    }
    result.stdout.fnmatch_lines(
        [
            "scenario crash-in-validate-rounds (*) failed against the correct reference "
            "implementation*",
            "invariant faults_delivered",
            "  expected: every fault acts at least once (faults marked optional: true excepted)",
            "  seen:     fault crash(at=after_download, code=1) never fired",
            "not applicable (nothing to judge in this run):",
            "  tensors_intact: the job publishes no tensors",
            "  stale_events_ignored: the scenario injects no stale event",
            "flrelia: 2 scenarios against *, 0 of 2 faults delivered, * invariants checked "
            "(1 failed)",
        ]
    )


@pytest.mark.slow
def test_an_invariant_named_with_nothing_to_judge_fails_with_the_reason(
    inner: pytest.Pytester,
) -> None:
    (inner.path / "named.scenario.yaml").write_text(NAMED_NOTHING)

    result = run(inner)

    result.assert_outcomes(failed=1)
    lines = []
    for name, why in [
        ("tensors_intact", "the job publishes no tensors"),
        ("stale_events_ignored", "the scenario injects no stale event"),
        ("no_premature_stop", "the job publishes no tensors"),
    ]:
        lines += [
            f"invariant {name}",
            f"  expected: {name} has something to judge: expect.invariants names it",
            f"  seen:     not applicable: {why}",
        ]
    result.stdout.fnmatch_lines(
        [
            *lines,
            # Not named, added by the harness: it may have nothing to judge, and says so.
            "not applicable (nothing to judge in this run):",
            "  faults_delivered: the scenario injects no fault",
            "timeline:",
            "flrelia: 1 scenario against *, 0 faults delivered, * invariants checked (3 failed)",
        ]
    )


def test_bad_scenario_file_does_not_stop_the_good_one(inner: pytest.Pytester) -> None:
    (inner.path / "bad.scenario.yaml").write_text("name: Bad\n")
    (inner.path / "good.scenario.yaml").write_text(SMALL_OK)

    result = run(inner)

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting bad.scenario.yaml*",
            "bad.scenario.yaml:1: name: invalid value 'Bad': *",
            "flrelia: 1 scenario against *, 0 faults delivered, * invariants checked (0 failed)",
        ]
    )
    assert "Interrupted" not in result.stdout.str()


def test_a_collection_error_outside_scenario_files_still_interrupts(
    pytester: pytest.Pytester,
) -> None:
    (pytester.path / "bad.scenario.yaml").write_text("name: Bad\n")
    (pytester.path / "good.scenario.yaml").write_text(SMALL_OK)
    (pytester.path / "test_broken.py").write_text("import no_such_module_for_flrelia\n")

    result = pytester.runpytest_inprocess(*PLUGIN_ARGS, *QUIET_ARGS)

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*Interrupted: 2 errors during collection*"])
    result.assert_outcomes(errors=2)


def test_x_stops_at_a_bad_scenario_file(pytester: pytest.Pytester) -> None:
    (pytester.path / "bad.scenario.yaml").write_text("name: Bad\n")
    (pytester.path / "good.scenario.yaml").write_text(SMALL_OK)

    result = pytester.runpytest_inprocess(*PLUGIN_ARGS, *QUIET_ARGS, "-x")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=1)  # the good file did not run
    result.stdout.fnmatch_lines(["*stopping after 1 failures*"])


def test_help_shows_the_flrelia_group_with_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(*PLUGIN_ARGS, *QUIET_ARGS, "--help")

    result.stdout.fnmatch_lines(
        [
            "fault-injection scenarios (pytest-flrelia):",
            "  --flrelia-target=NAME*",
            "  --flrelia-known-bug=SLUG*",
            "  --flrelia-report=DIR*",
            "  --flrelia-time-scale=FACTOR*",
            "  --flrelia-within=DURATION*",
            "  --flrelia-known-bugs*",
        ]
    )


def test_a_target_that_raises_is_a_harness_error_with_its_traceback(
    inner: pytest.Pytester,
) -> None:
    install_target(inner.path, "raising", "raising_target", RAISING_TARGET)
    (inner.path / "plain.scenario.yaml").write_text(SMALL_OK)

    result = run(inner, "--flrelia-target=raising", "--flrelia-time-scale=2")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "scenario small-ok (*plain.scenario.yaml:1): harness error against "
            "target 'raising' after *s",
            "  the harness or the target raised; no invariant was judged",
            "  Traceback (most recent call last):",
            "*in _site_executor",
            "*return executors?site?",
            "  KeyError: 'site-1'",
            "reproduce:",
            "  pytest 'plain.scenario.yaml::small-ok' --flrelia-target=raising "
            "--flrelia-time-scale=2",
        ]
    )
    text = result.stdout.str()
    assert "invariant all_rounds_complete" not in text
    assert "against the correct" not in text


def test_a_target_whose_entry_point_cannot_load_is_one_usage_error(
    inner: pytest.Pytester,
) -> None:
    install_target(inner.path, "broken", "broken_target", "import no_such_module_for_flrelia\n")
    (inner.path / "one.scenario.yaml").write_text(SMALL_OK)
    (inner.path / "two.scenario.yaml").write_text(SMALL_OK.replace("small-ok", "small-two"))

    result = run(inner, "--flrelia-target=broken")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if "cannot be loaded" in line]
    assert errors == [
        "ERROR: --flrelia-target: target 'broken' cannot be loaded: its entry point "
        "broken = broken_target:RaisingTarget (group flrelia.targets) raised "
        "ModuleNotFoundError: No module named 'no_such_module_for_flrelia'"
    ], result.stderr.str()
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()


@pytest.mark.parametrize(
    "option",
    [
        "--flrelia-known-bug=sync-stop",
        "--flrelia-target=reference",
        "--flrelia-report=out",
        "--flrelia-time-scale=2",
        "--flrelia-within=10s",
    ],
)
def test_a_single_valued_option_given_twice_is_a_usage_error(
    pytester: pytest.Pytester, option: str
) -> None:
    name, value = option.split("=")
    result = pytester.runpytest_inprocess(*PLUGIN_ARGS, *QUIET_ARGS, option, f"{name}={value}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*argument {name}: given twice ('{value}', then '{value}'); it takes one value*"]
    )


def test_markers_list_describes_the_flrelia_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(*PLUGIN_ARGS, *QUIET_ARGS, "--markers")

    result.stdout.fnmatch_lines(
        ["@pytest.mark.flrelia(**keywords): defaults for flrelia.run() in this test: *"]
    )
