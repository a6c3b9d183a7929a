"""The failure text and the report files (swimlane, Mermaid, failure report, artifacts).

The timelines here are written by hand the way the runtime records them: a
server and per-site client lanes in one OS process, one training process per
site and round (a new pid each round), a harness lane for failpoints.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_flrelia.contract.timeline import Event, EventKind
from pytest_flrelia.judge.report import (
    ELLIPSIS,
    Against,
    CheckFailure,
    cut_report,
    failure_report,
    harness_error_report,
    lane_order,
    mermaid,
    safe_file_name,
    swimlane,
    write_artifacts,
    write_verdict,
)

K = EventKind
START = 5000.0
MAIN_PID = 100
LANES = ["server", "client-site-1", "client-site-2", "train-site-1", "train-site-2", "harness"]


@dataclass
class Recorder:
    """Events stamped ``ms`` after :data:`START`, as ``Timeline.record`` would make them.

    ``os_pid`` is the recording process (``Event.pid``); ``pid=`` is a detail key.
    """

    events: list[Event] = field(default_factory=list)

    def at(
        self,
        ms: float,
        kind: EventKind,
        process: str,
        /,
        *,
        os_pid: int = MAIN_PID,
        site: str | None = None,
        round: int | None = None,
        **detail: Any,
    ) -> Event:
        event = Event(START + ms / 1000.0, kind, process, os_pid, site, round, detail)
        self.events.append(event)
        return event


def train_pid(site: int, round: int) -> int:
    return 4000 + 100 * round + site


def site_round(rec: Recorder, ms: float, s: int, r: int, chunks: int) -> float:
    """One site's round, every 1.5 ms, from launch to deferred-stop done; returns the time."""
    site, pid = f"site-{s}", train_pid(s, r)
    client, train = f"client-{site}", f"train-{site}"

    def step(kind: EventKind, process: str, /, **detail: Any) -> None:
        nonlocal ms
        ms += 1.5
        os_pid = pid if process.startswith("train-") else MAIN_PID
        rec.at(ms, kind, process, os_pid=os_pid, site=site, **detail)

    step(K.LAUNCH, client, task="train", pid=pid)
    step(K.HANDLER_CREATED, client, round=r, handler=f"{site}-r{r}")
    step(K.INIT, train, launch_once=False)
    step(K.TASK_SENT, client, round=r, kind="train")
    step(K.TASK_RECEIVED, train, round=r, kind="train")
    step(K.RESULT_SENT, train, round=r, tensors=2)
    step(K.GATE_WAIT, train, round=r, timeout=5.0)
    step(K.RESULT_RECEIVED, client, round=r, tensors=2)
    step(K.DEFERRED_STOP_START, client, round=r, wait=5.0)
    step(K.SUBMIT, "server", round=r, ok=True)
    for t in range(2):
        step(K.DOWNLOAD_START, "server", round=r, tensor_id=f"{site}-{r}-w{t}", name=f"w{t}")
        for c in range(chunks):
            step(K.DOWNLOAD_CHUNK, "server", round=r, offset=c * 65536, nbytes=65536)
        step(K.DOWNLOAD_DONE, "server", round=r, name=f"w{t}", nbytes=chunks * 65536)
        step(K.TENSOR_SERVED, train, round=r, name=f"w{t}")
    step(K.GATE_OPEN, train, round=r)
    step(K.EXIT, train, round=r, returncode=0)
    step(K.REAPED, client, pid=pid, returncode=0)
    step(K.DEFERRED_STOP_DONE, client, round=r)
    return ms


def job_events(rounds: int = 2, sites: int = 2, chunks: int = 3) -> list[Event]:
    """A launch_once=False job that went well, with a stale PEER_GONE and a failpoint."""
    rec = Recorder()
    rec.at(0.0, K.JOB_START, "server", sites=sites, rounds=rounds, launch_once=False)
    ms = 1.0
    for r in range(1, rounds + 1):
        rec.at(ms, K.ROUND_START, "server", round=r, kind="train")
        for s in range(1, sites + 1):
            ms = site_round(rec, ms, s, r, chunks)
        rec.at(ms + 2.0, K.FAILPOINT, "harness", site="site-1", round=r,
               name="server.before_aggregate", action="sleep(1)")
        rec.at(ms + 4.0, K.AGGREGATED, "server", round=r, checksums={"w0": "ab12", "w1": "cd34"})
        rec.at(ms + 5.0, K.ROUND_END, "server", round=r, ok=True, error=None)
        ms += 8.0
    rec.at(ms, K.STATUS_IGNORED, "client-site-1", site="site-1", round=rounds,
           topic="PEER_GONE", reason="handler is not current")
    rec.at(ms + 1.0, K.JOB_END, "server", ok=True, error=None)
    return rec.events


