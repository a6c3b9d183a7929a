"""The pipe: an authenticated, framed, bidirectional channel client <-> training subprocess.

The client side *listens* once per executor and lives across rounds; every fresh
training subprocess *connects* to the same address.  Each accepted socket must
pass the mutual HMAC handshake of :mod:`reference_impl.wire` (in its own
short-lived thread, with a bounded timeout, so a peer that never answers cannot
hold up the others) before it counts as a peer.

Every authenticated connection has its own reader thread; all of them feed one
inbox, so a message from an older connection (a stale END, say) can still sit
there when the next round starts: that is what :meth:`Pipe.clear` is for.
:meth:`Pipe.send` writes to the newest connection that is still open.

A connection that breaks the protocol (bad handshake, oversized, garbage,
truncated or too-slow frame) is closed on its own, with a warning naming the
peer and the reason and a ``FRAME_REJECTED`` timeline event; the pipe goes on
serving everyone else.

Each connection has two socket objects over one descriptor: the reader's and
the writer's.  A socket's timeout belongs to the Python object, so the reader
can wait for frames with its own deadlines while a sender keeps its own bound;
both objects always carry a finite timeout, which keeps the shared descriptor
consistently non-blocking.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType

from pytest_flrelia.contract.failpoints import failpoint
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.threads import join_all
from reference_impl.wire import (
    FRAME_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    MAX_FRAME_BYTES,
    ConnectionClosed,
    Message,
    WireError,
    client_handshake,
    decode_message,
    encode_message,
    recv_frame,
    send_frame,
    server_handshake,
)

logger = logging.getLogger(__name__)

PIPE_ADDRESS_ENV = "FLRELIA_PIPE_ADDRESS"
"""``host:port`` of the client's pipe, passed to the training subprocess."""
PIPE_SECRET_ENV = "FLRELIA_PIPE_SECRET"
"""The pipe's shared secret in hex, passed to the training subprocess."""

SEND_TIMEOUT = 30.0
"""How long a ``send()`` waits for a peer that does not read; then the connection is dropped."""
CONNECT_TIMEOUT = 5.0
"""How long ``Pipe.connect`` waits for the TCP connection and the handshake."""
READ_IDLE_POLL = 1.0
"""How often an idle reader checks whether its connection is closing (close also wakes it)."""
ACCEPT_POLL = 1.0
"""How often the accept thread checks whether the pipe is closing (close also wakes it)."""
ACCEPT_ERROR_BACKOFF = 0.1
"""Pause after a failed ``accept()`` (e.g. out of descriptors) so the loop cannot spin."""
JOIN_TIMEOUT = 2.0
"""Upper bound for ``close()`` to wait for the pipe's threads."""


class PipeError(Exception):
    """``send`` on a closed or broken pipe, or a pipe that cannot connect."""


class PeerNotConnected(PipeError):
    """``send`` before any peer has connected and authenticated."""


def secret_to_env(secret: bytes) -> str:
    """The value of :data:`PIPE_SECRET_ENV` for ``secret``."""
    return secret.hex()


def secret_from_env(value: str) -> bytes:
    """The secret encoded by :func:`secret_to_env`; ``ValueError`` names the variable."""
    try:
        secret = bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{PIPE_SECRET_ENV} must be a hex string, got {value!r}") from None
    if not secret:
        raise ValueError(f"{PIPE_SECRET_ENV} is empty")
    return secret


def address_to_env(address: tuple[str, int]) -> str:
    """The value of :data:`PIPE_ADDRESS_ENV` for ``(host, port)``."""
    host, port = address
    return f"{host}:{port}"


def address_from_env(value: str) -> tuple[str, int]:
    """Parse ``host:port`` (the host may itself contain colons, as IPv6 does)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{PIPE_ADDRESS_ENV} must be host:port, got {value!r}")
    return host, int(port)


def _check_secret(secret: bytes) -> None:
    if not secret:
        raise ValueError("the pipe secret must not be empty: use wire.new_secret()")


def _peer_name(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _shutdown(sock: socket.socket) -> None:
    """Wake every thread blocked on ``sock``; the owner thread closes it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError as exc:  # not connected (any more): nobody is blocked on it
        logger.debug("shutdown of %s: %s", sock, exc)


