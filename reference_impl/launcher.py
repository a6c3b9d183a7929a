"""Starting and stopping the training subprocess.

A :class:`Launcher` holds at most one process.  ``launch_task`` starts one only
when none is held, and only ``stop_task`` forgets it, so a caller that launches
before the previous stop finished sees the old (maybe exited) process and gets
``False`` back; the executor's round-boundary event is what prevents that.

How a process is ended is not decided here: :class:`SubprocessLauncher` hands
it to a :class:`~reference_impl.process_stop.StopStrategy`.  The child's output
is logged by a daemon thread that the stop never waits on, so a grandchild
holding the pipe open cannot hang ``stop_task`` (known bug KB12).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import IO, Any

from pytest_flrelia.contract import job as config
from pytest_flrelia.contract.failpoints import failpoint
from pytest_flrelia.contract.timeline import EventKind, Timeline
from reference_impl.child_env import child_environment
from reference_impl.process_stop import GroupStopStrategy, StopStrategy, wait_child_exit

logger = logging.getLogger(__name__)

SUBPROCESS_LOGGER = "reference_impl.subprocess"
"""Parent of the per-launcher loggers the child's output lines go to."""
OUTPUT_DRAIN_TIMEOUT = 1.0
"""How long ``stop_task`` lets the output thread log what is left in the pipe."""
_READ_BYTES = 64 * 1024


class RunStatus(Enum):
    """What ``check_run_status`` sees of the held process."""

    NOT_STARTED = "not_started"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"


class LauncherState(Enum):
    """Where the launcher is in its cycle: idle -> held -> stopping -> idle."""

    IDLE = "idle"
    """No process held: the next ``launch_task`` spawns one."""
    HELD = "held"
    """A process was launched (running or already exited) and not yet stopped."""
    STOPPING = "stopping"
    """``stop_task`` is ending and reaping the held process."""


class Launcher(ABC):
    """Starts the training process for a task and ends it."""

    @abstractmethod
    def launch_task(self, task_name: str, env: Mapping[str, str]) -> bool:
        """Start a process unless one is held; True if one was started."""

    @abstractmethod
    def check_run_status(self) -> RunStatus:
        """The held process's status, without blocking."""

    @abstractmethod
    def wait_for_exit(self, timeout: float) -> bool:
        """Block up to ``timeout`` for the held process to exit by itself; True once it
        has exited (or none is held).  Wakes at the exit, so a caller polling the
        status at a long interval still sees the exit at once."""

    @abstractmethod
    def stop_task(self) -> None:
        """End and forget the held process; idempotent and thread-safe."""

    @abstractmethod
    def needs_deferred_stop(self) -> bool:
        """True when each round's process exits on its own (``launch_once=False``)."""

    @property
    @abstractmethod
    def launch_once(self) -> bool:
        """One process serves every round."""

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """The held process's pid, or None."""


class OutputForwarder:
    """Logs a child's output line by line from a daemon thread.

    The thread waits on two things: the child's output and a wake pipe.  Closing
    the wake pipe makes the thread log what is already buffered and close the
    read end, even while a grandchild still holds the write end open.  The
    thread is a daemon because losing it loses only log lines.
    """

    def __init__(self, stream: IO[bytes], sink: logging.Logger, *, thread_name: str) -> None:
        self._stream = stream
        self._sink = sink
        self._wake_read, self._wake_write = os.pipe()
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float) -> bool:
        """Wake the thread, wait up to ``timeout`` for it; True if it finished."""
        with self._close_lock:
            if not self._closed:
                self._closed = True
                os.close(self._wake_write)  # EOF on the wake pipe is the wake-up
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        fd = self._stream.fileno()
        pending = b""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(fd, selectors.EVENT_READ)
                selector.register(self._wake_read, selectors.EVENT_READ)
                while True:
                    # No timeout: output, EOF, or close() wakes this; it is a daemon.
                    ready = {key.fd for key, _ in selector.select()}
                    if self._wake_read in ready:
                        pending = self._drain(fd, pending)
                        break
                    chunk = os.read(fd, _READ_BYTES)
                    if not chunk:
                        break
                    pending = self._emit(pending + chunk)
        except OSError as error:
            self._sink.warning("output forwarding stopped: %s", error)
        finally:
            if pending:
                self._emit_line(pending)
            self._stream.close()
            os.close(self._wake_read)

    def _drain(self, fd: int, pending: bytes) -> bytes:
        """Log what is readable right now, without waiting for more (bounded)."""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            for _ in range(16):
                if not selector.select(timeout=0):
                    break
                chunk = os.read(fd, _READ_BYTES)
                if not chunk:
                    break
                pending = self._emit(pending + chunk)
        return pending

    def _emit(self, data: bytes) -> bytes:
        """Log every complete line; return the unfinished rest (cut if it grows too long)."""
        *lines, rest = data.split(b"\n")
        for line in lines:
            self._emit_line(line)
        if len(rest) >= _READ_BYTES:  # a progress bar that never prints a newline
            self._emit_line(rest)
            return b""
        return rest

    def _emit_line(self, line: bytes) -> None:
        self._sink.info("%s", line.decode("utf-8", "replace").rstrip("\r"))


