"""One training process of the mini launcher: started in its own process group,
spoken to in JSON lines, stopped with SIGTERM, a grace and SIGKILL, always reaped."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from minilaunch import protocol
from pytest_flrelia.contract import seams
from pytest_flrelia.contract.timeline import EventKind, Timeline

READER_JOIN = 5.0
"""How long a reap waits for the stdout reader (EOF comes once the group is gone)."""


class ChildGone(Exception):
    """The process closed its stdout (it exited or was killed) before answering."""


class ChildSilent(Exception):
    """The process did not answer in time."""


class Aborted(Exception):
    """The run was aborted while waiting for the process."""


_ABORTED: protocol.Message = {"op": "aborted"}


class Child:
    """A started training process and the events its launcher records about it."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        site: str,
        round: int,
        client: Timeline,
        cwd: str,
    ) -> None:
        self.site = site
        self.round = round
        self.client = client
        self._process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # its own process group: a stop reaches every descendant
            text=True,
        )
        self.pid = self._process.pid
        self._inbox: queue.Queue[protocol.Message | None] = queue.Queue()
        self._reader = threading.Thread(
            target=self._read, name=f"mini-read-{self.pid}", daemon=True
        )
        self._reader.start()
        self.reaped = False
        self.record(EventKind.LAUNCH, pid=self.pid)

    def record(self, kind: EventKind, **detail: Any) -> None:
        self.client.record(kind, site=self.site, round=self.round, **detail)

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            try:
                self._inbox.put(json.loads(line))
            except ValueError:  # not our protocol: say so instead of dying mid-stream
                self._inbox.put({"op": "garbage", "line": line[:200]})
        self._inbox.put(None)

    def send(self, message: protocol.Message) -> None:
        assert self._process.stdin is not None
        try:
            protocol.send(self._process.stdin, message)
        except (BrokenPipeError, ValueError) as exc:
            raise ChildGone(f"its stdin is closed ({type(exc).__name__})") from exc

    def receive(self, op: str, timeout: float) -> protocol.Message:
        """The next message, which must be ``op``."""
        try:
            message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise ChildSilent(f"no {op} within {timeout:g}s") from None
        if message is None:
            self._inbox.put(None)  # every later receive sees the end too
            code = self.returncode(timeout=1.0)
            raise ChildGone(f"the process ended (returncode {code}) before its {op}")
        if message is _ABORTED:
            raise Aborted(f"aborted while waiting for {op}")
        if message.get("op") != op:
            raise ChildGone(f"it sent {message.get('op')!r} instead of {op}")
        return message

    def interrupt(self) -> None:
        """Wake a waiting :meth:`receive` (the run was aborted)."""
        self._inbox.put(_ABORTED)

    def returncode(self, timeout: float) -> int | None:
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float) -> int:
        """SIGTERM to the group, ``grace`` seconds, SIGKILL to the group; reap."""
        self.record(EventKind.STOP_REQUESTED, pid=self.pid)
        self._signal_group(signal.SIGTERM)
        if self.returncode(grace) is None:
            self._signal_group(signal.SIGKILL)
        return self.reap()

    def kill_now(self) -> None:
        """SIGKILL the group without waiting (the abort hook: stop before the sweep)."""
        self._signal_group(signal.SIGKILL)
        self.interrupt()

    def reap(self) -> int:
        """Wait for the process, kill what is left of its group, record ``reaped``."""
        code = self._process.wait()
        self._signal_group(signal.SIGKILL, "leftovers")  # descendants it left behind
        self._reader.join(READER_JOIN)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        if not self.reaped:
            self.reaped = True
            self.record(EventKind.REAPED, pid=self.pid, returncode=code)
        return code

    def _signal_group(self, sig: signal.Signals, target: str = "group") -> None:
        try:
            seams.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is gone already: nothing was signalled
        self.record(EventKind.SIGNAL_SENT, signal=sig.name, target=target, pgid=self.pid)


def child_env(base: Mapping[str, str], run_tag: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The child's environment: ours, the run tag, the protocol's variables, and the
    directory holding :mod:`minilaunch` on ``PYTHONPATH``."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (here, base.get("PYTHONPATH", "")) if p)
    return {**base, **run_tag, **extra, "PYTHONPATH": path}