def sigterm_events() -> tuple[list[Event], Event]:
    """KB1 (sync-stop): SIGTERM right after the result, before the server pulls anything."""
    rec = Recorder()
    rec.at(0.0, K.JOB_START, "server", sites=1, rounds=1, launch_once=False)
    rec.at(1.0, K.ROUND_START, "server", round=1, kind="train")
    rec.at(2.0, K.LAUNCH, "client-site-1", site="site-1", task="train", pid=4242)
    rec.at(4.0, K.INIT, "train-site-1", os_pid=4242, site="site-1", launch_once=False)
    rec.at(5.0, K.TASK_SENT, "client-site-1", site="site-1", round=1, kind="train")
    rec.at(6.0, K.TASK_RECEIVED, "train-site-1", os_pid=4242, site="site-1", round=1, kind="train")
    rec.at(9.0, K.RESULT_SENT, "train-site-1", os_pid=4242, site="site-1", round=1, tensors=4)
    rec.at(10.0, K.RESULT_RECEIVED, "client-site-1", site="site-1", round=1, tensors=4)
    rec.at(11.0, K.STOP_REQUESTED, "client-site-1", site="site-1", pid=4242)
    signal = rec.at(12.0, K.SIGNAL_SENT, "client-site-1", site="site-1",
                    signal="SIGTERM", target="group", pgid=4242)
    rec.at(13.0, K.REAPED, "client-site-1", site="site-1", pid=4242, returncode=-15)
    rec.at(14.0, K.SUBMIT, "server", site="site-1", round=1, ok=True)
    rec.at(15.0, K.DOWNLOAD_START, "server", site="site-1", round=1, name="w0", tensor_id="t0")
    rec.at(25.0, K.DOWNLOAD_RETRY, "server", site="site-1", round=1, attempt=1,
           reason="ConnectionRefusedError: [Errno 111] Connection refused")
    rec.at(40.0, K.DOWNLOAD_FAILED, "server", site="site-1", round=1,
           reason="ConnectionRefusedError: [Errno 111] Connection refused (after 3 retries)")
    rec.at(41.0, K.ROUND_END, "server", round=1, ok=False,
           error="failed to download from site-1: connection refused (after 3 retries)")
    rec.at(42.0, K.JOB_END, "server", ok=False, error="failed to download from site-1")
    return rec.events, signal


# --------------------------------------------------------------------------- parsing helpers


@dataclass(frozen=True)
class Row:
    mark: str
    time: str
    cells: list[str]

    @property
    def lane_index(self) -> int:
        filled = [i for i, c in enumerate(self.cells) if c]
        assert len(filled) == 1, f"an event row fills exactly one lane: {self}"
        return filled[0]

    @property
    def ms(self) -> float:
        return float(self.time.removesuffix("ms"))


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[Row]
    gaps: list[str]


def parse(text: str) -> Table:
    """Cut a swimlane at the ``|`` positions of its header line."""
    lines = text.splitlines()
    header_line = lines[0]
    cuts = [m.start() for m in re.finditer(r" \| ", header_line)]
    assert lines[1].strip("-+") == "", f"second line is a rule: {lines[1]!r}"
    bounds = [*zip(cuts, [*cuts[1:], None], strict=True)]

    def cells(line: str) -> list[str]:
        return [line[start + 3 : end].strip() for start, end in bounds]

    header = cells(header_line)
    rows: list[Row] = []
    gaps: list[str] = []
    for line in lines[2:]:
        if ELLIPSIS in line[:6]:
            gaps.append(line.strip())
            continue
        for start, _ in bounds:
            assert line[start : start + 3] in (" | ", " |"), f"misaligned row: {line!r}"
        rows.append(Row(line[:2].strip(), line[3 : cuts[0]].strip(), cells(line)))
    return Table(header, rows, gaps)


