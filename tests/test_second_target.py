"""The second target (tests/minilaunch) over the shipped scenarios.

It is written only against ``pytest_flrelia.contract``: it must pass what it
supports, be skipped (with the reason naming the fault) where it lacks a fault,
and its planted bug (``stop-on-result``) must be caught.
"""

from __future__ import annotations

import ast
import uuid
from pathlib import Path
from xml.etree import ElementTree

import pytest
from _minilaunch_install import ROOT, TESTS, install_mini
from _scenarios import STUCK_PAST_BOUND
from minilaunch.info import EVENTS, FAULTS, INFO, STOP_ON_RESULT, UNSUPPORTED

from pytest_flrelia.contract.timeline import EventKind
from pytest_flrelia.harness.processes import RUN_ID_ENV, live_processes_where
from pytest_flrelia.harness.runner import ScenarioFailure, run_scenario
from pytest_flrelia.harness.settings import Settings
from pytest_flrelia.scenario.catalog import CATALOG
from pytest_flrelia.scenario.loader import load_scenarios

SCENARIOS = ROOT / "scenarios"
MARK_ENV = "FLRELIA_TEST_MARK"
INNER_TIMEOUT = 240.0
PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin", "-p", "no:randomly")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")

P, S = "PASSED", "SKIPPED"
EXPECTED: dict[str, dict[str, tuple[str, str | None]]] = {
    "download_gating/corrupt-chunk.scenario.yaml": {"corrupt-chunk": (P, None)},
    "download_gating/late-pull.scenario.yaml": {
        "late-pull": (P, None),
        "late-pull-launch-once": (P, None),
    },
    "download_gating/launch-once.scenario.yaml": {"launch-once-serves-every-round": (P, None)},
    "download_gating/mixed-faults.scenario.yaml": {
        "three-sites-mixed-faults[launch_once=false]": (S, "stale_peer_gone"),
        "three-sites-mixed-faults[launch_once=true]": (S, "stale_peer_gone"),
    },
    "download_gating/sigkill-before-download.scenario.yaml": {
        "sigkill-before-download[launch_once=false]": (P, None),
        "sigkill-before-download[launch_once=true]": (P, None),
        "sigterm-mid-download": (P, None),
        "sigterm-after-download": (P, None),
    },
    "download_gating/validate-round.scenario.yaml": {
        "validate-round": (P, None),
        "validate-round-launch-once": (P, None),
    },
    "nvflare_findings/failed-deferred-stop.scenario.yaml": {
        "failed-deferred-stop-next-round-launches": (S, "stop_error"),
    },
    "nvflare_findings/orphan-child.scenario.yaml": {"orphan-child-is-reaped": (P, None)},
    "nvflare_findings/slow-init-heartbeat.scenario.yaml": {
        "slow-init-within-pre-init": (P, None),
    },
    "pipe_handler/status-events.scenario.yaml": {
        "stale-peer-gone[launch_once=false]": (S, "stale_peer_gone"),
        "stale-peer-gone[launch_once=true]": (S, "stale_peer_gone"),
        "fresh-handler-after-status-event": (P, None),
        "late-goodbye-at-round-boundary": (S, "stale_pipe_message"),
        "aux-event-mid-execute": (S, "aux_event"),
        "broken-pipe-reported-promptly": (S, "broken_pipe"),
    },
    "process_stop/stubborn-process.scenario.yaml": {
        "stubborn-process-is-killed": (P, None),
        "crash-mid-training[launch_once=false]": (P, None),
        "crash-mid-training[launch_once=true]": (P, None),
        "slow-start": (P, None),
    },
    "round_boundary/deferred-stop.scenario.yaml": {
        "next-round-waits-for-deferred-stop": (P, None),
        "stop-error-next-round-prompt": (S, "stop_error"),
        "stuck-exit-forced-stop[launch_once=false]": (P, None),
        "stuck-exit-forced-stop[launch_once=true]": (P, None),
    },
    "round_boundary/slow-server.scenario.yaml": {
        "slow-aggregation[launch_once=false]": (P, None),
        "slow-aggregation[launch_once=true]": (P, None),
    },
}
"""Per shipped scenario file: each scenario's outcome against ``mini`` (and a skip's fault).

Pinned to the intended harness: the skips need the harness to skip a scenario whose
fault the target lacks (``unsupported``); the stops of stubborn-process and
stuck-exit-forced-stop need ``bounded_stop`` (live and after the run) to read the
launcher's ``reaped``, not ``exit``."""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", install_mini(pytester.path))
    monkeypatch.setenv(MARK_ENV, uuid.uuid4().hex)
    return pytester


def test_every_shipped_scenario_file_is_pinned() -> None:
    shipped = {str(p.relative_to(SCENARIOS)) for p in SCENARIOS.rglob("*.scenario.yaml")}
    assert shipped == set(EXPECTED)


