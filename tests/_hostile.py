"""Hostile local peers: an attacker program, and what the tests need around it.

Run as a script (``python tests/_hostile.py '<json spec>'``) this module *is*
the attacker: a separate local process that connects to a pipe listener or a
download service, does one hostile thing, prints one JSON line per phase saying
what it saw, then keeps its sockets until its stdin closes (so the test decides
when the attack ends, and nothing outlives the test that started it).  It
imports only the standard library and :mod:`reference_impl.wire`, so it starts
in a fraction of a second.

Imported by the tests it gives :class:`Attacker` (start one, read its reports,
end it), :class:`RecordingRelay` (a TCP relay that records what a legitimate
client sent, for replay attacks), :class:`LogWaiter` (wait for a log record
from another thread without polling) and, for the training subprocess,
:class:`HeldResultAgent` (an agent that holds its result until it is told).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from reference_impl import wire

WAIT = 10.0
"""Upper bound for anything a test or the attacker waits for; a passing run never reaches it."""
SCRIPT = Path(__file__).resolve()
TESTS_DIR = SCRIPT.parent
GREETING_BYTES = len(wire.MAGIC) + wire.NONCE_BYTES
REPLY_BYTES = wire.NONCE_BYTES + wire.DIGEST_BYTES
"""What a client sends to answer the server's challenge."""
RELEASE_SIGNAL = signal.SIGUSR1
"""Tells a :class:`HeldResultAgent` to send its result."""
HOLD_LIMIT = 20.0
"""A held agent sends its result after this long anyway, so a broken test cannot hang a job."""

Report = dict[str, Any]
Spec = Mapping[str, Any]


# =========================================================================== the attacker


