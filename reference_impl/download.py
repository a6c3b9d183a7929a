"""Tensor download: the service in the training subprocess, the downloader in the server.

The subprocess publishes its result tensors on a :class:`DownloadService` and
sends only :class:`TensorRef` records through the pipe; the server pulls the
bytes with a :class:`Downloader` over a separate authenticated socket.  The
agent's download gate (:meth:`DownloadService.wait_downloaded`) keeps the
subprocess alive until the server confirmed every tensor of the round.

Protocol (every frame is a :class:`~reference_impl.wire.Message` with topic
``"download"``; the operation is ``payload["op"]``)::

    downloader -> service   get   {tensor_id, offset}
    service -> downloader   chunk {tensor_id, offset, digest} + the chunk bytes as one blob
                            ... one per chunk from offset to the end ...
                            eof   {tensor_id}
    downloader -> service   done  {tensor_id, checksum}
    service -> downloader   ack   {tensor_id}
    either way              error {reason}   (unknown tensor, checksum mismatch)

Integrity is a two-level hash list, computed once when the tensor is published:
each chunk's xxh3-128 digest travels with the chunk and is checked before the
chunk reaches the sink, so a corrupt chunk is never aggregated; the tensor's
``checksum`` (in its ref, so it travels through the pipe, not the download
socket) is the xxh3-128 of its chunk digests in order, checked at eof before
``done``: a missing, extra or reordered chunk fails it.  The service only
sends and the downloader reads each byte once more than a raw socket would, at
tens of GB/s: the check costs next to nothing against the transfer.  xxh3 is
not a MAC; it only has to catch corruption, because the connection is already
authenticated by the HMAC handshake.  A failed attempt resumes at the first
unverified chunk, so a sink never sees a byte twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

import numpy as np
import xxhash

from pytest_flrelia.contract import job as config
from pytest_flrelia.contract.failpoints import failpoint
from pytest_flrelia.contract.faults import LAST_CHUNK
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl import wire

logger = logging.getLogger(__name__)

TOPIC = "download"
DIGEST_SIZE = 16
"""Bytes of a chunk digest and of a tensor checksum (xxh3-128)."""
HEADER_SLACK = 64 * 1024
"""Room for a frame's JSON header on top of its chunk."""
MAX_CHUNK_BYTES = wire.MAX_FRAME_BYTES - HEADER_SLACK
REQUEST_MAX_BYTES = 64 * 1024
"""Largest request frame the service reads: requests carry no blobs."""
CONNECTION_IDLE_TIMEOUT = 120.0
"""How long the service keeps a connection that sends no request."""
SEND_TIMEOUT = 30.0
"""How long the service waits for a stalled downloader to take one chunk."""
JOIN_TIMEOUT = 2.0
ACCEPT_BACKOFF = 0.1

CORRUPT_CHUNK = "download.corrupt_chunk"
"""Failpoint that corrupts a served chunk; ``.<k>`` and ``.last`` suffixes pick the chunk."""

_LENGTH = struct.Struct(">I")


class GateOutcome(Enum):
    """How a download gate ended: three different stories, logged and recorded apart."""

    COMPLETED = "completed"
    """The server confirmed every tensor of the round."""
    TIMED_OUT = "timed_out"
    """The timeout passed with tensors of the round still unconfirmed."""
    CLOSED = "closed"
    """The service closed first (the process is ending); the tensors were not all confirmed."""


class DownloadError(Exception):
    """A tensor could not be downloaded; the message names the site."""