class SubprocessLauncher(Launcher):
    """Runs ``command`` in its own session; its output goes to logging.

    The child's pid is its process group id (``start_new_session=True``), which
    is what lets the stop strategy reach the data loaders and workers it starts.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        launch_once: bool,
        name: str,
        stop_strategy: StopStrategy | None = None,
        timeline: Timeline | None = None,
        site: str | None = None,
        cwd: Path | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self._command = list(command)
        self._launch_once = launch_once
        self.name = name
        self._stop_strategy = stop_strategy or GroupStopStrategy(grace=config.STOP_GRACE)
        self._timeline = timeline
        self._site = site
        self._cwd = cwd
        self._base_env = dict(base_env or {})
        self._output_logger = logging.getLogger(f"{SUBPROCESS_LOGGER}.{name}")
        self._state_lock = threading.Lock()
        """Guards ``_state``, ``_process`` and ``_output``; held only briefly."""
        self._stop_lock = threading.Lock()
        """Serialises stops: a second caller waits for the first (bounded by the
        strategy's grace and reap timeouts), then finds nothing held."""
        self._state = LauncherState.IDLE
        self._process: subprocess.Popen[bytes] | None = None
        self._output: OutputForwarder | None = None

    @property
    def launch_once(self) -> bool:
        return self._launch_once

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    @property
    def state(self) -> LauncherState:
        return self._state

    def needs_deferred_stop(self) -> bool:
        return not self._launch_once

    def launch_task(self, task_name: str, env: Mapping[str, str]) -> bool:
        with self._state_lock:
            process = self._process
            launched = process is None
            if process is None:
                process, self._output = self._spawn(env)
                self._process = process
                self._state = LauncherState.HELD
        if not launched:
            logger.info("%s: pid %d still held; skipping %s", self.name, process.pid, task_name)
            self._record(EventKind.LAUNCH_SKIPPED, task=task_name, pid=process.pid)
            return False
        logger.info("%s: launched pid %d for %s", self.name, process.pid, task_name)
        self._record(EventKind.LAUNCH, task=task_name, pid=process.pid)
        return True

    def check_run_status(self) -> RunStatus:
        process = self._process
        if process is None:
            return RunStatus.NOT_STARTED
        returncode = process.poll()
        if returncode is None:
            return RunStatus.RUNNING
        return RunStatus.SUCCESS if returncode == 0 else RunStatus.FAILED

    def wait_for_exit(self, timeout: float) -> bool:
        process = self._process
        return process is None or wait_child_exit(process, timeout)

    def stop_task(self) -> None:
        with self._stop_lock:
            process, output = self._process, self._output
            if process is None:
                return
            failpoint("launcher.before_stop", site=self._site)
            self._transition(LauncherState.STOPPING)
            self._record(EventKind.STOP_REQUESTED, pid=process.pid)
            try:
                returncode = self._stop_strategy.stop(
                    process, lambda sig, target: self._on_signal(process.pid, sig, target)
                )
            except BaseException:
                self._transition(LauncherState.HELD)  # still held: a retry may reap it
                raise
            self._record(EventKind.REAPED, pid=process.pid, returncode=returncode)
            # The group is dead, but a survivor may still hold the pipe's write end:
            # never wait for EOF, wake the output thread and let it close the read end.
            if output is not None and not output.close(OUTPUT_DRAIN_TIMEOUT):
                logger.warning("%s: output thread of pid %d still busy", self.name, process.pid)
            with self._state_lock:
                self._process = None
                self._output = None
                self._state = LauncherState.IDLE

    def _spawn(self, env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], OutputForwarder]:
        process = subprocess.Popen(
            self._command,
            cwd=self._cwd,
            env=self._child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert process.stdout is not None  # stdout=PIPE
        output = OutputForwarder(
            process.stdout, self._output_logger, thread_name=f"launcher-{self.name}-output"
        )
        output.start()
        return process, output

    def _child_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """This process's environment, then ``base_env``, then ``env``.

        Every variable of the parent-to-child protocol
        (:data:`~reference_impl.child_env.PROTOCOL`) is set explicitly, empty unless
        ``base_env`` or ``env`` gives it: none leaks in from this process's environment.
        """
        return child_environment(os.environ, self._base_env, env)

    def _transition(self, state: LauncherState) -> None:
        with self._state_lock:
            self._state = state

    def _on_signal(self, pgid: int, sig: int, target: str) -> None:
        """Record a delivered signal; ``target`` is the whole group or one escaped pid."""
        name = signal.Signals(sig).name
        logger.info("%s: sent %s to a %s of process group %d", self.name, name, target, pgid)
        self._record(EventKind.SIGNAL_SENT, signal=name, target=target, pgid=pgid)

    def _record(self, kind: EventKind, **detail: Any) -> None:
        if self._timeline is not None:
            self._timeline.record(kind, site=self._site, **detail)
