"""The pipe handler: reader and heartbeat threads over one pipe, peer-gone detection.

A handler serves one round.  Its reader thread takes messages from the pipe:
every message proves the peer alive; heartbeats end there; a status message
(``END``, ``PEER_GONE``) goes to the status callback and stops the handler;
anything else waits for :meth:`PipeHandler.get_next`.  If nothing at all is
heard for ``heartbeat_timeout`` (counted from :meth:`PipeHandler.start`), the
handler reports a synthetic ``PEER_GONE`` and stops.  Its heartbeat thread
sends a heartbeat every ``heartbeat_interval``; a send on a broken pipe
reports ``PEER_GONE`` and stops the handler instead of raising out of the thread.

A stopped handler is never restarted: the next round gets a fresh one on the
same pipe, which is why status-driven stops leave the pipe open.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Any

from pytest_flrelia.contract.failpoints import failpoint
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.pipe import PeerNotConnected, Pipe, PipeError
from reference_impl.threads import join_all
from reference_impl.wire import Message, Topic

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 2.0
"""Upper bound for ``stop()`` to wait for the handler's threads."""

StatusCallback = Callable[[Message], None]


class HandlerState(Enum):
    """A handler's life: CREATED -> RUNNING -> STOPPED, or CREATED -> STOPPED.  Never back."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


class HandlerStoppedError(RuntimeError):
    """``start()`` on a stopped handler: a new round needs a new handler."""


class PipeHandler:
    """Reader + heartbeat threads over a :class:`Pipe`; see the module docstring."""

    def __init__(
        self,
        pipe: Pipe,
        *,
        name: str,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        status_callback: StatusCallback | None = None,
        status_filter: Callable[[Message], bool] | None = None,
        timeline: Timeline | None = None,
        site: str | None = None,
        round: int | None = None,
    ) -> None:
        if heartbeat_interval <= 0 or heartbeat_timeout <= 0:
            raise ValueError(
                f"pipe handler {name}: heartbeat_interval ({heartbeat_interval}) and "
                f"heartbeat_timeout ({heartbeat_timeout}) must be positive"
            )
        self.name = name
        self.pipe = pipe
        self.site = site
        self.round = round
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        # The reader re-checks "last heard" at least this often, so a silent
        # peer is reported within heartbeat_timeout plus one check.
        self._check_interval = min(heartbeat_interval, heartbeat_timeout / 4)
        self._status_callback = status_callback
        self._status_filter = status_filter
        """Decides whether a *received* status message may stop this handler (e.g. it
        must name this handler's site); a rejected one is logged and dropped."""
        self._timeline = timeline
        self._cond = threading.Condition()  # guards state, messages, threads
        self._state = HandlerState.CREATED
        self._stop_recorded = False
        self._stopping = threading.Event()  # set exactly when the state becomes STOPPED
        self._messages: deque[Message] = deque()
        self._threads: list[threading.Thread] = []
        self._last_heard = time.monotonic()  # written by the reader thread only, once running
        self._heard_from_peer = False
        self._record(
            EventKind.HANDLER_CREATED,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
        )

    @property
    def state(self) -> HandlerState:
        with self._cond:
            return self._state

    def start(self) -> None:
        """Start the reader and heartbeat threads; a no-op if running."""
        with self._cond:
            if self._state is HandlerState.STOPPED:
                raise HandlerStoppedError(
                    f"pipe handler {self.name} was stopped and is never restarted; "
                    "create a new handler for the next round"
                )
            if self._state is HandlerState.RUNNING:
                return
            self._state = HandlerState.RUNNING
            self._last_heard = time.monotonic()
            # Daemon: a handler nobody stopped must not keep the process alive.
            self._threads = [
                threading.Thread(
                    target=self._read_loop, name=f"pipe-handler-{self.name}-reader", daemon=True
                ),
                threading.Thread(
                    target=self._heartbeat_loop,
                    name=f"pipe-handler-{self.name}-heartbeat",
                    daemon=True,
                ),
            ]
            # Started under the lock so a concurrent stop() never joins an unstarted thread.
            for thread in self._threads:
                thread.start()

    def stop(self, close_pipe: bool = True) -> None:
        """Stop the threads (joined with a bound) and optionally close the pipe.

        Idempotent, and safe from the handler's own threads and from the
        status callback: it never joins the calling thread and holds no lock
        while joining.
        """
        self._begin_stop()
        self._finish_stop(close_pipe)

    def send(self, message: Message) -> bool:
        """Send to the peer; False if the handler is stopped or the pipe is broken."""
        if self.state is HandlerState.STOPPED:
            return False
        try:
            self.pipe.send(message)
        except PipeError as exc:
            logger.warning("pipe handler %s: cannot send %s: %s", self.name, message.topic, exc)
            return False
        return True

    def get_next(self, timeout: float) -> Message | None:
        """The next non-heartbeat, non-status message; None on timeout or once stopped and empty."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._messages:
                    return self._messages.popleft()
                if self._state is HandlerState.STOPPED:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    @property
    def pending(self) -> int:
        """How many received messages wait for :meth:`get_next`."""
        with self._cond:
            return len(self._messages)

    def take_leftover(self) -> Message | None:
        """The next message the peer sent that a stopped handler's reader left in the pipe.

        A handler stops for a status event (a broken heartbeat, silence, END) at
        once, while its peer's last messages may still sit in the pipe: a result
        sent just before the process exited must not be lost behind the PEER_GONE
        that exit causes.  Heartbeats and status events are dropped on the way;
        None when nothing else is left, or while the handler still runs (its reader
        takes everything then).  It reads the shared pipe, so only the current
        round's handler may be asked (its replacement clears the pipe anyway).
        """
        if self.state is not HandlerState.STOPPED:
            return None
        while (message := self.pipe.receive(0)) is not None:
            if message.topic != Topic.HEARTBEAT and message.topic not in Topic.STATUS:
                self._record(EventKind.LATE_MESSAGE, topic=message.topic)
                return message
        return None

    def notify_status(self, message: Message) -> None:
        """Deliver a status event as if the peer had sent it.

        The callback sees it even when this handler is already stopped, so a
        late event from an old round's handler can be delivered (and must be
        ignored by whoever bound the callback); a running handler stops.
        """
        if message.topic not in Topic.STATUS:
            raise ValueError(
                f"pipe handler {self.name}: {message.topic!r} is not a status topic "
                f"({', '.join(sorted(Topic.STATUS))})"
            )
        stopped_now = self._begin_stop()
        self._report(message)
        if stopped_now:
            self._finish_stop(close_pipe=False)

    def __repr__(self) -> str:
        return f"PipeHandler({self.name!r}, {self.state.value})"

    # -- heartbeats -----------------------------------------------------------

    def _send_heartbeat(self) -> None:
        """Send one heartbeat; raises :class:`PipeError` on a broken pipe."""
        self.pipe.send(Message(Topic.HEARTBEAT))

    def _heartbeat_loop(self) -> None:
        """Beat every ``heartbeat_interval``; report PEER_GONE on silence or a broken pipe.

        Peer-gone detection lives in this thread, as in the launcher it models:
        if this thread dies, nobody notices a dead peer (known bug KB7).
        """
        next_beat = time.monotonic()
        while not self._stopping.is_set():
            silent_for = time.monotonic() - self._last_heard
            # Silence counts once the peer has spoken: before that the peer may still be
            # starting, and the caller bounds that wait (the executor's pre_init).
            if self._heard_from_peer and silent_for >= self._heartbeat_timeout:
                self._stop_for_status(
                    Message(
                        Topic.PEER_GONE,
                        {
                            "reason": f"nothing heard from the peer for {silent_for:.2f} s "
                            f"(heartbeat_timeout {self._heartbeat_timeout:g} s)"
                        },
                    )
                )
                return
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._heartbeat_interval
                try:
                    # Inside the try: an injected OSError is a broken pipe like any other.
                    failpoint("pipe_handler.before_heartbeat", site=self.site, round=self.round)
                    if self._stopping.is_set():
                        return
                    self._send_heartbeat()
                except PeerNotConnected:
                    logger.debug("pipe handler %s: no peer yet, heartbeat skipped", self.name)
                except (PipeError, OSError) as exc:
                    if self._heard_from_peer:
                        self._on_heartbeat_error(exc)
                        return
                    # The previous round's peer left; this handler's has not spoken yet.
                    logger.debug("pipe handler %s: no peer of ours yet (%s)", self.name, exc)
            # The silence deadline is one only once the peer has spoken: before that it
            # lies in the past after heartbeat_timeout and the loop would spin on it.
            deadline = next_beat
            if self._heard_from_peer:
                deadline = min(deadline, self._last_heard + self._heartbeat_timeout)
            wait = deadline - time.monotonic()
            self._stopping.wait(max(0.0, min(wait, self._check_interval)))

    def _on_heartbeat_error(self, error: BaseException) -> None:
        """A heartbeat could not be sent to a peer we heard from: it is gone."""
        if not self._stopping.is_set():
            self._stop_for_status(Message(Topic.PEER_GONE, {"reason": f"broken pipe: {error}"}))

    # -- reading --------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            failpoint("pipe_handler.before_read", site=self.site, round=self.round)
            status: list[Message] = []
            delivered = self.pipe.deliver(
                functools.partial(self._take, status=status),
                self._check_interval,
                cancel=self._stopping,
            )
            if not delivered:
                if self.pipe.closed and not self._stopping.is_set():
                    self._stop_for_status(Message(Topic.PEER_GONE, {"reason": "pipe closed"}))
                    return
                continue
            if not status:
                continue
            message = status[0]
            if self._status_filter is not None and not self._status_filter(message):
                logger.warning(
                    "pipe handler %s: ignoring %s that fails the status filter: %s",
                    self.name,
                    message.topic,
                    dict(message.payload),
                )
                self._record(
                    EventKind.STATUS_IGNORED,
                    topic=message.topic,
                    reason="rejected by the status filter",
                    payload=dict(message.payload),
                )
                continue
            self._stop_for_status(message)
            return

    def _take(self, message: Message, status: list[Message]) -> None:
        """Sort one received message; runs under the pipe's lock (see :meth:`Pipe.deliver`),
        so a data message is queued here before the pipe counts it as read."""
        self._last_heard = time.monotonic()
        self._heard_from_peer = True
        if message.topic == Topic.HEARTBEAT:
            return
        if message.topic in Topic.STATUS:
            status.append(message)  # acted on outside the pipe's lock
            return
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    # -- stopping -------------------------------------------------------------

    def _begin_stop(self) -> bool:
        """Move to STOPPED and wake every waiter; True for the one caller that did it."""
        with self._cond:
            if self._state is HandlerState.STOPPED:
                return False
            self._state = HandlerState.STOPPED
            self._stopping.set()
            self._cond.notify_all()
        self.pipe.wake_receivers()
        return True

    def _finish_stop(self, close_pipe: bool) -> None:
        with self._cond:
            first = not self._stop_recorded
            self._stop_recorded = True
            threads = list(self._threads)
        if first:
            self._record(EventKind.HANDLER_STOPPED, close_pipe=close_pipe)
        if close_pipe:
            self.pipe.close()
        join_all(threads, JOIN_TIMEOUT, f"pipe handler {self.name}", logger)

    def _stop_for_status(self, message: Message) -> None:
        """From the handler's own threads: report ``message`` and stop, leaving the pipe open."""
        if not self._begin_stop():
            return  # stopped by someone else first: a stopped handler reports nothing
        self._report(message)
        self._finish_stop(close_pipe=False)

    def _report(self, message: Message) -> None:
        reason = message.payload.get("reason")
        self._record(EventKind.STATUS_EVENT, topic=message.topic, reason=reason)
        logger.info("pipe handler %s: status %s (%s)", self.name, message.topic, reason)
        if self._status_callback is None:
            return
        try:
            self._status_callback(message)
        except Exception:  # the callback must not kill the reader or heartbeat thread
            logger.exception(
                "pipe handler %s: status callback failed on %s", self.name, message.topic
            )

    def _record(self, kind: EventKind, **detail: Any) -> None:
        if self._timeline is not None:
            self._timeline.record(
                kind, site=self.site, round=self.round, handler=self.name, **detail
            )