@dataclass(frozen=True)
class TensorRef:
    """Where and how to fetch one published tensor; travels inside pipe messages."""

    site: str
    round: int
    name: str
    tensor_id: str
    address: tuple[str, int]
    token: str = field(repr=False)
    """Hex of the service's secret: the downloader's half of the handshake."""
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    checksum: str
    """xxh3-128 hex over the tensor's chunk digests in order: see :func:`tensor_checksum`."""
    chunk_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "round": self.round,
            "name": self.name,
            "tensor_id": self.tensor_id,
            "address": [self.address[0], self.address[1]],
            "token": self.token,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "nbytes": self.nbytes,
            "checksum": self.checksum,
            "chunk_bytes": self.chunk_bytes,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TensorRef:
        """Parse what :meth:`to_json` wrote; a malformed record raises ``ValueError``."""
        try:
            host, port = raw["address"]
            ref = cls(
                site=_typed(raw["site"], str),
                round=_typed(raw["round"], int),
                name=_typed(raw["name"], str),
                tensor_id=_typed(raw["tensor_id"], str),
                address=(_typed(host, str), _typed(port, int)),
                token=_typed(raw["token"], str),
                shape=tuple(_typed(n, int) for n in raw["shape"]),
                dtype=_typed(raw["dtype"], str),
                nbytes=_typed(raw["nbytes"], int),
                checksum=_typed(raw["checksum"], str),
                chunk_bytes=_typed(raw["chunk_bytes"], int),
            )
            bytes.fromhex(ref.token)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed tensor ref {dict(raw)!r}: {exc!r}") from None
        if ref.chunk_bytes <= 0 or ref.nbytes < 0:
            raise ValueError(f"malformed tensor ref {dict(raw)!r}: bad sizes")
        return ref


def _typed(value: Any, kind: type[Any]) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{value!r} is not a {kind.__name__}")
    return value


def _no_delay(sock: socket.socket) -> None:
    """Disable Nagle: ``wire.send_frame`` writes the length prefix separately, and Nagle
    plus delayed ACK would stall every request/reply exchange by ~40 ms."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def chunk_digest(data: bytes | memoryview) -> bytes:
    """A chunk's digest: xxh3-128 runs at memory speed and catches every flipped bit."""
    return xxhash.xxh3_128_digest(data)


def chunk_digests(data: memoryview, chunk_bytes: int) -> list[bytes]:
    """The digest of every ``chunk_bytes`` slice of ``data``, in order."""
    return [
        chunk_digest(data[start : start + chunk_bytes])
        for start in range(0, len(data), chunk_bytes)
    ]


def bytes_digest(data: bytes | memoryview) -> str:
    """xxh3-128 (hex) of a whole tensor's bytes: what a sink must have received."""
    return xxhash.xxh3_128_hexdigest(data)


def tensor_checksum(digests: Iterable[bytes]) -> str:
    """The tensor's checksum (hex): xxh3-128 over its chunk digests, in order."""
    combined = xxhash.xxh3_128()
    for digest in digests:
        combined.update(digest)
    return combined.hexdigest()


def _request(op: str, **fields: Any) -> bytes:
    return wire.encode_message(wire.Message(TOPIC, {"op": op, **fields}))


def _frame_parts(payload: Mapping[str, Any], blob: memoryview) -> list[bytes | memoryview]:
    """The body of a one-blob frame, as header + the blob itself, so a chunk is never copied.

    Mirrors :func:`wire.encode_message` (a test pins the two to the same bytes).
    """
    header = json.dumps(
        {"topic": TOPIC, "payload": dict(payload), "blobs": [blob.nbytes]},
        separators=(",", ":"),
    ).encode()
    return [_LENGTH.pack(len(header)) + header, blob]


# --------------------------------------------------------------------------- service


@dataclass
class _Published:
    ref: TensorRef
    data: memoryview | None
    """The tensor's bytes; dropped once downloaded so a long-lived service does not grow."""
    digests: list[bytes]
    """One per chunk, computed at publish: the service only sends."""
    bytes_digest: str = ""
    """xxh3-128 (hex) of the whole tensor's bytes at publish, for the timeline."""
    downloaded: bool = False


class _ProtocolError(Exception):
    """The peer broke the download protocol: close its connection."""


