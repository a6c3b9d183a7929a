"""The plugin as a user meets it: options, settings errors, scenario files collected as items."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.plugin.collect import SETTINGS_KEY, ScenarioItem
from pytest_flrelia.targets.reference.variants import KNOWN_BUGS

ROOT = Path(__file__).resolve().parent.parent
BAD_SCENARIOS = ROOT / "tests" / "data" / "bad_scenarios"

# Works whether or not the package is installed: block the entry point, load the module.
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
# Plugins this suite does not need in the inner sessions; hypothesis's alone costs ~1 s
# per in-process run (pytester unloads it after each).
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker")

SINGLE = """\
name: late-pull
description: one scenario in a mapping
"""
LIST = """\
- name: early-sigterm
  marks: [slow]
- name: stale-peer-gone
  job: {rounds: 2}
  catches: [stale-peer-gone]
  faults:
    - fault: stale_peer_gone
      round: 2
"""
MATRIX = """\
name: boundary
matrix:
  launch_once: [true, false]
  sites: [1, 3]
"""
REGISTER_SLOW = """\
[pytest]
markers =
    slow: a slow scenario
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(*PLUGIN_ARGS, *QUIET_ARGS, *args)


def collected(result: pytest.RunResult) -> list[str]:
    """Node ids printed by ``--collect-only -q``."""
    return [line for line in result.outlines if "::" in line and " " not in line]


@pytest.fixture
def scenarios(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".ini", pytest=REGISTER_SLOW)
    (pytester.path / "single.scenario.yaml").write_text(SINGLE)
    (pytester.path / "list.scenario.yml").write_text(LIST)
    (pytester.path / "matrix.scenario.yaml").write_text(MATRIX)
    return pytester


def test_collects_single_list_and_matrix_files_as_items(scenarios: pytest.Pytester) -> None:
    result = run(scenarios, "--collect-only", "-q")

    assert result.ret == pytest.ExitCode.OK
    assert sorted(collected(result)) == [
        "list.scenario.yml::early-sigterm",
        "list.scenario.yml::stale-peer-gone",
        "matrix.scenario.yaml::boundary[launch_once=false-sites=1]",
        "matrix.scenario.yaml::boundary[launch_once=false-sites=3]",
        "matrix.scenario.yaml::boundary[launch_once=true-sites=1]",
        "matrix.scenario.yaml::boundary[launch_once=true-sites=3]",
        "single.scenario.yaml::late-pull",
    ]


def test_count_repeats_scenario_items_as_pytest_repeat_repeats_functions(
    scenarios: pytest.Pytester,
) -> None:
    scenarios.makepyfile(test_plain="def test_f():\n    pass\n")

    result = run(scenarios, "-p", "repeat", "--count", "2", "--collect-only", "-q")

    assert collected(result) == [
        "list.scenario.yml::early-sigterm[1-2]",
        "list.scenario.yml::early-sigterm[2-2]",
        "list.scenario.yml::stale-peer-gone[1-2]",
        "list.scenario.yml::stale-peer-gone[2-2]",
        "matrix.scenario.yaml::boundary[launch_once=true-sites=1-1-2]",
        "matrix.scenario.yaml::boundary[launch_once=true-sites=1-2-2]",
        "matrix.scenario.yaml::boundary[launch_once=true-sites=3-1-2]",
        "matrix.scenario.yaml::boundary[launch_once=true-sites=3-2-2]",
        "matrix.scenario.yaml::boundary[launch_once=false-sites=1-1-2]",
        "matrix.scenario.yaml::boundary[launch_once=false-sites=1-2-2]",
        "matrix.scenario.yaml::boundary[launch_once=false-sites=3-1-2]",
        "matrix.scenario.yaml::boundary[launch_once=false-sites=3-2-2]",
        "single.scenario.yaml::late-pull[1-2]",
        "single.scenario.yaml::late-pull[2-2]",
        "test_plain.py::test_f[1-2]",
        "test_plain.py::test_f[2-2]",
    ]


def test_repeated_items_keep_their_marks_and_select_by_repetition(
    scenarios: pytest.Pytester,
) -> None:
    result = run(
        scenarios, "-p", "repeat", "--count", "3", "--collect-only", "-q", "-m", "slow",
        "-k", "2-3",
    )

    assert collected(result) == ["list.scenario.yml::early-sigterm[2-3]"]


def test_count_of_one_or_no_repeat_plugin_leaves_names_alone(
    scenarios: pytest.Pytester,
) -> None:
    once = run(scenarios, "-p", "repeat", "--count", "1", "--collect-only", "-q")
    plain = run(scenarios, "-p", "no:repeat", "--collect-only", "-q")

    assert collected(once) == collected(plain)
    assert "single.scenario.yaml::late-pull" in collected(plain)


def test_markers_from_marks_select_items(scenarios: pytest.Pytester) -> None:
    slow = run(scenarios, "--collect-only", "-q", "-m", "slow")
    every = run(scenarios, "--collect-only", "-q", "-m", "scenario and not slow")

    assert collected(slow) == ["list.scenario.yml::early-sigterm"]
    assert len(collected(every)) == 6


