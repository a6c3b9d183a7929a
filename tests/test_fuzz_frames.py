"""Fuzzing the framing: over a thousand malformed frames against both authenticated endpoints.

Each Hypothesis example opens a fresh authenticated connection to one
long-lived endpoint (a pipe listener, a download service), sends a malformed
stream, half-closes and waits for the server to hang up.  Properties: nothing
escapes a thread, every connection ends within a bound, a frame's memory is
bounded by the frame cap whatever length the peer claims, valid frames in
front of the bad one arrive intact, exactly the streams that break the
protocol are rejected, and the legitimate peer still works after the batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from _pipe_helpers import Network, ThreadExceptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from reference_impl.download import (
    REQUEST_MAX_BYTES,
    TOPIC,
    ArraySink,
    Downloader,
    DownloadService,
)
from reference_impl.pipe import Pipe
from reference_impl.wire import (
    FrameError,
    Message,
    client_handshake,
    decode_message,
    encode_message,
)

WAIT = 5.0
"""Upper bound for one connection to end; a healthy server takes milliseconds."""
PIPE_CAP = 256 * 1024
"""max_frame_bytes of the fuzzed pipe: small, so a frame at the cap is cheap to allocate."""
MEMORY_SLACK = 256 * 1024
"""Bytes an example may allocate besides the frame buffer (threads, sockets, messages)."""
SLOWLORIS_FRAME_TIMEOUT = 0.2
EXAMPLES_PER_ENDPOINT = 500
SLOWLORIS_EXAMPLES = 12
FUZZ = settings(
    max_examples=EXAMPLES_PER_ENDPOINT,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_LENGTH = struct.Struct(">I")


# =========================================================================== what to send


def frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


# Small on purpose: Hypothesis' generation, not the endpoint, is what costs time here.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)
messages = st.builds(
    Message,
    topic=st.text(min_size=1, max_size=8),
    payload=st.dictionaries(st.text(max_size=4), json_values, max_size=2),
    blobs=st.lists(st.binary(max_size=200), max_size=2).map(tuple),
)
valid_frames = messages.map(lambda m: frame(encode_message(m)))


@st.composite
def defective_headers(draw: st.DrawFn) -> bytes:
    """A frame body whose length is right but whose header or blob lengths are not."""
    blobs = draw(st.lists(st.binary(max_size=64), max_size=3))
    header: Any = {
        "topic": draw(st.text(min_size=1, max_size=8)),
        "payload": draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
        "blobs": [len(b) for b in blobs],
    }
    defect = draw(st.sampled_from(["missing", "topic", "payload", "blobs", "sum", "not object"]))
    if defect == "missing":
        del header[draw(st.sampled_from(sorted(header)))]
    elif defect == "topic":
        header["topic"] = draw(st.just("") | json_values.filter(lambda v: not isinstance(v, str)))
    elif defect == "payload":
        header["payload"] = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    elif defect == "blobs":
        header["blobs"] = draw(
            json_values.filter(lambda v: not isinstance(v, list))
            | st.lists(st.integers(max_value=-1) | st.floats() | st.text(), min_size=1, max_size=3)
        )
    elif defect == "sum":
        header["blobs"] = [n + draw(st.integers(1, 100)) for n in header["blobs"]] or [1]
    else:
        header = draw(json_values.filter(lambda v: not isinstance(v, dict)))
    encoded = json.dumps(header).encode()
    return _LENGTH.pack(len(encoded)) + encoded + b"".join(blobs)


bad_bodies = st.one_of(
    # the header length points past the body
    st.builds(
        lambda extra, rest: _LENGTH.pack(len(rest) + extra) + rest,
        st.integers(1, 2**31),
        st.binary(max_size=64),
    ),
    # a header that is not JSON (or not UTF-8)
    st.binary(max_size=200).map(lambda h: _LENGTH.pack(len(h)) + h),
    defective_headers(),
    # too short to hold a header length
    st.binary(max_size=3),
)


def malformed_streams(cap: int) -> st.SearchStrategy[bytes]:
    """Byte streams that break the framing somewhere; maybe after some valid frames."""
    truncated = valid_frames.flatmap(lambda f: st.integers(1, len(f) - 1).map(lambda k: f[:k]))
    oversized = st.builds(
        lambda n, tail: _LENGTH.pack(n) + tail,
        st.integers(cap + 1, 2**32 - 1),
        st.binary(max_size=64),
    )
    empty = st.binary(max_size=16).map(lambda tail: _LENGTH.pack(0) + tail)
    garbage = st.binary(min_size=1, max_size=2048)
    bad = bad_bodies.map(frame)
    broken = st.one_of(truncated, oversized, empty, garbage, bad)
    return broken | st.builds(lambda p, b: p + b, valid_frames, broken)


def expected_outcome(stream: bytes, cap: int) -> tuple[list[Message], bool]:
    """What a correct endpoint does with ``stream`` and then EOF: (delivered, rejected).

    Mirrors ``wire.recv_frame``: EOF exactly between frames is a clean close;
    EOF anywhere inside a frame, its length prefix included, is a truncated frame.
    """
    delivered: list[Message] = []
    rest = stream
    while rest:
        if len(rest) < _LENGTH.size:
            return delivered, True
        (length,) = _LENGTH.unpack_from(rest)
        if length == 0 or length > cap:
            return delivered, True
        if len(rest) < _LENGTH.size + length:
            return delivered, True
        try:
            delivered.append(decode_message(rest[_LENGTH.size : _LENGTH.size + length]))
        except Exception:  # the endpoints reject whatever the decoder refuses
            return delivered, True
        rest = rest[_LENGTH.size + length :]
    return delivered, False


# =========================================================================== harness


class Rejections:
    """Counts FRAME_REJECTED events; a test waits for the count to reach a number."""

    def __init__(self, timeline: Timeline) -> None:
        self.count = 0
        self.reasons: list[str] = []
        self._cond = threading.Condition()
        self.unsubscribe = timeline.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.kind is EventKind.FRAME_REJECTED:
            with self._cond:
                self.count += 1
                self.reasons.append(str(event.detail.get("reason")))
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= count, timeout)


def closed_by_server(sock: socket.socket, timeout: float = WAIT) -> bool:
    """Read until the server hangs up (EOF or reset); False if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def attack(address: tuple[str, int], secret: bytes, stream: bytes, *, half_close: bool) -> float:
    """Authenticate, send ``stream``, optionally half-close; seconds until the server hung up."""
    with socket.create_connection(address, timeout=WAIT) as sock:
        client_handshake(sock, secret, WAIT)
        started = time.monotonic()
        try:
            sock.sendall(stream)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server cut us off mid-stream: that is its right
        assert closed_by_server(sock), f"the server kept a connection open after {stream[:64]!r}"
        return time.monotonic() - started


