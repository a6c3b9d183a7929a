"""How a job's timeouts map onto NVFlare's settings (no nvflare needed): the execution
timeout keeps the job's margin over the raised heartbeat timeout, and the launcher of
a launch-once job waits the job's stop wait for a natural exit at the end of the job."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pytest_flrelia.contract.job import JobConfig, Timeouts
from pytest_flrelia.targets.nvflare import wiring
from pytest_flrelia.targets.nvflare.job import (
    download_complete_timeout,
    execution_timeout,
    heartbeat_timeout,
    shutdown_timeout,
)


def _job(launch_once: bool = False, **timeouts: Any) -> JobConfig:
    return JobConfig(launch_once=launch_once,
                     timeouts=dataclasses.replace(Timeouts.fast(), **timeouts))


@pytest.mark.parametrize("execution", [15.0, 20.0, 3.0])
def test_a_raised_heartbeat_moves_the_execution_timeout_up_by_as_much(execution: float) -> None:
    job = _job(execution=execution)  # heartbeat 2 s: raised to the floor
    assert heartbeat_timeout(job) == wiring.HEARTBEAT_MIN_TIMEOUT
    mapped = execution_timeout(job)
    assert mapped - heartbeat_timeout(job) == pytest.approx(execution - job.timeouts.heartbeat)
    assert mapped > heartbeat_timeout(job)  # the heartbeat still notices a silent peer first


def test_the_broken_pipe_scenario_gets_a_task_timeout_past_nvflares_peer_gone() -> None:
    """``broken-pipe-reported-promptly`` (execution 20 s): NVFlare reports the silent
    peer one heartbeat timeout after its last message, plus its 0.1 s read interval."""
    mapped = execution_timeout(_job(execution=20.0))
    assert mapped == pytest.approx(48.0)
    assert mapped > wiring.HEARTBEAT_MIN_TIMEOUT + wiring.HEARTBEAT_FLOOR


def test_a_heartbeat_the_target_does_not_raise_leaves_the_execution_timeout_alone() -> None:
    job = _job(heartbeat=40.0, execution=60.0)
    assert heartbeat_timeout(job) == 40.0
    assert execution_timeout(job) == 60.0


def test_a_job_whose_task_timeout_comes_first_keeps_it() -> None:
    """No order to keep: the job itself lets the task timeout fire before its heartbeat."""
    assert execution_timeout(_job(heartbeat=2.0, execution=1.5)) == 1.5


@pytest.mark.parametrize(
    ("stop_wait", "download_complete", "expected"),
    [(1.0, 5.0, 1.0), (None, 5.0, 5.0), (None, 1.5, 1.5)],
)
def test_a_launch_once_process_gets_the_jobs_stop_wait_at_the_end_of_the_job(
    stop_wait: float | None, download_complete: float, expected: float
) -> None:
    job = _job(launch_once=True, stop_wait=stop_wait, download_complete=download_complete)
    assert shutdown_timeout(job, gated=False) == expected == job.timeouts.deferred_stop_wait


@pytest.mark.parametrize("stop_wait", [1.0, None])
def test_a_gated_launch_once_stop_waits_as_long_as_the_raised_gate(
    stop_wait: float | None,
) -> None:
    """The last round's gate waits the raised ``download_complete_timeout``: a stop wait
    raised less would terminate the process in its gate (``stuck-exit-forced-stop``
    with ``launch_once`` failed ``faults_delivered`` on 2.7.2rc13 that way)."""
    job = _job(launch_once=True, stop_wait=stop_wait)
    raised = shutdown_timeout(job, gated=True) - shutdown_timeout(job, gated=False)
    assert raised == download_complete_timeout(job) - job.timeouts.download_complete


def test_a_process_per_round_is_stopped_without_nvflares_wait() -> None:
    """2.7.1's and 2.7.2rc13's synchronous stop must not gain a wait it does not have
    (it would hide rc13's premature stop); 2.7.2's deferred stop waits on its own."""
    for gated in (False, True):
        assert shutdown_timeout(_job(launch_once=False, stop_wait=1.0), gated=gated) == 0.0


@pytest.mark.parametrize("download_complete", [5.0, 1.0, 1800.0])
def test_the_gate_wait_gets_one_download_monitor_period_more(download_complete: float) -> None:
    """NVFlare's gate opens only at a look of its 5 s download monitor: a wait of the
    job's 5 s raced the first look, so a quick pull still timed the gate out."""
    job = _job(download_complete=download_complete)
    assert download_complete_timeout(job) == download_complete + wiring.DOWNLOAD_MONITOR_PERIOD
    assert download_complete_timeout(_job()) > wiring.DOWNLOAD_MONITOR_PERIOD * 1.5
