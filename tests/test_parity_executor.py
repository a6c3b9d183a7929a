"""Round-boundary behaviours NVFlare 2.7.2's ``client_api_launcher_executor_test.py``
asserts with fakes (``_deferred_stop_event``, launch_once, swarm), checked here on whole
jobs with real training subprocesses."""

from __future__ import annotations

import pytest
from _processes import assert_no_process_left

from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.timeline import Event, EventKind
from reference_impl.executor import LauncherExecutor
from reference_impl.job import Runtime, run_job

pytestmark = pytest.mark.slow

FAST = Timeouts.fast()
SMALL = TensorSpec(count=1, size_bytes=4096)



def launch_round(event: Event) -> int:
    """The round a LAUNCH event started a process for (task ``KIND-round-N``)."""
    return int(str(event.detail["task"]).rsplit("-", 1)[-1])


def test_the_first_round_does_not_wait_at_a_round_boundary() -> None:
    """NVFlare ``test_deferred_stop_event_starts_set``: nothing to wait for before round 1."""
    config = JobConfig(sites=2, rounds=2, tensors=SMALL, timeouts=FAST)
    result = run_job(config)
    assert result.ok, result.error
    assert result.timeline.events(EventKind.ROUND_BOUNDARY_WAIT, round=1) == []
    # Round 1 did defer its stops: there was a boundary for round 2 to respect.
    assert {e.site for e in result.timeline.events(EventKind.DEFERRED_STOP_START, round=1)} == {
        "site-1",
        "site-2",
    }
    assert_no_process_left(result)


def test_launch_once_rounds_of_every_kind_never_wait_and_share_one_process() -> None:
    """NVFlare launch_once and swarm tests: no deferred stop, no boundary wait, for a
    train -> validate -> train sequence; the one process is stopped only at the end."""
    config = JobConfig(
        sites=2, rounds=3, launch_once=True, validate_rounds=(2,), tensors=SMALL, timeouts=FAST
    )
    result = run_job(config)
    assert result.ok, result.error
    assert [r.kind for r in result.rounds] == ["train", "validate", "train"]
    timeline = result.timeline
    assert timeline.events(EventKind.DEFERRED_STOP_START) == []
    assert timeline.events(EventKind.ROUND_BOUNDARY_WAIT) == []
    for site in config.site_names():
        launches = timeline.events(EventKind.LAUNCH, site=site)
        assert len(launches) == 1, launches
        received = [
            e for e in timeline.events(EventKind.TASK_RECEIVED, site=site)
            if e.process.startswith("train-")
        ]
        assert [e.round for e in received] == [1, 2, 3]
        assert {e.pid for e in received} == {launches[0].detail["pid"]}
        last_submit = timeline.events(EventKind.SUBMIT, site=site, round=3)[0]
        stops = [
            e for e in timeline.events(EventKind.STOP_REQUESTED)
            if e.detail.get("pid") == launches[0].detail["pid"]
        ]
        assert stops and all(e.ts > last_submit.ts for e in stops), "stopped before the end"
    assert_no_process_left(result)


def test_the_plain_launcher_executor_stops_each_process_before_it_returns() -> None:
    """NVFlare ``test_stop_task_wait_timeout_default_zero``: the base executor has no
    deferred stop; each round's process is stopped before the round's result is submitted."""
    config = JobConfig(
        sites=1, rounds=2, validate_rounds=(1, 2), tensors=SMALL, timeouts=FAST
    )
    result = run_job(config, runtime=Runtime(executor_class=LauncherExecutor))
    assert result.ok, result.error
    timeline = result.timeline
    assert timeline.events(EventKind.DEFERRED_STOP_START) == []
    launches = timeline.events(EventKind.LAUNCH, site="site-1")
    assert [launch_round(e) for e in launches] == [1, 2]
    for launch in launches:
        round = launch_round(launch)
        stop = next(
            e for e in timeline.events(EventKind.STOP_REQUESTED)
            if e.detail.get("pid") == launch.detail["pid"]
        )
        submit = timeline.events(EventKind.SUBMIT, site="site-1", round=round)[0]
        assert stop.ts < submit.ts, f"round {round} was submitted before its process was stopped"
    assert_no_process_left(result)