def _connect(spec: Spec) -> socket.socket:
    host, port = spec["address"]
    sock = socket.create_connection((host, port), timeout=WAIT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _name(sock: socket.socket) -> str:
    """How the pipe names this socket in its warnings and FRAME_REJECTED events."""
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _greeting(sock: socket.socket) -> bytes:
    """The server's challenge: MAGIC then a nonce."""
    return bytes(wire.recv_exact(sock, GREETING_BYTES, time.monotonic() + WAIT))


def _send(sock: socket.socket, data: bytes) -> bool:
    """Send what we can; False if the server already cut us off."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _until_closed(sock: socket.socket, timeout: float = WAIT) -> tuple[bool, int]:
    """Read until the server closes us: (closed within ``timeout``, bytes it sent meanwhile)."""
    deadline = time.monotonic() + timeout
    received = 0
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:  # reset: the server closed with our bytes unread
            return True, received
        if not data:
            return True, received
        received += len(data)
    return False, received


def _cut_off(sock: socket.socket, peer: str, **seen: Any) -> Report:
    closed, after = _until_closed(sock)
    return {"peer": peer, "closed_by_server": closed, "bytes_after": after, **seen}


def _frame(message: wire.Message) -> bytes:
    body = wire.encode_message(message)
    return len(body).to_bytes(4, "big") + body


def _no_secret(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Speaks the frame format but skips the handshake: sends a RESULT straight away."""
    sock = _connect(spec)
    held.append(sock)
    greeting = _greeting(sock)
    forged = wire.Message(wire.Topic.RESULT, {"site": "site-1", "round": 1, "refs": []})
    _send(sock, _frame(forged))
    yield _cut_off(sock, _name(sock), magic_ok=greeting.startswith(wire.MAGIC))


def _wrong_secret(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    sock = _connect(spec)
    held.append(sock)
    peer = _name(sock)
    try:
        wire.client_handshake(sock, os.urandom(32), WAIT)
    except (wire.WireError, OSError) as exc:
        yield _cut_off(sock, peer, handshake_error=f"{type(exc).__name__}: {exc}")
        return
    yield {"peer": peer, "handshake_error": None}


def _truncated_handshake(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Answers with part of a reply, then half-closes."""
    sock = _connect(spec)
    held.append(sock)
    _greeting(sock)
    _send(sock, os.urandom(int(spec["send_bytes"])))
    sock.shutdown(socket.SHUT_WR)
    yield _cut_off(sock, _name(sock))


def _garbage(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Random bytes instead of a handshake, without even reading the challenge."""
    sock = _connect(spec)
    held.append(sock)
    _send(sock, os.urandom(int(spec["send_bytes"])))
    closed, received = _until_closed(sock)
    # The challenge left before our garbage arrived; anything beyond it is the server talking.
    yield {
        "peer": _name(sock),
        "closed_by_server": closed,
        "bytes_after": max(0, received - GREETING_BYTES),
    }


def _replay(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Replays every byte a legitimate client once sent, against a fresh challenge."""
    sock = _connect(spec)
    held.append(sock)
    greeting = _greeting(sock)
    _send(sock, bytes.fromhex(spec["recorded"]))
    yield _cut_off(sock, _name(sock), nonce=greeting[len(wire.MAGIC) :].hex())


def _secret_in_clear(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Sends the shared secret itself (raw, then hex) where the HMAC proof belongs."""
    sock = _connect(spec)
    held.append(sock)
    _greeting(sock)
    secret = bytes.fromhex(spec["secret"])
    _send(sock, secret + secret.hex().encode())
    yield _cut_off(sock, _name(sock))


def _oversized_after_failed_handshake(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """A wrong reply, then at once a frame claiming 4 GiB and a megabyte of its body."""
    sock = _connect(spec)
    held.append(sock)
    _greeting(sock)
    sent = _send(sock, os.urandom(REPLY_BYTES) + b"\xff\xff\xff\xff" + bytes(1 << 20))
    yield _cut_off(sock, _name(sock), sent_everything=sent)


def _oversized_after_valid_handshake(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """A compromised peer (it has the secret) claims a frame far over the cap."""
    sock = _connect(spec)
    held.append(sock)
    wire.client_handshake(sock, bytes.fromhex(spec["secret"]), WAIT)
    _send(sock, int(spec["claim"]).to_bytes(4, "big") + bytes(4096))
    yield _cut_off(sock, _name(sock))


def _flood(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Opens many connections at once and answers none of the challenges."""
    socks = [_connect(spec) for _ in range(int(spec["connections"]))]
    held.extend(socks)
    greeted = sum(_greeting(s).startswith(wire.MAGIC) for s in socks)
    yield {"peers": [_name(s) for s in socks], "greeted": greeted}
    yield {"closed_by_server": sum(_until_closed(s)[0] for s in socks)}


def _slowloris_handshake(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Dribbles a reply one byte per ``interval`` seconds, far slower than any timeout."""
    sock = _connect(spec)
    held.append(sock)
    peer = _name(sock)
    _greeting(sock)
    yield {"peer": peer, "phase": "dribbling"}
    started = time.monotonic()
    sent, closed = 0, False
    for byte in os.urandom(REPLY_BYTES):
        if not _send(sock, bytes([byte])):
            closed = True
            break
        sent += 1
        # The pause between bytes is the attack; the server hanging up ends it early.
        readable, _, _ = select.select([sock], [], [], float(spec["interval"]))
        if readable:
            closed = _until_closed(sock)[0]
            break
    yield {
        "peer": peer,
        "sent": sent,
        "closed_by_server": closed,
        "seconds": time.monotonic() - started,
    }


def _forge(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """A compromised peer: a valid handshake, then one forged message, then a clean close."""
    sock = _connect(spec)
    held.append(sock)
    peer = _name(sock)
    wire.client_handshake(sock, bytes.fromhex(spec["secret"]), WAIT)
    message = wire.Message(spec["topic"], spec["payload"])
    wire.send_frame(sock, wire.encode_message(message))
    # Half-close and drain: closing with unread heartbeats would reset the
    # connection and could discard the forged frame before the pipe read it.
    sock.shutdown(socket.SHUT_WR)
    closed, _ = _until_closed(sock)
    yield {"peer": peer, "sent": True, "closed": closed}


def _download(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Talks to a download service: handshake with ``token`` (none: skip it), then requests."""
    sock = _connect(spec)
    held.append(sock)
    port = sock.getsockname()[1]
    token: str | None = spec.get("token")
    requests = [
        wire.encode_message(wire.Message(spec.get("topic", "download"), r))
        for r in spec["requests"]
    ]
    raw = [bytes.fromhex(h) for h in spec.get("raw", [])]
    if token is None:
        _greeting(sock)
        _send(sock, b"".join(len(r).to_bytes(4, "big") + r for r in requests))
        yield _cut_off(sock, _name(sock), port=port, handshake_ok=False, replies=[])
        return
    try:
        wire.client_handshake(sock, bytes.fromhex(token), WAIT)
    except (wire.WireError, OSError) as exc:
        yield _cut_off(
            sock,
            _name(sock),
            port=port,
            handshake_ok=False,
            replies=[],
            handshake_error=f"{type(exc).__name__}: {exc}",
        )
        return
    replies: list[dict[str, Any]] = []
    closed = False
    for data in [*raw, *(len(r).to_bytes(4, "big") + r for r in requests)]:
        if not _send(sock, data):
            closed = True
            break
        try:
            body = wire.recv_frame(sock, max_frame_bytes=1 << 20, idle_timeout=WAIT)
        except (wire.WireError, OSError):
            closed = True
            break
        replies.append(dict(wire.decode_message(body).payload))
    if not closed:
        sock.shutdown(socket.SHUT_WR)
        _until_closed(sock)
    yield {
        "peer": _name(sock),
        "port": port,
        "handshake_ok": True,
        "replies": replies,
        "closed_by_server": closed,
    }


def _download_flood(spec: Spec, held: list[socket.socket]) -> Iterator[Report]:
    """Many connections at once, each answering the challenge with a wrong token."""
    socks = [_connect(spec) for _ in range(int(spec["connections"]))]
    held.extend(socks)
    for sock in socks:
        _greeting(sock)
    for sock in socks:
        _send(sock, os.urandom(REPLY_BYTES))
    yield {
        "ports": [s.getsockname()[1] for s in socks],
        "closed_by_server": sum(_until_closed(s)[0] for s in socks),
    }


ATTACKS: dict[str, Callable[[Spec, list[socket.socket]], Iterator[Report]]] = {
    "no_secret": _no_secret,
    "wrong_secret": _wrong_secret,
    "truncated_handshake": _truncated_handshake,
    "garbage": _garbage,
    "replay": _replay,
    "secret_in_clear": _secret_in_clear,
    "oversized_after_failed_handshake": _oversized_after_failed_handshake,
    "oversized_after_valid_handshake": _oversized_after_valid_handshake,
    "flood": _flood,
    "slowloris_handshake": _slowloris_handshake,
    "forge": _forge,
    "download": _download,
    "download_flood": _download_flood,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    held: list[socket.socket] = []
    try:
        for report in ATTACKS[spec["kind"]](spec, held):
            print(json.dumps(report), flush=True)
    except Exception as exc:  # report it: the test shows what went wrong in the attacker
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    sys.stdin.read()  # the test closes stdin (or dies) when it is done looking
    for sock in held:
        sock.close()
    return 0


# =========================================================================== test side


class Attacker:
    """One attacker subprocess: start it with a spec, read its reports, end it.

    Use as a context manager: leaving it closes stdin and reaps the process
    (killing it if it does not end within :data:`WAIT`).
    """

    def __init__(self, spec: Spec) -> None:
        self.spec = dict(spec)
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT), json.dumps(self.spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read, name=f"attacker-{self.process.pid}-stdout", daemon=True
        )
        self._reader.start()
        self.stderr = ""

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def report(self, timeout: float = WAIT) -> Report:
        """The attacker's next JSON report; fails the test if it crashed or is silent."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"attacker {self.spec['kind']} silent for {timeout} s") from None
        if line is None:
            self.finish()
            raise AssertionError(f"attacker {self.spec['kind']} ended early: {self.stderr}")
        report: Report = json.loads(line)
        assert "error" not in report, f"attacker {self.spec['kind']} failed: {report['error']}"
        return report

    def finish(self) -> int:
        """Let the attacker go (close its stdin) and reap it; returns its exit code."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(WAIT)
        self._reader.join(WAIT)
        if self.process.stderr is not None and not self.process.stderr.closed:
            self.stderr = self.process.stderr.read()
            self.process.stderr.close()
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> Attacker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish()


class RecordingRelay:
    """A loopback TCP relay for one connection that records both directions.

    A legitimate client connects to :attr:`address` instead of the server;
    what it sent (its handshake reply, its frames) can then be replayed.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(WAIT)
        host, port = self._listener.getsockname()[:2]
        self.address: tuple[str, int] = (str(host), int(port))
        self.from_client = bytearray()
        self.from_server = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._threads.append(accept)
        accept.start()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        server = socket.create_connection(self._upstream, timeout=WAIT)
        for sock in (client, server):
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._sockets += [client, server]
        for source, target, record, name in (
            (client, server, self.from_client, "relay-up"),
            (server, client, self.from_server, "relay-down"),
        ):
            thread = threading.Thread(
                target=self._pump, args=(source, target, record), name=name, daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _pump(self, source: socket.socket, target: socket.socket, record: bytearray) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    record += data  # recorded before it is forwarded
                target.sendall(data)
        except OSError:
            pass  # either side went away: the relay's job is over
        finally:
            with contextlib.suppress(OSError):  # already gone
                target.shutdown(socket.SHUT_WR)

    def recorded(self) -> tuple[bytes, bytes]:
        """(client -> server, server -> client) so far."""
        with self._lock:
            return bytes(self.from_client), bytes(self.from_server)

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # not connected any more
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(WAIT)
        for sock in sockets:
            sock.close()


class LogWaiter(logging.Handler):
    """Collects records of one logger that match a pattern; a test can wait for the first."""

    def __init__(self, logger: str, pattern: str) -> None:
        super().__init__(logging.DEBUG)
        self._logger = logging.getLogger(logger)
        self._pattern = re.compile(pattern)
        self.matched: list[logging.LogRecord] = []
        self.times: list[float] = []
        """``time.monotonic()`` of each match, comparable with timeline events."""
        self._seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self._pattern.search(record.getMessage()):
            self.times.append(time.monotonic())
            self.matched.append(record)
            self._seen.set()

    def wait(self, timeout: float = WAIT) -> bool:
        return self._seen.wait(timeout)

    def __enter__(self) -> LogWaiter:
        self._logger.addHandler(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._logger.removeHandler(self)


def subprocess_env_with_tests() -> dict[str, str]:
    """Environment for a training subprocess that must import this module."""
    existing = os.environ.get("PYTHONPATH")
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(TESTS_DIR), existing) if p)}


if __name__ != "__main__":
    # Defined only when imported: the attacker process stays free of numpy and the agent.
    from reference_impl.agent import Agent
    from reference_impl.download import TensorRef
    from reference_impl.messages import Result

    class HeldResultAgent(Agent):
        """An agent that holds its result until :data:`RELEASE_SIGNAL` arrives.

        Lets a test put a forged message in front of the executor while it
        waits for the result, without racing the real one.  The signal handler
        only writes to a self-pipe: the one thing safe to do in it.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._release_r, self._release_w = os.pipe()
            signal.signal(RELEASE_SIGNAL, self._on_release)

        def _on_release(self, signum: int, frame: object) -> None:
            os.write(self._release_w, b"!")

        def _send_result(self, result: Result, refs: list[TensorRef]) -> None:
            readable, _, _ = select.select([self._release_r], [], [], HOLD_LIMIT)
            if not readable:
                logging.getLogger(__name__).warning("result held for %s s; sending it", HOLD_LIMIT)
            super()._send_result(result, refs)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
