"""The pipe handler: heartbeats, peer-gone detection, status events and its one-way lifecycle."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import pytest
from _pipe_helpers import WAIT, Network, StatusRecorder, connected_pair, join_threads

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.timeline import EventKind
from reference_impl.pipe_handler import HandlerState, HandlerStoppedError, PipeHandler
from reference_impl.wire import Message, Topic

INTERVAL = 0.02
"""Heartbeat interval of the handlers under test."""
TIMEOUT = 0.4
"""heartbeat_timeout where a test waits for it to expire."""
LONG_TIMEOUT = 30.0
"""heartbeat_timeout where expiry must play no part in what the test sees."""
MARGIN = 0.4
"""Allowed lateness of peer-gone detection: one check interval plus scheduling on a busy box."""


@pytest.fixture
def net() -> Iterator[Network]:
    with Network() as network:
        yield network



class CountingHandler(PipeHandler):
    """A handler that lets a test wait until it has sent a number of heartbeats."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sent = 0
        self._sent_changed = threading.Condition()

    def _send_heartbeat(self) -> None:
        super()._send_heartbeat()
        with self._sent_changed:
            self.sent += 1
            self._sent_changed.notify_all()

    def wait_sent(self, count: int) -> bool:
        with self._sent_changed:
            return self._sent_changed.wait_for(lambda: self.sent >= count, WAIT)


def handler_threads_end(net: Network, name: str) -> list[str]:
    return join_threads(f"pipe-handler-{net.name}-{name}")


def events(net: Network, kind: EventKind, handler: PipeHandler) -> list[dict[str, object]]:
    return [
        dict(e.detail)
        for e in net.timeline.events(kind, site="site-1", round=1)
        if e.detail.get("handler") == handler.name
    ]


# -- messages and heartbeats ----------------------------------------------------


def test_messages_reach_get_next_and_heartbeats_do_not(net: Network) -> None:
    server_pipe, client_pipe = connected_pair(net)
    server = net.handler(server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT)
    client = net.handler(
        client_pipe, "client", interval=INTERVAL, timeout=LONG_TIMEOUT, cls=CountingHandler
    )
    assert isinstance(client, CountingHandler)
    server.start()
    client.start()
    assert client.wait_sent(3), "the client sends heartbeats"

    assert client.send(Message(Topic.TASK, {"round": 1}))
    assert server.get_next(WAIT) == Message(Topic.TASK, {"round": 1})
    assert server.send(Message(Topic.RESULT, {"round": 1}, (b"refs",)))
    assert client.get_next(WAIT) == Message(Topic.RESULT, {"round": 1}, (b"refs",))
    assert server.get_next(0) is None
    assert server.state is client.state is HandlerState.RUNNING


def test_heartbeats_keep_a_quiet_peer_alive(net: Network) -> None:
    server_pipe, client_pipe = connected_pair(net)
    gone = StatusRecorder()
    server = net.handler(server_pipe, "server", interval=INTERVAL, timeout=0.2, callback=gone)
    client = net.handler(
        client_pipe, "client", interval=INTERVAL, timeout=LONG_TIMEOUT, cls=CountingHandler
    )
    assert isinstance(client, CountingHandler)
    server.start()
    client.start()

    # Enough heartbeats that the server, had it not counted them, would have given up.
    assert client.wait_sent(int((0.2 + MARGIN) / INTERVAL) + 2)

    assert gone.messages == []
    assert server.state is HandlerState.RUNNING


# -- peer gone ------------------------------------------------------------------


def test_a_silent_peer_is_reported_gone_within_the_heartbeat_timeout(net: Network) -> None:
    server_pipe = net.listen()
    client_pipe = net.connect(server_pipe)
    assert server_pipe.wait_for_peer(WAIT)
    gone = StatusRecorder()
    handler = net.handler(server_pipe, "server", interval=INTERVAL, timeout=TIMEOUT, callback=gone)
    handler.start()
    # Before the send: the handler hears the hello after this instant, so its silence
    # cannot end before TIMEOUT from here (taken after get_next, the lower bound was off
    # by the time get_next took to return: 0.3995 s < 0.4 s once in CI).
    started = time.monotonic()
    client_pipe.send(Message("hello"))  # speaks once, then never again
    assert handler.get_next(WAIT) == Message("hello")
    message = gone.wait()

    elapsed = gone.times[0] - started
    assert TIMEOUT <= elapsed <= TIMEOUT + MARGIN, f"reported after {elapsed:.3f} s"
    assert message.topic == Topic.PEER_GONE
    assert "nothing heard from the peer" in message.payload["reason"]
    assert gone.threads == [f"pipe-handler-{handler.name}-heartbeat"]
    assert handler_threads_end(net, "server") == []
    assert handler.state is HandlerState.STOPPED
    assert not server_pipe.closed, "a status stop leaves the pipe to the next handler"
    assert [e["topic"] for e in events(net, EventKind.STATUS_EVENT, handler)] == [Topic.PEER_GONE]
    assert len(events(net, EventKind.HANDLER_STOPPED, handler)) == 1


