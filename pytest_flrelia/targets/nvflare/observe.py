"""The runner's observation of NVFlare's CJ side: wrappers and NVFlare's own log lines.

Installed once per runner process (:func:`install`), before any NVFlare object is
built.  Nothing of NVFlare is edited: class attributes are wrapped, and a logging handler
reads the messages NVFlare logs anyway.  Each event goes to the client lane of the site
whose thread did it; a thread started by a site's thread (the executor's pool, the
deferred stop, the pipe handler's reader) belongs to that site.

| event | observed at |
|---|---|
| launch / launch_skipped | ``SubprocessLauncher._start_external_process`` (``_process``
  before/after); ``launch_task`` of a launcher that launches once |
| stop_requested / reaped | ``SubprocessLauncher._stop_external_process`` before / after
  (a stop that first waits ``shutdown_timeout``: its ``terminate()``) |
| signal_sent | ``subprocess.Popen.send_signal`` (terminate/kill) of a launched child still alive |
| exit_seen | the pidfd watcher (:mod:`.exitwatch`) of a child no signal was sent to |
| result_received | ``ClientAPILauncherExecutor.check_output_shareable`` (its refs) |
| task_sent | the CJ's ``PipeHandler.send_to_peer`` of a task request |
| handler_created / handler_stopped | ``PipeHandler.__init__`` / ``stop`` |
| handler_paused / handler_resumed | ``PipeHandler.pause`` / ``resume`` that change its state
  (the launcher monitor pauses the current handler while no process runs) |
| status_event | ``PipeHandler._add_message`` of END / ABORT / PEER_GONE |
| status_ignored | the DEBUG line "Ignoring late ... from a previous pipe handler" |
| pipe_cleared | ``CellPipe.clear`` / ``FilePipe.clear`` |
| deferred_stop_start | ``threading.Thread.start`` of ``deferred-stop-<task>`` |
| deferred_stop_done | "External execution for task (...) is finished [deferred]." |
| round_boundary_wait | "waiting for deferred stop of '...' to finish" |
| error | WARNING+ lines of ``nvflare.app_common.executors``; unhandled thread exceptions |

Perturbations, all known: launches are serialized under :data:`LAUNCH_LOCK` (the round
goes to the child in ``os.environ``); ``send_signal`` is recorded only for a child the
exit watcher has not seen die (CPython's own ``send_signal`` polls the same way); nothing
here polls or waits on a child.
"""

from __future__ import annotations

import linecache
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_flrelia.contract.events import client_lane, server_lane
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.targets.nvflare import exitwatch, nv, wiring

log = logging.getLogger(__name__)

LAUNCH_LOCK = threading.Lock()
THREAD_CRASH = "thread_crash"
EXECUTORS_LOGGER = "nvflare.app_common.executors"
STATUS_TOPICS = ("_END_", "_ABORT_", "_PEER_GONE_")
RESERVED_TOPICS = frozenset({*STATUS_TOPICS, "_HEARTBEAT_"})


STOPPING = "the runner is stopping: no more launches"
"""What a launch refused after the abort raises (NVFlare's executor logs it and fails the
launch, as it does any launcher exception)."""


@dataclass
class SiteState:
    """What the observation knows of one site while the job runs."""

    site: str
    round: int = 1
    """The round the site's thread is working on (what a launch is for)."""
    executor: Any = None
    launcher: Any = None
    pipe: Any = None
    handlers: dict[int, str] = field(default_factory=dict)
    """id(handler) -> its name (``h<round>.<n>``)."""


@dataclass
class Child:
    site: str
    round: int
    popen: subprocess.Popen[bytes]
    signalled: bool = False
    dead: exitwatch.Death | None = None