def test_k_selects_by_name_and_by_caught_bug(scenarios: pytest.Pytester) -> None:
    by_name = run(scenarios, "--collect-only", "-q", "-k", "boundary and launch_once=true")
    by_name_only = run(scenarios, "--collect-only", "-q", "-k", "late-pull or sigterm")
    by_bug = run(scenarios, "--collect-only", "-q", "-k", "stale-peer-gone")

    assert by_name.ret == pytest.ExitCode.USAGE_ERROR  # '=' is not -k syntax: pytest says so
    assert collected(by_name_only) == [
        "list.scenario.yml::early-sigterm",
        "single.scenario.yaml::late-pull",
    ]
    assert collected(by_bug) == ["list.scenario.yml::stale-peer-gone"]


def test_last_failed_reselects_scenario_items_by_node_id(scenarios: pytest.Pytester) -> None:
    cache = scenarios.path / ".pytest_cache" / "v" / "cache"
    cache.mkdir(parents=True)
    failed = "matrix.scenario.yaml::boundary[launch_once=false-sites=3]"
    (cache / "lastfailed").write_text(json.dumps({failed: True}))

    result = run(scenarios, "--collect-only", "-q", "--lf")
    by_id = run(scenarios, "--collect-only", "-q", "-p", "no:cacheprovider", failed)

    assert collected(result) == [failed]
    assert collected(by_id) == [failed]


def test_items_carry_markers_location_and_the_scenario(scenarios: pytest.Pytester) -> None:
    found, _ = scenarios.inline_genitems(*PLUGIN_ARGS, *QUIET_ARGS, "list.scenario.yml")
    by_name = {item.name: item for item in found}
    item = by_name["stale-peer-gone"]

    assert isinstance(item, ScenarioItem)
    assert item.scenario.job.rounds == 2
    assert item.get_closest_marker("scenario") is not None
    assert by_name["early-sigterm"].get_closest_marker("slow") is not None
    assert item.get_closest_marker("slow") is None
    assert item.location == ("list.scenario.yml", 2, "scenario: stale-peer-gone")
    path, line, info = item.reportinfo()
    assert (Path(path).name, line, info) == ("list.scenario.yml", 2, "scenario: stale-peer-gone")


def test_unregistered_mark_under_strict_markers_is_a_collection_error(
    pytester: pytest.Pytester,
) -> None:
    (pytester.path / "m.scenario.yaml").write_text("name: m\nmarks: [nightly]\n")

    result = run(pytester, "--collect-only", "--strict-markers")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert (
        "m.scenario.yaml:1: marks[0]: 'nightly' not found in `markers` configuration option"
        in result.outlines
    )


def test_scenario_for_a_target_not_available_is_skipped_with_the_reason(
    pytester: pytest.Pytester,
) -> None:
    (pytester.path / "t.scenario.yaml").write_text("name: elsewhere\ntarget: other\n")

    result = run(pytester, "-rs")

    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*target 'other' is not available in this session: no flrelia target named 'other'*"]
    )


def test_bad_files_are_collection_errors_and_other_files_still_collect(
    pytester: pytest.Pytester,
) -> None:
    expected = {}
    for path in sorted(BAD_SCENARIOS.glob("*.scenario.yaml")):
        (pytester.path / path.name).write_bytes(path.read_bytes())
        expected[path.name] = Path(f"{path}.expected").read_text().splitlines()[0]
    (pytester.path / "good.scenario.yaml").write_text(SINGLE)

    result = run(pytester, "--collect-only", "-q")

    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert collected(result) == ["good.scenario.yaml::late-pull"]
    result.stdout.fnmatch_lines([f"*{len(expected)} errors*"])
    for line in expected.values():
        assert line in result.outlines
    assert "Traceback" not in result.stdout.str()


def test_continue_on_collection_errors_runs_the_good_files(pytester: pytest.Pytester) -> None:
    (pytester.path / "bad.scenario.yaml").write_text("name: Bad\n")
    (pytester.path / "good.scenario.yaml").write_text("name: good\ntarget: other\n")

    result = run(pytester, "--continue-on-collection-errors")

    result.assert_outcomes(skipped=1, errors=1)


def test_scenario_names_are_unique_across_files(pytester: pytest.Pytester) -> None:
    (pytester.path / "a.scenario.yaml").write_text("name: same\n")
    (pytester.path / "b.scenario.yaml").write_text("description: x\nname: same\n")

    result = run(pytester, "--collect-only", "-q")

    assert collected(result) == ["a.scenario.yaml::same"]
    result.stdout.fnmatch_lines(
        [
            "b.scenario.yaml:2: name: duplicate scenario name 'same'; "
            "first defined at a.scenario.yaml:1"
        ]
    )


