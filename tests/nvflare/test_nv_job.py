"""A real NVFlare job through the target: the model oracle holds, the event contract is
kept, and an abort mid-round leaves no process behind.  Needs nvflare (slow)."""

from __future__ import annotations

import threading
import time
import uuid
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil
import pytest

from pytest_flrelia.contract.events import violations
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.target import Abort, RunContext
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline

# not pytest.importorskip: tests/ is on sys.path, so ``import nvflare`` finds this
# directory (tests/nvflare) as a namespace package where NVFlare is not installed
try:
    metadata.version("nvflare")
except metadata.PackageNotFoundError:
    pytest.skip("needs nvflare: pip install 'pytest-flrelia[nvflare]'", allow_module_level=True)

from pytest_flrelia.targets.nvflare.entry import make_target

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
TAG = "FLRELIA_NVJOB_TEST_TAG"
BOUND = 180.0
"""Upper bound for one job on 2 loaded cores; a plain 2x2 job takes 11-25 s."""


def _job(launch_once: bool = False) -> JobConfig:
    timeouts = Timeouts.fast()
    return JobConfig(sites=2, rounds=2, launch_once=launch_once,
                     tensors=TensorSpec(2, 64 * 1024),
                     timeouts=Timeouts(**{**timeouts.__dict__, "pre_init": 60.0,
                                          "execution": 60.0}))


def _context(tmp_path: Path, timeline: Timeline, abort: Abort, tag: str) -> RunContext:
    workdir = tmp_path / "run"
    workdir.mkdir()
    return RunContext(timeline=timeline, abort=abort, env={TAG: tag}, workdir=workdir,
                      deadline=time.monotonic() + BOUND, variant=None)


def _tagged(tag: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(TAG) == tag and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@pytest.mark.usefixtures("no_leftover_children")
@pytest.mark.parametrize("launch_once", [False, True], ids=["per-round", "launch-once"])
def test_a_real_job_ends_with_the_oracles_model(tmp_path: Path, launch_once: bool) -> None:
    target = make_target()
    timeline = Timeline("server")
    tag = uuid.uuid4().hex
    result = target.run(_job(launch_once), [], _context(tmp_path, timeline, Abort(), tag))
    assert result.ok, result.error
    assert target.info.oracle is not None
    expected = target.info.oracle.expected_model(result)
    assert expected is not None and set(expected) == set(result.global_model)
    for name, array in expected.items():
        assert np.array_equal(array, result.global_model[name]), name
    events = timeline.events()
    assert violations(events) == []
    kinds = {e.kind for e in events}
    assert {EventKind.DOWNLOAD_DONE, EventKind.TENSOR_SERVED, EventKind.GATE_WAIT,
            EventKind.RESULT_RECEIVED, EventKind.LAUNCH} <= kinds
    assert kinds <= target.info.events
    launches = [e for e in events if e.kind is EventKind.LAUNCH]
    assert len(launches) == (2 if launch_once else 4)
    assert _tagged(tag) == []


@pytest.mark.usefixtures("no_leftover_children")
def test_an_abort_mid_round_stops_the_job_and_leaves_nothing(tmp_path: Path) -> None:
    target = make_target()
    timeline = Timeline("server")
    abort = Abort()
    tag = uuid.uuid4().hex
    sent = threading.Event()

    def on_event(event: Event) -> None:
        if event.kind is EventKind.TASK_SENT:
            sent.set()

    timeline.subscribe(on_event)
    box: dict[str, JobResult] = {}
    thread = threading.Thread(
        target=lambda: box.update(result=target.run(
            _job(), [], _context(tmp_path, timeline, abort, tag))),
        daemon=True,
    )
    thread.start()
    assert sent.wait(BOUND), "no task was sent"
    assert _tagged(tag), "the job's processes were not tagged with the run's env"
    aborted = time.monotonic()
    abort.set()
    thread.join(BOUND)
    assert not thread.is_alive()
    assert time.monotonic() - aborted < 15.0
    result = box["result"]
    assert not result.ok
    assert _tagged(tag) == []
