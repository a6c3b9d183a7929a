"""The catalog's faults on the parent side of the NVFlare job (the runner process).

Nothing in NVFlare is edited: before ``START_RUN`` the runner calls :func:`install` with
its per-site executors, launchers and pipes and its server; the faults planned there
wrap real NVFlare objects or act *live*, when the runner records the event they are
aimed at.  Each records its ``fault`` event when it acts, never when it is planned, and
a live fault that finds nothing to act on records an ``error`` saying why (the
``faults_delivered`` check then names it).  The stale ones (``stale_peer_gone``,
``aux_event``, ``stale_pipe_message``) also name the round they aim at
(``affects_round``) and what they are (``description``): ``stale_events_ignored`` reads
them.

* ``delayed_download``: ``NumpyArrayDecomposer.download`` (the server's decode of a
  site's ``LazyDownloadRef``s) sleeps before the real pull, only for the server's cell
  and the first pull of the site in the round.
* ``slow_aggregation``: the server stand-in's ``aggregate`` sleeps first.
* ``stop_error`` / ``slow_stop``: the site's ``SubprocessLauncher.stop_task`` (instance
  attribute) raises once / lingers, only when called by NVFlare's ``deferred-stop-*``
  thread (``slow_stop``: after that thread saw its process exit).
* ``stale_peer_gone``: at ``task_sent`` of ``round``, the retired ``PipeHandler`` of
  ``from_round`` (the executor's ``pipe_handler`` then) is handed a PEER_GONE through
  its own ``_add_message``, the path its reader takes on a read error.
* ``aux_event``: ``executor.handle_event(BEFORE_TASK_EXECUTION)`` from another thread,
  at ``task_sent`` / ``pipe_cleared`` / ``init_seen`` (the #4314 trigger).
* ``stale_pipe_message``: once the previous round's process was reaped, a late END or
  PEER_GONE from its FQCN is put through the CellPipe's own receive callback
  (``_receive_message``), or written by an ACTIVE FilePipe on the same directory.

NVFlare is imported inside the fault that needs it: its seams differ across versions
(2.7.1 has no download path), and the declarations load this module without NVFlare.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.timeline import Event, EventKind
from pytest_flrelia.targets.nvflare.points import ParentContext

log = logging.getLogger(__name__)

PARENT_FAULTS = frozenset(
    {"delayed_download", "slow_aggregation", "stop_error", "slow_stop", "stale_peer_gone",
     "aux_event", "stale_pipe_message"}
)
DEFERRED_STOP_THREAD = "deferred-stop-"
"""How NVFlare names the thread of its deferred stop (``launcher_executor.py``)."""
AUX_THREAD_WAIT = 10.0
"""How long a live ``aux_event`` waits for ``handle_event`` to return."""

AUX_EVENT_AT: Mapping[str, tuple[EventKind, str]] = {
    "during_execute": (EventKind.TASK_SENT, "while execute() waits for the result"),
    "launch": (EventKind.PIPE_CLEARED, "during execute()'s launch step"),
    "init": (EventKind.INIT_SEEN, "while execute() waits for init"),
}
"""The runner's event each ``aux_event`` ``at:`` lands on, all inside ``execute()``."""