def peak_memory(run: Callable[[], object]) -> int:
    """Peak bytes allocated (by every thread) while ``run`` runs, per tracemalloc.

    Tracing only around the attack keeps Hypothesis' own generation untraced,
    and fast.
    """
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def claimed_length(stream: bytes) -> int:
    """The largest length prefix a frame of ``stream`` claims (frames parsed in order)."""
    claims, rest = [0], stream
    while len(rest) >= _LENGTH.size:
        (length,) = _LENGTH.unpack_from(rest)
        claims.append(length)
        rest = rest[_LENGTH.size + length :]
    return max(claims)


@pytest.fixture
def net() -> Iterator[Network]:
    with Network() as network:
        yield network


def assert_pipe_pair_works(server: Pipe, client: Pipe) -> None:
    up = Message("task", {"after": "fuzz"}, (bytes(range(256)) * 100,))
    client.send(up)
    assert server.receive(WAIT) == up
    down = Message("result", {"after": "fuzz"}, (b"\x00\xff" * 5000,))
    server.send(down)
    assert client.receive(WAIT) == down


# =========================================================================== the pipe


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> None:
    """A thousand rejection warnings would bury a failure; FRAME_REJECTED events count them."""
    for logger in ("reference_impl.pipe", "reference_impl.download"):
        caplog.set_level(logging.ERROR, logger=logger)


