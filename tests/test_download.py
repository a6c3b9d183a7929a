"""The download service and downloader over real loopback sockets (and one real subprocess)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl import wire
from reference_impl.download import (
    DIGEST_SIZE,
    TOPIC,
    ArraySink,
    Downloader,
    DownloadError,
    DownloadService,
    GateOutcome,
    HashSink,
    TensorRef,
    _frame_parts,
    chunk_digest,
    chunk_digests,
    tensor_checksum,
)

REPO = Path(__file__).resolve().parents[1]
WAIT = 10.0
"""Upper bound for anything a test waits for; a passing test never reaches it."""

ServiceFactory = Callable[..., DownloadService]


@pytest.fixture
def timeline() -> Timeline:
    return Timeline("test")


@pytest.fixture
def make_service(timeline: Timeline) -> Iterator[ServiceFactory]:
    """Start services (or a subclass) that are closed when the test ends."""
    services: list[DownloadService] = []

    def make(cls: type[DownloadService] = DownloadService, **kwargs: Any) -> DownloadService:
        kwargs.setdefault("site", "site-1")
        kwargs.setdefault("timeline", timeline)
        service = cls(**kwargs)
        services.append(service)
        return service

    yield make
    for service in services:
        service.close()


@pytest.fixture
def downloader(timeline: Timeline) -> Downloader:
    return Downloader(
        retries=2, retry_delay=0.01, connect_timeout=2.0, chunk_timeout=5.0, timeline=timeline
    )


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start Python scripts in their own process group; kill the group when the test ends."""
    procs: list[subprocess.Popen[str]] = []

    def start(script: str, *args: str) -> subprocess.Popen[str]:
        path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, PYTHONPATH=path)
        proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(WAIT)
        assert proc.stdout is not None
        proc.stdout.close()


def stdout_lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    """A reader thread feeding the child's stdout lines into a queue (so reads can time out)."""
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stream = proc.stdout

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, name=f"stdout-{proc.pid}", daemon=True).start()
    return lines


class ChunkLog:
    """A sink that records every write (and checks they never overlap in time), then forwards."""

    def __init__(self, inner: ArraySink | HashSink) -> None:
        self.inner = inner
        self.writes: list[tuple[str, int, int, str]] = []  # name, offset, nbytes, digest
        self._lock = threading.Lock()
        self._in_flight = 0
        self.max_in_flight = 0

    def write(self, ref: TensorRef, offset: int, data: memoryview) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            self.writes.append((ref.name, offset, data.nbytes, chunk_digest(data)))
            self.inner.write(ref, offset, data)
        finally:
            with self._lock:
                self._in_flight -= 1

    def offsets(self, name: str) -> list[int]:
        return [offset for n, offset, _, _ in self.writes if n == name]


def sample_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "weights": rng.standard_normal((37, 29)),
        "bias32": rng.standard_normal(101).astype(np.float32),
        "counts": rng.integers(-(2**15), 2**15, size=(5, 6, 7), dtype=np.int16),
        "mask": rng.random(333) > 0.5,
        "bytes": rng.integers(0, 256, size=4001, dtype=np.uint8),
        "complex": (rng.standard_normal(50) + 1j * rng.standard_normal(50)).astype(np.complex64),
        "big_endian": np.arange(300, dtype=">i4"),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 4), dtype=np.float64),
        "transposed": rng.standard_normal((20, 30)).T,  # not C-contiguous: served from a copy
    }


def raw_connection(service: DownloadService, token: str) -> socket.socket:
    sock = socket.create_connection(service.address, timeout=WAIT)
    wire.client_handshake(sock, bytes.fromhex(token))
    return sock


def request(op: str, **fields: Any) -> bytes:
    return wire.encode_message(wire.Message(TOPIC, {"op": op, **fields}))


def send(sock: socket.socket, op: str, **fields: Any) -> None:
    wire.send_frame(sock, request(op, **fields))


def receive(sock: socket.socket) -> wire.Message:
    return wire.decode_message(memoryview(wire.recv_frame(sock, idle_timeout=WAIT)))


