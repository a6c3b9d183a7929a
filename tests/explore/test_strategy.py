"""The schedule strategy: valid by construction, bounded by the target's declarations.

Each property is a Hypothesis test over the strategy itself: every drawn schedule is
rendered as YAML and loaded by the scenario loader (the three passes a file goes through),
and the harness's own support check finds nothing the target does not declare.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings

from pytest_flrelia.contract.target import TargetInfo
from pytest_flrelia.errors import ScenarioError
from pytest_flrelia.explore.effects import ABRUPT_SIGNALS
from pytest_flrelia.explore.run import load, render
from pytest_flrelia.explore.strategy import Schedule, schedules
from pytest_flrelia.harness.runner import applicable_invariants
from pytest_flrelia.harness.support import why_unsupported
from pytest_flrelia.targets.reference.target import ReferenceTarget

REFERENCE = ReferenceTarget.info
FEW = dataclasses.replace(
    REFERENCE,
    name="few",
    faults=MappingProxyType(
        {name: REFERENCE.faults[name] for name in ("delayed_download", "crash", "stop_error")}
    ),
)
"""A target declaring three faults only: nothing else may be drawn for it."""
NARROW = dataclasses.replace(
    REFERENCE,
    name="narrow",
    faults=MappingProxyType(
        {
            name: dataclasses.replace(
                support,
                scopes=frozenset() if name in ("slow_start", "orphan_child") else {"site"}
                if name in ("delayed_download", "stuck_exit")
                else support.scopes,
            )
            for name, support in REFERENCE.faults.items()
        }
    ),
)
"""A target honouring no scope for two faults and only ``site`` for two more: none of
them may be drawn with a scope it would ignore (and a fault that needs one not at all)."""
DRAWS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _check_valid(schedule: Schedule, info: TargetInfo, directory: Path, name: str) -> None:
    scenario = load(schedule.named(name), directory)
    assert why_unsupported(scenario, info, applicable_invariants(scenario)) is None
    assert len(scenario.faults) == schedule.faults
    if scenario.expect.outcome == "failure":
        assert scenario.expect.error
        fatal = scenario.faults[-1]
        assert fatal.site is not None and fatal.round is not None
        if fatal.fault == "early_sigterm":  # one the other threads cannot outlive
            sent = fatal.params["signal"]
            name = signal.Signals(sent).name if isinstance(sent, int) else str(sent)
            assert name in ABRUPT_SIGNALS, fatal
        # Everything else is due before the fatal round: nothing waits on a dead job.
        assert all(f.round is not None and f.round < fatal.round for f in scenario.faults[:-1])
    else:
        assert scenario.expect.error is None


@DRAWS
@given(schedules(REFERENCE))
def test_every_schedule_loads_and_the_reference_supports_it(
    tmp_path: Path, schedule: Schedule
) -> None:
    _check_valid(schedule, REFERENCE, tmp_path, "drawn")


@DRAWS
@given(schedules(FEW))
def test_a_target_s_declarations_bound_what_is_drawn(tmp_path: Path, schedule: Schedule) -> None:
    _check_valid(schedule, FEW, tmp_path, "drawn-few")
    drawn = {entry["fault"] for entry in schedule.mapping.get("faults", [])}
    assert drawn <= set(FEW.faults)


@DRAWS
@given(schedules(NARROW))
def test_the_scopes_a_target_honours_bound_what_is_drawn(
    tmp_path: Path, schedule: Schedule
) -> None:
    _check_valid(schedule, NARROW, tmp_path, "drawn-narrow")
    for entry in schedule.mapping.get("faults", []):
        used = {key for key in ("site", "round") if key in entry}
        assert used <= NARROW.faults[entry["fault"]].scopes, entry



REFUSING = dataclasses.replace(
    REFERENCE,
    name="refusing",
    faults=MappingProxyType(
        {
            **REFERENCE.faults,
            "stuck_exit": dataclasses.replace(
                REFERENCE.faults["stuck_exit"],
                refused=MappingProxyType({"mode": {"thread": "no thread holds os._exit"}}),
            ),
        }
    ),
)
"""The reference with ``stuck_exit`` ``mode: thread`` refused, as the nvflare target does."""


@DRAWS
@given(schedules(REFUSING))
def test_a_refused_parameter_value_is_never_drawn(tmp_path: Path, schedule: Schedule) -> None:
    _check_valid(schedule, REFUSING, tmp_path, "drawn-refusing")  # why_unsupported says None
    modes = {entry.get("mode") for entry in schedule.mapping.get("faults", [])
             if entry["fault"] == "stuck_exit"}
    assert "thread" not in modes

@settings(max_examples=600, deadline=None)
@given(schedules(REFERENCE))
def test_a_fatal_signal_ends_the_process_at_once(schedule: Schedule) -> None:
    """Only the mapping is drawn (no load), so enough fatal ``early_sigterm`` come up to
    catch one SIGINT or SIGQUIT among them (about 16 in 600 draws)."""
    if schedule.mapping["expect"]["outcome"] == "failure":
        fatal = schedule.mapping["faults"][-1]
        if fatal["fault"] == "early_sigterm":
            assert fatal["signal"] in ABRUPT_SIGNALS, fatal


def test_the_check_fails_on_a_schedule_the_loader_refuses(tmp_path: Path) -> None:
    """The property above can fail: a mapping outside the language is refused by load()."""
    bad = Schedule(
        {"job": {"sites": 1}, "faults": [{"fault": "heartbeat_loss", "round": 1}]}, faults=1
    )
    with pytest.raises(ScenarioError, match="does not take 'round'"):
        _check_valid(bad, REFERENCE, tmp_path, "bad")


def test_a_schedule_renders_as_a_file_that_names_itself_first() -> None:
    text = render(Schedule({"job": {"sites": 1}}, 0).named("x", "d"), "seed 1\nline two")
    assert text.splitlines()[:4] == ["# seed 1", "# line two", "name: x", "description: d"]
