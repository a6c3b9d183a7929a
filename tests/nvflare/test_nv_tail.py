"""The tailer follows event files while they grow, line by complete line, into the timeline."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.targets.nvflare.tail import Tailer


def _event(kind: EventKind, process: str, ts: float) -> Event:
    return Event(ts=ts, kind=kind, process=process, pid=os.getpid(), site="site-1", round=1)


def test_events_reach_the_timeline_while_the_files_grow(tmp_path: Path) -> None:
    timeline = Timeline()
    seen: list[EventKind] = []
    arrived = threading.Event()

    def listen(event: Event) -> None:
        seen.append(event.kind)
        if event.kind is EventKind.GATE_OPEN:
            arrived.set()

    timeline.subscribe(listen)
    tailer = Tailer(tmp_path, timeline).start()
    try:
        a = Timeline("train-site-1", sink=tmp_path / "train-site-1-1.jsonl")
        b = Timeline("client-site-1", sink=tmp_path / "runner.jsonl")
        a.record(EventKind.GATE_WAIT)
        b.record(EventKind.RESULT_RECEIVED, tensors=2)
        a.record(EventKind.GATE_OPEN)
        assert arrived.wait(5.0), "the tailer never delivered the event while the run was live"
    finally:
        total = tailer.stop()
    assert total == 3 and sorted(k.value for k in seen) == sorted(
        ["gate_wait", "result_received", "gate_open"]
    )
    assert tailer.broken == []


def test_a_partial_line_waits_for_its_end_and_a_broken_one_is_reported(tmp_path: Path) -> None:
    timeline = Timeline()
    tailer = Tailer(tmp_path, timeline)
    line = _event(EventKind.EXIT, "train-site-1", 1.0).to_json()
    path = tmp_path / "train-site-1-7.jsonl"
    path.write_text(line[:20])
    assert tailer.drain() == 0
    with path.open("a") as f:
        f.write(line[20:] + "\n" + "{not json}\n" + line[:5])
    assert tailer.drain() == 1
    assert [e.kind for e in timeline.events()] == [EventKind.EXIT]
    assert len(tailer.broken) == 1 and "not json" in tailer.broken[0]
    tailer.stop()
    assert len(tailer.broken) == 2 and "unterminated" in tailer.broken[1]


def test_a_missing_dir_is_no_error(tmp_path: Path) -> None:
    tailer = Tailer(tmp_path / "not-yet", Timeline())
    assert tailer.drain() == 0
    assert tailer.stop() == 0