def test_round_trip_is_byte_exact_for_every_dtype_and_shape(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline
) -> None:
    tensors = sample_tensors()
    service = make_service(chunk_bytes=1000)  # not a multiple of any itemsize
    refs = service.publish(tensors, round=4)
    assert service.pending() == len(tensors)
    sink = ArraySink(refs)

    downloader.download_all(refs, sink)

    for ref in refs:
        original = tensors[ref.name]
        got = sink.arrays[ref.name]
        assert got.dtype == original.dtype and got.shape == original.shape, ref.name
        assert got.tobytes() == original.tobytes(), ref.name
        assert ref.nbytes == original.nbytes and ref.round == 4 and ref.site == "site-1"
    assert service.wait_all_downloaded(WAIT)
    assert service.pending() == 0
    served = {e.detail["name"] for e in timeline.events(EventKind.TENSOR_SERVED, round=4)}
    assert served == set(tensors)
    assert len(timeline.events(EventKind.DOWNLOAD_DONE, site="site-1")) == len(tensors)
    assert not timeline.events(EventKind.DOWNLOAD_RETRY)


def test_tensor_ref_survives_json_and_hides_its_token(make_service: ServiceFactory) -> None:
    (ref,) = make_service().publish({"w": np.ones((2, 3))}, round=0)

    assert TensorRef.from_json(json.loads(json.dumps(ref.to_json()))) == ref
    assert ref.token not in repr(ref)
    for broken in (
        {k: v for k, v in ref.to_json().items() if k != "checksum"},
        {**ref.to_json(), "nbytes": True},
        {**ref.to_json(), "token": "not hex"},
        {**ref.to_json(), "address": ["127.0.0.1"]},
    ):
        with pytest.raises(ValueError, match="malformed tensor ref"):
            TensorRef.from_json(broken)


def test_zero_copy_chunk_frame_matches_the_wire_encoding() -> None:
    payload = {"op": "chunk", "tensor_id": "site-1/0/w/x", "offset": 4096, "digest": "ab" * 16}
    blob = memoryview(bytes(range(256)) * 3)

    parts = _frame_parts(payload, blob)

    assert b"".join(parts) == wire.encode_message(wire.Message(TOPIC, payload, (bytes(blob),)))
    assert parts[1] is blob


def test_the_reader_decodes_chunks_in_place_and_the_pipe_decoder_copies() -> None:
    body = bytearray(wire.encode_message(wire.Message(TOPIC, {"op": "chunk"}, (b"abc", b"defg"))))

    in_place = wire.decode_message_view(body)
    copied = wire.decode_message(body)
    body[-4:] = b"WXYZ"

    assert [bytes(b) for b in in_place.blobs] == [b"abc", b"WXYZ"], "views into the buffer"
    assert copied.blobs == (b"abc", b"defg"), "copies outlive the buffer"
    assert in_place.payload == copied.payload == {"op": "chunk"}


def test_checksum_covers_every_chunk_in_order() -> None:
    data = memoryview(bytes(range(256)) * 10)  # 2560 bytes: chunks of 1000, 1000, 560
    digests = chunk_digests(data, 1000)

    assert digests == [
        chunk_digest(data[0:1000]),
        chunk_digest(data[1000:2000]),
        chunk_digest(data[2000:]),
    ]
    checksum = tensor_checksum(digests)
    assert len(checksum) == 2 * DIGEST_SIZE
    assert tensor_checksum([digests[1], digests[0], digests[2]]) != checksum, "order matters"
    assert tensor_checksum(digests[:2]) != checksum, "a missing chunk is caught"
    flipped = bytearray(data)
    flipped[1500] ^= 0x80
    assert tensor_checksum(chunk_digests(memoryview(flipped), 1000)) != checksum
    assert tensor_checksum(chunk_digests(data, 512)) != checksum, "the chunk size is part of it"


def test_a_tensor_that_is_not_the_published_one_fails_without_retry(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline
) -> None:
    service = make_service(chunk_bytes=256)
    (ref,) = service.publish({"w": np.arange(100.0)}, round=3)
    # Every chunk matches the digest it travels with, but not the tensor the ref announced.
    wrong = dataclasses.replace(ref, checksum="0" * 2 * DIGEST_SIZE)

    with pytest.raises(DownloadError, match=r"^failed to download from site-1: checksum of "):
        downloader.download(wrong, ArraySink())

    assert not timeline.events(EventKind.DOWNLOAD_RETRY), "another attempt gets the same bytes"
    assert not timeline.events(EventKind.DOWNLOAD_DONE)
    assert service.pending() == 1, "never confirmed: the gate stays closed"