def test_items_run_and_collection_errors_show_under_xdist(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # target: other -> every item is skipped in setup, so no runner is needed.
    (pytester.path / "grid.scenario.yaml").write_text(f"target: other\n{MATRIX}")
    (pytester.path / "pair.scenario.yaml").write_text(
        "- {name: one, target: other}\n- {name: two, target: other}\n"
    )
    (pytester.path / "bad.scenario.yaml").write_text("name: ok\nexpect: {outcome: sucess}\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))

    result = pytester.runpytest_subprocess(*PLUGIN_ARGS, *QUIET_ARGS, "-p", "xdist", "-n", "2")

    result.stdout.fnmatch_lines(
        [
            "bad.scenario.yaml:2: expect.outcome: unknown outcome 'sucess'; "
            "valid: success, failure; did you mean 'success'?"
        ]
    )
    assert "Different tests were collected" not in result.stdout.str()
    assert result.parseoutcomes() == {"skipped": 6, "errors": 1}


def test_known_bugs_lists_every_slug_with_one_line_and_exits(pytester: pytest.Pytester) -> None:
    (pytester.path / "x.scenario.yaml").write_text("name: x\n")

    result = run(pytester, "--flrelia-known-bugs")

    assert result.ret == 0
    lines = [line for line in result.outlines if line.strip()]
    assert [line.split()[0] for line in lines] == list(KNOWN_BUGS)
    assert len(lines) == 12
    assert "collected" not in result.stdout.str()


def test_bad_known_bug_is_a_usage_error_with_a_suggestion(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--flrelia-known-bug=sync-stp")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: --flrelia-known-bug: unknown known bug 'sync-stp'; valid: sync-stop, *"
            "; did you mean 'sync-stop'?"
        ]
    )


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--flrelia-time-scale=0"], "", "--flrelia-time-scale: expected a number > 0*got '0'"),
        ([], "flrelia_time_scale = fast", "ini flrelia_time_scale: expected a number > 0*'fast'"),
        (["--flrelia-within=soon"], "", "--flrelia-within: invalid duration 'soon'; valid: *"),
        ([], "flrelia_within = 0s", "ini flrelia_within: must be > 0, got '0s'"),
        (
            [],
            "flrelia_known_bug = launch-once-exit",
            "ini flrelia_known_bug: unknown known bug*did you mean 'launch-once-exits'?",
        ),
        (
            ["--flrelia-target=refrence"],
            "",
            "--flrelia-target: unknown target 'refrence'; valid: *reference*",
        ),
        (
            ["--flrelia-report=report.txt"],
            "",
            "--flrelia-report: 'report.txt' exists and is not a directory",
        ),
        ([], "flrelia_known_bug = sync-stop\nflrelia_target = reference", None),
    ],
)
def test_bad_settings_name_their_source(
    pytester: pytest.Pytester, args: list[str], ini: str, message: str | None
) -> None:
    pytester.makefile(".ini", pytest=f"[pytest]\n{ini}\n")
    (pytester.path / "report.txt").write_text("not a directory")

    result = run(pytester, "--collect-only", *args)

    if message is None:
        assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    else:
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_settings_come_from_options_then_ini_then_defaults(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nflrelia_report = out/reports\nflrelia_within = 2m\n"
        "flrelia_time_scale = 3\n",
    )

    from_ini = pytester.parseconfigure(*PLUGIN_ARGS, *QUIET_ARGS)
    from_cli = pytester.parseconfigure(
        *PLUGIN_ARGS,
        *QUIET_ARGS,
        "--flrelia-time-scale=1.5",
        "--flrelia-known-bug",
        "validate-waits",
    )

    assert from_ini.stash[SETTINGS_KEY] == Settings(
        target="reference",
        known_bug=None,
        report_dir=pytester.path / "out" / "reports",
        time_scale=3.0,
        default_within=120.0,
    )
    assert from_cli.stash[SETTINGS_KEY].time_scale == 1.5
    assert from_cli.stash[SETTINGS_KEY].known_bug == "validate-waits"
    assert from_cli.stash[SETTINGS_KEY].default_within == 120.0


def test_known_bug_needs_the_reference_target(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--flrelia-known-bug=sync-stop", "--flrelia-target=reference")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_help_lists_every_option_and_ini_key(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")

    result.stdout.fnmatch_lines_random(
        [
            "*--flrelia-target=NAME*",
            "*--flrelia-known-bug=SLUG*",
            "*--flrelia-known-bugs*",
            "*--flrelia-report=DIR*",
            "*--flrelia-time-scale=FACTOR*",
            "*--flrelia-within=DURATION*",
            "*flrelia_target (string)*",
            "*flrelia_known_bug (string)*",
            "*flrelia_report (string)*",
            "*flrelia_time_scale (string)*",
            "*flrelia_within (string)*",
        ]
    )


def test_report_header_shows_settings_that_are_not_the_default(pytester: pytest.Pytester) -> None:
    (pytester.path / "x.scenario.yaml").write_text("name: x\n")

    plain = run(pytester, "--collect-only")
    tuned = run(pytester, "--collect-only", "--flrelia-known-bug=sync-stop", "--flrelia-within=1m")

    assert not any(line.startswith("flrelia:") for line in plain.outlines)
    tuned.stdout.fnmatch_lines(["flrelia: target=reference, known-bug=sync-stop, within=1m"])