def gap_count(gap: str) -> int:
    match = re.search(r"(\d+) (earlier|later|more) events? not shown", gap)
    assert match, gap
    return int(match.group(1))


# --------------------------------------------------------------------------- swimlane


def test_lanes_are_server_then_clients_then_trains_then_the_rest() -> None:
    events = job_events()
    table = parse(swimlane(events, window=1000, width=400))
    assert table.header == LANES


def test_lane_order_is_natural_so_site_10_follows_site_2() -> None:
    names = ["harness", "train-site-10", "client-site-2", "train-site-2", "server",
             "client-site-10", "main"]
    assert lane_order(names) == [
        "server", "client-site-2", "client-site-10", "train-site-2", "train-site-10",
        "harness", "main",
    ]


def test_every_event_sits_in_its_own_lane_column() -> None:
    events = job_events()
    table = parse(swimlane(events, window=1000, width=400))
    assert len(table.rows) == len(events)
    assert not table.gaps
    for row, event in zip(table.rows, events, strict=True):
        assert table.header[row.lane_index] == event.process
        assert row.cells[row.lane_index].startswith(event.kind.value)


def test_relative_times_start_at_zero_and_increase() -> None:
    events = job_events()
    table = parse(swimlane(events, window=1000, width=400))
    times = [row.ms for row in table.rows]
    assert times[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(times))
    assert times[-1] == pytest.approx((events[-1].ts - events[0].ts) * 1000.0, abs=0.05)


def test_focus_row_is_marked_and_window_bounds_the_rows() -> None:
    events = job_events()
    target = 40
    focus = events[target].ts + 0.0001  # nearest event is still events[target]
    table = parse(swimlane(events, focus=focus, window=3, width=200))
    assert len(table.rows) == 7
    marked = [i for i, row in enumerate(table.rows) if row.mark]
    assert marked == [3]
    assert table.rows[3].mark == ">>"
    focused = table.rows[3]
    assert focused.cells[focused.lane_index].startswith(events[target].kind.value)
    assert table.rows[0].ms == 0.0, "times count from the first shown event"
    assert [gap_count(g) for g in table.gaps] == [target - 3, len(events) - target - 4]


def test_focus_before_the_first_event_shows_the_start() -> None:
    events = job_events()
    table = parse(swimlane(events, focus=START - 10.0, window=4, width=200))
    assert len(table.rows) == 5
    assert table.rows[0].mark == ">>"
    assert table.rows[0].cells[table.rows[0].lane_index].startswith("job_start")
    assert [gap_count(g) for g in table.gaps] == [len(events) - 5]


def test_without_focus_a_short_timeline_is_shown_whole() -> None:
    events = job_events(rounds=1, sites=1, chunks=1)
    assert len(events) <= 2 * 20
    table = parse(swimlane(events, window=20, width=200))
    assert len(table.rows) == len(events)
    assert not table.gaps
    assert not any(row.mark for row in table.rows)


def test_without_focus_a_long_timeline_shows_its_head_and_tail() -> None:
    events = job_events()
    table = parse(swimlane(events, window=5, width=200))
    assert len(table.rows) == 10
    assert [gap_count(g) for g in table.gaps] == [len(events) - 10]
    assert table.rows[0].cells[table.rows[0].lane_index].startswith("job_start")
    assert table.rows[-1].cells[table.rows[-1].lane_index].startswith("job_end")


def test_cells_show_round_and_the_telling_detail() -> None:
    events, _ = sigterm_events()
    text = swimlane(events, width=300)
    table = parse(text)
    cells = [row.cells[row.lane_index] for row in table.rows]
    assert "signal_sent SIGTERM target=group" in cells, "a signal's name says what it is"
    assert "init pid=4242 launch_once=False" in cells, "a train lane's first row names its pid"
    assert "result_sent r1 tensors=4" in cells, "and later rows of the same pid do not"
    assert "reaped returncode=-15 pid=4242" in cells
    assert "submit site-1 r1" in cells, "a server cell names the site; ok=True says nothing"
    assert any(c.startswith("round_end r1 error=failed to download from site-1") for c in cells)