def test_gate_is_open_at_once_when_nothing_was_published(make_service: ServiceFactory) -> None:
    service = make_service()
    start = time.monotonic()
    assert service.wait_all_downloaded(timeout=60.0)
    assert time.monotonic() - start < 1.0
    assert service.pending() == 0


def test_gate_times_out_while_a_tensor_is_pending(make_service: ServiceFactory) -> None:
    service = make_service()
    service.publish({"w": np.ones(10)}, round=1)
    start = time.monotonic()
    assert service.wait_all_downloaded(timeout=0.2) is False
    assert 0.2 <= time.monotonic() - start < WAIT
    assert service.pending() == 1


def test_each_round_has_its_own_gate(
    make_service: ServiceFactory, downloader: Downloader
) -> None:
    """A round-1 tensor left unconfirmed does not hold round 2's gate shut."""
    service = make_service()
    service.publish({"w": np.ones(10)}, round=1)
    assert service.wait_downloaded(1, timeout=0.1) is GateOutcome.TIMED_OUT
    (ref,) = service.publish({"w": np.full(10, 2.0)}, round=2)
    downloader.download(ref, ArraySink())
    assert service.wait_downloaded(2, timeout=WAIT) is GateOutcome.COMPLETED
    assert service.pending(1) == 1 and service.pending(2) == 0 and service.pending() == 1
    assert service.wait_downloaded(3, timeout=0) is GateOutcome.COMPLETED, "nothing published"
    service.close()
    assert service.wait_downloaded(1, timeout=WAIT) is GateOutcome.CLOSED
    assert service.wait_downloaded(2, timeout=0) is GateOutcome.COMPLETED


def test_gate_blocks_until_every_tensor_is_downloaded(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline
) -> None:
    all_done = threading.Event()
    service = make_service(chunk_bytes=256, on_all_downloaded=all_done.set)
    tensors = {"a": np.arange(1000.0), "b": np.arange(500, dtype=np.int64)}
    refs = service.publish(tensors, round=2)
    sink = HashSink()
    waiting, opened = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def gate() -> None:
        waiting.set()
        seen["ok"] = service.wait_all_downloaded(timeout=WAIT)
        seen["bytes_at_open"] = dict(sink.nbytes)
        opened.set()

    served: queue.Queue[str] = queue.Queue()
    unsubscribe = timeline.subscribe(
        lambda event: (
            served.put(event.detail["tensor_id"]) if event.kind is EventKind.TENSOR_SERVED else None
        )
    )
    waiter = threading.Thread(target=gate, name="test-gate-waiter")
    waiter.start()
    try:
        assert waiting.wait(WAIT)
        downloader.download(refs[0], sink)
        assert served.get(timeout=WAIT) == refs[0].tensor_id
        assert service.pending() == 1
        assert not opened.wait(0.2), "gate opened with a tensor still pending"
        assert not all_done.is_set()

        downloader.download(refs[1], sink)
        assert opened.wait(WAIT)
    finally:
        waiter.join(WAIT)
        unsubscribe()
    assert seen["ok"] is True
    assert seen["bytes_at_open"] == {ref.tensor_id: ref.nbytes for ref in refs}
    assert all_done.is_set()
    assert [sink.sha256(ref) for ref in refs] == [
        hashlib.sha256(np.ascontiguousarray(tensors[ref.name])).hexdigest() for ref in refs
    ]


def test_closing_the_service_releases_a_waiting_gate(make_service: ServiceFactory) -> None:
    service = make_service()
    service.publish({"w": np.ones(10)}, round=1)
    result: list[bool] = []
    waiting = threading.Event()

    def gate() -> None:
        waiting.set()
        result.append(service.wait_all_downloaded(timeout=60.0))

    waiter = threading.Thread(target=gate, name="test-gate-waiter")
    waiter.start()
    assert waiting.wait(WAIT)
    service.close()
    service.close()  # idempotent
    waiter.join(WAIT)
    assert result == [False]
    with pytest.raises(RuntimeError, match="closed"):
        service.publish({"x": np.ones(1)}, round=2)