def test_a_peer_that_never_connects_is_not_declared_gone(net: Network) -> None:
    """A peer still starting is not a dead one: the caller (pre_init) bounds that wait."""
    server_pipe = net.listen()
    gone = StatusRecorder()
    handler = net.handler(server_pipe, "server", interval=INTERVAL, timeout=TIMEOUT, callback=gone)

    handler.start()

    assert handler.get_next(TIMEOUT + MARGIN) is None
    assert gone.messages == []
    assert handler.state is HandlerState.RUNNING


class RecordedWaits(threading.Event):
    """A handler's stop event that records each wait's timeout: a heartbeat loop that
    spins shows as waits of 0 s."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[float, float | None]] = []
        self._recorded = threading.Condition()

    def wait(self, timeout: float | None = None) -> bool:
        with self._recorded:
            self.waits.append((time.monotonic(), timeout))
            self._recorded.notify_all()
        return super().wait(timeout)

    def after(self, since: float, count: int) -> list[float | None]:
        """The timeouts of the first ``count`` waits begun after ``since`` (waits for them)."""
        with self._recorded:
            assert self._recorded.wait_for(
                lambda: sum(ts >= since for ts, _ in self.waits) >= count, WAIT
            ), f"fewer than {count} waits after {since}"
            return [t for ts, t in self.waits if ts >= since][:count]


def test_a_peer_that_never_connects_does_not_make_the_heartbeat_loop_spin(net: Network) -> None:
    """Past heartbeat_timeout, before the peer spoke, the silence deadline lies in the past:
    the loop must wait for its next beat, not 0 s over and over (0.45 s of CPU in 1.5 s)."""
    interval, timeout = 0.05, 0.1
    handler = net.handler(net.listen(), "server", interval=interval, timeout=timeout)
    recorded = RecordedWaits()
    handler._stopping = recorded  # before start: the heartbeat thread waits on this one
    started = time.monotonic()
    handler.start()
    try:
        waits = recorded.after(started + timeout + interval, 10)
    finally:
        handler.stop()
    assert handler_threads_end(net, "server") == []
    # a send slower than the interval on a loaded box may leave one beat due at once
    assert sum(1 for t in waits if not t) <= 2, waits


@pytest.mark.parametrize("side", ["subprocess side", "client side"])
def test_a_broken_pipe_during_heartbeats_reports_peer_gone_and_stops_cleanly(
    net: Network, side: str
) -> None:
    server_pipe, client_pipe = connected_pair(net)
    mine, theirs = (client_pipe, server_pipe) if side == "subprocess side" else (
        server_pipe, client_pipe
    )
    holder: list[PipeHandler] = []
    # stop() from the callback, i.e. from the heartbeat thread itself, must not deadlock.
    gone = StatusRecorder(lambda message: holder[0].stop(close_pipe=False))
    handler = net.handler(
        mine, "mine", interval=INTERVAL, timeout=LONG_TIMEOUT, callback=gone, cls=CountingHandler
    )
    assert isinstance(handler, CountingHandler)
    holder.append(handler)
    handler.start()
    assert handler.wait_sent(2)
    theirs.send(Message("hello"))  # a peer this handler has heard from ...
    assert handler.get_next(WAIT) == Message("hello")

    theirs.close()  # ... goes away between heartbeats

    message = gone.wait()
    assert message.topic == Topic.PEER_GONE
    assert message.payload["reason"].startswith("broken pipe: ")
    assert gone.threads == [f"pipe-handler-{handler.name}-heartbeat"]
    assert handler_threads_end(net, "mine") == []
    assert handler.state is HandlerState.STOPPED
    assert not net.thread_exceptions.caught, net.thread_exceptions.describe()
    assert not mine.closed


def test_an_injected_heartbeat_error_is_a_broken_pipe(net: Network) -> None:
    server_pipe, client_pipe = connected_pair(net)
    gone = StatusRecorder()
    handler = net.handler(
        server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT, callback=gone
    )
    spec = "pipe_handler.before_heartbeat[site=site-1,round=1]=raise(BrokenPipeError, injected)"
    client_pipe.send(Message("hello"))
    with failpoints.scoped(spec):
        handler.start()
        message = gone.wait()

    assert message == Message(Topic.PEER_GONE, {"reason": "broken pipe: injected"})
    assert handler_threads_end(net, "server") == []
    assert not net.thread_exceptions.caught, net.thread_exceptions.describe()


def test_a_send_error_before_the_peer_spoke_is_not_peer_gone(net: Network) -> None:
    """Between rounds the old process has left and the new one has not spoken yet."""
    server_pipe, client_pipe = connected_pair(net)
    client_pipe.close()  # the previous round's process is gone
    gone = StatusRecorder()
    handler = net.handler(
        server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT, callback=gone
    )
    handler.start()
    newcomer = net.connect(server_pipe, "newcomer")
    newcomer.send(Message("hello"))
    assert handler.get_next(WAIT) == Message("hello")
    assert gone.messages == []
    assert handler.state is HandlerState.RUNNING


def test_a_closed_pipe_under_a_running_handler_is_peer_gone(net: Network) -> None:
    server_pipe, _client_pipe = connected_pair(net)
    gone = StatusRecorder()
    handler = net.handler(
        server_pipe, "server", interval=LONG_TIMEOUT, timeout=LONG_TIMEOUT, callback=gone
    )
    handler.start()

    server_pipe.close()

    assert gone.wait().topic == Topic.PEER_GONE
    assert handler_threads_end(net, "server") == []


# -- status events ----------------------------------------------------------------


def test_an_end_from_the_peer_is_reported_and_stops_the_handler(net: Network) -> None:
    server_pipe, client_pipe = connected_pair(net)
    status = StatusRecorder()
    handler = net.handler(
        server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT, callback=status
    )
    handler.start()

    client_pipe.send(Message(Topic.END, {"reason": "training script finished"}))

    assert status.wait() == Message(Topic.END, {"reason": "training script finished"})
    assert handler_threads_end(net, "server") == []
    assert handler.state is HandlerState.STOPPED
    assert handler.get_next(WAIT) is None, "a stopped handler answers get_next at once"
    assert not server_pipe.closed
    assert events(net, EventKind.STATUS_EVENT, handler) == [
        {"handler": handler.name, "topic": Topic.END, "reason": "training script finished"}
    ]


def test_stop_from_the_status_callback_does_not_deadlock(net: Network) -> None:
    server_pipe, client_pipe = connected_pair(net)
    holder: list[PipeHandler] = []
    returned = threading.Event()

    def stop_from_callback(message: Message) -> None:
        holder[0].stop()  # default close_pipe=True, from the handler's own reader thread
        returned.set()

    handler = net.handler(
        server_pipe,
        "server",
        interval=INTERVAL,
        timeout=LONG_TIMEOUT,
        callback=StatusRecorder(stop_from_callback),
    )
    holder.append(handler)
    handler.start()

    client_pipe.send(Message(Topic.END))

    assert returned.wait(WAIT), "stop() inside the status callback returned"
    assert handler_threads_end(net, "server") == []
    assert server_pipe.closed
    assert len(events(net, EventKind.HANDLER_STOPPED, handler)) == 1


def test_notify_status_reaches_the_callback_and_stops_a_running_handler(net: Network) -> None:
    server_pipe, _client_pipe = connected_pair(net)
    status = StatusRecorder()
    handler = net.handler(
        server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT, callback=status
    )
    handler.start()

    handler.notify_status(Message(Topic.PEER_GONE, {"reason": "injected"}))

    assert status.messages == [Message(Topic.PEER_GONE, {"reason": "injected"})]
    assert handler.state is HandlerState.STOPPED
    assert handler_threads_end(net, "server") == []
    # A late event through an old, stopped handler still reaches its callback:
    # ignoring it is the job of whoever bound the callback.
    handler.notify_status(Message(Topic.PEER_GONE, {"reason": "late"}))
    assert [m.payload["reason"] for m in status.messages] == ["injected", "late"]
    with pytest.raises(ValueError, match="not a status topic"):
        handler.notify_status(Message(Topic.TASK))


def test_a_failing_status_callback_is_logged_and_the_handler_still_stops(
    net: Network, caplog: pytest.LogCaptureFixture
) -> None:
    server_pipe, client_pipe = connected_pair(net)

    def explode(message: Message) -> None:
        raise RuntimeError("callback bug")

    status = StatusRecorder(explode)
    handler = net.handler(
        server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT, callback=status
    )
    handler.start()

    client_pipe.send(Message(Topic.END))

    status.wait()
    assert handler_threads_end(net, "server") == []
    assert handler.state is HandlerState.STOPPED
    assert any(
        r.levelno == logging.ERROR and "status callback failed" in r.getMessage()
        for r in caplog.records
    )


# -- lifecycle ------------------------------------------------------------------


def test_stop_is_idempotent_and_a_stopped_handler_never_restarts(net: Network) -> None:
    server_pipe, _client_pipe = connected_pair(net)
    handler = net.handler(server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT)
    states = [handler.state]
    handler.start()
    handler.start()  # a no-op while running
    states.append(handler.state)
    assert states == [HandlerState.CREATED, HandlerState.RUNNING]

    handler.stop(close_pipe=False)
    handler.stop(close_pipe=False)

    assert handler.state is HandlerState.STOPPED
    assert handler_threads_end(net, "server") == []
    with pytest.raises(HandlerStoppedError, match="never restarted"):
        handler.start()
    assert handler.send(Message(Topic.TASK)) is False
    assert len(events(net, EventKind.HANDLER_CREATED, handler)) == 1
    assert len(events(net, EventKind.HANDLER_STOPPED, handler)) == 1


def test_stop_before_start_is_final(net: Network) -> None:
    handler = net.handler(net.listen(), "server", interval=INTERVAL, timeout=LONG_TIMEOUT)
    handler.stop(close_pipe=False)
    with pytest.raises(HandlerStoppedError):
        handler.start()


def test_stop_closes_the_pipe_by_default(net: Network) -> None:
    server_pipe, _client_pipe = connected_pair(net)
    handler = net.handler(server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT)
    handler.start()

    handler.stop()

    assert server_pipe.closed


def test_stop_without_closing_the_pipe_leaves_it_to_the_next_handler(net: Network) -> None:
    server_pipe, client_pipe = connected_pair(net)
    # A long interval: the first reader's wait in the pipe is long, so only its
    # prompt wake-up on stop() keeps it from taking the next round's messages.
    first = net.handler(server_pipe, "first", interval=LONG_TIMEOUT, timeout=LONG_TIMEOUT)
    first.start()
    first.stop(close_pipe=False)
    assert join_threads(f"pipe-handler-{first.name}", timeout=0) == []

    second = net.handler(server_pipe, "second", interval=INTERVAL, timeout=LONG_TIMEOUT)
    second.start()
    client_pipe.send(Message(Topic.TASK, {"round": 2}))

    assert second.get_next(WAIT) == Message(Topic.TASK, {"round": 2})
    assert first.get_next(0) is None, "the stopped handler took nothing from the pipe"
    assert second.send(Message(Topic.RESULT, {"round": 2}))
    received = client_pipe.receive(WAIT)
    while received is not None and received.topic == Topic.HEARTBEAT:
        received = client_pipe.receive(WAIT)
    assert received == Message(Topic.RESULT, {"round": 2})


def test_get_next_times_out_with_none(net: Network) -> None:
    server_pipe, _client_pipe = connected_pair(net)
    handler = net.handler(server_pipe, "server", interval=INTERVAL, timeout=LONG_TIMEOUT)
    handler.start()
    assert handler.get_next(0) is None
    assert handler.get_next(0.01) is None
    assert handler.state is HandlerState.RUNNING


def test_invalid_heartbeat_settings_are_refused(net: Network) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        net.handler(net.listen(), "bad", interval=0, timeout=1.0)


def test_a_stopped_handler_hands_out_what_its_peer_left_in_the_pipe(net: Network) -> None:
    """The peer's result sits in the pipe behind a heartbeat and an END when a status
    event stops the handler before its reader took them: take_leftover() gives the
    result (and only the result); a running handler leaves the pipe to its reader."""
    server_pipe, client_pipe = connected_pair(net)
    status = StatusRecorder()
    handler = net.handler(
        server_pipe, "server", interval=LONG_TIMEOUT, timeout=LONG_TIMEOUT, callback=status
    )
    assert handler.take_leftover() is None, "not stopped: nothing is a leftover"
    handler.notify_status(Message(Topic.PEER_GONE, {"reason": "heartbeat hit a closed socket"}))
    assert status.wait().topic == Topic.PEER_GONE
    for message in (
        Message(Topic.HEARTBEAT),
        Message(Topic.RESULT, {"site": "site-1", "round": 1}),
        Message(Topic.END, {"site": "site-1"}),
    ):
        client_pipe.send(message)
    assert server_pipe.wait_pending(3, WAIT)

    assert handler.get_next(0) is None, "its reader never took them"
    assert handler.take_leftover() == Message(Topic.RESULT, {"site": "site-1", "round": 1})
    assert handler.take_leftover() is None
    assert server_pipe.pending == 0 and handler.pending == 0
    assert events(net, EventKind.LATE_MESSAGE, handler) == [
        {"handler": handler.name, "topic": Topic.RESULT}
    ]
