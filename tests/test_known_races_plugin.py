"""Known races end to end: the plugin reports a failed item as a known race only when
the run's own timeline holds the race's evidence.

The target is the reference one under another name that declares a race whose detector
looks for one event kind in the run (``signal_sent`` is in every run of KB12, the stop
that signals the child only; ``frame_rejected`` is in none of them).  The same real
failure is a non-strict xfail with the evidence when the detector finds it, a plain
failure when it does not, and the correct runtime's pass stays a pass.
"""

from __future__ import annotations

import pytest
from _known_targets import import_this_checkout, stubborn_scenario

from pytest_flrelia.plugin import run_record

PLUGIN_ARGS = ("-p", "no:flrelia", "-p", "pytest_flrelia.plugin")
QUIET_ARGS = ("-p", "no:hypothesispytest", "-p", "no:faker", "-p", "no:cacheprovider")
INNER_TIMEOUT = 180.0

CONFTEST = '''
import dataclasses

from pytest_flrelia.contract.target import KnownRace
from pytest_flrelia.targets.reference import ReferenceTarget

KIND = "{kind}"


def seen(events):
    """The first event of KIND, as evidence."""
    start = min((e.ts for e in events), default=0.0)
    for e in events:
        if e.kind.value == KIND:
            return f"{{KIND}} in {{e.process}} at +{{(e.ts - start) * 1000:.0f}}ms"
    return None


class RacyRef:
    def __init__(self):
        self._ref = ReferenceTarget()
        self.info = dataclasses.replace(
            self._ref.info, name="racy-ref", version="racy-ref 3.0",
            known_races=(KnownRace(name="R1", reason="a race of the stop",
                                   anchor="docs/x.md#r1", detect=seen, versions=">=3"),),
        )

    def run(self, job, faults, context):
        return self._ref.run(job, faults, context)


def pytest_flrelia_make_target(name, config):
    return RacyRef() if name == "racy-ref" else None
'''
STUBBORN = stubborn_scenario(both_modes=False)


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, kind: str,
         *args: str) -> tuple[pytest.RunResult, dict[str, object]]:
    import_this_checkout(monkeypatch)
    pytester.makeconftest(CONFTEST.format(kind=kind))
    (pytester.path / "stubborn.scenario.yaml").write_text(STUBBORN)
    result = pytester.runpytest_subprocess(
        *PLUGIN_ARGS, *QUIET_ARGS, "--flrelia-target=racy-ref", "-rx", "--flrelia-json=run.json",
        *args, timeout=INNER_TIMEOUT,
    )
    (entry,) = run_record.load(pytester.path / "run.json")
    return result, entry


@pytest.mark.slow
def test_a_failure_whose_run_shows_the_race_is_a_known_race(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, entry = _run(pytester, monkeypatch, "signal_sent",
                         "--flrelia-known-bug=child-only-sigterm")

    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines([
        "XFAIL *stubborn-one-round - known race R1: a race of the stop; this run: "
        "signal_sent in client-site-1 at +*ms [[]docs/x.md#r1[]]",
    ])
    assert entry["outcome"] == "xfailed"
    run = entry["run"]
    assert isinstance(run, dict)
    assert run["leading_check"] == "bounded_stop"
    race = run["known_race"]
    assert isinstance(race, dict)
    assert race["name"] == "R1" and race["versions"] == ">=3"
    assert str(race["evidence"]).startswith("signal_sent in client-site-1 at +")


@pytest.mark.slow
def test_the_same_failure_without_the_evidence_stays_a_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, entry = _run(pytester, monkeypatch, "frame_rejected",
                         "--flrelia-known-bug=child-only-sigterm")

    result.assert_outcomes(failed=1)
    assert entry["outcome"] == "failed" and entry["reason"] == "bounded_stop"
    run = entry["run"]
    assert isinstance(run, dict) and run["known_race"] is None


@pytest.mark.slow
def test_a_run_the_race_did_not_reach_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Non-strict: the correct runtime's pass is no XPASS to fix."""
    result, entry = _run(pytester, monkeypatch, "signal_sent")

    result.assert_outcomes(passed=1)
    assert entry["outcome"] == "passed"