def test_train_lane_shows_the_pid_when_it_changes() -> None:
    events = [e for e in job_events() if e.process == "train-site-1"]
    table = parse(swimlane(events, window=1000, width=300))
    cells = [row.cells[0] for row in table.rows]
    with_pid = [(i, c) for i, c in enumerate(cells) if "pid=" in c]
    first_round = sum(1 for e in events if e.pid == train_pid(1, 1))
    assert [i for i, _ in with_pid] == [0, first_round]
    assert f"pid={train_pid(1, 1)}" in with_pid[0][1]
    assert f"pid={train_pid(1, 2)}" in with_pid[1][1]


@pytest.mark.parametrize("width", [100, 80, 70])
def test_long_cells_are_cut_with_an_ellipsis_to_stay_within_width(width: int) -> None:
    rec = Recorder()
    for i, lane in enumerate(LANES):
        rec.at(float(i), K.ERROR, lane, site="site-1", round=7,
               error="Traceback: something very long happened " * 5)
    text = swimlane(rec.events, width=width)
    assert all(len(line) <= width for line in text.splitlines()), text
    table = parse(text)
    assert table.header == LANES or all(
        h.endswith(ELLIPSIS) or h == lane for h, lane in zip(table.header, LANES, strict=True)
    )
    assert all(row.cells[row.lane_index].endswith(ELLIPSIS) for row in table.rows)
    assert all(row.cells[row.lane_index].startswith("error") for row in table.rows)


def test_a_real_job_timeline_stays_within_width_100() -> None:
    events = job_events()
    text = swimlane(events, focus=events[30].ts, width=100)
    assert all(len(line) <= 100 for line in text.splitlines()), text
    table = parse(text)
    assert table.header == [lane for lane in LANES if lane in table.header]
    assert len(table.header) >= 4


def test_too_many_lanes_for_columns_fall_back_to_one_line_per_event() -> None:
    rec = Recorder()
    for i in range(30):
        rec.at(float(i), K.LAUNCH, f"client-site-{i + 1}", site=f"site-{i + 1}", pid=5000 + i)
    text = swimlane(rec.events, focus=rec.events[10].ts, width=100, window=30)
    lines = text.splitlines()
    assert len(lines) == 30
    assert all(len(line) <= 100 for line in lines)
    assert lines[10].startswith(">>")
    for i, line in enumerate(lines):
        assert f"client-site-{i + 1} " in line
        assert f"pid={5000 + i}" in line


def test_empty_timeline_says_so() -> None:
    assert swimlane([]) == "(no events recorded)"


def test_window_zero_shows_only_the_focus() -> None:
    events = job_events()
    table = parse(swimlane(events, focus=events[7].ts, window=0, width=200))
    assert [row.mark for row in table.rows] == [">>"]
    assert [gap_count(g) for g in table.gaps] == [7, len(events) - 8]
    assert swimlane(events, window=0) == f"{ELLIPSIS} {len(events)} events not shown"


def test_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window"):
        swimlane(job_events(), window=-1)


# --------------------------------------------------------------------------- mermaid

PARTICIPANT = re.compile(r"^    participant (lane_\w+) as (.+)$")
MESSAGE = re.compile(r"^    (lane_\w+)(->>|-->>|-x)(lane_\w+): (.+)$")
NOTE = re.compile(r"^    Note over (lane_\w+): (.+)$")
ENTITY = re.compile(r"#\d+;")


@dataclass(frozen=True)
class Diagram:
    participants: dict[str, str]  # alias -> id
    messages: list[tuple[str, str, str, str]]  # from alias, arrow, to alias, label
    notes: list[tuple[str, str]]  # alias, label


