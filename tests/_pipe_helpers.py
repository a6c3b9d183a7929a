"""Helpers for the pipe and pipe-handler tests: raw peers, waiters, cleanup.

Everything here is real: a :class:`RawPeer` is a plain TCP socket that can
speak the handshake and send whatever bytes a test wants, which is how the
tests play a hostile or broken peer.  :class:`Network` owns everything a test
opens and tears it down, so nothing outlives its test.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from reference_impl.pipe import SEND_TIMEOUT, Pipe
from reference_impl.pipe_handler import PipeHandler
from reference_impl.wire import (
    FRAME_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    MAX_FRAME_BYTES,
    Message,
    client_handshake,
    decode_message,
    encode_message,
    new_secret,
    recv_frame,
    send_frame,
)

WAIT = 5.0
"""Upper bound for anything a test waits for; a healthy run takes milliseconds."""


class RawPeer:
    """A bare loopback socket to a pipe: authenticates (or not) and sends raw bytes."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT)
        host, port = self.sock.getsockname()[:2]
        self.name = f"{host}:{port}"
        """How the pipe names this peer in its warnings and timeline events."""

    def authenticate(self, secret: bytes) -> RawPeer:
        client_handshake(self.sock, secret, WAIT)
        return self

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_message(self, message: Message) -> None:
        send_frame(self.sock, encode_message(message))

    def receive_message(self) -> Message:
        return decode_message(memoryview(recv_frame(self.sock, idle_timeout=WAIT)))

    def closed_by_peer(self) -> bool:
        """Read (discarding frames the pipe sends) until the pipe closes us; False on timeout."""
        deadline = time.monotonic() + WAIT
        self.sock.settimeout(WAIT)
        while time.monotonic() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()


class StatusRecorder:
    """A status callback that records what it got and when, and lets a test wait for it."""

    def __init__(self, action: Callable[[Message], None] | None = None) -> None:
        self.messages: list[Message] = []
        self.times: list[float] = []
        self.threads: list[str] = []
        self._action = action
        self._called = threading.Event()

    def __call__(self, message: Message) -> None:
        self.messages.append(message)
        self.times.append(time.monotonic())
        self.threads.append(threading.current_thread().name)
        try:
            if self._action is not None:
                self._action(message)
        finally:
            self._called.set()

    def wait(self, timeout: float = WAIT) -> Message:
        assert self._called.wait(timeout), f"no status event within {timeout} s"
        return self.messages[0]


class ThreadExceptions:
    """Collects exceptions that escape any thread while installed (``threading.excepthook``)."""

    def __init__(self) -> None:
        self.caught: list[threading.ExceptHookArgs] = []
        self._previous = threading.excepthook

    def __enter__(self) -> ThreadExceptions:
        self._previous = threading.excepthook
        threading.excepthook = self.caught.append
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        threading.excepthook = self._previous

    def describe(self) -> list[str]:
        return [f"{a.thread.name if a.thread else '?'}: {a.exc_value!r}" for a in self.caught]


def wait_for_event(
    timeline: Timeline,
    kind: EventKind,
    where: Callable[[Event], bool] = lambda e: True,
    timeout: float = WAIT,
) -> Event:
    """The first event of ``kind`` matching ``where``, recorded before or within ``timeout``."""
    found: list[Event] = []
    seen = threading.Event()

    def listener(event: Event) -> None:
        if event.kind is kind and where(event):
            found.append(event)
            seen.set()

    unsubscribe = timeline.subscribe(listener)
    try:
        for event in timeline.events(kind):
            if where(event):
                return event
        assert seen.wait(timeout), f"no {kind.value} event within {timeout} s"
        return found[0]
    finally:
        unsubscribe()


def live_threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def join_threads(prefix: str, timeout: float = WAIT) -> list[str]:
    """Join every thread whose name starts with ``prefix``; returns the names still alive."""
    deadline = time.monotonic() + timeout
    for thread in live_threads(prefix):
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    return [t.name for t in live_threads(prefix) if t is not threading.current_thread()]


_network_ids = itertools.count(1)


class Network:
    """Pipes, raw peers and handlers of one test; all closed when the test ends.

    Its name (unique in the process) prefixes every pipe and handler name, so
    the threads of this test can be found and joined.
    """

    def __init__(self) -> None:
        self.name = f"net{next(_network_ids)}"
        self.secret = new_secret()
        self.timeline = Timeline("test")
        self.thread_exceptions = ThreadExceptions()
        self._pipes: list[Pipe] = []
        self._peers: list[RawPeer] = []
        self._handlers: list[PipeHandler] = []

    def listen(
        self,
        name: str = "server",
        *,
        frame_timeout: float = FRAME_TIMEOUT,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        send_timeout: float = SEND_TIMEOUT,
    ) -> Pipe:
        pipe = Pipe.listen(
            self.secret,
            name=f"{self.name}-{name}",
            timeline=self.timeline,
            frame_timeout=frame_timeout,
            handshake_timeout=handshake_timeout,
            max_frame_bytes=max_frame_bytes,
            send_timeout=send_timeout,
        )
        self._pipes.append(pipe)
        return pipe

    def connect(self, server: Pipe, name: str = "client", secret: bytes | None = None) -> Pipe:
        pipe = Pipe.connect(
            server.address,
            self.secret if secret is None else secret,
            name=f"{self.name}-{name}",
            timeline=self.timeline,
        )
        self._pipes.append(pipe)
        return pipe

    def raw(self, server: Pipe) -> RawPeer:
        peer = RawPeer(server.address)
        self._peers.append(peer)
        return peer

    def handler(
        self,
        pipe: Pipe,
        name: str,
        *,
        interval: float,
        timeout: float,
        callback: Callable[[Message], None] | None = None,
        cls: type[PipeHandler] = PipeHandler,
    ) -> PipeHandler:
        handler = cls(
            pipe,
            name=f"{self.name}-{name}",
            heartbeat_interval=interval,
            heartbeat_timeout=timeout,
            status_callback=callback,
            timeline=self.timeline,
            site="site-1",
            round=1,
        )
        self._handlers.append(handler)
        return handler

    def rejected(self, peer: str) -> Event:
        """Wait for the pipe to reject ``peer``."""
        return wait_for_event(
            self.timeline, EventKind.FRAME_REJECTED, lambda e: e.detail.get("peer") == peer
        )

    def __enter__(self) -> Network:
        self.thread_exceptions.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for handler in self._handlers:
                handler.stop(close_pipe=False)
            for peer in self._peers:
                peer.close()
            for pipe in self._pipes:
                pipe.close()
            leftover = join_threads(f"pipe-{self.name}") + join_threads(
                f"pipe-handler-{self.name}"
            )
        finally:
            self.thread_exceptions.__exit__(exc_type, exc, tb)
        if exc_type is None:
            assert not leftover, f"threads outlived the test: {leftover}"
            assert not self.thread_exceptions.caught, self.thread_exceptions.describe()


def connected_pair(net: Network, max_frame_bytes: int = MAX_FRAME_BYTES) -> tuple[Pipe, Pipe]:
    """A listening pipe and a pipe connected to it, the handshake done."""
    server = net.listen(max_frame_bytes=max_frame_bytes)
    client = net.connect(server)
    assert server.wait_for_peer(WAIT)
    return server, client