def test_wrong_token_is_rejected_and_the_service_still_serves(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline
) -> None:
    service = make_service()
    tensors = {"w": np.arange(64.0)}
    (ref,) = service.publish(tensors, round=1)
    forged = dataclasses.replace(ref, token=wire.new_secret().hex())

    with pytest.raises(wire.WireError):
        raw_connection(service, forged.token).close()
    stolen_sink = ArraySink()
    with pytest.raises(DownloadError, match=r"^failed to download from site-1: "):
        downloader.download(forged, stolen_sink)

    assert stolen_sink.arrays == {}
    assert service.pending() == 1
    assert len(timeline.events(EventKind.FRAME_REJECTED, site="site-1")) >= 1 + 3
    sink = ArraySink()
    downloader.download(ref, sink)
    assert np.array_equal(sink.arrays["w"], tensors["w"])
    assert service.wait_all_downloaded(WAIT)  # the ack precedes the gate by a moment


def test_unknown_tensor_id_gets_an_error_and_changes_nothing(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline
) -> None:
    service = make_service(chunk_bytes=100)
    other_site = make_service(site="site-2")
    (ref,) = service.publish({"w": np.arange(50, dtype=np.int32)}, round=1)
    (foreign,) = other_site.publish({"w": np.arange(50, dtype=np.int32)}, round=1)

    with raw_connection(service, ref.token) as sock:
        for bad_id in ("no-such-tensor", foreign.tensor_id):
            send(sock, "get", tensor_id=bad_id, offset=0)
            reply = receive(sock)
            assert reply.payload["op"] == "error" and bad_id in reply.payload["reason"]
            send(sock, "done", tensor_id=bad_id, checksum=foreign.checksum)
            assert receive(sock).payload["op"] == "error"
        send(sock, "done", tensor_id=ref.tensor_id, checksum="0" * 32)
        assert "checksum mismatch" in receive(sock).payload["reason"]
        assert service.pending() == 1 and other_site.pending() == 1

        # The same connection still serves the real tensor.
        send(sock, "get", tensor_id=ref.tensor_id, offset=0)
        data = bytearray()
        while (frame := receive(sock)).payload["op"] == "chunk":
            assert frame.payload["offset"] == len(data)
            data += frame.blobs[0]
        assert frame.payload["op"] == "eof"
        assert bytes(data) == np.arange(50, dtype=np.int32).tobytes()
        assert service.pending() == 1  # fetched, not yet confirmed
        send(sock, "done", tensor_id=ref.tensor_id, checksum=ref.checksum)
        assert receive(sock).payload["op"] == "ack"
    assert service.wait_all_downloaded(WAIT)

    with pytest.raises(DownloadError, match=r"failed to download from site-2: service refused"):
        misdirected = dataclasses.replace(foreign, address=service.address, token=ref.token)
        downloader.download(misdirected, ArraySink())
    assert not timeline.events(EventKind.DOWNLOAD_RETRY), "a refusal is not worth a retry"
    assert other_site.pending() == 1


VIOLATIONS: dict[str, Callable[[TensorRef], bytes]] = {
    "garbage": lambda ref: b"\x00\x00\x00\xffjunk",
    "wrong-topic": lambda ref: wire.encode_message(wire.Message(wire.Topic.TASK, {"op": "get"})),
    "negative-offset": lambda ref: request("get", tensor_id=ref.tensor_id, offset=-1),
    "offset-past-end": lambda ref: request("get", tensor_id=ref.tensor_id, offset=ref.nbytes + 1),
    "offset-inside-a-chunk": lambda ref: request("get", tensor_id=ref.tensor_id, offset=1),
    "string-offset": lambda ref: request("get", tensor_id=ref.tensor_id, offset="0"),
    "unknown-op": lambda ref: request("delete", tensor_id=ref.tensor_id),
}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_protocol_violation_closes_only_that_connection(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline, violation: str
) -> None:
    service = make_service()
    (ref,) = service.publish({"w": np.arange(10.0)}, round=1)
    bystander = raw_connection(service, ref.token)
    try:
        with raw_connection(service, ref.token) as sock:
            wire.send_frame(sock, VIOLATIONS[violation](ref))
            with pytest.raises((wire.ConnectionClosed, ConnectionResetError)):
                receive(sock)
        assert len(timeline.events(EventKind.FRAME_REJECTED, site="site-1")) == 1
        assert service.pending() == 1
        send(bystander, "get", tensor_id=ref.tensor_id, offset=ref.nbytes)
        assert receive(bystander).payload["op"] == "eof"
    finally:
        bystander.close()
    sink = ArraySink()
    downloader.download(ref, sink)
    assert np.array_equal(sink.arrays["w"], np.arange(10.0))


