"""The pipe: authenticated framing over real loopback sockets, hostile peers included."""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from _pipe_helpers import (
    WAIT,
    Network,
    RawPeer,
    connected_pair,
    join_threads,
    live_threads,
    wait_for_event,
)

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.timeline import EventKind
from reference_impl.pipe import (
    PIPE_ADDRESS_ENV,
    PIPE_SECRET_ENV,
    PeerNotConnected,
    Pipe,
    PipeError,
    address_from_env,
    address_to_env,
    secret_from_env,
    secret_to_env,
)
from reference_impl.wire import (
    MAGIC,
    Message,
    encode_message,
    new_secret,
    recv_exact,
)

FAST_FRAME_TIMEOUT = 0.3
"""frame_timeout for tests where a slow-loris peer must be cut off quickly."""


@pytest.fixture
def net() -> Iterator[Network]:
    with Network() as network:
        yield network



def assert_pair_works(server: Pipe, client: Pipe, tag: str) -> None:
    """Both directions carry a message between ``server`` and this ``client``."""
    client.send(Message("task", {"from": "client", "tag": tag}))
    assert server.receive(WAIT) == Message("task", {"from": "client", "tag": tag})
    server.send(Message("result", {"from": "server", "tag": tag}))
    assert client.receive(WAIT) == Message("result", {"from": "server", "tag": tag})


# -- the happy path -----------------------------------------------------------


def test_messages_with_blobs_round_trip_in_both_directions(net: Network) -> None:
    server, client = connected_pair(net)
    big = os.urandom(1024 * 1024)
    to_server = Message("result", {"round": 3, "names": ["w", "b"]}, (big, b"", b"\x00\xff"))
    to_client = Message("task", {"round": 4}, (b"weights" * 1000,))

    client.send(to_server)
    server.send(to_client)

    assert server.receive(WAIT) == to_server
    assert client.receive(WAIT) == to_client


def test_frames_from_every_connection_land_in_one_inbox(net: Network) -> None:
    server = net.listen()
    first, second = net.connect(server, "first"), net.connect(server, "second")

    first.send(Message("hello", {"who": "first"}))
    second.send(Message("hello", {"who": "second"}))

    got = [server.receive(WAIT), server.receive(WAIT)]
    assert sorted(m.payload["who"] for m in got if m is not None) == ["first", "second"]


def test_newest_connection_wins_for_send_and_an_older_one_takes_over_when_it_goes(
    net: Network,
) -> None:
    server = net.listen()
    older = net.connect(server, "older")
    assert server.wait_for_peer(WAIT)
    newest = net.raw(server).authenticate(net.secret)
    newest.send_message(Message("hello", {"who": "newest"}))
    # The newest connection is registered before its reader delivers anything.
    assert server.receive(WAIT) == Message("hello", {"who": "newest"})

    server.send(Message("task", {"n": 1}))
    assert newest.receive_message() == Message("task", {"n": 1})

    newest.send_raw(b"\x00\x00\x00\x05oops!")  # gets the newest connection rejected
    net.rejected(newest.name)
    server.send(Message("task", {"n": 2}))
    # Frames on one connection arrive in order: had task 1 gone to `older`, it would come first.
    assert older.receive(WAIT) == Message("task", {"n": 2})


def test_clear_drops_unread_messages_and_says_how_many(net: Network) -> None:
    server, client = connected_pair(net)
    for n in range(3):
        client.send(Message("END", {"n": n}))
    assert server.wait_pending(3, WAIT)

    assert server.clear() == 3

    assert server.pending == 0
    assert server.receive(0) is None
    assert server.clear() == 0
    assert_pair_works(server, client, "after clear")


def test_receive_returns_none_when_nothing_arrives(net: Network) -> None:
    server, _client = connected_pair(net)
    assert server.receive(0) is None
    assert server.receive(0.01) is None


def test_send_before_any_peer_connected_raises_peer_not_connected(net: Network) -> None:
    server = net.listen()
    assert not server.peer_connected
    assert not server.wait_for_peer(0)
    with pytest.raises(PeerNotConnected, match="no peer has connected yet"):
        server.send(Message("task"))


def test_send_after_the_only_peer_went_raises_pipe_error(net: Network) -> None:
    server = net.listen()
    peer = net.raw(server).authenticate(net.secret)
    assert server.wait_for_peer(WAIT)
    peer.send_raw(b"\xff" * 8)
    net.rejected(peer.name)

    assert not server.peer_connected
    with pytest.raises(PipeError, match="peer disconnected") as raised:
        server.send(Message("task"))
    assert not isinstance(raised.value, PeerNotConnected)


def test_a_message_over_the_frame_cap_is_refused_before_it_is_sent(net: Network) -> None:
    server, client = connected_pair(net, max_frame_bytes=4096)
    with pytest.raises(PipeError, match="exceeds the 4096-byte frame cap"):
        server.send(Message("task", {}, (b"x" * 5000,)))
    assert_pair_works(server, client, "after refusal")