class Observer:
    """The runner's observation: one per process, shared by every site."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.sites: dict[str, SiteState] = {}
        self.children: dict[int, Child] = {}
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._handler_count = 0

    # -- lanes -------------------------------------------------------------------------

    def enter(self, site: str | None) -> None:
        """The current thread works for ``site`` (and so does every thread it starts)."""
        self._local.site = site
        threading.current_thread()._flrelia_site = site  # type: ignore[attr-defined]

    def site_of_thread(self) -> str | None:
        site = getattr(self._local, "site", None)
        if site is None:
            site = getattr(threading.current_thread(), "_flrelia_site", None)
        return site if isinstance(site, str) else None

    def record(self, kind: EventKind, site: str | None, /, **detail: Any) -> Event:
        state = self.sites.get(site) if site is not None else None
        detail.setdefault("round", state.round if state is not None else None)
        round = detail.pop("round")
        return self.timeline.record(
            kind,
            site=site,
            round=round,
            process=client_lane(site) if site is not None else server_lane(),
            **detail,
        )

    def site_of(self, obj: Any, attr: str) -> str | None:
        for state in self.sites.values():
            if getattr(state, attr) is obj:
                return state.site
        return None

    # -- children ----------------------------------------------------------------------

    def launched(self, site: str, popen: subprocess.Popen[bytes]) -> None:
        state = self.sites[site]
        child = Child(site, state.round, popen)
        with self._lock:
            self.children[popen.pid] = child
        self.record(EventKind.LAUNCH, site, pid=popen.pid, launched_for=state.round)

        def on_death(death: exitwatch.Death) -> None:
            child.dead = death
            if not child.signalled:
                self.timeline.add(Event(
                    ts=death.ts, kind=EventKind.EXIT_SEEN, process=client_lane(site),
                    pid=os.getpid(), site=site, round=child.round,
                    detail={"pid": death.pid, "returncode": death.returncode,
                            "signal": death.signal_name},
                ))

        exitwatch.watch(popen.pid, on_death, lambda: popen.returncode)

    def child(self, pid: int) -> Child | None:
        with self._lock:
            return self.children.get(pid)

    def survivors(self) -> list[int]:
        with self._lock:
            return [pid for pid, c in self.children.items() if c.dead is None]


_observer: Observer | None = None


def observer() -> Observer:
    if _observer is None:
        raise RuntimeError("the observation is not installed")
    return _observer


def install(timeline: Timeline) -> Observer:
    """Wrap NVFlare's CJ-side classes for this process (once) and return the observer."""
    global _observer
    if _observer is not None:
        raise RuntimeError("the observation is installed already")
    obs = _observer = Observer(timeline)
    _wrap_threads(obs)
    _wrap_launcher(obs)
    _wrap_popen(obs)
    _wrap_executor(obs)
    _wrap_pipe_handler(obs)
    _wrap_pipes(obs)
    _install_log_lines(obs)
    return obs


# --- threads ----------------------------------------------------------------------------


def _wrap_threads(obs: Observer) -> None:
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        site = obs.site_of_thread()
        self._flrelia_site = site  # type: ignore[attr-defined]
        if self.name.startswith("deferred-stop-"):
            state = obs.sites.get(site) if site else None
            wait = getattr(state.executor, "_stop_task_wait_timeout", None) if state else None
            obs.record(EventKind.DEFERRED_STOP_START, site, wait=wait, thread=self.name)
        real_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        site = getattr(args.thread, "_flrelia_site", None) if args.thread else None
        obs.record(
            EventKind.ERROR, site if isinstance(site, str) else None, error=THREAD_CRASH,
            thread=args.thread.name if args.thread is not None else "?",
            exception=f"{args.exc_type.__name__}: {args.exc_value}",
        )
        previous(args)

    threading.excepthook = hook


# --- the launcher -----------------------------------------------------------------------


