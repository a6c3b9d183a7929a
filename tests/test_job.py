"""End-to-end jobs on real training subprocesses (SPEC §1-§2)."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from _processes import assert_no_process_left

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.events import is_training
from pytest_flrelia.contract.failpoints import FAILPOINTS_ENV
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.timeline import EventKind, Timeline
from pytest_flrelia.targets.reference.oracle import expected_global_model
from reference_impl.job import run_job

pytestmark = pytest.mark.slow

FAST = Timeouts.fast()



@pytest.mark.parametrize("launch_once", [False, True], ids=["per-round", "launch-once"])
def test_three_sites_three_rounds_average_exactly(launch_once: bool) -> None:
    config = JobConfig(
        sites=3,
        rounds=3,
        launch_once=launch_once,
        tensors=TensorSpec(count=3, size_bytes=48 * 1024),
        timeouts=FAST,
        chunk_bytes=16 * 1024,
    )
    result = run_job(config)
    assert result.ok, result.error
    assert [r.round for r in result.rounds if r.ok] == [1, 2, 3]
    expected = expected_global_model(config)
    for name, array in expected.items():
        np.testing.assert_allclose(result.global_model[name], array, rtol=1e-12)
    launches = len(result.launched_pids)
    assert launches == (3 if launch_once else 9)
    assert_no_process_left(result)


def test_late_server_pull_still_downloads_every_tensor() -> None:
    """The download starts after the old synchronous stop would have killed the process."""
    config = JobConfig(
        sites=1,
        rounds=2,
        tensors=TensorSpec(count=2, size_bytes=8192),
        timeouts=replace(FAST, stop_grace=0.2),
    )
    with failpoints.scoped("downloader.before_download[site=site-1]=1*sleep(1500)"):
        result = run_job(config)
    assert result.ok, result.error
    start = result.timeline.events(EventKind.DOWNLOAD_START, round=1)[0]
    result_sent = result.timeline.events(EventKind.RESULT_RECEIVED, round=1)[0]
    assert start.ts - result_sent.ts >= 1.5
    for name, array in expected_global_model(config).items():
        np.testing.assert_allclose(result.global_model[name], array)
    assert_no_process_left(result)


def test_result_without_tensors_does_not_wait_for_a_download() -> None:
    config = JobConfig(
        sites=2,
        rounds=2,
        validate_rounds=(2,),
        tensors=TensorSpec(count=1, size_bytes=1024),
        timeouts=replace(FAST, download_complete=30.0, stop_wait=30.0),
    )
    result = run_job(config)
    assert result.ok, result.error
    assert result.rounds[1].kind == "validate" and result.rounds[1].seconds < 10.0
    assert not result.timeline.events(EventKind.GATE_WAIT, round=2)
    assert_no_process_left(result)


def test_previous_round_stop_finishes_before_the_next_launch() -> None:
    config = JobConfig(
        sites=2, rounds=3, tensors=TensorSpec(count=1, size_bytes=4096), timeouts=FAST
    )
    result = run_job(config)
    assert result.ok, result.error
    for site in config.site_names():
        done = result.timeline.events(EventKind.DEFERRED_STOP_DONE, site=site)
        launches = result.timeline.events(EventKind.LAUNCH, site=site)
        assert len(launches) == 3 and len(done) >= 2
        for round in (2, 3):
            launch = next(
                e for e in launches if e.detail.get("task", "").endswith(f"round-{round}")
            )
            previous = next(e for e in done if e.round == round - 1)
            assert previous.ts < launch.ts


def test_deferred_stop_sees_the_exit_at_once_not_at_its_next_poll() -> None:
    """The deferred stop waits on the process: with a poll far longer than the job, each
    round's boundary still opens as soon as the process has exited."""
    stop_poll = 60.0
    config = JobConfig(
        sites=1,
        rounds=3,
        tensors=TensorSpec(count=1, size_bytes=4096),
        timeouts=replace(FAST, stop_poll=stop_poll),
    )
    result = run_job(config)
    assert result.ok, result.error
    seen = result.timeline.events(EventKind.EXIT_SEEN)
    assert [e.round for e in seen] == [1, 2, 3]
    for event in seen:
        exited = [
            e for e in result.timeline.events(EventKind.EXIT, round=event.round) if is_training(e)
        ]
        assert exited and event.ts - exited[0].ts < stop_poll / 10, "seen at a poll"
    assert result.seconds < stop_poll
    assert_no_process_left(result)


def test_abort_at_the_round_boundary_launches_nothing_more() -> None:
    """A job aborted while round 2 waits for round 1's deferred stop ends there: the
    lingering process is stopped and no round-2 process is started only to be killed."""
    config = JobConfig(
        sites=1,
        rounds=2,
        tensors=TensorSpec(count=1, size_bytes=4096),
        timeouts=replace(FAST, stop_wait=30.0, stop_grace=0.2),
    )
    timeline = Timeline("server")
    abort = threading.Event()
    unsubscribe = timeline.subscribe(
        lambda event: abort.set() if event.kind is EventKind.ROUND_BOUNDARY_WAIT else None
    )
    try:
        result = run_job(
            config,
            timeline=timeline,
            abort=abort,
            subprocess_env={FAILPOINTS_ENV: "agent.before_exit[round=1]=hang"},
        )
    finally:
        unsubscribe()

    assert abort.is_set() and not result.ok
    # The abort came at round 2's boundary (finalize may wait at it once more, as the
    # deferred stop notices the abort only at its next stop_poll).
    assert {e.round for e in result.timeline.events(EventKind.ROUND_BOUNDARY_WAIT)} == {2}
    assert len(result.launched_pids) == 1, "round 2 launched after the abort"
    assert_no_process_left(result)


def test_timeline_has_every_event_kind_of_a_round() -> None:
    config = JobConfig(
        sites=1, rounds=2, tensors=TensorSpec(count=2, size_bytes=4096), timeouts=FAST
    )
    result = run_job(config)
    assert result.ok, result.error
    expected = {
        EventKind.LAUNCH,
        EventKind.INIT,
        EventKind.TASK_SENT,
        EventKind.TASK_RECEIVED,
        EventKind.RESULT_SENT,
        EventKind.RESULT_RECEIVED,
        EventKind.SUBMIT,
        EventKind.DOWNLOAD_START,
        EventKind.DOWNLOAD_CHUNK,
        EventKind.DOWNLOAD_DONE,
        EventKind.GATE_WAIT,
        EventKind.GATE_OPEN,
        EventKind.STOP_REQUESTED,
        EventKind.EXIT,
        EventKind.REAPED,
        EventKind.HANDLER_CREATED,
        EventKind.HANDLER_STOPPED,
        EventKind.DEFERRED_STOP_START,
        EventKind.DEFERRED_STOP_DONE,
        EventKind.AGGREGATED,
        EventKind.PIPE_CLEARED,
    }
    assert expected <= result.timeline.kinds(), expected - result.timeline.kinds()
    processes = {e.process for e in result.timeline.events()}
    assert any(p.startswith("train-") for p in processes), processes
    assert "server" in processes and "client-site-1" in processes