def test_an_injected_send_failure_is_a_pipe_error_and_the_pipe_survives(net: Network) -> None:
    server, client = connected_pair(net)
    with failpoints.scoped("pipe.before_send=1*raise(ConnectionResetError, injected)"):
        with pytest.raises(PipeError, match="injected"):
            server.send(Message("task"))
        assert_pair_works(server, client, "after the injected failure")


def test_a_peer_that_stops_reading_costs_one_send_timeout_not_a_hang(net: Network) -> None:
    server = net.listen(send_timeout=0.2)
    stuck = net.raw(server).authenticate(net.secret)  # never reads what it is sent
    assert server.wait_for_peer(WAIT)

    with pytest.raises(PipeError, match=r"send to .* failed"):
        server.send(Message("task", {}, (bytes(32 * 1024 * 1024),)))  # more than socket buffers

    with pytest.raises(PipeError):
        server.send(Message("task"))  # half a frame went out: that connection is done
    assert stuck.closed_by_peer()


def test_close_is_idempotent_and_ends_every_thread(net: Network) -> None:
    server, client = connected_pair(net)
    assert live_threads(f"pipe-{net.name}-server-reader")
    receiver_result: list[Message | None] = []
    receiver = threading.Thread(
        target=lambda: receiver_result.append(server.receive(None)), name="test-receiver"
    )
    receiver.start()

    server.close()
    server.close()
    client.close()

    receiver.join(WAIT)
    assert receiver_result == [None], "close() must wake a receive(None)"
    assert server.closed and client.closed
    assert not server.peer_connected
    assert join_threads(f"pipe-{net.name}") == []
    with pytest.raises(PipeError, match="closed"):
        server.send(Message("task"))


def test_connect_to_an_address_nobody_listens_on_raises_pipe_error(net: Network) -> None:
    server = net.listen()
    address = server.address
    server.close()
    with pytest.raises(PipeError, match="cannot connect"):
        Pipe.connect(address, net.secret, name=f"{net.name}-nobody")


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret must not be empty"):
        Pipe.listen(b"", name="empty")
    with pytest.raises(ValueError, match="secret must not be empty"):
        Pipe.connect(("127.0.0.1", 1), b"", name="empty")


def test_environment_values_round_trip() -> None:
    secret = new_secret()
    assert PIPE_ADDRESS_ENV == "FLRELIA_PIPE_ADDRESS"
    assert PIPE_SECRET_ENV == "FLRELIA_PIPE_SECRET"
    assert secret_from_env(secret_to_env(secret)) == secret
    assert address_to_env(("127.0.0.1", 5000)) == "127.0.0.1:5000"
    assert address_from_env("127.0.0.1:5000") == ("127.0.0.1", 5000)
    assert address_from_env("::1:5000") == ("::1", 5000)
    for bad in ["", "127.0.0.1", ":5000", "host:port", "host:70000"]:
        with pytest.raises(ValueError, match=PIPE_ADDRESS_ENV):
            address_from_env(bad)
    with pytest.raises(ValueError, match=PIPE_SECRET_ENV):
        secret_from_env("not hex")


# -- unauthenticated peers ----------------------------------------------------


def test_wrong_secret_is_rejected_and_the_legit_peer_still_works(
    net: Network, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reference_impl.pipe")
    server, client = connected_pair(net)

    with pytest.raises(PipeError, match="handshake"):
        net.connect(server, "intruder", secret=new_secret())

    event = wait_for_event(
        net.timeline,
        EventKind.FRAME_REJECTED,
        lambda e: e.detail["pipe"] == server.name and "HMAC" in e.detail["reason"],
    )
    assert "handshake failed" in event.detail["reason"]
    assert any(
        "closed the connection from" in r.getMessage() and event.detail["peer"] in r.getMessage()
        for r in caplog.records
    ), "the warning names the rejected peer"
    assert_pair_works(server, client, "after intruder")


UnauthenticatedAct = Callable[[RawPeer], None]


def _frame_of(message: Message) -> bytes:
    body = encode_message(message)
    return struct.pack(">I", len(body)) + body


UNAUTHENTICATED: dict[str, UnauthenticatedAct] = {
    # A client that knows the frame format but not the handshake (no secret at all).
    "frame without handshake": lambda p: p.send_raw(_frame_of(Message("task", {"pad": "x" * 64}))),
    "garbage instead of handshake": lambda p: p.send_raw(os.urandom(64)),
    "http request": lambda p: p.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b" " * 40),
    "echoes the challenge": lambda p: p.send_raw(
        bytes(recv_exact(p.sock, len(MAGIC) + 32, None))[len(MAGIC) :] + bytes(32)
    ),
    "connects and hangs up": lambda p: p.close(),
}


