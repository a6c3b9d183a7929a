"""The reference target's fault code lives outside the correct classes and is installed
only when a plan needs it; its switches are parsed by the failpoints' one parser."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator, Mapping

import pytest

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.failpoints import FailpointSyntaxError, Point, parse_points
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, Timeouts
from pytest_flrelia.contract.timeline import Timeline
from pytest_flrelia.scenario.catalog import CATALOG, validate_params
from pytest_flrelia.targets.reference import ReferenceTarget, child_faults
from pytest_flrelia.targets.reference.faults import AT_FAILPOINTS, AUX_EVENT_AT, build_plan
from pytest_flrelia.targets.reference.parent_faults import RetiredHandlers
from reference_impl.agent import AGENT_HOOKS_ENV, Agent, AgentSettings
from reference_impl.pipe import Pipe
from reference_impl.pipe_handler import PipeHandler
from reference_impl.task_exchanger import TaskExchanger
from reference_impl.train_script import BEHAVIOUR_ENV, parse_behaviours
from reference_impl.wire import new_secret


def _spec(entry: Mapping[str, object]) -> FaultSpec:
    name = str(entry["fault"])
    return FaultSpec(name, None, None, validate_params(name, entry, "faults[0]"), 0)


@pytest.fixture
def agent() -> Iterator[Agent]:
    secret = new_secret()
    listener = Pipe.listen(secret, name="test-client")
    built = Agent(
        Pipe.connect(listener.address, secret, name="test-agent"),
        AgentSettings(site="site-1", launch_once=True),
        timeline=Timeline("agent"),
        on_client_gone=lambda reason: None,
    )
    yield built
    built.close()
    listener.close()


# -- child side -------------------------------------------------------------------


def test_the_correct_agent_registers_no_fault_action(
    agent: Agent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pytest_flrelia.contract.failpoints")
    with failpoints.scoped("probe.point=call(break_pipe)"):
        failpoints.failpoint("probe.point")
    assert "no action registered for call(break_pipe)" in caplog.text


def test_broken_pipe_wraps_the_client_gone_seam_and_forwards_until_it_acts(agent: Agent) -> None:
    gone: list[str] = []
    agent.on_client_gone = gone.append
    child_faults.BrokenPipe(agent)
    agent.on_client_gone("the client went away")
    assert gone == ["the client went away"]  # not broken yet: a vanished client still ends it


@pytest.mark.parametrize(
    ("entry", "hooked"),
    [
        ({"fault": "broken_pipe", "at": "after_task_received"}, True),
        ({"fault": "stuck_exit", "mode": "thread"}, True),
        ({"fault": "stuck_exit", "mode": "hang"}, False),
        ({"fault": "crash", "at": "after_task_received"}, False),
    ],
)
def test_a_plan_installs_the_child_fault_code_only_when_a_fault_needs_it(
    entry: Mapping[str, object], hooked: bool
) -> None:
    env = build_plan([_spec(entry)], JobConfig(timeouts=Timeouts.fast())).subprocess_env()
    assert (env.get(AGENT_HOOKS_ENV) == child_faults.HOOK) is hooked
    assert hooked or AGENT_HOOKS_ENV not in env


# -- parent side ------------------------------------------------------------------


def test_retired_handlers_are_kept_by_the_fault_code_not_the_exchanger() -> None:
    pipe = Pipe.listen(new_secret(), name="test-client")
    try:
        exchanger = TaskExchanger(
            pipe, site="site-1", timeouts=Timeouts.fast(), timeline=Timeline("client")
        )
        assert not hasattr(exchanger, "retired")
        first = exchanger.handler_for_round(1)
        watched = RetiredHandlers()
        executor = type("E", (), {"site": "site-1", "exchanger": exchanger})()
        watched.watch(executor)  # type: ignore[arg-type]  # only .site and .exchanger are read
        assert watched.latest("site-1", 1) is None
        exchanger.handler_for_round(2)
        assert watched.latest("site-1", 1) is first
        assert isinstance(first, PipeHandler)
        assert watched.latest("site-1", 2) is None
        exchanger.close()
    finally:
        pipe.close()


# -- one parser of name[scope]@tag --------------------------------------------------


def test_behaviours_are_parsed_by_the_failpoints_parser() -> None:
    text = "ignore_sigterm[site=site-2,round=2]@ignore_sigterm#1, spawn_child"
    assert parse_behaviours(text) == [
        Point("ignore_sigterm", "site-2", 2, "ignore_sigterm#1"),
        Point("spawn_child"),
    ]
    assert parse_behaviours("") == []


@pytest.mark.parametrize(
    "text",
    ["spawn child", "spawn_child[round=two]", "spawn_child,", "spawn_child@tag", "a;b", "[x]"],
)
def test_a_malformed_switch_is_an_error_not_dropped(text: str) -> None:
    with pytest.raises(FailpointSyntaxError) as raised:
        parse_points(text, source=BEHAVIOUR_ENV)
    assert BEHAVIOUR_ENV in str(raised.value)


def test_an_unknown_behaviour_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown behaviour spwan_child"):
        parse_behaviours("spwan_child")


# -- what the reference target declares ---------------------------------------------


def test_the_reference_target_declares_every_catalog_fault_with_its_scopes_and_at_points() -> None:
    info = ReferenceTarget.info
    assert sorted(info.faults) == sorted(CATALOG)
    for name, support in info.faults.items():
        fault = CATALOG[name]
        assert support.scopes == frozenset(fault.scopes), name
        assert support.mechanics, name
        at = fault.params.get("at")
        if at is None:
            assert support.at is None and not support.at_detail, name
        else:
            assert support.at == frozenset(at.choices) == frozenset(support.at_detail), name
    assert frozenset(AT_FAILPOINTS) == info.faults["crash"].at
    assert frozenset(AUX_EVENT_AT) == info.faults["aux_event"].at


def test_the_child_fault_code_loads_without_pytest_or_the_judge() -> None:
    """It is imported in every training process whose plan needs it."""
    code = (
        "import sys\n"
        "import pytest_flrelia.targets.reference.child_faults\n"
        "print('pytest' in sys.modules, 'reference_impl.executor' in sys.modules,"
        " any(m.startswith('pytest_flrelia.judge') for m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "False", "False"], done.stdout