class FlipOnceService(DownloadService):
    """Flips one bit of the chunk at ``flip_offset`` the first time it is sent."""

    flip_offset = 3 * 512

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flipped = threading.Event()

    def _chunk_payload(self, ref: TensorRef, offset: int, data: memoryview) -> bytes | memoryview:
        if offset != self.flip_offset or self.flipped.is_set():
            return data
        self.flipped.set()
        corrupt = bytearray(data)
        corrupt[len(corrupt) // 2] ^= 0x10
        return bytes(corrupt)


def test_corrupted_chunk_is_retried_and_never_reaches_the_sink(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline
) -> None:
    tensors = {"w": np.random.default_rng(3).standard_normal(1000), "b": np.arange(700.0)}
    service = make_service(FlipOnceService, chunk_bytes=512)
    refs = service.publish(tensors, round=5)
    log = ChunkLog(ArraySink())

    downloader.download_all(refs, log)

    assert isinstance(service, FlipOnceService) and service.flipped.is_set()
    (retry,) = timeline.events(EventKind.DOWNLOAD_RETRY)
    assert "digest" in retry.detail["reason"] and retry.detail["offset"] == 3 * 512
    assert retry.site == "site-1" and retry.round == 5
    for ref in refs:
        # Resumed at the corrupt chunk: every offset exactly once, in order.
        assert log.offsets(ref.name) == list(range(0, ref.nbytes, 512))
    original = tensors["w"].view(np.uint8)
    for name, offset, nbytes, digest in log.writes:
        if name == "w":
            assert digest == chunk_digest(original[offset : offset + nbytes].tobytes())
    assert isinstance(log.inner, ArraySink)
    for name, array in tensors.items():
        assert log.inner.arrays[name].tobytes() == array.tobytes()
    assert service.wait_all_downloaded(WAIT)


@pytest.mark.parametrize(
    "spec",
    [
        "download.before_chunk[site=site-1]=2*off->1*raise(ConnectionResetError)",
        "downloader.after_chunk[site=site-1]=2*off->1*raise(TimeoutError)",
    ],
    ids=["service-side", "downloader-side"],
)
def test_failure_at_a_chunk_failpoint_resumes_without_repeating_a_byte(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline, spec: str
) -> None:
    tensors = {"w": np.arange(1000.0)}
    service = make_service(chunk_bytes=1024)
    (ref,) = service.publish(tensors, round=1)
    log = ChunkLog(ArraySink())

    with failpoints.scoped(spec):
        downloader.download(ref, log)

    assert len(timeline.events(EventKind.DOWNLOAD_RETRY, site="site-1")) == 1
    assert log.offsets("w") == list(range(0, ref.nbytes, 1024))
    assert isinstance(log.inner, ArraySink)
    assert log.inner.arrays["w"].tobytes() == tensors["w"].tobytes()
    assert service.wait_all_downloaded(WAIT)


def test_closed_service_fails_naming_the_site_after_the_retries(
    make_service: ServiceFactory, downloader: Downloader, timeline: Timeline
) -> None:
    service = make_service(site="site-3")
    (ref,) = service.publish({"w": np.ones(100)}, round=2)
    service.close()
    sink = ArraySink()

    with pytest.raises(DownloadError, match=r"^failed to download from site-3: .*after 2 retries"):
        downloader.download(ref, sink)

    assert sink.arrays == {}
    assert len(timeline.events(EventKind.DOWNLOAD_RETRY, site="site-3", round=2)) == 2
    (failed,) = timeline.events(EventKind.DOWNLOAD_FAILED, site="site-3", round=2)
    assert "Connection" in failed.detail["reason"]


def test_cancel_cuts_the_retry_wait_short(make_service: ServiceFactory, timeline: Timeline) -> None:
    service = make_service()
    (ref,) = service.publish({"w": np.ones(100)}, round=1)
    service.close()
    downloader = Downloader(retries=5, retry_delay=60.0, timeline=timeline)
    unsubscribe = timeline.subscribe(
        lambda event: downloader.cancel() if event.kind is EventKind.DOWNLOAD_RETRY else None
    )
    start = time.monotonic()
    try:
        with pytest.raises(DownloadError, match="from site-1: download cancelled"):
            downloader.download(ref, ArraySink())
    finally:
        unsubscribe()
    assert time.monotonic() - start < WAIT


def test_64mib_tensor_streams_with_memory_bounded_by_one_chunk(
    make_service: ServiceFactory, downloader: Downloader
) -> None:
    chunk = 1024 * 1024
    service = make_service(chunk_bytes=chunk)
    big = np.arange(8 * 1024 * 1024, dtype=np.float64)
    (ref,) = service.publish({"big": big}, round=1)
    assert ref.nbytes == 64 * 1024 * 1024
    log = ChunkLog(HashSink())

    tracemalloc.start()
    try:
        downloader.download(ref, log)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert log.max_in_flight == 1
    assert max(nbytes for _, _, nbytes, _ in log.writes) == chunk
    assert log.offsets("big") == list(range(0, ref.nbytes, chunk))
    assert isinstance(log.inner, HashSink)
    assert log.inner.sha256(ref) == hashlib.sha256(big).hexdigest()
    assert peak < 4 * chunk, f"download peaked at {peak / chunk:.1f} chunks of memory"
    assert service.wait_all_downloaded(WAIT)


SERVICE_SCRIPT = """
    import json, sys
    import numpy as np
    from reference_impl.download import DownloadService

    service = DownloadService(site="site-7", chunk_bytes=int(sys.argv[1]))
    rng = np.random.default_rng(7)
    tensors = {"w": rng.standard_normal((256, 33)), "n": rng.integers(0, 100, 50, dtype=np.int32)}
    refs = service.publish(tensors, round=3)
    print(json.dumps([ref.to_json() for ref in refs]), flush=True)
    opened = service.wait_all_downloaded(timeout=30.0)
    print("gate-open" if opened else "gate-timeout", flush=True)
    service.close()
    sys.exit(0 if opened else 3)
"""


def subprocess_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"w": rng.standard_normal((256, 33)), "n": rng.integers(0, 100, 50, dtype=np.int32)}