class ParentFaults:
    """The planned parent-side faults of one job."""

    def __init__(self, ctx: ParentContext, faults: list[FaultSpec]) -> None:
        self.ctx = ctx
        self.faults = [s for s in faults if s.fault in PARENT_FAULTS]
        self._lock = threading.Lock()
        self._round: dict[str, int] = {}
        """Per site: the round of its latest task (the deferred stop of round R runs
        before round R+1 sends its task)."""
        self._handlers: dict[tuple[str, int], Any] = {}
        self._undo: list[Callable[[], None]] = []

    # -- bookkeeping --------------------------------------------------------------------

    def acted(self, spec: FaultSpec, did: str, *, site: str | None, round: int | None,
              started: float | None = None, **detail: object) -> None:
        self.ctx.fault(spec, did, site=site, round=round,
                       **({} if started is None else {"started": started}), **detail)

    def not_delivered(self, spec: FaultSpec, site: str | None, round: int | None,
                      reason: str) -> None:
        self.ctx.record(EventKind.ERROR, site=site, round=round,
                        reason=f"{spec.tag} not delivered: {reason}")

    def round_of(self, site: str) -> int | None:
        with self._lock:
            return self._round.get(site)

    def _track(self, event: Event) -> None:
        if event.kind is EventKind.TASK_SENT and event.site and event.round is not None:
            parts = self.ctx.sites.get(event.site)
            handler = None if parts is None else parts.executor.pipe_handler
            with self._lock:
                self._round[event.site] = event.round
                self._handlers[(event.site, event.round)] = handler

    def install(self) -> None:
        self._undo.append(self.ctx.subscribe(self._track))
        for spec in self.faults:
            _INSTALLERS[spec.fault](self, spec)

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def sites(self, spec: FaultSpec) -> list[str]:
        return [s for s in self.ctx.sites if spec.site in (None, s)]

    def on(self, spec: FaultSpec, kinds: tuple[EventKind, ...], round: int | None,
           act: Callable[[Event], None]) -> None:
        """Call ``act`` (in its own thread) the first time per site and round an event of
        ``kinds`` in scope is recorded."""
        fired: set[tuple[str | None, int | None]] = set()

        def listener(event: Event) -> None:
            if event.kind not in kinds or spec.site not in (None, event.site):
                return
            if round is not None and event.round != round:
                return
            with self._lock:
                if (event.site, event.round) in fired:
                    return
                fired.add((event.site, event.round))
            act(event)

        self._undo.append(self.ctx.subscribe(listener))


# -- the faults -------------------------------------------------------------------------


def _site_of(fqcn: str, sites: list[str]) -> str | None:
    """The site whose child cell ``fqcn`` is (``site-2_<token>_active``)."""
    matches = [s for s in sites if fqcn == s or fqcn.startswith((f"{s}_", f"{s}."))]
    return max(matches, key=len) if matches else None


def _delayed_download(faults: ParentFaults, spec: FaultSpec) -> None:
    from nvflare.app_common.decomposers.numpy_decomposers import NumpyArrayDecomposer  # noqa: PLC0415

    delay = float(str(spec.params["delay"]))
    server_fqcn = faults.ctx.server_cell.get_fqcn()
    download = NumpyArrayDecomposer.download
    delayed: set[tuple[str, int | None]] = set()

    def delayed_download(decomposer: Any, from_fqcn: str, ref_id: str, *args: Any,
                         **kwargs: Any) -> Any:
        cell = args[1] if len(args) > 1 else kwargs.get("cell")
        site = _site_of(from_fqcn, list(faults.ctx.sites))
        round = None if site is None else faults.round_of(site)
        if (
            site is not None
            and cell is not None
            and cell.get_fqcn() == server_fqcn
            and spec.applies_to(site, round if round is not None else -1)
        ):
            with faults._lock:
                first = (site, round) not in delayed
                delayed.add((site, round))
            if first:
                faults.acted(spec, f"the server's pull from {from_fqcn} waits {delay:g}s",
                             site=site, round=round)
                threading.Event().wait(delay)
        return download(decomposer, from_fqcn, ref_id, *args, **kwargs)

    NumpyArrayDecomposer.download = delayed_download
    faults._undo.append(lambda: setattr(NumpyArrayDecomposer, "download", download))


def _slow_aggregation(faults: ParentFaults, spec: FaultSpec) -> None:
    server = faults.ctx.server
    aggregate: Callable[..., Any] = server.aggregate
    delay = float(str(spec.params["delay"]))

    def slow_aggregate(round: int, *args: Any, **kwargs: Any) -> Any:
        if spec.round in (None, round):
            faults.acted(spec, f"the server waits {delay:g}s before it averages", site=None,
                         round=round)
            threading.Event().wait(delay)
        return aggregate(round, *args, **kwargs)

    server.aggregate = slow_aggregate
    faults._undo.append(lambda: setattr(server, "aggregate", aggregate))


def _in_deferred_stop() -> bool:
    return threading.current_thread().name.startswith(DEFERRED_STOP_THREAD)