def _wrap_launcher(obs: Observer) -> None:
    cls = nv.module("app_common.launchers.subprocess_launcher").SubprocessLauncher
    real_start = cls._start_external_process
    real_stop = cls._stop_external_process
    real_launch_task = cls.launch_task

    def _start_external_process(self: Any, fl_ctx: Any) -> None:
        site = obs.site_of(self, "launcher")
        if site is None:
            real_start(self, fl_ctx)
            return
        before = self._process
        with LAUNCH_LOCK:
            if obs.stopping.is_set():
                raise RuntimeError(STOPPING)
            os.environ[wiring.ROUND_ENV] = str(obs.sites[site].round)
            real_start(self, fl_ctx)
            after = self._process
            if after is not None and after is not before:
                obs.launched(site, after)
            elif after is not None:
                obs.record(EventKind.LAUNCH_SKIPPED, site, pid=after.pid)

    def launch_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        site = obs.site_of(self, "launcher")
        if site is not None and self._launch_once and self._process is not None:
            obs.record(EventKind.LAUNCH_SKIPPED, site, pid=self._process.pid)
        return real_launch_task(self, *args, **kwargs)

    def _stop_external_process(self: Any) -> None:
        site = obs.site_of(self, "launcher")
        process = self._process
        if site is None or process is None:
            real_stop(self)
            return
        child = obs.child(process.pid)

        recorded: list[bool] = []

        def requested() -> None:
            if not recorded:
                recorded.append(True)
                obs.record(EventKind.STOP_REQUESTED, site, pid=process.pid,
                           round=child.round if child else None)

        if getattr(self, "_shutdown_timeout", 0.0):
            _request_at_terminate(process, requested)
        else:
            requested()
        try:
            real_stop(self)
        finally:
            requested()  # a stop that raised before it terminated was still requested
            returncode = process.returncode
            if returncode is None and child is not None and child.dead is not None:
                returncode = child.dead.returncode
            obs.record(EventKind.REAPED, site, pid=process.pid, returncode=returncode,
                       round=child.round if child else None, how="stop returned")

    cls._start_external_process = _start_external_process
    cls._stop_external_process = _stop_external_process
    cls.launch_task = launch_task


def _request_at_terminate(process: subprocess.Popen[Any], requested: Callable[[], None]) -> None:
    """A stop that first waits ``shutdown_timeout`` for a natural exit (a launch-once
    process at ``END_RUN``) is requested when that wait ends and NVFlare terminates the
    process ("_stop_external_process: terminating pid=N"): the wait is the job's stop
    wait, as a deferred stop's, not part of the stop that ``bounded_stop`` bounds."""
    real_terminate = process.terminate

    def terminate() -> None:
        requested()
        real_terminate()

    process.terminate = terminate  # type: ignore[method-assign]


def _wrap_popen(obs: Observer) -> None:
    real_send_signal = subprocess.Popen.send_signal

    def send_signal(self: subprocess.Popen[Any], sig: int) -> None:
        child = obs.child(self.pid)
        if child is not None and child.dead is None and self.returncode is None:
            child.signalled = True
            obs.record(
                EventKind.SIGNAL_SENT, child.site, signal=_signal_name(sig), target=self.pid,
                pgid=None, round=child.round,
            )
        real_send_signal(self, sig)

    subprocess.Popen.send_signal = send_signal  # type: ignore[method-assign]


def _signal_name(sig: int) -> str:
    import signal  # noqa: PLC0415

    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


# --- the executor -----------------------------------------------------------------------


