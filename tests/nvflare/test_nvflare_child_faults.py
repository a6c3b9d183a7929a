"""The child-side NVFlare faults act through their seams, and only in scope.

The striking faults (signal, crash) run in a real child process; the seams of NVFlare
(``PipeHandler._heartbeat``, ``ArrayDownloadable.produce_item``, ``os._exit``) are the
real classes, so those tests need nvflare installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _nv_fakes import FakeChild, spec

from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.targets.nvflare import child_faults
from pytest_flrelia.targets.nvflare.child_faults import ChildFaults
from pytest_flrelia.targets.nvflare.tail import Tailer

WAIT = 10.0
"""Upper bound of every wait on a condition here; normally met in milliseconds."""


def needs_nvflare() -> None:
    """Skip without nvflare: ``importorskip("nvflare")`` would find ``tests/nvflare``
    itself (a namespace package on the rootdir path), so ask for a real subpackage."""
    pytest.importorskip("nvflare.apis")


class Calls:
    def __init__(self) -> None:
        self.kills: list[tuple[int, int]] = []
        self.exits: list[int] = []

    def kill(self, pid: int, sig: int) -> None:
        self.kills.append((pid, sig))

    def exit(self, code: int) -> Any:
        self.exits.append(code)


def faults_for(ctx: FakeChild, calls: Calls) -> ChildFaults:
    return ChildFaults(ctx, kill=calls.kill, exit_fn=calls.exit, block=lambda: None)


# -- the at: points (no nvflare needed) --------------------------------------------------


def test_early_sigterm_signals_the_process_at_its_point_only() -> None:
    ctx = FakeChild([spec("early_sigterm", site="site-1", round=2, at="after_result_sent")],
                    round=2)
    calls = Calls()
    faults = faults_for(ctx, calls)
    faults.strike("after_task_received")
    assert calls.kills == [] and ctx.records == []
    faults.strike("after_result_sent")
    assert calls.kills == [(os.getpid(), signal.SIGTERM)]
    (event,) = ctx.fault_events()
    assert event["fault"] == "early_sigterm" and event["fault_id"] == 0
    faults.strike("after_result_sent")  # once per round
    assert len(calls.kills) == 1


@pytest.mark.parametrize("site,round", [("site-2", 2), ("site-1", 1)])
def test_early_sigterm_does_not_act_out_of_scope(site: str, round: int) -> None:
    ctx = FakeChild([spec("early_sigterm", site="site-1", round=2, at="after_result_sent")],
                    site=site, round=round)
    calls = Calls()
    faults_for(ctx, calls).strike("after_result_sent")
    assert calls.kills == [] and ctx.records == []


def test_crash_exits_with_its_code_at_its_point() -> None:
    ctx = FakeChild([spec("crash", at="after_task_received", code=3)])
    calls = Calls()
    faults = faults_for(ctx, calls)
    faults.strike("before_init")
    assert calls.exits == []
    faults.strike("after_task_received")
    assert calls.exits == [3]
    assert [e["did"] for e in ctx.fault_events()] == ["exit(3)"]


def test_slow_start_sleeps_before_init_of_its_round_only() -> None:
    ctx = FakeChild([spec("slow_start", round=2, delay="200ms")], round=2)
    faults = faults_for(ctx, Calls())
    started = time.monotonic()
    faults.strike("before_init")
    assert time.monotonic() - started >= 0.2
    assert len(ctx.fault_events()) == 1
    other = FakeChild([spec("slow_start", round=2, delay="5s")], round=1)
    started = time.monotonic()
    faults_for(other, Calls()).strike("before_init")
    assert time.monotonic() - started < 1.0 and other.records == []


def test_broken_pipe_closes_the_agents_pipe_and_blocks() -> None:
    class Pipe:
        closed = False

        def close(self) -> None:
            self.closed = True

    class Agent:
        pipe = Pipe()

    ctx = FakeChild([spec("broken_pipe", at="after_task_received")])
    blocked: list[bool] = []
    faults = ChildFaults(ctx, block=lambda: blocked.append(True))
    faults._agent = Agent()
    faults.strike("after_result_sent")
    assert not Agent.pipe.closed and blocked == []
    faults.strike("after_task_received")
    assert Agent.pipe.closed and blocked == [True]
    assert len(ctx.fault_events()) == 1


def test_broken_pipe_without_an_agent_records_nothing() -> None:
    ctx = FakeChild([spec("broken_pipe", at="after_task_received")])
    faults = ChildFaults(ctx, block=lambda: None)
    faults.strike("after_task_received")
    assert ctx.fault_events() == []


# -- real child processes ------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from pytest_flrelia.contract.faults import FaultSpec
    from pytest_flrelia.contract.timeline import Timeline
    from pytest_flrelia.scenario.catalog import validate_params
    from pytest_flrelia.targets.nvflare.child_faults import ChildFaults
    from pytest_flrelia.targets.nvflare.points import ChildContext

    specs = tuple(
        FaultSpec(f["fault"], f.get("site"), f.get("round"),
                  validate_params(f["fault"], f["params"], "x"), 1, index=i)
        for i, f in enumerate(json.loads(sys.argv[3]))
    )
    ctx = ChildContext("site-1", int(sys.argv[2]), specs,
                       Timeline("train-site-1", Path(sys.argv[1])))
    faults = ChildFaults(ctx)
    faults.install()
    print("ready", flush=True)
    action = sys.argv[4]
    if action == "exit":
        os._exit(0)
    if action == "strike":
        faults.strike(sys.argv[5])
        print("survived", flush=True)
        os._exit(0)
    if action == "wait":
        sys.stdin.readline()
        os._exit(0)
    # "return": the script ends and the interpreter exits normally
    """
)


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    script = tmp_path / "child.py"
    script.write_text(_CHILD, encoding="utf-8")
    return script