@pytest.mark.usefixtures("quiet")
def test_malformed_frames_never_hurt_the_pipe(net: Network) -> None:
    server = net.listen(max_frame_bytes=PIPE_CAP, frame_timeout=WAIT)
    client = net.connect(server)
    assert server.wait_for_peer(WAIT)
    rejections = Rejections(net.timeline)
    expected_rejections = examples = 0

    @FUZZ
    @given(stream=malformed_streams(PIPE_CAP))
    def example(stream: bytes) -> None:
        nonlocal expected_rejections, examples
        examples += 1
        delivered, rejected = expected_outcome(stream, PIPE_CAP)
        expected_rejections += int(rejected)
        used = peak_memory(lambda: attack(server.address, net.secret, stream, half_close=True))
        assert rejections.wait_for(expected_rejections), "a broken stream was not rejected"
        got = [server.receive(WAIT) for _ in delivered]
        assert got == delivered, "valid frames before the bad one must arrive intact"
        assert server.pending == 0, "nothing of the bad frame may reach the inbox"
        claim = claimed_length(stream)
        bound = (claim if claim <= PIPE_CAP else 0) + MEMORY_SLACK
        assert used < bound, f"{used} bytes for a stream claiming {claim}"

    example()

    rejections.unsubscribe()
    assert examples >= EXAMPLES_PER_ENDPOINT
    assert rejections.count == expected_rejections
    assert server.peer_connected
    assert_pipe_pair_works(server, client)


@pytest.mark.usefixtures("quiet")
def test_slow_loris_partial_frames_are_cut_off_at_the_frame_timeout(net: Network) -> None:
    server = net.listen(max_frame_bytes=PIPE_CAP, frame_timeout=SLOWLORIS_FRAME_TIMEOUT)
    client = net.connect(server)
    assert server.wait_for_peer(WAIT)
    rejections = Rejections(net.timeline)

    @settings(max_examples=SLOWLORIS_EXAMPLES, deadline=None)
    @given(frame_bytes=valid_frames, cut=st.floats(0.0, 1.0, exclude_max=True))
    def example(frame_bytes: bytes, cut: float) -> None:
        before = rejections.count
        partial = frame_bytes[: 1 + int(cut * (len(frame_bytes) - 1))]
        seconds = attack(server.address, net.secret, partial, half_close=False)
        assert seconds < SLOWLORIS_FRAME_TIMEOUT + 2.0
        assert rejections.wait_for(before + 1)
        assert "before the deadline" in rejections.reasons[-1], rejections.reasons[-1]

    example()

    rejections.unsubscribe()
    assert server.pending == 0
    assert_pipe_pair_works(server, client)


def test_a_truncated_frame_claiming_the_cap_costs_far_less_than_the_cap(net: Network) -> None:
    cap = 8 * 1024 * 1024
    server = net.listen(max_frame_bytes=cap, frame_timeout=WAIT)
    used = peak_memory(
        lambda: attack(server.address, net.secret, _LENGTH.pack(cap) + b"x" * 10, half_close=True)
    )
    assert used < cap // 8, f"{used} bytes allocated for 14 bytes received"


# =========================================================================== the download service