def _wrap_stop_task(faults: ParentFaults, spec: FaultSpec,
                    before: Callable[[str, Any, Any, str, int | None], None]) -> None:
    """``before(site, launcher, fl_ctx, task_name, round)`` runs first in the deferred-stop
    thread of a site and round in scope."""
    for site in faults.sites(spec):
        launcher = faults.ctx.sites[site].launcher
        stop_task: Callable[..., Any] = launcher.stop_task

        def wrapped(task_name: str, fl_ctx: Any, abort_signal: Any = None, *,
                    _site: str = site, _launcher: Any = launcher,
                    _stop: Callable[..., Any] = stop_task) -> Any:
            round = faults.round_of(_site)
            if _in_deferred_stop() and spec.applies_to(_site, round if round is not None else -1):
                before(_site, _launcher, fl_ctx, task_name, round)
            return _stop(task_name, fl_ctx, abort_signal)

        launcher.stop_task = wrapped
        faults._undo.append(_restore(launcher, "stop_task", stop_task))


def _restore(owner: Any, name: str, value: object) -> Callable[[], None]:
    return lambda: setattr(owner, name, value)


def _stop_error(faults: ParentFaults, spec: FaultSpec) -> None:
    raised: list[bool] = []

    def raise_once(site: str, launcher: Any, fl_ctx: Any, task_name: str,
                   round: int | None) -> None:
        with faults._lock:
            if raised:
                return
            raised.append(True)
        faults.acted(spec, f"stop_task({task_name}) raises in the deferred-stop thread",
                     site=site, round=round)
        raise RuntimeError("injected stop_task failure")

    _wrap_stop_task(faults, spec, raise_once)


def _slow_stop(faults: ParentFaults, spec: FaultSpec) -> None:
    from nvflare.app_common.abstract.launcher import LauncherRunStatus  # noqa: PLC0415

    delay = float(str(spec.params["delay"]))

    def linger(site: str, launcher: Any, fl_ctx: Any, task_name: str,
               round: int | None) -> None:
        if launcher.check_run_status(task_name, fl_ctx) == LauncherRunStatus.RUNNING:
            return  # the thread gave up waiting (job end, abort, its limit): not an exit seen
        faults.acted(spec, f"the deferred stop saw the exit and lingers {delay:g}s",
                     site=site, round=round)
        threading.Event().wait(delay)

    _wrap_stop_task(faults, spec, linger)


def _stale_peer_gone(faults: ParentFaults, spec: FaultSpec) -> None:
    assert spec.round is not None
    from_round = int(str(spec.params.get("from_round") or spec.round - 1))

    def act(event: Event) -> None:
        site = str(event.site)
        with faults._lock:
            old = faults._handlers.get((site, from_round))
        if old is None:
            faults.not_delivered(spec, site, event.round,
                                 f"no pipe handler of round {from_round} was seen")
            return
        started = time.monotonic()
        message = old._make_event_message("_PEER_GONE_", f"stale: round {from_round}'s handler")
        faults.acted(spec, f"round {from_round}'s handler reports PEER_GONE",
                     site=site, round=event.round, started=started,
                     current=old is faults.ctx.sites[site].executor.pipe_handler,
                     affects_round=event.round,
                     description=f"a stale PEER_GONE from round {from_round}'s handler")
        old._add_message(message)

    faults.on(spec, (EventKind.TASK_SENT,), spec.round, act)


def _aux_event(faults: ParentFaults, spec: FaultSpec) -> None:
    from nvflare.apis.event_type import EventType  # noqa: PLC0415

    kind, when = AUX_EVENT_AT[str(spec.params.get("at") or "during_execute")]

    def act(event: Event) -> None:
        site = str(event.site)
        parts = faults.ctx.sites[site]
        failed: list[BaseException] = []

        def fire() -> None:
            try:
                parts.executor.handle_event(EventType.BEFORE_TASK_EXECUTION, parts.fl_ctx)
            except Exception as exc:  # handed back to the acting thread
                failed.append(exc)

        faults.acted(spec, f"handle_event(BEFORE_TASK_EXECUTION) {when}", site=site,
                     round=event.round, affects_round=event.round,
                     description=f"an auxiliary event {when}")
        aux = threading.Thread(target=fire, name=f"aux-event-{site}", daemon=True)
        aux.start()
        aux.join(AUX_THREAD_WAIT)
        if failed:
            log.warning("aux_event at %s: handle_event raised %r", site, failed[0])

    faults.on(spec, (kind,), spec.round, act)


