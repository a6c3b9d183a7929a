"""The faults the child delivers to itself, each recorded only when it really acts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from pytest_flrelia.contract import seams
from pytest_flrelia.contract.faults import FaultSpec, fault_event
from pytest_flrelia.contract.timeline import Timeline

POINT_FAULTS = ("crash", "early_sigterm")
"""Faults that strike at an ``at:`` point of the round."""
HOLD_STDOUT = "import signal\nwhile True:\n    signal.pause()\n"
"""The orphan: a child of the child that keeps the stdout pipe open until killed."""


class ChildFaults:
    def __init__(self, specs: Sequence[FaultSpec], timeline: Timeline, site: str) -> None:
        self._specs = [s for s in specs if s.site in (None, site)]
        self._timeline = timeline
        self._site = site
        self._corrupted: dict[int, int] = {}
        """Fault id -> how many chunks it corrupted so far."""
        self.left_thread = False
        """A ``stuck_exit`` (mode ``thread``) left a non-daemon thread behind."""

    def _each(self, fault: str, round: int) -> list[FaultSpec]:
        return [s for s in self._specs if s.fault == fault and s.applies_to(self._site, round)]

    def _acted(self, spec: FaultSpec, round: int, did: str, **detail: Any) -> None:
        fault_event(self._timeline, spec, did=did, site=self._site, round=round, **detail)

    def at_launch(self, round: int) -> None:
        """The faults of the launch round: before the child says hello."""
        for spec in self._each("ignore_sigterm", round):
            signal.signal(signal.SIGTERM, self._ignoring(spec, round))
        for spec in self._each("orphan_child", round):
            orphan = subprocess.Popen([sys.executable, "-c", HOLD_STDOUT], stdin=subprocess.DEVNULL)
            self._acted(spec, round, f"started child pid {orphan.pid}", child_pid=orphan.pid)
        for spec in self._each("slow_start", round):
            delay = float(spec.params["delay"])  # type: ignore[arg-type]
            self._acted(spec, round, f"sleeps {delay:g}s before init", delay=delay)
            time.sleep(delay)  # the fault itself: a slow import, a slow GPU
        self.strike("before_init", round)

    def _ignoring(self, spec: FaultSpec, round: int) -> Callable[[int, FrameType | None], None]:
        def handler(signum: int, frame: FrameType | None) -> None:
            self._acted(spec, round, "ignored SIGTERM")

        return handler

    def strike(self, point: str, round: int) -> None:
        """Crash or signal at ``point`` if a fault says so."""
        for fault in POINT_FAULTS:
            for spec in self._each(fault, round):
                if spec.params.get("at") != point:
                    continue
                if fault == "crash":
                    code = int(spec.params["code"])  # type: ignore[call-overload]
                    self._acted(spec, round, f"exit {code}", at=point)
                    seams.exit_process(code)
                sig = signal.Signals(spec.params["signal"])  # type: ignore[arg-type]
                self._acted(spec, round, f"signal {sig.name}", at=point)
                seams.kill(os.getpid(), sig)

    def corrupt(self, data: bytes, chunk: int, chunks: int, round: int) -> bytes:
        """``data`` with one bit flipped if a ``corrupt_chunk`` fault wants this chunk."""
        for spec in self._each("corrupt_chunk", round):
            wanted = chunks if spec.params.get("chunk") == "last" else spec.params.get("chunk")
            done = self._corrupted.get(spec.index, 0)
            if wanted != chunk or done >= int(spec.params["times"]):  # type: ignore[call-overload]
                continue
            self._corrupted[spec.index] = done + 1
            flipped = bytearray(data)
            flipped[0] ^= 0x01
            self._acted(spec, round, "flipped a bit", chunk=chunk, offset=0)
            return bytes(flipped)
        return data

    def stuck_exit(self, round: int) -> None:
        """Hang on the way out (``hang``), or leave a non-daemon thread behind (``thread``)."""
        for spec in self._each("stuck_exit", round):
            mode = spec.params.get("mode")
            self._acted(spec, round, f"hangs at exit ({mode})", mode=mode)
            forever = threading.Event()
            if mode == "thread":
                threading.Thread(target=forever.wait, name="stuck", daemon=False).start()
                self.left_thread = True
                return
            forever.wait()