def parse_mermaid(text: str) -> Diagram:
    """Every line must be one of the few forms we emit; labels carry no raw ``#``/``;``."""
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    participants: dict[str, str] = {}
    messages: list[tuple[str, str, str, str]] = []
    notes: list[tuple[str, str]] = []
    by_id: dict[str, str] = {}
    for line in lines[1:]:
        if m := PARTICIPANT.match(line):
            assert not messages and not notes, "participants are declared first"
            participants[m.group(2)] = m.group(1)
            by_id[m.group(1)] = m.group(2)
            label = m.group(2)
        elif m := MESSAGE.match(line):
            messages.append((by_id[m.group(1)], m.group(2), by_id[m.group(3)], m.group(4)))
            label = m.group(4)
        elif m := NOTE.match(line):
            notes.append((by_id[m.group(1)], m.group(2)))
            label = m.group(2)
        else:
            raise AssertionError(f"not a line we emit: {line!r}")
        bare = ENTITY.sub("", label)
        assert "#" not in bare and ";" not in bare, line
    assert len(set(participants.values())) == len(participants), "ids are unique"
    return Diagram(participants, messages, notes)


def test_mermaid_declares_every_lane_in_order() -> None:
    diagram = parse_mermaid(mermaid(job_events()))
    assert list(diagram.participants) == LANES


def test_mermaid_draws_task_result_submit_download_and_signal_as_arrows() -> None:
    events, _ = sigterm_events()
    events += [
        Event(START + 0.05, K.DOWNLOAD_DONE, "server", MAIN_PID, "site-1", 1, {"name": "w0"}),
    ]
    diagram = parse_mermaid(mermaid(events))
    arrows = {(src, arrow, dst, label.split()[1]) for src, arrow, dst, label in diagram.messages}
    assert arrows == {
        ("client-site-1", "->>", "train-site-1", "task_sent"),
        ("train-site-1", "->>", "client-site-1", "result_sent"),
        ("client-site-1", "->>", "server", "submit"),
        ("server", "->>", "train-site-1", "download_start"),
        ("train-site-1", "-->>", "server", "download_done"),
        ("client-site-1", "-x", "train-site-1", "signal_sent"),
    }
    note_kinds = {label.split()[1] for _, label in diagram.notes}
    assert {"job_start", "round_start", "launch", "reaped", "download_failed"} <= note_kinds
    assert len(diagram.messages) + len(diagram.notes) == len(events)


def test_mermaid_status_event_is_a_note_over_its_lane() -> None:
    rec = Recorder()
    rec.at(0.0, K.STATUS_EVENT, "client-site-2", site="site-2", round=3,
           topic="PEER_GONE", reason="no heartbeat for 2s")
    diagram = parse_mermaid(mermaid(rec.events))
    assert diagram.notes == [
        ("client-site-2", "+0.0ms status_event r3 topic=PEER_GONE reason=no heartbeat for 2s")
    ]


def test_mermaid_escapes_what_it_cannot_take() -> None:
    rec = Recorder()
    rec.at(0.0, K.ERROR, "weird;lane#1", error="a; b # c\nsecond line <tag>")
    rec.at(1.0, K.TASK_SENT, "client-site-1", site="site-1", round=1, kind="x;y")
    text = mermaid(rec.events)
    diagram = parse_mermaid(text)
    assert "weird#59;lane#35;1" in diagram.participants
    assert diagram.notes == [
        ("weird#59;lane#35;1", "+0.0ms error error=a#59; b #35; c second line #60;tag#62;")
    ]
    assert diagram.messages[0][3] == "+1.0ms task_sent r1 kind=x#59;y"


def test_mermaid_declares_a_lane_that_only_receives() -> None:
    rec = Recorder()
    rec.at(0.0, K.TASK_SENT, "client-site-3", site="site-3", round=1)
    diagram = parse_mermaid(mermaid(rec.events))
    assert list(diagram.participants) == ["client-site-3", "train-site-3"]
    assert diagram.messages[0][:3] == ("client-site-3", "->>", "train-site-3")


def test_mermaid_ids_stay_clear_of_keywords_and_collisions() -> None:
    rec = Recorder()
    for i, lane in enumerate(["end", "note", "a-b", "a_b", "participant"]):
        rec.at(float(i), K.FAULT, lane)
    diagram = parse_mermaid(mermaid(rec.events))
    ids = list(diagram.participants.values())
    assert all(re.fullmatch(r"lane_[A-Za-z0-9_]+", i) for i in ids)
    assert len(set(ids)) == 5