def test_service_in_a_subprocess_serves_until_its_gate_opens(
    spawn: Callable[..., subprocess.Popen[str]], downloader: Downloader
) -> None:
    proc = spawn(SERVICE_SCRIPT, "4096")
    lines = stdout_lines(proc)
    refs = [TensorRef.from_json(raw) for raw in json.loads(lines.get(timeout=WAIT))]
    sink = ArraySink(refs)

    downloader.download_all(refs, sink)

    assert lines.get(timeout=WAIT) == "gate-open"
    assert proc.wait(WAIT) == 0
    for name, array in subprocess_tensors().items():
        assert sink.arrays[name].tobytes() == array.tobytes()
        assert sink.arrays[name].dtype == array.dtype


def test_killed_service_process_fails_the_download_naming_its_site(
    spawn: Callable[..., subprocess.Popen[str]], downloader: Downloader
) -> None:
    proc = spawn(SERVICE_SCRIPT, "1024")
    lines = stdout_lines(proc)
    refs = [TensorRef.from_json(raw) for raw in json.loads(lines.get(timeout=WAIT))]

    class KillOnFirstChunk(ArraySink):
        def write(self, ref: TensorRef, offset: int, data: memoryview) -> None:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(WAIT)
            super().write(ref, offset, data)

    sink = KillOnFirstChunk()
    with pytest.raises(DownloadError, match=r"^failed to download from site-7: "):
        downloader.download(refs[0], sink)
    assert proc.returncode == -signal.SIGKILL
    original = memoryview(subprocess_tensors()["w"]).cast("B")
    assert refs[0].checksum == tensor_checksum(chunk_digests(original, refs[0].chunk_bytes))