class _Connection:
    """One authenticated socket: a reader object, a writer object and a send lock.

    Only the reader thread closes the sockets (on its way out), so a descriptor
    is never closed under a thread still blocked on it; others call
    :meth:`shutdown`, which wakes that thread.
    """

    def __init__(self, sock: socket.socket, peer: str, send_timeout: float) -> None:
        # send_frame writes the length prefix and the body separately: without
        # TCP_NODELAY, Nagle's algorithm and delayed ACKs hold each frame ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.peer = peer
        self._writer = sock.dup()
        self._writer.settimeout(send_timeout)
        self._send_lock = threading.Lock()
        self._closing = threading.Event()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def send(self, body: bytes, pipe_name: str) -> None:
        with self._send_lock:
            if self._closing.is_set():
                raise PipeError(f"pipe {pipe_name}: connection to {self.peer} is closed")
            try:
                send_frame(self._writer, body)
            except OSError as exc:
                # A partial frame may be on the wire: the stream is unusable.
                self.shutdown()
                raise PipeError(f"pipe {pipe_name}: send to {self.peer} failed: {exc}") from exc

    def shutdown(self) -> None:
        self._closing.set()
        _shutdown(self.sock)

    def release(self) -> None:
        """Close both socket objects; called once, by the reader thread as it ends."""
        self._closing.set()
        with self._send_lock:
            self._writer.close()
        self.sock.close()