def test_mermaid_folds_a_run_of_download_chunks_into_one_note() -> None:
    events = job_events(rounds=1, sites=1, chunks=50)
    diagram = parse_mermaid(mermaid(events))
    chunk_notes = [label for lane, label in diagram.notes if "download_chunk" in label]
    assert len(chunk_notes) == 2, "one note per tensor's run of chunks"
    run = re.compile(r"\+[\d.]+ms download_chunk site-1 r1 50 chunks until \+[\d.]+ms")
    assert all(run.fullmatch(label) for label in chunk_notes), chunk_notes


def test_mermaid_of_nothing_is_still_a_diagram() -> None:
    assert mermaid([]).splitlines()[0] == "sequenceDiagram"


# --------------------------------------------------------------------------- failure report


def against(known_bug: str | None) -> Against:
    return Against(
        known_bug=known_bug,
        options=(f"--flrelia-known-bug={known_bug}",) if known_bug is not None else (),
    )


def sigterm_report(known_bug: str | None, failures: list[CheckFailure] | None = None) -> str:
    events, signal = sigterm_events()
    failures = failures or [
        CheckFailure(
            name="no_premature_stop",
            expected="site-1 round 1 process stopped only after its 4 tensors were downloaded",
            seen="SIGTERM to pid 4242 at +12.0ms, first download_done never",
            at=signal.ts,
            events=(signal,),
        )
    ]
    return failure_report(
        scenario_name="early-sigterm-before-download",
        scenario_path="scenarios/x.scenario.yaml",
        line=3,
        description="SIGTERM lands after the result is sent, before the server pulls tensors.",
        failures=failures,
        events=events,
        reproduce="scenarios/x.scenario.yaml::early-sigterm-before-download",
        against=against(known_bug),
        seconds=1.234,
    )


def test_failure_report_has_every_part_in_order() -> None:
    text = sigterm_report("sync-stop")
    lines = text.splitlines()
    assert lines[0] == (
        "scenario early-sigterm-before-download (scenarios/x.scenario.yaml:3) "
        "failed against the reference target, known bug 'sync-stop' after 1.23s"
    )
    assert lines[1] == (
        "  SIGTERM lands after the result is sent, before the server pulls tensors."
    )
    assert lines[2] == "invariant no_premature_stop at +12.0ms"
    assert lines[3] == (
        "  expected: site-1 round 1 process stopped only after its 4 tensors were downloaded"
    )
    assert lines[4] == "  seen:     SIGTERM to pid 4242 at +12.0ms, first download_done never"
    assert lines[5] == "  evidence:"
    assert lines[6].split() == [
        "+12.0ms", "client-site-1", "signal_sent", "signal=SIGTERM", "target=group", "pgid=4242"
    ]
    assert lines[7] == "timeline around the violation:"
    assert lines[-2:] == [
        "reproduce:",
        "  pytest 'scenarios/x.scenario.yaml::early-sigterm-before-download'"
        " --flrelia-known-bug=sync-stop",
    ]
    table = parse("\n".join(lines[8:-2]))
    focused = [row for row in table.rows if row.mark == ">>"]
    assert len(focused) == 1
    assert focused[0].cells[focused[0].lane_index].startswith("signal_sent")
    assert focused[0].time == "+12.0ms", "the swimlane counts from the run's start, like seen"
    assert all(len(line) <= 100 for line in lines[8:-2])


def test_failure_report_against_the_correct_implementation_has_no_bug_option() -> None:
    text = sigterm_report(None)
    assert "failed against the correct reference implementation after 1.23s" in (
        text.splitlines()[0]
    )
    assert "--flrelia-known-bug" not in text
    assert text.splitlines()[-1] == (
        "  pytest 'scenarios/x.scenario.yaml::early-sigterm-before-download'"
    )


def test_failure_report_lists_every_failure_and_focuses_the_first_with_a_time() -> None:
    events, _ = sigterm_events()
    failed = next(e for e in events if e.kind is K.DOWNLOAD_FAILED)
    text = sigterm_report(
        "sync-stop",
        [
            CheckFailure("expectation", "outcome success", "outcome failure:\nfailed to download"),
            CheckFailure("all_rounds_complete", "1 of 1 rounds", "0 of 1 rounds", at=failed.ts),
            CheckFailure("no_orphans", "no process left", "none left, fine", at=events[0].ts),
        ],
    )
    lines = text.splitlines()
    assert "expectation" in lines
    assert "invariant expectation" not in text
    at = lines.index("expectation")
    assert lines[at + 1 : at + 4] == [
        "  expected: outcome success",
        "  seen:     outcome failure:",
        "            failed to download",
    ]
    assert lines.index("invariant all_rounds_complete at +40.0ms") < lines.index(
        "invariant no_orphans at +0.0ms"
    )
    focused = [line for line in lines if line.startswith(">>")]
    assert len(focused) == 1
    assert "download_failed" in focused[0]