def count_refs(obj: Any, ref_type: type | None, depth: int = 0) -> int:
    """How many ``LazyDownloadRef`` a decoded result holds (what is left to download)."""
    if ref_type is None or depth > 8:
        return 0
    if isinstance(obj, ref_type):
        return 1
    if isinstance(obj, dict):
        return sum(count_refs(v, ref_type, depth + 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(count_refs(v, ref_type, depth + 1) for v in obj)
    return 0


def _wrap_executor(obs: Observer) -> None:
    cls = nv.module("app_common.executors.client_api_launcher_executor").ClientAPILauncherExecutor
    via = nv.optional("fuel.utils.fobs.decomposers.via_downloader")
    ref_type = getattr(via, "LazyDownloadRef", None) if via is not None else None
    real_check = cls.check_output_shareable

    def check_output_shareable(self: Any, task_name: str, shareable: Any, fl_ctx: Any) -> bool:
        site = obs.site_of(self, "executor")
        if site is not None:
            obs.record(EventKind.RESULT_RECEIVED, site, tensors=count_refs(shareable, ref_type),
                       task_kind=task_name)
        return bool(real_check(self, task_name, shareable, fl_ctx))

    cls.check_output_shareable = check_output_shareable


# --- the pipe handler and the pipes -----------------------------------------------------


def _wrap_pipe_handler(obs: Observer) -> None:
    cls = nv.module("fuel.utils.pipe.pipe_handler").PipeHandler
    message_cls = nv.module("fuel.utils.pipe.pipe").Message
    real_init = cls.__init__
    real_stop = cls.stop
    real_send = cls.send_to_peer
    real_add = cls._add_message
    real_pause = cls.pause
    real_resume = cls.resume

    def name_of(handler: Any) -> tuple[str | None, str | None]:
        for state in obs.sites.values():
            name = state.handlers.get(id(handler))
            if name is not None:
                return state.site, name
        return None, None

    def init(self: Any, pipe: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, pipe, *args, **kwargs)
        site = obs.site_of(pipe, "pipe")
        if site is None:
            return
        state = obs.sites[site]
        obs._handler_count += 1
        name = f"h{state.round}.{obs._handler_count}"
        state.handlers[id(self)] = name
        self._flrelia_round = state.round
        obs.record(EventKind.HANDLER_CREATED, site, handler=name)

    def stop(self: Any, close_pipe: bool = True) -> None:
        site, name = name_of(self)
        first = not self.asked_to_stop
        real_stop(self, close_pipe)
        if site is not None and first:
            obs.record(EventKind.HANDLER_STOPPED, site, handler=name,
                       round=getattr(self, "_flrelia_round", None))

    def pause(self: Any) -> None:
        was = bool(self._pause)
        real_pause(self)
        site, name = name_of(self)
        if site is not None and not was:
            obs.record(EventKind.HANDLER_PAUSED, site, handler=name,
                       round=getattr(self, "_flrelia_round", None),
                       by=threading.current_thread().name)

    def resume(self: Any) -> None:
        was = bool(self._pause)
        real_resume(self)
        site, name = name_of(self)
        if site is not None and was:
            obs.record(EventKind.HANDLER_RESUMED, site, handler=name,
                       round=getattr(self, "_flrelia_round", None))

    def send_to_peer(self: Any, msg: Any, *args: Any, **kwargs: Any) -> bool:
        site, name = name_of(self)
        if (
            site is not None
            and msg.msg_type == message_cls.REQUEST
            and msg.topic not in RESERVED_TOPICS
        ):
            obs.record(EventKind.TASK_SENT, site, handler=name, task_kind=msg.topic)
        return bool(real_send(self, msg, *args, **kwargs))

    def _add_message(self: Any, msg: Any) -> None:
        site, name = name_of(self)
        if site is not None and msg.topic in STATUS_TOPICS:
            executor = obs.sites[site].executor
            obs.record(
                EventKind.STATUS_EVENT, site, topic=msg.topic, reason=str(msg.data), handler=name,
                current=executor is not None and executor.pipe_handler is self,
                round=getattr(self, "_flrelia_round", None),
            )
            previous = getattr(obs._local, "status", None)
            obs._local.status = (site, name, msg.topic, getattr(self, "_flrelia_round", None))
            try:
                real_add(self, msg)
            finally:
                obs._local.status = previous
            return
        real_add(self, msg)

    cls.__init__ = init
    cls.stop = stop
    cls.send_to_peer = send_to_peer
    cls._add_message = _add_message
    cls.pause = pause
    cls.resume = resume


def _wrap_pipes(obs: Observer) -> None:
    for module_name, class_name in (
        ("fuel.utils.pipe.cell_pipe", "CellPipe"),
        ("fuel.utils.pipe.file_pipe", "FilePipe"),
    ):
        cls = getattr(nv.module(module_name), class_name)
        real_clear = cls.clear

        def clear(self: Any, _real: Callable[[Any], None] = real_clear) -> None:
            site = obs.site_of(self, "pipe")
            queued = getattr(self, "received_msgs", None)
            dropped = queued.qsize() if queued is not None else None
            _real(self)
            if site is not None:
                obs.record(EventKind.PIPE_CLEARED, site, dropped=dropped)

        cls.clear = clear


# --- NVFlare's own log lines ------------------------------------------------------------


class LogLines(logging.Handler):
    """The executor's log lines that say what it did, as events of the client lane."""

    def __init__(self, obs: Observer) -> None:
        super().__init__(logging.DEBUG)
        self.obs = obs

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            return
        obs = self.obs
        if not record.name.startswith(EXECUTORS_LOGGER):
            if record.levelno >= logging.ERROR and obs.site_of_thread() is None:
                # the server's side (its cell, the download): NVFlare's own words
                obs.record(EventKind.ERROR, None, reason=message, logger=record.name,
                           level=record.levelname)
            return
        site = obs.site_of_thread()
        if "Ignoring late " in message and "from a previous pipe handler" in message:
            status = getattr(obs._local, "status", None)
            if status is not None:
                site, handler, topic, round = status
                obs.record(EventKind.STATUS_IGNORED, site, topic=topic, reason="stale",
                           handler=handler, round=round, line=message)
            return
        if site is None:
            return
        if "is finished [deferred]." in message:
            obs.record(EventKind.DEFERRED_STOP_DONE, site, line=message)
        elif "waiting for deferred stop of '" in message:
            state = obs.sites[site]
            wait = getattr(state.executor, "_stop_task_wait_timeout", None)
            obs.record(EventKind.ROUND_BOUNDARY_WAIT, site,
                       timeout=None if wait is None else wait + 60.0, line=message)
        elif record.levelno >= logging.WARNING:
            extra = {}
            if NOT_INITIALIZED in message:
                extra["monitor"] = monitor_whereabouts(obs.sites[site].executor)
            obs.record(EventKind.ERROR, site, reason=message, level=record.levelname, **extra)


NOT_INITIALIZED = "has not called flare.init"
"""The executor's words for a round whose process it never saw call ``init()``."""
MONITOR_LOOP = "_monitor_launcher"


def monitor_whereabouts(executor: Any) -> str:
    """Where the executor's launcher monitor thread is at this instant, read from its
    stack (``sys._current_frames``: nothing is stopped or changed): the line of
    ``_monitor_launcher`` it is on, or that the thread has ended.  A round whose process
    nobody saw call ``init()`` says with it whether the monitor was still looping."""
    thread = getattr(executor, "_monitor_launcher_thread", None)
    if not isinstance(thread, threading.Thread):
        return "no monitor thread"
    if not thread.is_alive() or thread.ident is None:
        return "the monitor thread has ended"
    frame = sys._current_frames().get(thread.ident)
    while frame is not None and frame.f_code.co_name != MONITOR_LOOP:
        frame = frame.f_back
    if frame is None:
        return "the monitor thread is not in its loop"
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
    return f"{MONITOR_LOOP} line {frame.f_lineno}: {line}"


def _install_log_lines(obs: Observer) -> None:
    logging.getLogger(EXECUTORS_LOGGER).setLevel(logging.DEBUG)
    logging.getLogger("nvflare").addHandler(LogLines(obs))


__all__ = [
    "LAUNCH_LOCK",
    "NOT_INITIALIZED",
    "STOPPING",
    "Observer",
    "SiteState",
    "count_refs",
    "install",
    "monitor_whereabouts",
    "observer",
]