class Pipe:
    """An authenticated message channel; see the module docstring for the model."""

    def __init__(
        self,
        *,
        name: str,
        secret: bytes,
        address: tuple[str, int],
        max_frame_bytes: int,
        timeline: Timeline | None,
        frame_timeout: float,
        handshake_timeout: float,
        send_timeout: float,
    ) -> None:
        """Use :meth:`listen` or :meth:`connect`."""
        _check_secret(secret)
        self.name = name
        self._secret = secret
        self._address = address
        self._max_frame_bytes = max_frame_bytes
        self._timeline = timeline
        self._frame_timeout = frame_timeout
        self._handshake_timeout = handshake_timeout
        self._send_timeout = send_timeout
        # One condition guards all mutable state below; waiters on the inbox,
        # on a peer and on close all wake on its notifications.
        self._cond = threading.Condition()
        self._inbox: deque[Message] = deque()
        self._connections: list[_Connection] = []  # oldest first; send() uses the last
        self._handshaking: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._serial = 0
        self._ever_connected = False
        self._closed = False
        self._listener: socket.socket | None = None

    # -- construction -------------------------------------------------------

    @classmethod
    def listen(
        cls,
        secret: bytes,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        timeline: Timeline | None = None,
        frame_timeout: float = FRAME_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> Pipe:
        """Listen on ``host`` (port 0: any free one) and accept peers in a background thread."""
        _check_secret(secret)
        listener = socket.create_server((host, port))
        listener.settimeout(ACCEPT_POLL)
        bound = listener.getsockname()
        pipe = cls(
            name=name,
            secret=secret,
            address=(str(bound[0]), int(bound[1])),
            max_frame_bytes=max_frame_bytes,
            timeline=timeline,
            frame_timeout=frame_timeout,
            handshake_timeout=handshake_timeout,
            send_timeout=send_timeout,
        )
        pipe._listener = listener
        thread = threading.Thread(
            target=pipe._accept_loop, args=(listener,), name=f"pipe-{name}-accept", daemon=True
        )
        with pipe._cond:
            pipe._threads.append(thread)
            thread.start()
        logger.debug("pipe %s: listening on %s", name, address_to_env(pipe._address))
        return pipe

    @classmethod
    def connect(
        cls,
        address: tuple[str, int],
        secret: bytes,
        *,
        name: str,
        timeout: float = CONNECT_TIMEOUT,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        timeline: Timeline | None = None,
        frame_timeout: float = FRAME_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> Pipe:
        """Connect to a listening pipe and authenticate; ``PipeError`` if either fails."""
        _check_secret(secret)
        peer = address_to_env(address)
        try:
            sock = socket.create_connection(address, timeout=timeout)
        except OSError as exc:
            raise PipeError(f"pipe {name}: cannot connect to {peer}: {exc}") from exc
        pipe = cls(
            name=name,
            secret=secret,
            address=address,
            max_frame_bytes=max_frame_bytes,
            timeline=timeline,
            frame_timeout=frame_timeout,
            handshake_timeout=timeout,
            send_timeout=send_timeout,
        )
        try:
            client_handshake(sock, secret, timeout)
            connection = _Connection(sock, peer, send_timeout)
        except (WireError, OSError) as exc:
            sock.close()
            pipe._reject(peer, f"handshake failed: {exc}")
            pipe.close()
            raise PipeError(f"pipe {name}: handshake with {peer} failed: {exc}") from exc
        pipe._register(connection)
        return pipe

    # -- public API ---------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """Where the pipe listens (listener) or what it connected to (client)."""
        return self._address

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    @property
    def peer_connected(self) -> bool:
        """True while at least one authenticated connection is open."""
        with self._cond:
            return not self._closed and bool(self._connections)

    @property
    def pending(self) -> int:
        """How many received messages are unread."""
        with self._cond:
            return len(self._inbox)

    def send(self, message: Message) -> None:
        """Write ``message`` to the newest open connection.

        Raises :class:`PipeError` if there is none or the write fails (that
        connection is then dropped); a payload that is not JSON is a
        programming error and raises ``TypeError``.
        """
        try:
            failpoint("pipe.before_send")
        except OSError as exc:  # an injected socket error fails this send as a real one would
            raise PipeError(f"pipe {self.name}: send failed: {exc}") from exc
        body = encode_message(message)
        if len(body) > self._max_frame_bytes:
            raise PipeError(
                f"pipe {self.name}: message {message.topic!r} of {len(body)} bytes exceeds "
                f"the {self._max_frame_bytes}-byte frame cap"
            )
        with self._cond:
            if self._closed:
                raise PipeError(f"pipe {self.name} is closed")
            if not self._connections:
                if not self._ever_connected:
                    raise PeerNotConnected(f"pipe {self.name}: no peer has connected yet")
                raise PipeError(f"pipe {self.name}: the peer disconnected")
            connection = self._connections[-1]
        connection.send(body, self.name)

    def receive(
        self, timeout: float | None, *, cancel: threading.Event | None = None
    ) -> Message | None:
        """The next message, or None on timeout, on ``cancel`` or once closed and drained.

        ``cancel`` lets a consumer (the pipe handler) leave promptly when it
        stops: set the event, then call :meth:`wake_receivers`.
        """
        taken: list[Message] = []
        self.deliver(taken.append, timeout, cancel=cancel)
        return taken[0] if taken else None

    def deliver(
        self,
        sink: Callable[[Message], None],
        timeout: float | None,
        *,
        cancel: threading.Event | None = None,
    ) -> bool:
        """Like :meth:`receive`, but hand the message to ``sink`` before the pipe lets go.

        The message leaves the inbox and enters ``sink`` under the pipe's lock, so
        there is no moment at which it is in neither place: once no peer is
        connected and nothing is :attr:`pending`, everything the peer sent is in
        the consumer's hands (the executor relies on it to decide that a result
        never came).  ``sink`` must be quick and must not call into this pipe.
        True if a message was delivered.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if cancel is not None and cancel.is_set():
                    return False
                if self._inbox:
                    sink(self._inbox.popleft())
                    return True
                if self._closed:
                    return False
                if deadline is None:
                    self._cond.wait()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def wake_receivers(self) -> None:
        """Make threads blocked in :meth:`receive` re-check their ``cancel`` event."""
        with self._cond:
            self._cond.notify_all()

    def clear(self) -> int:
        """Drop every unread message (stale status events at a round boundary); returns how many."""
        with self._cond:
            dropped = len(self._inbox)
            self._inbox.clear()
        if dropped:
            logger.debug("pipe %s: cleared %d unread messages", self.name, dropped)
        return dropped

    def wait_pending(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` messages are unread; False on timeout or close."""
        with self._cond:
            return self._cond.wait_for(
                lambda: len(self._inbox) >= count or self._closed, timeout
            ) and len(self._inbox) >= count

    def wait_for_no_peer(self, timeout: float) -> bool:
        """Wait until every connection has closed and its reader has delivered all it read:
        after that, nothing more can arrive from a peer that is gone.  False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or not self._connections, timeout)

    def wait_for_peer(self, timeout: float) -> bool:
        """Wait until an authenticated connection is open; False on timeout or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or bool(self._connections), timeout)
            return not self._closed and bool(self._connections)

    def close(self) -> None:
        """Close the listener and every connection, then join the threads (bounded). Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            connections = list(self._connections)
            handshaking = list(self._handshaking)
            threads = list(self._threads)
            listener = self._listener
            self._cond.notify_all()
        if listener is not None:
            _shutdown(listener)  # wakes accept() on Linux; ACCEPT_POLL is the backstop
        for connection in connections:
            connection.shutdown()
        for sock in handshaking:
            _shutdown(sock)
        join_all(threads, JOIN_TIMEOUT, f"pipe {self.name}", logger)

    def __enter__(self) -> Pipe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pipe({self.name!r}, {address_to_env(self._address)})"

    # -- threads ------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while not self.closed:
                try:
                    sock, raw_address = listener.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if self.closed:
                        break
                    logger.warning("pipe %s: accept failed: %s", self.name, exc)
                    with self._cond:
                        self._cond.wait_for(lambda: self._closed, ACCEPT_ERROR_BACKOFF)
                    continue
                self._start_handshake(sock, _peer_name(raw_address))
        finally:
            listener.close()

    def _start_handshake(self, sock: socket.socket, peer: str) -> None:
        with self._cond:
            if self._closed:
                sock.close()
                return
            self._serial += 1
            self._handshaking.add(sock)
            self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(
                target=self._handshake,
                args=(sock, peer),
                name=f"pipe-{self.name}-handshake-{self._serial}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def _handshake(self, sock: socket.socket, peer: str) -> None:
        try:
            server_handshake(sock, self._secret, self._handshake_timeout)
            connection = _Connection(sock, peer, self._send_timeout)
        except (WireError, OSError) as exc:  # TimeoutError is an OSError
            with self._cond:
                self._handshaking.discard(sock)
                closing = self._closed
            sock.close()
            if not closing:
                self._reject(peer, f"handshake failed: {exc}")
            return
        self._register(connection)

    def _register(self, connection: _Connection) -> None:
        """Make an authenticated connection the newest one and start its reader."""
        with self._cond:
            self._handshaking.discard(connection.sock)
            if self._closed:
                connection.release()
                return
            self._serial += 1
            self._connections.append(connection)
            self._ever_connected = True
            thread = threading.Thread(
                target=self._read_loop,
                args=(connection,),
                name=f"pipe-{self.name}-reader-{self._serial}",
                # Daemon: a pipe nobody closed must not keep the process alive.
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
            self._cond.notify_all()
        logger.debug("pipe %s: peer %s authenticated", self.name, connection.peer)

    def _read_loop(self, connection: _Connection) -> None:
        rejection: str | None = None
        try:
            while True:
                try:
                    body = recv_frame(
                        connection.sock,
                        max_frame_bytes=self._max_frame_bytes,
                        idle_timeout=READ_IDLE_POLL,
                        frame_timeout=self._frame_timeout,
                    )
                except TimeoutError:
                    if connection.closing:
                        break
                    continue
                message = decode_message(memoryview(body))
                with self._cond:
                    self._inbox.append(message)
                    self._cond.notify_all()
        except ConnectionClosed:
            if not connection.closing:
                logger.debug("pipe %s: %s closed the connection", self.name, connection.peer)
        except (WireError, ValueError, RecursionError) as exc:
            # decode_message lets ValueError (over-long integers) and RecursionError
            # (deeply nested JSON) out of json.loads: both are malformed frames.
            rejection = f"{type(exc).__name__}: {exc}"
        except OSError as exc:
            logger.info("pipe %s: connection to %s lost: %s", self.name, connection.peer, exc)
        except Exception as exc:  # a reader must never die silently
            logger.exception("pipe %s: reader for %s failed", self.name, connection.peer)
            rejection = f"unexpected {type(exc).__name__}: {exc}"
        finally:
            own_close = connection.closing
            self._drop(connection)
        if rejection is not None and not own_close:
            self._reject(connection.peer, rejection)

    def _drop(self, connection: _Connection) -> None:
        with self._cond:
            if connection in self._connections:
                self._connections.remove(connection)
            self._cond.notify_all()
        connection.shutdown()  # wakes a sender blocked on a peer that stopped reading
        connection.release()

    def _reject(self, peer: str, reason: str) -> None:
        logger.warning("pipe %s: closed the connection from %s: %s", self.name, peer, reason)
        if self._timeline is not None:
            self._timeline.record(
                EventKind.FRAME_REJECTED, pipe=self.name, peer=peer, reason=reason
            )
