"""Pipe and pipe-handler behaviours NVFlare 2.7.2's ``cell_pipe_test.py`` and
``pipe_handler_test.py`` assert, on real sockets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _pipe_helpers import WAIT, Network, StatusRecorder, connected_pair, join_threads

from reference_impl.pipe_handler import HandlerState
from reference_impl.wire import Message


@pytest.fixture
def net() -> Iterator[Network]:
    with Network() as network:
        yield network



@pytest.mark.parametrize("direction", ["client to server", "server to client"])
def test_messages_from_one_peer_are_received_in_the_order_sent(
    net: Network, direction: str
) -> None:
    """NVFlare ``test_receive_preserves_fifo_order``."""
    server, client = connected_pair(net)
    sender, receiver = (client, server) if direction == "client to server" else (server, client)
    topics = [f"t{i}" for i in range(200)]
    for i, topic in enumerate(topics):
        sender.send(Message(topic, {"i": i}))

    received = [receiver.receive(WAIT) for _ in topics]

    assert [m.topic if m is not None else None for m in received] == topics
    assert receiver.receive(0) is None


@pytest.mark.parametrize("close_pipe", [True, False], ids=["closing-the-pipe", "keeping-it"])
def test_a_graceful_stop_reports_no_peer_gone(net: Network, close_pipe: bool) -> None:
    """NVFlare ``test_graceful_stop_does_not_emit_peer_gone``: stopping a running
    handler, even one that closes its pipe, is not the peer going away."""
    server, client = connected_pair(net)
    status = StatusRecorder()
    handler = net.handler(server, "server", interval=0.02, timeout=30.0, callback=status)
    handler.start()
    client.send(Message("hello"))
    assert handler.get_next(WAIT) == Message("hello")  # heard from the peer: gone would count

    handler.stop(close_pipe=close_pipe)

    assert handler.state is HandlerState.STOPPED
    assert join_threads(f"pipe-handler-{handler.name}") == []  # every callback has run
    assert [m.topic for m in status.messages] == [], "a graceful stop is not a status event"
