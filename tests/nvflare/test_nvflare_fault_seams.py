"""Each NVFlare fault wrapper acts on the real NVFlare class it wraps, and only in scope.

Real objects: ``ArrayDownloadable``, ``PipeHandler`` over a pair of ``FilePipe``s,
``SubprocessLauncher``, ``CellPipe``'s receive callback, ``NumpyArrayDecomposer``.
Only the executor standing in for ``aux_event``'s target and the run's event plumbing
(a real :class:`Timeline`) are ours.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("nvflare.apis")  # "nvflare" alone would find tests/nvflare

from _nv_fakes import FakeChild, spec
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.decomposers.numpy_decomposers import NumpyArrayDecomposer
from nvflare.app_common.launchers.subprocess_launcher import SubprocessLauncher
from nvflare.app_common.np.np_downloader import ArrayDownloadable
from nvflare.fuel.utils.pipe.cell_pipe import CellPipe
from nvflare.fuel.utils.pipe.file_pipe import FilePipe
from nvflare.fuel.utils.pipe.pipe import Mode
from nvflare.fuel.utils.pipe.pipe_handler import PipeHandler

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.targets.nvflare import parent_faults
from pytest_flrelia.targets.nvflare.child_faults import ChildFaults
from pytest_flrelia.targets.nvflare.parent_faults import ParentFaults, _leave_message
from pytest_flrelia.targets.nvflare.points import ParentContext, SiteParts

WAIT = 10.0
"""Upper bound of every wait on a condition here; normally met in milliseconds."""


@pytest.fixture
def undo() -> Iterator[list[Callable[[], None]]]:
    """Uninstall whatever a test wrapped on the real classes, pass or fail."""
    undos: list[Callable[[], None]] = []
    yield undos
    for each in reversed(undos):
        each()


# -- child side ------------------------------------------------------------------------


def install_child(ctx: FakeChild, undo: list[Callable[[], None]]) -> ChildFaults:
    faults = ChildFaults(ctx)
    undo.append(faults.uninstall)
    faults.install()
    return faults


def test_corrupt_chunk_flips_one_bit_of_a_real_npz_item(undo: list[Callable[[], None]]) -> None:
    arrays = {"T0": np.arange(64, dtype=np.float32), "T1": np.ones(8)}
    clean = ArrayDownloadable(arrays, 1024).produce_item(0)
    ctx = FakeChild([spec("corrupt_chunk", site="site-1", round=1, times=2, chunk="last")])
    install_child(ctx, undo)
    served = ArrayDownloadable(arrays, 1024)
    first, second, third = (served.produce_item(0) for _ in range(3))
    diff = [i for i, (a, b) in enumerate(zip(clean, first, strict=True)) if a != b]
    assert diff == [len(clean) // 2] and first[diff[0]] ^ clean[diff[0]] == 1
    assert second != clean and third == clean  # times: 2
    assert [e["offset"] for e in ctx.fault_events()] == [len(clean) // 2] * 2
    with pytest.raises((zipfile.BadZipFile, ValueError, OSError)):
        dict(np.load(io.BytesIO(first), allow_pickle=False))


@pytest.mark.parametrize("scope", [{"round": 2}, {"chunk": 2}, {"site": "site-2"}])
def test_corrupt_chunk_out_of_scope_serves_clean_bytes(
    undo: list[Callable[[], None]], scope: dict[str, Any]
) -> None:
    arrays = {"T0": np.arange(64, dtype=np.float32)}
    clean = ArrayDownloadable(arrays, 1024).produce_item(0)
    ctx = FakeChild([spec("corrupt_chunk", **scope)])
    install_child(ctx, undo)
    assert ArrayDownloadable(arrays, 1024).produce_item(0) == clean
    assert ctx.fault_events() == []


def _first_heartbeat(passive: Any) -> float:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        msg = passive.receive(timeout=0.05)
        if msg is not None and msg.topic == "_HEARTBEAT_":
            return time.monotonic()
    raise AssertionError(f"no heartbeat within {WAIT}s")


@pytest.mark.parametrize("site", ["site-1", "site-2"])
def test_heartbeat_loss_delays_a_real_pipe_handlers_heartbeat(
    tmp_path: Path, undo: list[Callable[[], None]], site: str
) -> None:
    """In scope the first heartbeat comes ``duration`` after the start; out of scope at once."""
    ctx = FakeChild([spec("heartbeat_loss", site="site-1", duration="1500ms")], site=site)
    install_child(ctx, undo)
    active = FilePipe(Mode.ACTIVE, str(tmp_path / "pipe"), file_check_interval=0.01)
    passive = FilePipe(Mode.PASSIVE, str(tmp_path / "pipe"), file_check_interval=0.01)
    active.open("task")
    passive.open("task")
    handler = PipeHandler(active, heartbeat_interval=0.05, heartbeat_timeout=0)
    started = time.monotonic()
    handler.start()
    try:
        beat = _first_heartbeat(passive)
    finally:
        handler.stop(close_pipe=True)
        passive.close()
    if site == "site-1":
        assert len(ctx.fault_events()) == 1
        assert beat - started >= 1.5
    else:
        assert ctx.fault_events() == []
        assert beat - started < 1.5


# -- parent side -----------------------------------------------------------------------


class Runner(ParentContext):
    """A real :class:`ParentContext` on an in-memory timeline, over the given site parts."""

    def __init__(self, faults: Sequence[FaultSpec], sites: Mapping[str, SiteParts],
                 server_cell: Any = None, server: Any = None) -> None:
        super().__init__(job=JobConfig(), faults=tuple(faults), sites=sites,
                         server_cell=server_cell, timeline=Timeline(process="runner"),
                         server=server)

    def faults_acted(self) -> list[Event]:
        return [e for e in self.timeline.events() if e.kind is EventKind.FAULT]

    def errors(self) -> list[Event]:
        return [e for e in self.timeline.events() if e.kind is EventKind.ERROR]


def parts(site: str, *, executor: Any = None, pipe: Any = None) -> SiteParts:
    return SiteParts(site=site, executor=executor or SimpleNamespace(pipe_handler=None),
                     launcher=SubprocessLauncher(script="python3 train.py", launch_once=False),
                     pipe=pipe, cell=None, engine=None, fl_ctx=FLContext())


def sites(*names: str, **kwargs: Any) -> dict[str, SiteParts]:
    return {name: parts(name, **kwargs) for name in names}


def install_parent(ctx: Runner, undo: list[Callable[[], None]]) -> ParentFaults:
    installed = parent_faults.install(ctx)
    assert installed is not None
    undo.append(installed.uninstall)
    return installed


def in_thread(name: str, fn: Callable[[], Any]) -> BaseException | None:
    raised: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    return raised[0] if raised else None


def test_stop_error_raises_once_in_the_deferred_stop_thread(
    undo: list[Callable[[], None]]
) -> None:
    ctx = Runner([spec("stop_error", site="site-1")], sites("site-1", "site-2"))
    install_parent(ctx, undo)
    ctx.timeline.record(EventKind.TASK_SENT, site="site-1", round=1)
    site1 = ctx.sites["site-1"].launcher
    assert in_thread("ClientAPILauncherExecutor_0",
                     lambda: site1.stop_task("train", FLContext(), None)) is None
    assert ctx.faults_acted() == []
    site2 = ctx.sites["site-2"].launcher
    assert in_thread("deferred-stop-train",
                     lambda: site2.stop_task("train", FLContext(), None)) is None
    assert ctx.faults_acted() == []
    raised = in_thread("deferred-stop-train", lambda: site1.stop_task("train", FLContext(), None))
    assert isinstance(raised, RuntimeError)
    assert [(e.site, e.round) for e in ctx.faults_acted()] == [("site-1", 1)]
    assert in_thread("deferred-stop-train",
                     lambda: site1.stop_task("train", FLContext(), None)) is None  # once


def test_slow_stop_lingers_after_the_exit_only_in_the_deferred_thread(
    undo: list[Callable[[], None]]
) -> None:
    ctx = Runner([spec("slow_stop", round=2, delay="300ms")], sites("site-1"))
    install_parent(ctx, undo)
    site1 = ctx.sites["site-1"].launcher
    ctx.timeline.record(EventKind.TASK_SENT, site="site-1", round=1)
    started = time.monotonic()
    assert in_thread("deferred-stop-train", lambda: site1.stop_task("train", FLContext(), None)) \
        is None
    assert ctx.faults_acted() == [] and time.monotonic() - started < 0.3  # round 1: out of scope
    ctx.timeline.record(EventKind.TASK_SENT, site="site-1", round=2)
    started = time.monotonic()
    assert in_thread("deferred-stop-train", lambda: site1.stop_task("train", FLContext(), None)) \
        is None
    assert time.monotonic() - started >= 0.3
    assert [e.round for e in ctx.faults_acted()] == [2]


def test_stale_peer_gone_reaches_the_retired_handler(undo: list[Callable[[], None]],
                                                     tmp_path: Path) -> None:
    pipe = FilePipe(Mode.PASSIVE, str(tmp_path / "pipe"))
    pipe.open("task")
    statuses: list[tuple[str, int]] = []

    class Executor:
        pipe_handler: Any = None

    executor = Executor()
    ctx = Runner([spec("stale_peer_gone", site="site-1", round=3)],
                 sites("site-1", executor=executor))
    install_parent(ctx, undo)
    for round in (1, 2, 3):
        handler = PipeHandler(pipe)
        handler.set_status_cb(lambda msg, r=round: statuses.append((msg.topic, r)))
        executor.pipe_handler = handler
        ctx.timeline.record(EventKind.TASK_SENT, site="site-1", round=round)
        if round < 3:
            assert statuses == [] and ctx.faults_acted() == []
    assert statuses == [("_PEER_GONE_", 2)]
    (event,) = ctx.faults_acted()
    assert event.round == 3 and event.detail["current"] is False
    assert event.detail["affects_round"] == 3 and event.detail["description"]


def test_stale_peer_gone_without_the_old_handler_says_so(undo: list[Callable[[], None]]) -> None:
    class Executor:
        pipe_handler = None

    ctx = Runner([spec("stale_peer_gone", round=2, from_round=1)],
                 sites("site-1", executor=Executor()))
    install_parent(ctx, undo)
    ctx.timeline.record(EventKind.TASK_SENT, site="site-1", round=2)
    assert ctx.faults_acted() == []
    (error,) = ctx.errors()
    assert "no pipe handler of round 1" in str(error.detail["reason"])


@pytest.mark.parametrize(
    "at,kind", [("during_execute", EventKind.TASK_SENT), ("init", EventKind.INIT_SEEN),
                ("launch", EventKind.PIPE_CLEARED)]
)
def test_aux_event_hands_the_executor_the_event_from_another_thread(
    undo: list[Callable[[], None]], at: str, kind: EventKind
) -> None:
    calls: list[tuple[str, str]] = []

    class Executor:
        pipe_handler = None

        def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
            calls.append((event_type, threading.current_thread().name))

    ctx = Runner([spec("aux_event", site="site-2", round=2, at=at)],
                 {s: parts(s, executor=Executor()) for s in ("site-1", "site-2")})
    install_parent(ctx, undo)
    for site, round in (("site-1", 2), ("site-2", 1)):
        ctx.timeline.record(kind, site=site, round=round)
    assert calls == [] and ctx.faults_acted() == []
    ctx.timeline.record(kind, site="site-2", round=2)
    ctx.timeline.record(kind, site="site-2", round=2)  # once per site and round
    assert calls == [(EventType.BEFORE_TASK_EXECUTION, "aux-event-site-2")]
    assert [(e.site, e.round, e.detail["affects_round"]) for e in ctx.faults_acted()] == [
        ("site-2", 2, 2)
    ]


def test_stale_pipe_message_leaves_an_end_in_a_real_file_pipe(
    undo: list[Callable[[], None]], tmp_path: Path
) -> None:
    pipe = FilePipe(Mode.PASSIVE, str(tmp_path / "pipe"))
    pipe.open("task")
    ctx = Runner([spec("stale_pipe_message", round=3)], sites("site-1", pipe=pipe))
    install_parent(ctx, undo)
    ctx.timeline.record(EventKind.REAPED, site="site-1", round=1)
    assert pipe.receive() is None and ctx.faults_acted() == []
    ctx.timeline.record(EventKind.REAPED, site="site-1", round=2)
    ctx.timeline.record(EventKind.DEFERRED_STOP_DONE, site="site-1", round=2)
    (event,) = ctx.faults_acted()
    assert event.detail["affects_round"] == 3
    late = pipe.receive()
    assert late is not None and late.topic == "_END_"
    assert pipe.receive() is None  # once


def test_a_late_message_goes_through_a_real_cell_pipes_receive_callback() -> None:
    pipe = CellPipe("PASSIVE", "site-1", "tok", "tcp://127.0.0.1:1", secure_mode=False)
    try:
        assert _leave_message(pipe, "_PEER_GONE_", "late")
        late = pipe.receive()
        assert late is not None and late.topic == "_PEER_GONE_" and late.data == "late"
    finally:
        pipe.close()


def test_delayed_download_waits_only_for_the_servers_pull(
    undo: list[Callable[[], None]]
) -> None:
    class Cell:
        def __init__(self, fqcn: str) -> None:
            self.fqcn = fqcn

        def get_fqcn(self) -> str:
            return self.fqcn

    pulled: list[tuple[str, float]] = []
    real = NumpyArrayDecomposer.download

    def recorded(self: Any, from_fqcn: str, ref_id: str, timeout: float, cell: Any,
                 *args: Any, **kwargs: Any) -> Any:
        pulled.append((cell.get_fqcn(), time.monotonic()))
        return ("ok", {})

    NumpyArrayDecomposer.download = recorded
    undo.append(lambda: setattr(NumpyArrayDecomposer, "download", real))
    server, cj = Cell("server"), Cell("site-1_cj")
    ctx = Runner([spec("delayed_download", site="site-1", round=2, delay="300ms")],
                 sites("site-1", "site-11"), server_cell=server)
    install_parent(ctx, undo)
    decomposer = NumpyArrayDecomposer()
    for round in (1, 2):
        for site in ("site-1", "site-11"):
            ctx.timeline.record(EventKind.TASK_SENT, site=site, round=round)
    started = time.monotonic()
    decomposer.download("site-11_tok_active", "r", 1.0, server)
    decomposer.download("site-1_tok_active", "r", 1.0, cj)
    assert ctx.faults_acted() == [] and time.monotonic() - started < 0.3
    decomposer.download("site-1_tok_active", "r", 1.0, server)
    assert pulled[-1][1] - started >= 0.3
    (event,) = ctx.faults_acted()
    assert (event.site, event.round) == ("site-1", 2)
    decomposer.download("site-1_tok_active", "r2", 1.0, server)  # the site's first pull only
    assert len(ctx.faults_acted()) == 1


@pytest.mark.parametrize("round", [1, 2])
def test_slow_aggregation_waits_before_the_servers_average(
    undo: list[Callable[[], None]], round: int
) -> None:
    averaged: list[tuple[int, float]] = []

    class Server:
        def aggregate(self, round: int, *args: Any) -> str:
            averaged.append((round, time.monotonic()))
            return "model"

    server = Server()
    ctx = Runner([spec("slow_aggregation", round=2, delay="300ms")], sites("site-1"),
                 server=server)
    install_parent(ctx, undo)
    started = time.monotonic()
    assert server.aggregate(round, {}, {}, None) == "model"
    if round == 2:
        assert averaged[0][1] - started >= 0.3
        assert [(e.site, e.round) for e in ctx.faults_acted()] == [(None, 2)]
    else:
        assert averaged[0][1] - started < 0.3 and ctx.faults_acted() == []


def test_parent_install_is_once_per_context(undo: list[Callable[[], None]]) -> None:
    """The runner calls ``install``; a second call must not wrap every seam twice."""
    ctx = Runner([spec("stop_error", site="site-1")], sites("site-1"))
    first = install_parent(ctx, undo)
    assert parent_faults.install(ctx) is first