def test_it_declares_every_catalog_fault_either_delivered_or_unsupported() -> None:
    assert set(FAULTS).isdisjoint(UNSUPPORTED)
    assert set(FAULTS) | set(UNSUPPORTED) == set(CATALOG)
    for name, support in FAULTS.items():
        assert support.scopes <= frozenset(CATALOG[name].scopes), name
    assert INFO.variants.keys() == {STOP_ON_RESULT}
    assert EVENTS


def test_it_imports_only_the_contract() -> None:
    """Written against the documented SPI only: no reference runtime, no judge, no harness."""
    for path in sorted((TESTS / "minilaunch").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            )
            for name in names:
                if name.startswith(("pytest_flrelia", "reference_impl")):
                    assert name.startswith("pytest_flrelia.contract"), f"{path.name}: {name}"


@pytest.mark.slow
@pytest.mark.parametrize("file", sorted(EXPECTED))
def test_shipped_scenarios_pass_or_are_skipped_with_the_reason(
    inner: pytest.Pytester, file: str
) -> None:
    report = inner.path / "report.xml"
    result = inner.runpytest_subprocess(
        *PLUGIN_ARGS, *QUIET_ARGS, f"--junitxml={report}", str(SCENARIOS / file),
        "--flrelia-target=mini", timeout=INNER_TIMEOUT,
    )
    text = result.stdout.str()
    seen = junit_outcomes(report)
    assert {name: outcome for name, (outcome, _) in seen.items()} == {
        name: outcome for name, (outcome, _) in EXPECTED[file].items()
    }, text
    for name, (outcome, fault) in EXPECTED[file].items():
        if outcome == S:
            assert fault is not None and fault in seen[name][1], (name, seen[name], text)
    assert _marked_survivors() == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["late-pull", "late-pull-launch-once"])
def test_the_planted_bug_is_caught_by_no_premature_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_children: None, name: str
) -> None:
    install_mini(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    scenario = next(
        s for s in load_scenarios(SCENARIOS / "download_gating/late-pull.scenario.yaml")
        if s.name == name
    )
    correct = run_scenario(scenario, Settings(target="mini"))
    assert not correct.verdict.failures
    assert correct.result is not None and INFO.oracle is not None
    expected = INFO.oracle.expected_model(correct.result)
    assert expected is not None and expected.keys() == correct.result.global_model.keys()
    for tensor, array in expected.items():
        assert array.tobytes() == correct.result.global_model[tensor].tobytes(), tensor
    with pytest.raises(ScenarioFailure) as caught:
        run_scenario(scenario, Settings(target="mini", known_bug=STOP_ON_RESULT))
    verdict = caught.value.verdict
    assert verdict is not None
    failed = {check.name for check in verdict.failures}
    assert {"no_premature_stop", "expectation", "all_rounds_complete"} <= failed, failed
    assert "failed to download from site-1" in caught.value.report




@pytest.mark.slow
def test_an_aborted_run_stops_launching_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leftover_children: None
) -> None:
    """Round 1's process hangs at its exit, its deferred stop would wait 30 s: the bound
    aborts the run, the abort hook kills the child, and round 2 is never launched."""
    install_mini(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "stuck.scenario.yaml"
    path.write_text(STUCK_PAST_BOUND)
    (scenario,) = load_scenarios(path)

    with pytest.raises(ScenarioFailure) as caught:
        run_scenario(scenario, Settings(target="mini"))

    verdict, outcome = caught.value.verdict, caught.value.outcome
    assert verdict is not None and outcome is not None
    failed = {check.name for check in verdict.failures}
    assert "within_bound" in failed and "no_orphans" not in failed, verdict.lines()
    assert "did not unwind" not in caught.value.report
    bound = next(e for e in outcome.events if e.kind is EventKind.ERROR)
    launches = [e for e in outcome.events if e.kind is EventKind.LAUNCH]
    assert len(launches) == 1 and launches[0].ts < bound.ts
    assert any(e.kind is EventKind.REAPED for e in outcome.events if e.ts > bound.ts)


def junit_outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """Test name -> (PASSED/FAILED/SKIPPED, the skip's or failure's message)."""
    found: dict[str, tuple[str, str]] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        outcome, message = P, ""
        for child in case:
            if child.tag in ("skipped", "failure", "error"):
                outcome = {"skipped": S, "failure": "FAILED", "error": "ERROR"}[child.tag]
                message = child.get("message", "")
        found[case.get("name", "")] = (outcome, message)
    return found


def _marked_survivors() -> list[str]:
    import os  # noqa: PLC0415

    mark = os.environ[MARK_ENV]
    return [
        f"pid {p.pid}: {' '.join(p.cmdline())}"
        for p in live_processes_where(lambda env: env.get(MARK_ENV) == mark and RUN_ID_ENV in env)
    ]