def _stale_pipe_message(faults: ParentFaults, spec: FaultSpec) -> None:
    assert spec.round is not None
    topic = "_END_" if (spec.params.get("topic") or "END") == "END" else "_PEER_GONE_"
    previous = spec.round - 1

    def act(event: Event) -> None:
        site = str(event.site)
        pipe = faults.ctx.sites[site].pipe
        try:
            left = _leave_message(pipe, topic, f"late goodbye of round {previous}")
        except Exception as exc:  # a pipe that refuses it: the fault did not act
            faults.not_delivered(spec, site, event.round, f"the late {topic}: {exc!r}")
            return
        if not left:
            faults.not_delivered(spec, site, event.round, f"the late {topic} is not in the pipe")
            return
        faults.acted(spec, f"a late {topic} sits unread in the pipe", site=site,
                     round=event.round, affects_round=previous + 1,
                     description=f"a late {topic} left in the pipe before round {previous + 1}")

    faults.on(spec, (EventKind.REAPED, EventKind.DEFERRED_STOP_DONE), previous, act)


def _leave_message(pipe: Any, topic: str, data: str) -> bool:
    """Leave a status message from the pipe's peer unread in ``pipe``; whether it is there."""
    from nvflare.fuel.utils.pipe.cell_pipe import CellPipe, _to_cell_message  # noqa: PLC0415
    from nvflare.fuel.utils.pipe.file_pipe import FilePipe  # noqa: PLC0415
    from nvflare.fuel.utils.pipe.pipe import Message, Mode  # noqa: PLC0415

    message = Message.new_request(topic, data)
    if isinstance(pipe, CellPipe):
        from nvflare.fuel.f3.cellnet.defs import MessageHeaderKey  # noqa: PLC0415

        cell_message = _to_cell_message(
            message, {MessageHeaderKey.TOPIC: topic, MessageHeaderKey.ORIGIN: pipe.peer_fqcn}
        )
        before = pipe.received_msgs.qsize()
        pipe._receive_message(cell_message)
        return bool(pipe.received_msgs.qsize() > before)
    if isinstance(pipe, FilePipe):
        late = FilePipe(Mode.ACTIVE, pipe.root_path)
        late.set_file_accessor(pipe.accessor)
        late.open(os.path.basename(pipe.pipe_path))
        path = late._create_file(late.y_path, message)  # no wait for the reader
        return os.path.exists(path)
    raise TypeError(f"no way to leave a message in a {type(pipe).__name__}")


_INSTALLERS: Mapping[str, Callable[[ParentFaults, FaultSpec], None]] = {
    "delayed_download": _delayed_download,
    "slow_aggregation": _slow_aggregation,
    "stop_error": _stop_error,
    "slow_stop": _slow_stop,
    "stale_peer_gone": _stale_peer_gone,
    "aux_event": _aux_event,
    "stale_pipe_message": _stale_pipe_message,
}


INSTALLED: ParentFaults | None = None
"""The run's parent-side fault code, once :func:`install` ran."""


def install(ctx: ParentContext, faults: list[FaultSpec] | None = None) -> ParentFaults | None:
    """Install the planned parent-side faults (``ctx.faults`` unless given), once per
    context; ``None`` when there is none.  The runner calls it before ``START_RUN``."""
    global INSTALLED
    if INSTALLED is not None and INSTALLED.ctx is ctx:
        return INSTALLED  # a second install would wrap every seam twice
    planned = ParentFaults(ctx, list(ctx.faults if faults is None else faults))
    if not planned.faults:
        return None
    planned.install()
    INSTALLED = planned
    return planned


__all__ = ["AUX_EVENT_AT", "PARENT_FAULTS", "ParentFaults", "install"]