class DownloadService:
    """Serves published tensors in verified chunks until the server confirmed each one.

    Lives in the training subprocess.  One accept thread, one thread per
    connection; each connection must pass the HMAC handshake with the
    service's token first.  A connection that breaks the protocol is closed and
    nothing else changes.  ``on_all_downloaded`` runs in a connection thread
    after the last ack was sent; it must be quick and must not raise.
    """

    def __init__(
        self,
        *,
        site: str,
        chunk_bytes: int = config.DOWNLOAD_CHUNK_BYTES,
        timeline: Timeline | None = None,
        host: str = "127.0.0.1",
        on_all_downloaded: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be in 1..{MAX_CHUNK_BYTES}, got {chunk_bytes}")
        self.site = site
        self.chunk_bytes = chunk_bytes
        self._timeline = timeline
        self._on_all_downloaded = on_all_downloaded
        self._token = wire.new_secret()
        self._cond = threading.Condition()
        self._tensors: dict[str, _Published] = {}
        self._pending: Counter[int] = Counter()
        """Unconfirmed tensors per round: each round's gate waits for its own only."""
        self._closed = False
        self._closing = threading.Event()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._conn_ids = itertools.count(1)
        self._listener = socket.create_server((host, 0))
        host_name, port = self._listener.getsockname()[:2]
        self.address: tuple[str, int] = (str(host_name), int(port))
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"download-service-{site}-accept", daemon=True
        )
        self._accept_thread.start()

    # ---- public API

    def publish(self, tensors: Mapping[str, np.ndarray], round: int) -> list[TensorRef]:
        """Make ``tensors`` downloadable; returns one ref per tensor, in order.

        A C-contiguous array is served from its own memory, so the caller must
        not modify it until it is downloaded (the chunk digests would catch it).
        """
        prepared = []
        for name, value in tensors.items():
            array = np.asarray(value)
            if array.dtype.hasobject or array.dtype.fields is not None:
                raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot travel as bytes")
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            data = array.reshape(-1).view(np.uint8).data
            digests = chunk_digests(data, self.chunk_bytes)
            ref = TensorRef(
                site=self.site,
                round=round,
                name=name,
                tensor_id=f"{self.site}/{round}/{name}/{uuid.uuid4().hex}",
                address=self.address,
                token=self._token.hex(),
                shape=tuple(int(n) for n in array.shape),
                dtype=array.dtype.str,
                nbytes=data.nbytes,
                checksum=tensor_checksum(digests),
                chunk_bytes=self.chunk_bytes,
            )
            prepared.append(_Published(ref, data, digests, bytes_digest(data)))
        with self._cond:
            if self._closed:
                raise RuntimeError(f"download service of {self.site} is closed")
            for entry in prepared:
                self._tensors[entry.ref.tensor_id] = entry
                self._pending[round] += 1
        return [entry.ref for entry in prepared]

    def pending(self, round: int | None = None) -> int:
        """How many published tensors (of ``round``, or of every round) the server has
        not confirmed yet.

        A tensor counts as confirmed once its ack was sent, so the count may
        drop a moment after ``Downloader.download`` returned; synchronize on
        :meth:`wait_downloaded`, not on this number.
        """
        with self._cond:
            return self._pending[round] if round is not None else self._pending.total()

    def wait_downloaded(self, round: int, timeout: float) -> GateOutcome:
        """The download gate of ``round``: wait until the server confirmed each of its tensors.

        Only that round's tensors count: a launch-once process whose earlier gate
        timed out with a tensor left unconfirmed still opens the next round's gate on
        the next round's own tensors.  COMPLETED at once when none is pending.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._pending[round] == 0 or self._closed, timeout)
            if self._pending[round] == 0:
                return GateOutcome.COMPLETED
            return GateOutcome.CLOSED if self._closed else GateOutcome.TIMED_OUT

    def wait_all_downloaded(self, timeout: float) -> bool:
        """True once every tensor of every round was confirmed; False when ``timeout``
        passes or the service is closed first.  (The agent's gate is per round:
        :meth:`wait_downloaded`.)"""
        with self._cond:
            self._cond.wait_for(lambda: self._pending.total() == 0 or self._closed, timeout)
            return self._pending.total() == 0

    def close(self) -> None:
        """Stop listening, drop every connection and wake the gate.  Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            connections = dict(self._connections)
            self._cond.notify_all()
        # shutdown() wakes a thread blocked in accept()/recv() on Linux; close() alone does not.
        for sock in [self._listener, *connections]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                logger.debug("shutdown of %s socket: %s", self.site, exc)
        self._listener.close()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in [self._accept_thread, *connections.values()]:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    logger.warning("thread %s still running after close()", thread.name)

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- override point for faults

    def _chunk_payload(self, ref: TensorRef, offset: int, data: memoryview) -> bytes | memoryview:
        """The bytes sent for one chunk: ``data`` itself, or a corrupted copy.

        Returning anything but ``data`` counts as a corrupted chunk: the downloader
        drops the connection at it, so :meth:`_stream` sends the rest of that
        stream as it is without asking again (a chunk nobody reads must not use up
        a fault's count).  The ``download.corrupt_chunk`` failpoints (``N*return``)
        flip one bit in the middle of the chunk, after its digest was computed:
        the bare name at any chunk, ``download.corrupt_chunk.<k>`` only at the
        tensor's k-th chunk (1-based), ``download.corrupt_chunk.last`` only at its last.
        """
        if self._corrupts(ref, offset):
            corrupted = bytearray(data)
            if corrupted:
                corrupted[len(corrupted) // 2] ^= 0x01
            return bytes(corrupted)
        return data

    def _corrupts(self, ref: TensorRef, offset: int) -> bool:
        site, round = self.site, ref.round
        index = offset // ref.chunk_bytes + 1
        last = offset + ref.chunk_bytes >= ref.nbytes
        return (
            failpoint(CORRUPT_CHUNK, site=site, round=round)
            or failpoint(f"{CORRUPT_CHUNK}.{index}", site=site, round=round)
            or (last and failpoint(f"{CORRUPT_CHUNK}.{LAST_CHUNK}", site=site, round=round))
        )

    # ---- threads

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, peer = self._listener.accept()
            except OSError as exc:
                if self._closed:
                    return
                logger.warning("download service %s: accept failed: %s", self.site, exc)
                self._closing.wait(ACCEPT_BACKOFF)  # e.g. out of file descriptors: do not spin
                continue
            _no_delay(sock)
            with self._cond:
                if self._closed:
                    sock.close()
                    return
                thread = threading.Thread(
                    target=self._serve_connection,
                    args=(sock, peer),
                    name=f"download-service-{self.site}-conn-{next(self._conn_ids)}",
                    daemon=True,
                )
                self._connections[sock] = thread
            thread.start()

    def _serve_connection(self, sock: socket.socket, peer: Any) -> None:
        try:
            wire.server_handshake(sock, self._token)
            while not self._closed:
                try:
                    body = wire.recv_frame(
                        sock,
                        max_frame_bytes=REQUEST_MAX_BYTES,
                        idle_timeout=CONNECTION_IDLE_TIMEOUT,
                    )
                except wire.ConnectionClosed:
                    return
                except TimeoutError:
                    logger.info("download service %s: dropping idle connection %s", self.site, peer)
                    return
                self._handle(sock, wire.decode_message(memoryview(body)))
        except (wire.WireError, _ProtocolError) as exc:
            self._reject(peer, f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            if not self._closed:
                logger.info("download service %s: connection %s lost: %s", self.site, peer, exc)
        except Exception as exc:  # e.g. a raise(...) failpoint: lose this connection, log why
            logger.exception("download service %s: connection %s failed", self.site, peer)
            if self._timeline is not None:
                self._timeline.record(
                    EventKind.ERROR, site=self.site, where="download service", error=repr(exc)
                )
        finally:
            sock.close()
            with self._cond:
                self._connections.pop(sock, None)

    def _reject(self, peer: Any, reason: str) -> None:
        logger.warning("download service %s: closing connection %s: %s", self.site, peer, reason)
        if self._timeline is not None:
            self._timeline.record(
                EventKind.FRAME_REJECTED, site=self.site, channel="download", reason=reason
            )

    def _handle(self, sock: socket.socket, request: wire.Message) -> None:
        payload = request.payload
        op, tensor_id = payload.get("op"), payload.get("tensor_id")
        if request.topic != TOPIC or request.blobs:
            raise _ProtocolError(f"unexpected {request.topic!r} frame")
        if op not in ("get", "done") or not isinstance(tensor_id, str):
            raise _ProtocolError(f"bad request {dict(payload)!r}")
        with self._cond:
            entry = self._tensors.get(tensor_id)
        if entry is None:
            self._refuse(sock, f"unknown tensor {tensor_id!r}")
        elif op == "get":
            self._stream(sock, entry, payload.get("offset"))
        else:
            self._confirm(sock, entry, payload.get("checksum"))

    def _refuse(self, sock: socket.socket, reason: str) -> None:
        logger.warning("download service %s: %s", self.site, reason)
        wire.send_frame(sock, _request("error", reason=reason))

    def _stream(self, sock: socket.socket, entry: _Published, offset: Any) -> None:
        ref, data = entry.ref, entry.data
        if (
            not isinstance(offset, int)
            or isinstance(offset, bool)
            or not 0 <= offset <= ref.nbytes
            or (offset % ref.chunk_bytes and offset != ref.nbytes)  # chunks start at multiples
        ):
            raise _ProtocolError(f"bad offset {offset!r} for {ref.tensor_id}")
        if data is None:
            # Downloaded and released; a downloader whose ack got lost resumes at the end.
            if offset < ref.nbytes:
                self._refuse(sock, f"tensor {ref.tensor_id!r} was downloaded already")
                return
            data = memoryview(b"")
        sock.settimeout(SEND_TIMEOUT)
        corrupted = False  # the downloader stops reading at a corrupt chunk
        for start in range(offset, ref.nbytes, ref.chunk_bytes):
            chunk = data[start : start + ref.chunk_bytes]
            digest = entry.digests[start // ref.chunk_bytes].hex()
            sent = chunk if corrupted else self._chunk_payload(ref, start, chunk)
            corrupted = corrupted or sent is not chunk
            blob = memoryview(sent).cast("B")
            failpoint("download.before_chunk", site=self.site, round=ref.round)
            payload = {"op": "chunk", "tensor_id": ref.tensor_id, "offset": start, "digest": digest}
            wire.send_frame(sock, _frame_parts(payload, blob))
            failpoint("download.after_chunk", site=self.site, round=ref.round)
        wire.send_frame(sock, _request("eof", tensor_id=ref.tensor_id))

    def _confirm(self, sock: socket.socket, entry: _Published, checksum: Any) -> None:
        ref = entry.ref
        if checksum != ref.checksum:
            self._refuse(sock, f"checksum mismatch for {ref.tensor_id!r}")
            return
        # Ack before opening the gate: once the gate opens the process may exit at
        # once, and the ack must already sit in the kernel's send buffer by then.
        wire.send_frame(sock, _request("ack", tensor_id=ref.tensor_id))
        with self._cond:
            if entry.downloaded:
                return
            entry.downloaded = True
            entry.data = None
            self._pending[ref.round] -= 1
            if not self._pending[ref.round]:
                del self._pending[ref.round]  # a long-lived service does not grow per round
            all_done = self._pending.total() == 0
            self._cond.notify_all()
        if self._timeline is not None:
            self._timeline.record(
                EventKind.TENSOR_SERVED,
                site=self.site,
                round=ref.round,
                name=ref.name,
                tensor_id=ref.tensor_id,
                nbytes=ref.nbytes,
                checksum=ref.checksum,
                bytes_digest=entry.bytes_digest,
            )
        if all_done and self._on_all_downloaded is not None:
            self._on_all_downloaded()


# --------------------------------------------------------------------------- sinks


class ChunkSink(Protocol):
    """Where verified chunks go.  ``data`` is only valid during the call."""

    def write(self, ref: TensorRef, offset: int, data: memoryview) -> None: ...


@runtime_checkable
class DigestingSink(ChunkSink, Protocol):
    """A sink that hashes what it received itself; the downloader reports that digest."""

    def received_digest(self, ref: TensorRef) -> str:
        """:func:`bytes_digest` of the bytes of ``ref`` the sink took, in order."""
        ...


class ArraySink:
    """Assembles whole arrays by name (one site's tensors); for tests and small jobs.

    Arrays are allocated at their first chunk; pass ``refs`` to allocate up
    front (a zero-byte tensor has no chunk).
    """

    def __init__(self, refs: Iterable[TensorRef] = ()) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._owners: dict[str, str] = {}
        for ref in refs:
            self._array(ref)

    def write(self, ref: TensorRef, offset: int, data: memoryview) -> None:
        flat = self._array(ref).reshape(-1).view(np.uint8)
        flat[offset : offset + data.nbytes] = np.frombuffer(data, dtype=np.uint8)

    def _array(self, ref: TensorRef) -> np.ndarray:
        owner = self._owners.setdefault(ref.name, ref.tensor_id)
        if owner != ref.tensor_id:
            raise ValueError(f"two tensors named {ref.name!r}: {owner} and {ref.tensor_id}")
        if ref.name not in self.arrays:
            self.arrays[ref.name] = np.empty(ref.shape, dtype=np.dtype(ref.dtype))
        return self.arrays[ref.name]


class HashSink:
    """Keeps only a running sha256 and byte count per tensor: constant memory."""

    def __init__(self) -> None:
        self._hashes: dict[str, Any] = {}
        self.nbytes: dict[str, int] = {}

    def write(self, ref: TensorRef, offset: int, data: memoryview) -> None:
        seen = self.nbytes.get(ref.tensor_id, 0)
        if offset != seen:
            raise ValueError(f"{ref.tensor_id}: chunk at {offset}, expected {seen}")
        self._hashes.setdefault(ref.tensor_id, hashlib.sha256()).update(data)
        self.nbytes[ref.tensor_id] = seen + data.nbytes

    def sha256(self, ref: TensorRef) -> str:
        return str(self._hashes.get(ref.tensor_id, hashlib.sha256()).hexdigest())


# --------------------------------------------------------------------------- downloader


class _AttemptError(Exception):
    """This attempt failed; a fresh connection may succeed."""


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _AttemptError) else f"{type(exc).__name__}: {exc}"


class _FatalError(Exception):
    """Retrying cannot help (the service refused, or the whole tensor is wrong)."""


@dataclass
class _Progress:
    offset: int
    checksum: xxhash.xxh3_128 = field(default_factory=xxhash.xxh3_128)
    """Running :func:`tensor_checksum` over the digests of the chunks verified so far."""


class _FrameReader:
    """Reads frames into one reusable buffer: memory stays at one chunk per download."""

    def __init__(self, capacity: int) -> None:
        self._buf = bytearray(capacity)
        self._view = memoryview(self._buf)
        self._length = bytearray(_LENGTH.size)

    def read(self, sock: socket.socket, timeout: float) -> wire.Message:
        deadline = time.monotonic() + timeout
        wire.fill(sock, memoryview(self._length), deadline)
        (length,) = _LENGTH.unpack(self._length)
        if not 0 < length <= len(self._buf):
            raise wire.FrameError(f"frame of {length} bytes (capacity {len(self._buf)})")
        wire.fill(sock, self._view[:length], deadline, before=_LENGTH.size)
        return wire.decode_message_view(self._view[:length])


class Downloader:
    """Pulls tensors from download services, verifying every chunk; lives in the server.

    Thread-safe: several sites may be downloaded concurrently with one instance.
    """

    def __init__(
        self,
        *,
        retries: int = config.DOWNLOAD_RETRIES,
        retry_delay: float = config.DOWNLOAD_RETRY_DELAY,
        connect_timeout: float = config.DOWNLOAD_CONNECT_TIMEOUT,
        chunk_timeout: float = 30.0,
        timeline: Timeline | None = None,
    ) -> None:
        self.retries = retries
        self.retry_delay = retry_delay
        self.connect_timeout = connect_timeout
        self.chunk_timeout = chunk_timeout
        self._timeline = timeline
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    def cancel(self) -> None:
        """Abort every download in progress and every later one (job shutdown)."""
        self._cancelled.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                logger.debug("shutdown on cancel: %s", exc)

    def download_all(self, refs: Sequence[TensorRef], sink: ChunkSink) -> None:
        for ref in refs:
            self.download(ref, sink)

    def download(self, ref: TensorRef, sink: ChunkSink) -> None:
        """Fetch ``ref`` into ``sink`` and confirm it to the service.

        Raises :class:`DownloadError` naming the site once ``retries`` retries
        failed, or at once if the service refused the tensor or its checksum is
        wrong (then the sink saw bytes of a bad tensor and must discard them).
        """
        failpoint("downloader.before_download", site=ref.site, round=ref.round)
        self._record(EventKind.DOWNLOAD_START, ref, name=ref.name, nbytes=ref.nbytes)
        progress = _Progress(0)
        reader = _FrameReader(ref.chunk_bytes + HEADER_SLACK)
        attempt = 0
        while True:
            try:
                if self._cancelled.is_set():
                    raise _FatalError("download cancelled")
                self._attempt(ref, sink, progress, reader)
            except _FatalError as exc:
                raise self._failed(ref, str(exc)) from exc
            except (_AttemptError, wire.WireError, OSError) as exc:
                reason = _reason(exc)
                if attempt >= self.retries:
                    raise self._failed(ref, f"{reason} (after {attempt} retries)") from exc
                attempt += 1
                self._record(
                    EventKind.DOWNLOAD_RETRY, ref, reason=reason, attempt=attempt,
                    offset=progress.offset,
                )
                logger.info("download of %s: retry %d after %s", ref.tensor_id, attempt, reason)
                if self._cancelled.wait(self.retry_delay):
                    raise self._failed(ref, f"download cancelled after {reason}") from exc
                continue
            except BaseException as exc:
                self._record(EventKind.DOWNLOAD_FAILED, ref, reason=f"{type(exc).__name__}: {exc}")
                raise
            received = (
                {"bytes_digest": sink.received_digest(ref)}
                if isinstance(sink, DigestingSink)
                else {}
            )
            self._record(
                EventKind.DOWNLOAD_DONE,
                ref,
                name=ref.name,
                nbytes=ref.nbytes,
                checksum=progress.checksum.hexdigest(),
                **received,
            )
            return

    def _failed(self, ref: TensorRef, reason: str) -> DownloadError:
        self._record(EventKind.DOWNLOAD_FAILED, ref, reason=reason)
        return DownloadError(f"failed to download from {ref.site}: {reason}")

    def _record(self, kind: EventKind, ref: TensorRef, **detail: Any) -> None:
        if self._timeline is not None:
            self._timeline.record(
                kind, site=ref.site, round=ref.round, tensor_id=ref.tensor_id, **detail
            )

    def _attempt(
        self, ref: TensorRef, sink: ChunkSink, progress: _Progress, reader: _FrameReader
    ) -> None:
        with socket.create_connection(ref.address, timeout=self.connect_timeout) as sock:
            _no_delay(sock)
            with self._lock:
                self._sockets.add(sock)
            try:
                wire.client_handshake(sock, bytes.fromhex(ref.token), timeout=self.connect_timeout)
                sock.settimeout(self.chunk_timeout)
                get = _request("get", tensor_id=ref.tensor_id, offset=progress.offset)
                wire.send_frame(sock, get)
                while True:
                    message = self._next(sock, reader)
                    op = message.payload.get("op")
                    if op == "eof":
                        break
                    if op != "chunk":
                        raise _AttemptError(f"unexpected {op!r} frame at offset {progress.offset}")
                    self._accept_chunk(ref, sink, progress, message)
                if progress.offset != ref.nbytes:
                    raise _AttemptError(f"stream ended at offset {progress.offset} of {ref.nbytes}")
                if progress.checksum.hexdigest() != ref.checksum:
                    raise _FatalError(f"checksum of {ref.tensor_id} does not match its ref")
                sock.settimeout(self.chunk_timeout)
                wire.send_frame(
                    sock, _request("done", tensor_id=ref.tensor_id, checksum=ref.checksum)
                )
                reply = self._next(sock, reader)
                if reply.payload.get("op") != "ack":
                    raise _AttemptError(f"expected an ack, got {dict(reply.payload)!r}")
            finally:
                with self._lock:
                    self._sockets.discard(sock)

    def _next(self, sock: socket.socket, reader: _FrameReader) -> wire.Message:
        message = reader.read(sock, self.chunk_timeout)
        if message.topic != TOPIC:
            raise _AttemptError(f"unexpected {message.topic!r} frame")
        if message.payload.get("op") == "error":
            raise _FatalError(f"service refused: {message.payload.get('reason')}")
        return message

    def _accept_chunk(
        self, ref: TensorRef, sink: ChunkSink, progress: _Progress, message: wire.Message
    ) -> None:
        offset = progress.offset
        payload = message.payload
        expected = min(ref.chunk_bytes, ref.nbytes - offset)
        if payload.get("tensor_id") != ref.tensor_id or payload.get("offset") != offset:
            raise _AttemptError(f"chunk out of place: {dict(payload)!r}, expected offset {offset}")
        if len(message.blobs) != 1 or len(message.blobs[0]) != expected:
            raise _AttemptError(f"chunk at offset {offset} is not {expected} bytes")
        data = memoryview(message.blobs[0])
        digest = chunk_digest(data)
        if digest.hex() != payload.get("digest"):
            raise _AttemptError(f"corrupt chunk at offset {offset}: digest mismatch")
        sink.write(ref, offset, data)
        progress.checksum.update(digest)
        progress.offset = offset + expected
        self._record(EventKind.DOWNLOAD_CHUNK, ref, offset=offset, nbytes=expected)
        failpoint("downloader.after_chunk", site=ref.site, round=ref.round)
