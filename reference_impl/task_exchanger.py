"""The client's per-round pipe handler, and who may act on its status events.

Each round gets a fresh :class:`PipeHandler` whose status callback is bound to
*that* handler: a PEER_GONE or END reported by an older handler changes
nothing.  Replacing the handler clears the pipe, so a goodbye left unread at
the round boundary cannot stop the new round.  A handler is never replaced
while ``execute()`` runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pytest_flrelia.contract.job import Timeouts
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.pipe import Pipe
from reference_impl.pipe_handler import PipeHandler
from reference_impl.wire import Message

log = logging.getLogger(__name__)

AUX_DEFERRED = "execute() is running"
"""The reason recorded for an auxiliary event that arrived inside the busy window."""


class TaskExchanger:
    """Creates and retires one site's pipe handlers, one per round."""

    handler_class: type[PipeHandler] = PipeHandler

    def __init__(self, pipe: Pipe, *, site: str, timeouts: Timeouts, timeline: Timeline) -> None:
        self.pipe = pipe
        self.site = site
        self._timeouts = timeouts
        self._timeline = timeline
        self._lock = threading.RLock()
        self.handler: PipeHandler | None = None
        self._retire_hooks: list[Callable[[PipeHandler], None]] = []
        self._busy_round: int | None = None

    def handler_for_round(self, round: int) -> PipeHandler:
        """Retire the current handler, clear the pipe, start a fresh handler."""
        with self._lock:
            self._retire_current()
            self._clear_pipe(round)
            self.handler = self._new_handler(round)
            self.handler.start()
            return self.handler

    @contextmanager
    def executing(self, round: int) -> Iterator[None]:
        """The busy window: the whole of one ``execute()``, as NVFlare's ``_executing`` guard.

        It covers the round boundary, the launch, the wait for init, the task, the
        result and the stop step, and it ends however ``execute()`` ends, by an
        exception too: the handler must not change anywhere in between.
        """
        with self._lock:
            self._busy_round = round
        try:
            yield
        finally:
            with self._lock:
                self._busy_round = None

    def on_aux_event(self, name: str) -> None:
        """An auxiliary event wants a fresh handler; never while ``execute()`` runs."""
        with self._lock:
            if self._busy_round is not None:
                log.info(
                    "%s: aux event %r deferred: execute() of round %s is running",
                    self.site,
                    name,
                    self._busy_round,
                )
                self._timeline.record(
                    EventKind.STATUS_IGNORED,
                    site=self.site,
                    round=self._busy_round,
                    topic=name,
                    reason=AUX_DEFERRED,
                )
                return
            log.info("%s: aux event %r: handler will be fresh for the next round", self.site, name)

    def close(self) -> None:
        with self._lock:
            self._retire_current()

    def on_retire(self, hook: Callable[[PipeHandler], None]) -> None:
        """Call ``hook`` with every handler this exchanger retires, once it is stopped
        (a seam: the exchanger itself keeps no retired handler)."""
        with self._lock:
            self._retire_hooks.append(hook)

    # -- parts a known-bug variant overrides -------------------------------

    def _clear_pipe(self, round: int) -> None:
        dropped = self.pipe.clear()
        self._timeline.record(EventKind.PIPE_CLEARED, site=self.site, round=round, dropped=dropped)

    def _new_handler(self, round: int) -> PipeHandler:
        bound: list[PipeHandler] = []
        handler = self.handler_class(
            self.pipe,
            name=f"{self.site}-round-{round}",
            heartbeat_interval=self._timeouts.heartbeat_interval,
            heartbeat_timeout=self._timeouts.heartbeat,
            status_callback=self._bind(bound),
            status_filter=self._names_this_site,
            timeline=self._timeline,
            site=self.site,
            round=round,
        )
        bound.append(handler)
        return handler

    def _bind(self, bound: list[PipeHandler]) -> Callable[[Message], None]:
        return lambda message: self._on_status(bound[0], message)

    def _names_this_site(self, message: Message) -> bool:
        """A received status event that claims another site is forged or misrouted."""
        claimed = message.payload.get("site")
        return claimed is None or claimed == self.site

    def _on_status(self, handler: PipeHandler, message: Message) -> None:
        """Act on a status event only if it comes from the current handler."""
        with self._lock:
            current = handler is self.handler
        if not current:
            log.info("%s: ignoring %s from a retired handler", self.site, message.topic)
            self._timeline.record(
                EventKind.STATUS_IGNORED,
                site=self.site,
                round=handler.round,
                topic=message.topic,
                reason="handler is not current",
            )
            return
        log.info("%s: %s from the current handler: stopping it", self.site, message.topic)
        handler.stop(close_pipe=False)

    def _retire_current(self) -> None:
        if self.handler is not None:
            retired = self.handler
            retired.stop(close_pipe=False)
            self.handler = None
            for hook in self._retire_hooks:
                hook(retired)
