"""Following the runner's and every training process's event files while the run is live.

Each process of the job appends JSON lines (``Event.to_json``) to its own file in the
events dir, one ``write`` per line.  :class:`Tailer` polls the dir (every
:data:`POLL` seconds), reads what each file gained since the last look, and adds each
complete line's event to the harness's timeline, so the timeline's listeners (live
checks, triggered faults) see events while the run goes on, not after it.  A line not
yet complete waits for its end; a line that does not parse is a defect of the target and
is kept in :attr:`Tailer.broken`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pytest_flrelia.contract.timeline import Event, Timeline

POLL = 0.02


class Tailer:
    """Tails ``events_dir/*.jsonl`` into ``timeline`` from a thread of its own."""

    def __init__(self, events_dir: Path, timeline: Timeline, poll: float = POLL) -> None:
        self.events_dir = events_dir
        self.timeline = timeline
        self.poll = poll
        self.broken: list[str] = []
        self.count = 0
        self._offsets: dict[str, int] = {}
        self._partial: dict[str, bytes] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="flrelia-nvflare-tail", daemon=True)

    def start(self) -> Tailer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self.drain()

    def drain(self) -> int:
        """Read what every file gained since the last look; returns how many events."""
        with self._lock:
            added = 0
            try:
                names = sorted(e.name for e in os.scandir(self.events_dir)
                               if e.name.endswith(".jsonl"))
            except FileNotFoundError:
                return 0
            for name in names:
                added += self._read(name)
            self.count += added
            return added

    def _read(self, name: str) -> int:
        path = self.events_dir / name
        offset = self._offsets.get(name, 0)
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        if not data:
            return 0
        self._offsets[name] = offset + len(data)
        data = self._partial.pop(name, b"") + data
        *lines, rest = data.split(b"\n")
        if rest:
            self._partial[name] = rest
        added = 0
        for line in lines:
            if not line.strip():
                continue
            try:
                event = Event.from_json(line.decode())
            except (ValueError, KeyError, TypeError) as err:
                self.broken.append(f"{name}: {err}: {line[:200]!r}")
                continue
            self.timeline.add(event)
            added += 1
        return added

    def stop(self) -> int:
        """Stop following, after reading everything written so far; returns the total."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.drain()
        for name, rest in self._partial.items():
            self.broken.append(f"{name}: an unterminated last line: {rest[:200]!r}")
        self._partial.clear()
        return self.count


__all__ = ["POLL", "Tailer"]