@pytest.mark.parametrize("act", UNAUTHENTICATED.values(), ids=UNAUTHENTICATED.keys())
def test_an_unauthenticated_peer_is_cut_off_and_the_legit_peer_still_works(
    net: Network, act: UnauthenticatedAct
) -> None:
    server, client = connected_pair(net)
    intruder = net.raw(server)

    act(intruder)

    event = net.rejected(intruder.name)
    assert event.detail["reason"].startswith("handshake failed")
    assert event.detail["pipe"] == server.name
    if intruder.sock.fileno() != -1:
        assert intruder.closed_by_peer()
    assert_pair_works(server, client, "after intruder")


def test_a_peer_stalling_in_the_handshake_does_not_block_others(net: Network) -> None:
    server = net.listen(handshake_timeout=FAST_FRAME_TIMEOUT)
    staller = net.raw(server)  # connects, never answers the challenge

    client = net.connect(server)
    assert server.wait_for_peer(WAIT)
    assert_pair_works(server, client, "while another peer stalls")

    event = net.rejected(staller.name)
    assert "handshake failed" in event.detail["reason"]
    assert staller.closed_by_peer()
    assert_pair_works(server, client, "after the staller")


# -- authenticated peers that break the framing -------------------------------

BadAct = Callable[[RawPeer], None]
CAP = 64 * 1024
"""max_frame_bytes of the pipe under attack."""


def _frame(header: bytes, rest: bytes = b"") -> bytes:
    body = struct.pack(">I", len(header)) + header + rest
    return struct.pack(">I", len(body)) + body


def _truncate_then_close(peer: RawPeer) -> None:
    peer.send_raw(struct.pack(">I", 100) + b"x" * 10)
    peer.close()


BAD_FRAMES: dict[str, tuple[BadAct, str]] = {
    "oversized length prefix": (
        lambda p: p.send_raw(struct.pack(">I", CAP + 1)),
        f"exceeds the {CAP}-byte cap",
    ),
    "empty frame": (lambda p: p.send_raw(struct.pack(">I", 0)), "empty frame"),
    "garbage body": (
        lambda p: p.send_raw(struct.pack(">I", 64) + b"\xff" * 64),
        "header length",
    ),
    "valid length, invalid JSON": (lambda p: p.send_raw(_frame(b"{not json")), "not JSON"),
    "JSON that is not a message": (lambda p: p.send_raw(_frame(b"[1, 2]")), "not a JSON object"),
    "blob lengths that lie": (
        lambda p: p.send_raw(_frame(b'{"topic":"t","payload":{},"blobs":[10]}', b"abc")),
        "do not add up",
    ),
    # json.loads raises RecursionError here, which decode_message lets through.
    "deeply nested JSON": (
        lambda p: p.send_raw(_frame(b"[" * 20000 + b"]" * 20000)),
        "RecursionError|not a JSON object",
    ),
    # json.loads raises a plain ValueError (int digit limit), which decode_message lets through.
    "over-long integer": (
        lambda p: p.send_raw(_frame(b'{"topic":"t","payload":{"n":' + b"9" * 5000 + b"}}")),
        "ValueError|blob lengths",
    ),
    "truncated frame, then close": (
        _truncate_then_close,
        "connection closed after 10 of 100 bytes",
    ),
    "slow-loris partial length": (lambda p: p.send_raw(b"\x00\x00"), "before the deadline"),
    "slow-loris partial body": (
        lambda p: p.send_raw(struct.pack(">I", 100) + b"x" * 10),
        "peer sent 10 of 100 bytes before the deadline",
    ),
}


@pytest.mark.parametrize("act, reason", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_a_bad_frame_closes_only_that_connection(
    net: Network, caplog: pytest.LogCaptureFixture, act: BadAct, reason: str
) -> None:
    caplog.set_level(logging.WARNING, logger="reference_impl.pipe")
    server = net.listen(frame_timeout=FAST_FRAME_TIMEOUT, max_frame_bytes=CAP)
    client = net.connect(server)
    assert server.wait_for_peer(WAIT)
    offender = net.raw(server).authenticate(net.secret)
    offender.send_message(Message("hello", {"who": "offender"}))
    assert server.receive(WAIT) == Message("hello", {"who": "offender"})

    act(offender)

    event = net.rejected(offender.name)
    assert re.search(reason, event.detail["reason"]), event.detail["reason"]
    assert [r for r in caplog.records if offender.name in r.getMessage()], "no warning"
    if offender.sock.fileno() != -1:
        assert offender.closed_by_peer()
    assert server.peer_connected
    # The legit client is older than the offender: send() falls back to it.
    assert_pair_works(server, client, "after the offender")
    assert server.pending == 0, "nothing from the offender's bad frame reached the inbox"
