"""The observation inside a training process NVFlare's ``SubprocessLauncher`` started.

``train.py`` calls :func:`install` first.  It wraps, never edits, NVFlare's client-side
classes, and writes each event of the contract to this process's file in the runner's
events dir (the harness tails it while the run is live):

* ``FlareAgent.start`` -> ``init`` (``before_init`` strikes before it);
* ``FlareAgent.get_task`` -> ``task_received`` (then ``after_task_received``);
* the child's ``PipeHandler.send_to_peer`` of a REPLY -> ``result_sent`` with the arrays
  published during that send (then ``after_result_sent``);
* ``ArrayDownloadable.__init__`` -> ``tensor_served`` per array (sha256 of its bytes);
  its first ``produce_item`` -> ``mid_download``;
* the ``nvflare.client`` log lines of the download gate -> ``gate_wait`` / ``gate_open``
  (then ``after_download``) / ``gate_timeout`` / ``gate_closed``;
* ``os._exit`` and interpreter exit -> ``exit``; an unhandled thread exception -> ``error``.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from pytest_flrelia.contract.events import training_lane
from pytest_flrelia.contract.timeline import EventKind, Timeline
from pytest_flrelia.targets.nvflare import codec, nv, points, wiring

log = logging.getLogger(__name__)

THREAD_CRASH = "thread_crash"
"""The ``error`` detail of an unhandled thread exception (the judge's ``no_thread_crash``)."""
GATE_WAIT_LINE = "[subprocess] result ACK'd by CJ in"
GATE_WAIT_MARK = "waiting up to"
GATE_OPEN_LINE = "[subprocess] server download complete"
GATE_CLOSED_LINE = "[subprocess] download transaction ended with status="
GATE_TIMEOUT_LINE = "[subprocess] download not signalled within"
CLIENT_LOGGER = "nvflare.client"


def install(site: str) -> points.ChildContext:
    """Install the observation for ``site``'s training process, then the fault code's
    boot registrations; returns the process's context."""
    _, faults, options = codec.read_run(Path(os.environ[wiring.RUN_ENV]))
    events_dir = Path(str(options["events_dir"]))
    timeline = Timeline(
        training_lane(site), sink=events_dir / wiring.events_file(site, os.getpid())
    )
    context = points.ChildContext(
        site=site,
        launched_for=int(os.environ.get(wiring.ROUND_ENV, "1")),
        faults=points.applying(faults, site),
        timeline=timeline,
    )
    logging.getLogger("nvflare").setLevel(logging.INFO)
    _watch_exit(context)
    _watch_threads(context)
    _watch_agent(context)
    _watch_pipe_handler(context)
    _watch_downloadable(context)
    logging.getLogger(CLIENT_LOGGER).addHandler(GateLines(context))
    _install_faults(context)
    points.boot_child(context)
    return context


def _install_faults(context: points.ChildContext) -> None:
    """The fault code's ``install(context)``, if it is there; what it returns strikes at
    every ``at:`` point."""
    module = points.load_fault_module(points.CHILD_FAULTS_MODULE)
    install = getattr(module, "install", None)
    if install is None:
        return
    faults = install(context)
    if faults is None:
        return
    strike: Callable[[str], None] = faults.strike

    def at(point: str) -> points.Action:
        return lambda _context: strike(point)

    for point in points.AT_POINTS:
        context.at(point, at(point))


# --- exit -------------------------------------------------------------------------------


class _Exit:
    """Records ``exit`` once, however the process ends by itself."""

    def __init__(self, context: points.ChildContext) -> None:
        self.context = context
        self.lock = threading.Lock()
        self.done = False

    def record(self, code: int, how: str) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        self.context.record(EventKind.EXIT, returncode=code, how=how)


def _watch_exit(context: points.ChildContext) -> None:
    exits = _Exit(context)
    real_exit: Callable[[int], NoReturn] = os._exit

    def _exit(status: int) -> NoReturn:
        exits.record(int(status), "os._exit")
        real_exit(status)

    os._exit = _exit
    atexit.register(lambda: exits.record(0, "interpreter exit"))


def _watch_threads(context: points.ChildContext) -> None:
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        context.record(
            EventKind.ERROR,
            error=THREAD_CRASH,
            thread=args.thread.name if args.thread is not None else "?",
            exception=f"{args.exc_type.__name__}: {args.exc_value}",
        )
        previous(args)

    threading.excepthook = hook


# --- the agent --------------------------------------------------------------------------


def _round_of(task: Any) -> int | None:
    data = getattr(task, "data", None)
    current = getattr(data, "current_round", None)
    if current is None:
        meta = getattr(data, "meta", None) or {}
        current = meta.get("current_round") if isinstance(meta, dict) else None
    return int(current) if current is not None else None


def _watch_agent(context: points.ChildContext) -> None:
    agent_cls = nv.module("client.flare_agent").FlareAgent
    real_start = agent_cls.start
    real_get_task = agent_cls.get_task

    def start(self: Any) -> None:
        context.strike("before_init")
        real_start(self)
        context.record(EventKind.INIT, launched_for=context.launched_for)

    def get_task(self: Any, timeout: float | None = None) -> Any:
        task = real_get_task(self, timeout)
        if task is not None:
            round = _round_of(task)
            if round is not None:
                context.round = round
            context.record(EventKind.TASK_RECEIVED, task_kind=getattr(task, "task_name", None))
            context.strike("after_task_received")
        return task

    agent_cls.start = start
    agent_cls.get_task = get_task


class _Published(threading.local):
    """The arrays published (``ArrayDownloadable``) while this thread sends a result."""

    def __init__(self) -> None:
        self.sending = False
        self.count = 0


_published = _Published()


def _watch_pipe_handler(context: points.ChildContext) -> None:
    handler_cls = nv.module("fuel.utils.pipe.pipe_handler").PipeHandler
    message_cls = nv.module("fuel.utils.pipe.pipe").Message
    real_send = handler_cls.send_to_peer

    def send_to_peer(self: Any, msg: Any, *args: Any, **kwargs: Any) -> bool:
        if getattr(msg, "msg_type", None) != message_cls.REPLY:
            return bool(real_send(self, msg, *args, **kwargs))
        _published.sending, _published.count = True, 0
        try:
            sent = bool(real_send(self, msg, *args, **kwargs))
        finally:
            _published.sending = False
        context.record(
            EventKind.RESULT_SENT, tensors=_published.count, sent=sent, task_kind=msg.topic
        )
        context.strike("after_result_sent")
        return sent

    handler_cls.send_to_peer = send_to_peer


def digest(array: Any) -> str:
    """sha256 of an array's bytes: what a site published and what the server received."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _watch_downloadable(context: points.ChildContext) -> None:
    module = nv.optional("app_common.np.np_downloader")
    if module is None:  # 2.7.1: no download service; arrays travel inline
        return
    cls = module.ArrayDownloadable
    real_init = cls.__init__
    real_produce = cls.produce_item

    def init(self: Any, arrays: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        real_init(self, arrays, *args, **kwargs)
        self._flrelia_produced = False
        if _published.sending:
            _published.count += len(arrays)
        for name, array in arrays.items():
            context.record(
                EventKind.TENSOR_SERVED, name=name, bytes_digest=digest(array),
                nbytes=int(np.asarray(array).nbytes),
            )

    def produce_item(self: Any, index: int) -> bytes:
        item: bytes = real_produce(self, index)
        if not getattr(self, "_flrelia_produced", True):
            self._flrelia_produced = True
            context.strike("mid_download")
        return item

    cls.__init__ = init
    cls.produce_item = produce_item


class GateLines(logging.Handler):
    """NVFlare's own gate log lines (``FlareAgent._do_submit_result``) as gate events."""

    def __init__(self, context: points.ChildContext) -> None:
        super().__init__(logging.INFO)
        self.context = context

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format is not one of ours
            return
        if message.startswith(GATE_WAIT_LINE) and GATE_WAIT_MARK in message:
            self.context.record(EventKind.GATE_WAIT, line=message)
        elif message.startswith(GATE_OPEN_LINE):
            self.context.record(EventKind.GATE_OPEN, line=message)
            self.context.strike("after_download")
        elif message.startswith(GATE_CLOSED_LINE):
            self.context.record(EventKind.GATE_CLOSED, line=message)
        elif message.startswith(GATE_TIMEOUT_LINE):
            self.context.record(EventKind.GATE_TIMEOUT, line=message, timeout=None, pending=None)