def test_failure_report_without_a_time_shows_the_timeline_unfocused() -> None:
    text = sigterm_report(None, [CheckFailure("within_bound", "within 5s", "took 9.1s")])
    assert "timeline:" in text.splitlines()
    assert "timeline around the violation:" not in text
    assert not any(line.startswith(">>") for line in text.splitlines())


def test_failure_report_with_no_events_says_so() -> None:
    text = failure_report(
        scenario_name="s", scenario_path="s.scenario.yaml", line=1, description="",
        failures=[CheckFailure("expectation", "success", "crashed before the job started")],
        events=[], reproduce="s.scenario.yaml::s[launch_once=true]", against=Against(),
        seconds=0.5,
    )
    assert "timeline: no events were recorded" in text.splitlines()
    assert text.splitlines()[-1] == "  pytest 's.scenario.yaml::s[launch_once=true]'"


def reproduce_line(reproduce: str, known_bug: str | None) -> str:
    text = failure_report(
        scenario_name="s", scenario_path="s.yaml", line=1, description="d",
        failures=[CheckFailure("expectation", "a", "b")], events=[], reproduce=reproduce,
        against=against(known_bug), seconds=0.1,
    )
    return text.splitlines()[-1]


def test_failure_report_keeps_a_whole_command_and_quotes_node_ids_safely() -> None:
    whole = reproduce_line("pytest -p no:randomly 's.yaml::s'", "kb")
    assert whole == "  pytest -p no:randomly 's.yaml::s' --flrelia-known-bug=kb"
    assert reproduce_line("it's.yaml::s", None) == "  pytest 'it'\"'\"'s.yaml::s'"


def test_reproduce_line_carries_every_option_that_selects_the_run() -> None:
    options = (
        "--flrelia-target=mine",
        "--flrelia-time-scale=2.5",
        "--flrelia-within=45s",
    )
    text = failure_report(
        scenario_name="s", scenario_path="s.yaml", line=1, description="",
        failures=[CheckFailure("expectation", "a", "b")], events=[], reproduce="s.yaml::s",
        against=Against(target="mine", options=options), seconds=0.1,
    )
    assert text.splitlines()[0] == "scenario s (s.yaml:1) failed against target 'mine' after 0.10s"
    assert text.splitlines()[-1] == (
        "  pytest 's.yaml::s' --flrelia-target=mine --flrelia-time-scale=2.5 --flrelia-within=45s"
    )


def test_harness_error_report_keeps_the_traceback_and_judges_nothing() -> None:
    events, _ = sigterm_events()
    error = (
        "Traceback (most recent call last):\n"
        '  File "t.py", line 3, in run\n'
        "    executors['site-1']\n"
        "KeyError: 'site-1'\n"
    )
    text = harness_error_report(
        scenario_name="s", scenario_path="s.yaml", line=4, error=error, events=events,
        reproduce="s.yaml::s", against=against("sync-stop"), seconds=0.25,
    )
    lines = text.splitlines()
    assert lines[0] == (
        "scenario s (s.yaml:4): harness error against the reference target, "
        "known bug 'sync-stop' after 0.25s"
    )
    assert "  the harness or the target raised; no invariant was judged" in lines
    assert [line.strip() for line in lines[2:6]] == [
        "Traceback (most recent call last):",
        'File "t.py", line 3, in run',
        "executors['site-1']",
        "KeyError: 'site-1'",
    ]
    assert "invariant" not in text.replace("no invariant was judged", "")
    assert "timeline:" in lines
    assert lines[-1] == "  pytest 's.yaml::s' --flrelia-known-bug=sync-stop"


# --------------------------------------------------------------------------- artifacts


