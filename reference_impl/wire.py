"""The bytes on a socket: message framing and the HMAC challenge handshake.

Shared by the pipe and the download service.  Nothing here owns a thread;
every blocking read has a deadline, so a peer that sends half a frame and then
stalls (slow-loris) costs a bounded wait, never a hung reader.

Frame::

    u32 big-endian body length  (1 .. max_frame_bytes)
    body = u32 header length | header JSON (utf-8) | blob bytes ...

The header is ``{"topic": str, "payload": {...}, "blobs": [len, ...]}``.

Handshake (mutual, the secret never travels)::

    server -> client   MAGIC | nonce_s (32 bytes)
    client -> server   nonce_c (32 bytes) | HMAC(secret, "client" | nonce_s | nonce_c)
    server -> client   HMAC(secret, "server" | nonce_c | nonce_s)

Fresh nonces on both sides make a recorded handshake useless to replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"FLR1"
NONCE_BYTES = 32
DIGEST_BYTES = hashlib.sha256().digest_size
MAX_FRAME_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 1024 * 1024
HANDSHAKE_TIMEOUT = 5.0
FRAME_TIMEOUT = 10.0

_LENGTH = struct.Struct(">I")
_COALESCE_BYTES = 64 * 1024
_INITIAL_BUFFER_BYTES = 64 * 1024
"""A first part up to this size is copied to travel with the length prefix."""


class Topic:
    """Topics of pipe messages.  Plain strings on the wire."""

    HELLO = "hello"  # agent -> client: init() was called
    TASK = "task"
    RESULT = "result"
    HEARTBEAT = "heartbeat"
    END = "END"
    PEER_GONE = "PEER_GONE"

    STATUS = frozenset({END, PEER_GONE})


class WireError(Exception):
    """The peer broke the protocol; the connection must be closed."""


class FrameError(WireError):
    """A frame was malformed, oversized, truncated or too slow."""


class AuthError(WireError):
    """The peer failed the HMAC challenge."""


class ConnectionClosed(WireError):
    """The peer closed the connection cleanly between frames."""


@dataclass(frozen=True)
class Message:
    """A topic, a JSON payload and optional raw binary attachments."""

    topic: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    blobs: tuple[bytes | memoryview, ...] = ()


def new_secret() -> bytes:
    """A fresh per-launch secret."""
    return os.urandom(32)


def encode_message(message: Message) -> bytes:
    """The frame body of ``message`` (without the length prefix)."""
    header = json.dumps(
        {
            "topic": message.topic,
            "payload": dict(message.payload),
            "blobs": [len(b) for b in message.blobs],
        },
        separators=(",", ":"),
    ).encode()
    return b"".join([_LENGTH.pack(len(header)), header, *message.blobs])


def decode_message(body: bytes | bytearray | memoryview) -> Message:
    """Parse a frame body; any inconsistency raises :class:`FrameError`.

    The blobs are copies: the message outlives ``body``.
    """
    topic, payload, blobs = _parse(body)
    return Message(topic=topic, payload=payload, blobs=tuple(bytes(b) for b in blobs))


def decode_message_view(body: bytearray | memoryview) -> Message:
    """Like :func:`decode_message`, but the blobs are views into ``body``: no copy.

    For a reader that reuses its frame buffer (the downloader): the blobs are
    valid only until ``body`` is overwritten.
    """
    topic, payload, blobs = _parse(body)
    return Message(topic=topic, payload=payload, blobs=tuple(blobs))


def _parse(body: bytes | bytearray | memoryview) -> tuple[str, dict[str, Any], list[memoryview]]:
    view = memoryview(body)
    if len(view) < _LENGTH.size:
        raise FrameError(f"frame body of {len(view)} bytes is shorter than its header length")
    (header_len,) = _LENGTH.unpack_from(view)
    if header_len > MAX_HEADER_BYTES or header_len > len(view) - _LENGTH.size:
        raise FrameError(f"header length {header_len} exceeds the frame body")
    start = _LENGTH.size
    try:
        header = json.loads(bytes(view[start : start + header_len]))
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, too deep, too long
        raise FrameError(f"header is not JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("header is not a JSON object")
    topic, payload, blob_lengths = header.get("topic"), header.get("payload"), header.get("blobs")
    if not isinstance(topic, str) or not topic:
        raise FrameError("header has no topic")
    if not isinstance(payload, dict):
        raise FrameError("payload is not a JSON object")
    if not isinstance(blob_lengths, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in blob_lengths
    ):
        raise FrameError("blob lengths are not a list of non-negative integers")
    offset = start + header_len
    if offset + sum(blob_lengths) != len(view):
        raise FrameError("blob lengths do not add up to the frame body")
    blobs = []
    for n in blob_lengths:
        blobs.append(view[offset : offset + n])
        offset += n
    return topic, payload, blobs


def send_frame(sock: socket.socket, body: bytes | Sequence[bytes | memoryview]) -> None:
    """Write one frame; ``body`` may be given in parts to avoid a copy."""
    parts = [body] if isinstance(body, bytes) else list(body)
    length = sum(len(p) for p in parts)
    # The length travels with the first part: a separate tiny write would stall
    # on Nagle's algorithm for a request/reply peer.
    first = parts[0] if parts and len(parts[0]) <= _COALESCE_BYTES else b""
    sock.sendall(_LENGTH.pack(length) + bytes(first))
    for part in parts[1 if first else 0 :]:
        sock.sendall(part)


def recv_exact(sock: socket.socket, n: int, deadline: float | None) -> bytearray:
    """Read exactly ``n`` bytes before ``deadline`` (monotonic) or raise.

    The buffer grows with what actually arrives (doubling from 64 KiB), so a
    peer that announces a large frame and sends nothing costs nothing.
    """
    buf = bytearray(min(n, _INITIAL_BUFFER_BYTES))
    got = 0
    while True:
        with memoryview(buf) as view, view[got:] as rest:
            fill(sock, rest, deadline, before=got, total=n)
        got = len(buf)
        if got == n:
            return buf
        buf.extend(bytes(min(n - got, got)))


def fill(
    sock: socket.socket,
    view: memoryview,
    deadline: float | None,
    *,
    before: int = 0,
    total: int | None = None,
) -> None:
    """Fill ``view`` from ``sock`` before ``deadline`` (monotonic) or raise.

    For a reader with a buffer of its own; ``before`` bytes of a ``total`` arrived
    earlier (the error messages count the whole).  A close before the first byte
    is :class:`ConnectionClosed`; a close or the deadline later is :class:`FrameError`.
    """
    total = before + len(view) if total is None else total
    got = 0
    while got < len(view):
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameError(f"peer sent {before + got} of {total} bytes before the deadline")
            sock.settimeout(remaining)
        try:
            k = sock.recv_into(view[got:])
        except TimeoutError:
            raise FrameError(
                f"peer sent {before + got} of {total} bytes before the deadline"
            ) from None
        if k == 0:
            if before + got == 0:
                raise ConnectionClosed("peer closed the connection")
            raise FrameError(f"connection closed after {before + got} of {total} bytes")
        got += k


def recv_frame(
    sock: socket.socket,
    *,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    idle_timeout: float | None = None,
    frame_timeout: float = FRAME_TIMEOUT,
) -> bytearray:
    """Read one frame body.

    Waits up to ``idle_timeout`` (``None``: forever) for a frame to start,
    raising ``TimeoutError`` if none does; once it started, the whole frame
    must arrive within ``frame_timeout``.
    """
    sock.settimeout(idle_timeout)
    first = sock.recv(1)
    if not first:
        raise ConnectionClosed("peer closed the connection")
    deadline = time.monotonic() + frame_timeout
    try:
        rest = recv_exact(sock, _LENGTH.size - 1, deadline)
    except ConnectionClosed:
        raise FrameError("connection closed inside a length prefix") from None
    (length,) = _LENGTH.unpack(first + rest)
    if length == 0:
        raise FrameError("empty frame")
    if length > max_frame_bytes:
        raise FrameError(f"frame of {length} bytes exceeds the {max_frame_bytes}-byte cap")
    try:
        return recv_exact(sock, length, deadline)
    except ConnectionClosed:
        raise FrameError(
            f"connection closed after the length prefix of a {length}-byte frame"
        ) from None


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, role + first + second, hashlib.sha256).digest()


def server_handshake(
    sock: socket.socket, secret: bytes, timeout: float = HANDSHAKE_TIMEOUT
) -> None:
    """Challenge a freshly accepted peer; raises :class:`WireError` on failure."""
    deadline = time.monotonic() + timeout
    nonce_s = os.urandom(NONCE_BYTES)
    sock.settimeout(timeout)
    sock.sendall(MAGIC + nonce_s)
    reply = recv_exact(sock, NONCE_BYTES + DIGEST_BYTES, deadline)
    nonce_c, mac = bytes(reply[:NONCE_BYTES]), bytes(reply[NONCE_BYTES:])
    if not hmac.compare_digest(mac, _mac(secret, b"client", nonce_s, nonce_c)):
        raise AuthError("peer failed the HMAC challenge")
    sock.sendall(_mac(secret, b"server", nonce_c, nonce_s))


def client_handshake(
    sock: socket.socket, secret: bytes, timeout: float = HANDSHAKE_TIMEOUT
) -> None:
    """Answer the server's challenge and check that the server knows the secret too."""
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    hello = recv_exact(sock, len(MAGIC) + NONCE_BYTES, deadline)
    if bytes(hello[: len(MAGIC)]) != MAGIC:
        raise AuthError("server did not speak the flrelia protocol")
    nonce_s = bytes(hello[len(MAGIC) :])
    nonce_c = os.urandom(NONCE_BYTES)
    sock.sendall(nonce_c + _mac(secret, b"client", nonce_s, nonce_c))
    proof = bytes(recv_exact(sock, DIGEST_BYTES, deadline))
    if not hmac.compare_digest(proof, _mac(secret, b"server", nonce_c, nonce_s)):
        raise AuthError("server failed the HMAC challenge")