def start_child(script: Path, events: Path, round: int, faults: list[dict[str, object]],
                *action: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(script), str(events), str(round), json.dumps(faults), *action],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def events_of(path: Path) -> list[dict[str, Any]]:
    """The detail of every event the child wrote (all are ``fault`` events here)."""
    if not path.exists():
        return []
    events = [Event.from_json(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(e.kind is EventKind.FAULT for e in events)
    return [dict(e.detail) for e in events]


def wait_for_event(path: Path, fault: str) -> dict[str, Any]:
    """The detail of the first ``fault`` event the child writes to ``path``, followed
    live with the target's own :class:`Tailer`, as the harness follows a run."""
    timeline = Timeline()
    seen: list[Event] = []
    arrived = threading.Event()

    def on_event(event: Event) -> None:
        if event.kind is EventKind.FAULT and event.detail.get("fault") == fault:
            seen.append(event)
            arrived.set()

    timeline.subscribe(on_event)
    tailer = Tailer(path.parent, timeline).start()
    try:
        if not arrived.wait(WAIT):
            raise AssertionError(f"no {fault} event within {WAIT}s")
    finally:
        tailer.stop()
    return dict(seen[0].detail)


@pytest.mark.usefixtures("no_leftover_children")
def test_crash_ends_a_real_process_with_its_code(child_script: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = start_child(child_script, events, 1,
                       [{"fault": "crash", "params": {"at": "mid_download", "code": 7}}],
                       "strike", "mid_download")
    assert proc.wait(WAIT) == 7
    assert [e["fault"] for e in events_of(events)] == ["crash"]


@pytest.mark.usefixtures("no_leftover_children")
def test_early_sigkill_kills_a_real_process(child_script: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = start_child(
        child_script, events, 1,
        [{"fault": "early_sigterm", "params": {"at": "before_init", "signal": "SIGKILL"}}],
        "strike", "before_init",
    )
    assert proc.wait(WAIT) == -signal.SIGKILL
    assert [e["fault"] for e in events_of(events)] == ["early_sigterm"]


@pytest.mark.usefixtures("no_leftover_children")
def test_ignore_sigterm_keeps_a_real_process_alive(child_script: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = start_child(child_script, events, 1,
                       [{"fault": "ignore_sigterm", "params": {}}], "wait")
    try:
        proc.send_signal(signal.SIGTERM)
        wait_for_event(events, "ignore_sigterm")
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(WAIT)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.usefixtures("no_leftover_children")
def test_ignore_sigterm_out_of_scope_leaves_sigterm_alone(
    child_script: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    proc = start_child(child_script, events, 1,
                       [{"fault": "ignore_sigterm", "round": 2, "params": {}}], "wait")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == -signal.SIGTERM
    assert events_of(events) == []


@pytest.mark.usefixtures("no_leftover_children")
def test_orphan_child_holds_the_stdout_of_a_real_process(
    child_script: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    proc = start_child(child_script, events, 1, [{"fault": "orphan_child", "params": {}}],
                       "exit")
    assert proc.wait(WAIT) == 0
    (event,) = events_of(events)
    orphan = int(event["child_pid"])
    try:
        os.kill(orphan, 0)  # it outlived its parent
        assert proc.stdout is not None
        ready = threading.Event()

        def read_to_eof() -> None:
            assert proc.stdout is not None
            proc.stdout.read()
            ready.set()

        reader = threading.Thread(target=read_to_eof, daemon=True)
        reader.start()
        assert not ready.wait(0.2), "stdout closed although the orphan holds it"
    finally:
        os.kill(orphan, signal.SIGKILL)
    assert ready.wait(WAIT), "stdout stayed open after the orphan died"


@pytest.mark.usefixtures("no_leftover_children")
def test_stuck_exit_keeps_the_process_alive(child_script: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = start_child(child_script, events, 1, [{"fault": "stuck_exit", "params": {}}], "exit")
    try:
        event = wait_for_event(events, "stuck_exit")
        assert event["did"] == "hangs in os._exit(0)"
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(WAIT)


@pytest.mark.usefixtures("no_leftover_children")
def test_a_refused_stuck_exit_thread_that_reaches_the_child_does_not_act(
    child_script: Path, tmp_path: Path
) -> None:
    """The target refuses ``mode: thread`` (no thread holds ``os._exit``); if one got here
    anyway, the process exits and no ``fault`` event claims an act."""
    events = tmp_path / "events.jsonl"
    for action in ("exit", "return"):
        proc = start_child(child_script, events, 1,
                           [{"fault": "stuck_exit", "params": {"mode": "thread"}}], action)
        assert proc.wait(WAIT) == 0
    assert events_of(events) == []


@pytest.mark.usefixtures("no_leftover_children")
def test_orphan_child_of_another_round_starts_nothing(child_script: Path, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    proc = start_child(child_script, events, 1,
                       [{"fault": "orphan_child", "round": 2, "params": {}}], "exit")
    assert proc.wait(WAIT) == 0
    assert events_of(events) == []


@pytest.mark.usefixtures("no_leftover_children")
def test_stuck_exit_of_another_round_lets_the_process_exit(
    child_script: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    proc = start_child(child_script, events, 1,
                       [{"fault": "stuck_exit", "round": 2, "params": {}}], "exit")
    assert proc.wait(WAIT) == 0
    assert events_of(events) == []


def test_install_is_once_per_context() -> None:
    """The boot calls ``install``; a second call must not wrap every seam twice."""
    ctx = FakeChild([spec("slow_start", delay="10ms")])
    first = child_faults.install(ctx)
    assert first is not None and child_faults.install(ctx) is first
    first.strike("before_init")
    assert [e["fault"] for e in ctx.fault_events()] == ["slow_start"]


def test_install_without_child_faults_installs_nothing() -> None:
    assert child_faults.install(FakeChild([spec("slow_aggregation", delay="1s")])) is None