def test_write_artifacts_round_trips_the_timeline(tmp_path: Path) -> None:
    events = job_events()
    timeline_path, mermaid_path = write_artifacts(tmp_path / "report", "job", events)
    assert timeline_path == tmp_path / "report" / "job.timeline.jsonl"
    assert mermaid_path == tmp_path / "report" / "job.mmd"
    lines = timeline_path.read_text(encoding="utf-8").splitlines()
    assert [Event.from_json(line) for line in lines] == events
    assert mermaid_path.read_text(encoding="utf-8") == mermaid(events) + "\n"


def test_failure_report_lists_what_had_nothing_to_judge_after_the_failures() -> None:
    events = job_events()
    text = failure_report(
        scenario_name="s",
        scenario_path="s.yaml",
        line=1,
        description="",
        failures=[CheckFailure("all_rounds_complete", "rounds 1..1 complete", "0 of 1")],
        events=events,
        reproduce="s.yaml::s",
        against=Against(),
        seconds=1.0,
        not_applicable=[("stale_events_ignored", "no stale event was injected")],
    )
    lines = text.splitlines()
    start = lines.index("not applicable (nothing to judge in this run):")
    assert lines.index("  seen:     0 of 1") < start
    assert lines[start + 1] == "  stale_events_ignored: no stale event was injected"
    assert lines[start + 2].startswith("timeline")


def test_write_verdict_writes_one_line_per_check(tmp_path: Path) -> None:
    lines = ["passed  expectation: success", "n/a     stale_events_ignored: nothing stale"]
    path = write_verdict(tmp_path / "report", "name[launch_once=true]", lines)
    assert path == tmp_path / "report" / "name_launch_once_true_.verdict.txt"
    assert path.read_text(encoding="utf-8").splitlines() == lines


def test_write_artifacts_sanitizes_the_name(tmp_path: Path) -> None:
    timeline_path, mermaid_path = write_artifacts(tmp_path, "name[launch_once=true]", [])
    assert timeline_path.name == "name_launch_once_true_.timeline.jsonl"
    assert mermaid_path.name == "name_launch_once_true_.mmd"
    assert timeline_path.read_text(encoding="utf-8") == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [timeline_path.name, mermaid_path.name]
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("name[launch_once=true]", "name_launch_once_true_"),
        ("../../etc/passwd", "_._.._etc_passwd"),
        (".hidden", "_hidden"),
        ("a b/c\\d:e", "a_b_c_d_e"),
        ("", "scenario"),
    ],
)
def test_safe_file_name(name: str, expected: str) -> None:
    assert safe_file_name(name) == expected


def test_safe_file_name_shortens_long_names_without_collisions() -> None:
    a, b = safe_file_name("x" * 300 + "a"), safe_file_name("x" * 300 + "b")
    assert a != b
    assert len(a) <= 120 and len(b) <= 120


def test_cut_report_says_who_cut_the_run_and_where_its_timeline_went() -> None:
    events, _ = sigterm_events()
    kept = cut_report(
        scenario_name="s", scenario_path="s.yaml", line=2, description="why it exists",
        message="Timeout (>3.0s) from pytest-timeout.",
        artifacts=[Path("r/s.timeline.jsonl"), Path("r/s.mmd")], events=events,
        reproduce="s.yaml::s", against=against(None), seconds=2.5,
    )
    lines = kept.splitlines()
    assert lines[:5] == [
        "scenario s (s.yaml:2) was cut by pytest-timeout against the correct reference "
        "implementation after 2.50s",
        "  why it exists",
        "Timeout (>3.0s) from pytest-timeout.",
        "  the run was aborted and its processes killed; no invariant was judged",
        "  its timeline so far: r/s.timeline.jsonl, r/s.mmd",
    ]
    assert lines[-2:] == ["reproduce:", "  pytest 's.yaml::s'"]
    dropped = cut_report(
        scenario_name="s", scenario_path="s.yaml", line=2, description="",
        message="Timeout (>3.0s) from pytest-timeout.", artifacts=None, events=[],
        reproduce="s.yaml::s", against=against(None), seconds=2.5,
    )
    assert "  its timeline was not kept: rerun with --flrelia-report=DIR to keep it" in (
        dropped.splitlines()
    )