def protocol_violations(tensor_id: str, nbytes: int) -> st.SearchStrategy[bytes]:
    """Well-formed frames that break the download protocol (each must close the connection)."""

    def request(
        payload: dict[str, Any], topic: str = TOPIC, blobs: tuple[bytes, ...] = ()
    ) -> bytes:
        return frame(encode_message(Message(topic, payload, blobs)))

    bad_offsets = st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=nbytes + 1),
        st.booleans(),
        st.floats(),
        st.text(max_size=8),
        st.none(),
    )
    return st.one_of(
        st.text(min_size=1, max_size=12)
        .filter(lambda t: t != TOPIC)
        .map(lambda t: request({"op": "get", "tensor_id": tensor_id, "offset": 0}, topic=t)),
        st.lists(st.binary(max_size=32), min_size=1, max_size=2).map(
            lambda b: request({"op": "get", "tensor_id": tensor_id, "offset": 0}, blobs=tuple(b))
        ),
        st.text(max_size=8)
        .filter(lambda op: op not in ("get", "done"))
        .map(lambda op: request({"op": op, "tensor_id": tensor_id})),
        json_values.filter(lambda v: not isinstance(v, str)).map(
            lambda tid: request({"op": "get", "tensor_id": tid, "offset": 0})
        ),
        bad_offsets.map(lambda off: request({"op": "get", "tensor_id": tensor_id, "offset": off})),
    )


@pytest.mark.usefixtures("quiet")
def test_malformed_requests_never_hurt_the_download_service() -> None:
    timeline = Timeline("test")
    tensor = np.arange(2048, dtype=np.float32)
    with ThreadExceptions() as caught:
        service = DownloadService(site="site-1", chunk_bytes=1024, timeline=timeline)
        try:
            (ref,) = service.publish({"w": tensor}, round=1)
            token = bytes.fromhex(ref.token)
            rejections = Rejections(timeline)
            expected_rejections = examples = 0
            streams = malformed_streams(REQUEST_MAX_BYTES).map(lambda s: (s, False)) | (
                protocol_violations(ref.tensor_id, ref.nbytes).map(lambda s: (s, True))
            )

            @FUZZ
            @given(case=streams)
            def example(case: tuple[bytes, bool]) -> None:
                nonlocal expected_rejections, examples
                examples += 1
                stream, violation = case
                delivered, rejected = expected_outcome(stream, REQUEST_MAX_BYTES)
                # Any request that decodes here is one no real downloader sends.
                expected_rejections += int(violation or rejected or bool(delivered))
                used = peak_memory(lambda: attack(service.address, token, stream, half_close=True))
                assert rejections.wait_for(expected_rejections), "a bad request was not rejected"
                assert service.pending() == 1, "a bad request changed the gate"
                assert used < REQUEST_MAX_BYTES + MEMORY_SLACK

            example()

            rejections.unsubscribe()
            assert examples >= EXAMPLES_PER_ENDPOINT
            assert rejections.count == expected_rejections
            assert not timeline.events(EventKind.ERROR), "a request crashed a connection"
            sink = ArraySink()
            Downloader(retries=0, connect_timeout=WAIT).download(ref, sink)
            assert sink.arrays["w"].tobytes() == tensor.tobytes()
            assert service.wait_all_downloaded(WAIT)
        finally:
            service.close()
    assert not caught.caught, caught.describe()


# =========================================================================== the decoder alone


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=4096))
def test_decode_message_raises_only_frame_error_on_arbitrary_bytes(body: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_message(body)


@settings(max_examples=300, deadline=None)
@given(body=bad_bodies | messages.map(encode_message))
def test_decode_message_raises_only_frame_error_on_near_miss_bodies(body: bytes) -> None:
    try:
        message = decode_message(body)
    except FrameError:
        return
    assert isinstance(message, Message) and message.topic


@pytest.mark.parametrize(
    "header",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"topic":"t","payload":{"n":' + b"9" * 5000 + b'},"blobs":[]}',
    ],
    ids=["deeply nested JSON", "over-long integer"],
)
def test_decode_message_turns_json_limits_into_frame_errors(header: bytes) -> None:
    with pytest.raises(FrameError):
        decode_message(_LENGTH.pack(len(header)) + header)
