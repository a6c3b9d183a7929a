"""What a person reads when a scenario fails, and the files kept for later.

A failure report is a product (Hypothesis style): what failed, the evidence,
how to reproduce it, nothing else.  Everything here is a pure function of a
timeline (a sequence of :class:`~pytest_flrelia.contract.timeline.Event`), so it is
tested without running a job and without pytest; the plugin only calls it.

Lanes: every ``Event.process`` is a lane.  Lanes are shown ``server`` first,
then the ``client-*`` lanes, then the ``train-*`` lanes (numbers in natural
order, so ``site-10`` follows ``site-2``), then the others (``harness``...).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_flrelia.contract.events import (
    LaneKind,
    client_lane,
    is_training,
    lane_of,
    training_lane,
)
from pytest_flrelia.contract.target import REFERENCE_TARGET
from pytest_flrelia.contract.timeline import Event, EventKind

__all__ = [
    "Against",
    "CheckFailure",
    "cut_report",
    "failure_report",
    "harness_error_report",
    "lane_order",
    "mermaid",
    "safe_file_name",
    "swimlane",
    "write_artifacts",
    "write_verdict",
]

ELLIPSIS = "…"
REPORT_WIDTH = 100
"""Width of the swimlane in a failure report: a terminal or a CI log without wrapping."""

FOCUS_MARK = ">>"
MIN_CELL_WIDTH = 6
"""Below this a lane column tells nothing; the swimlane switches to one line per event."""

SWIMLANE_DETAIL_KEYS = 2
"""How many detail keys a swimlane cell shows: the cell is narrow, the first ones tell most."""

MERMAID_LABEL_WIDTH = 120

TELLING_KEYS: tuple[str, ...] = (
    "topic",
    "reason",
    "signal",
    "returncode",
    "tensors",
    "error",
    "name",
    "action",
    "dropped",
    "pid",
    "target",
    "attempt",
    "offset",
    "task",
    "timeout",
    "wait",
    "sites",
    "rounds",
)
"""Detail keys in the order a reader wants them; the ones not listed follow, sorted."""

SELF_EVIDENT_KEYS = frozenset({"signal", "topic"})
"""Keys whose value names itself (``SIGTERM``, ``PEER_GONE``): a narrow cell shows just that."""


@dataclass(frozen=True)
class CheckFailure:
    """One violated invariant (or the scenario's ``expectation``), with its evidence.

    ``at`` is the timestamp of the event that shows the violation: the report's
    swimlane is centred there.  ``events`` are the few events that prove it.
    """

    name: str
    expected: str
    seen: str
    at: float | None = None
    events: tuple[Event, ...] = ()


# --------------------------------------------------------------------------- lanes


def _natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", text)
        if part
    )


_LANE_GROUPS = {LaneKind.SERVER: 0, LaneKind.CLIENT: 1, LaneKind.TRAINING: 2}
"""Display order of the lane kinds; the harness and unknown lanes come last."""


def _lane_key(lane: str) -> tuple[int, tuple[tuple[int, int, str], ...]]:
    kind = lane_of(lane)
    group = _LANE_GROUPS.get(kind.kind, 3) if kind is not None else 3
    return group, _natural_key(lane)


def lane_order(processes: Iterable[str]) -> list[str]:
    """The distinct lanes of ``processes`` in display order (see the module docstring)."""
    return sorted(set(processes), key=_lane_key)


def _ordered(events: Iterable[Event]) -> list[Event]:
    """Events by timestamp; a stable sort keeps the recording order of equal stamps."""
    return sorted(events, key=lambda e: e.ts)


# --------------------------------------------------------------------------- text helpers


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    if len(text) <= width:
        return text
    if width <= 0:
        return ""
    return text[: width - 1] + ELLIPSIS


def _value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, int):
        text = str(value)
    else:
        text = json.dumps(value, default=str, sort_keys=True)
    return " ".join(text.split())


def _detail_parts(detail: Mapping[str, Any], limit: int | None) -> list[str]:
    """``key=value`` for the telling keys first; ``None`` values and ``ok=True`` say nothing.

    With a ``limit`` (a narrow swimlane cell) self-evident keys show their value only.
    """
    keys = [k for k in TELLING_KEYS if k in detail]
    keys += sorted(k for k in detail if k not in TELLING_KEYS)
    parts: list[str] = []
    for key in keys:
        if limit is not None and len(parts) >= limit:
            break
        value = detail[key]
        if value is None or (key == "ok" and value is True):
            continue
        bare = limit is not None and key in SELF_EVIDENT_KEYS
        parts.append(_value(value) if bare else f"{key}={_value(value)}")
    return parts


def _describe(event: Event, *, pid_changed: bool, detail_limit: int | None, site: bool) -> str:
    """``kind [site] rN [pid=P] key=value...``: one event in one line."""
    parts = [event.kind.value]
    if site and event.site and _lane_site(event) != event.site:
        parts.append(event.site)
    if event.round is not None:
        parts.append(f"r{event.round}")
    if pid_changed:
        parts.append(f"pid={event.pid}")
    parts += _detail_parts(event.detail, detail_limit)
    return " ".join(parts)


def _lane_site(event: Event) -> str | None:
    """The site whose lane recorded ``event`` (``None`` for the server and the harness)."""
    lane = lane_of(event.process)
    return lane.site if lane is not None else None


class _PidTracker:
    """Says when a train lane's pid changes: a lane may hold one process per round."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def changed(self, event: Event) -> bool:
        if not is_training(event):
            return False
        changed = self._last.get(event.process) != event.pid
        self._last[event.process] = event.pid
        return changed


def _relative(ts: float, origin: float) -> str:
    return f"{(ts - origin) * 1000.0:+.1f}ms"


# --------------------------------------------------------------------------- swimlane


@dataclass(frozen=True)
class _Gap:
    count: int
    where: str  # "earlier", "later", "more" (between the head and the tail) or ""

    def text(self) -> str:
        noun = "event" if self.count == 1 else "events"
        return " ".join(w for w in (ELLIPSIS, str(self.count), self.where, noun, "not shown") if w)


def _window_rows(
    ordered: Sequence[Event], focus: float | None, window: int
) -> tuple[list[int | _Gap], int | None]:
    """Indexes of the events to show, gaps between them, and the focused index."""
    total = len(ordered)
    focus_index: int | None = None
    if focus is not None:
        focus_index = min(range(total), key=lambda i: abs(ordered[i].ts - focus))
        spans = [(max(0, focus_index - window), min(total, focus_index + window + 1))]
    elif total <= 2 * window:
        spans = [(0, total)]
    else:
        spans = [(0, window), (total - window, total)]
    rows: list[int | _Gap] = []
    cursor = 0
    for start, stop in spans:
        if start > cursor:
            rows.append(_Gap(start - cursor, "earlier" if cursor == 0 else "more"))
        rows.extend(range(start, stop))
        cursor = stop
    if cursor < total:
        rows.append(_Gap(total - cursor, "later"))
    return rows, focus_index


def _column_widths(desired: Sequence[int], available: int) -> list[int]:
    """Give every column what it wants if it fits, else cap the widest ones evenly."""
    if sum(desired) <= available:
        return list(desired)
    cap = max(1, available // len(desired))
    while sum(min(d, cap + 1) for d in desired) <= available:
        cap += 1
    widths = [min(d, cap) for d in desired]
    spare = available - sum(widths)
    for i, wanted in enumerate(desired):
        if spare <= 0:
            break
        if wanted > widths[i]:
            widths[i] += 1
            spare -= 1
    return widths


def swimlane(
    events: Sequence[Event],
    *,
    focus: float | None = None,
    window: int = 12,
    width: int = 100,
    origin: float | None = None,
) -> str:
    """A per-process swimlane of the events around ``focus``, at most ``width`` wide.

    With ``focus`` (a monotonic timestamp) it shows up to ``window`` events before
    and after the event closest to it, marked ``>>``; without, every event if there
    are at most ``2 * window``, else the first and the last ``window``.  Times are
    milliseconds from ``origin`` (default: the first shown event).  One column per
    lane seen in the shown events; cells are cut with ``…`` to fit.  If the lanes
    cannot get :data:`MIN_CELL_WIDTH` each, it falls back to one line per event
    with the lane named, which stays readable however many lanes there are.
    """
    if window < 0:
        raise ValueError(f"swimlane window must be >= 0, got {window}")
    ordered = _ordered(events)
    if not ordered:
        return "(no events recorded)"
    rows, focus_index = _window_rows(ordered, focus, window)
    shown = [row for row in rows if isinstance(row, int)]
    if not shown:  # window 0 and no focus: nothing asked for
        return _Gap(len(ordered), "").text()
    start = origin if origin is not None else ordered[shown[0]].ts
    pids = _PidTracker()
    lanes = lane_order(ordered[i].process for i in shown)
    times = {i: _relative(ordered[i].ts, start) for i in shown}
    cells = {
        i: _describe(
            ordered[i],
            pid_changed=pids.changed(ordered[i]),
            detail_limit=SWIMLANE_DETAIL_KEYS,
            site=True,
        )
        for i in shown
    }
    time_width = max(len("time"), *(len(t) for t in times.values()))
    prefix_width = len(FOCUS_MARK) + 1 + time_width
    available = width - prefix_width - 3 * len(lanes)
    if available < MIN_CELL_WIDTH * len(lanes):
        return _event_list(
            ordered=ordered, rows=rows, focus_index=focus_index, times=times, cells=cells,
            time_width=time_width, width=width,
        )
    desired = [
        max(len(lane), *(len(cells[i]) for i in shown if ordered[i].process == lane))
        for lane in lanes
    ]
    widths = _column_widths(desired, available)
    column = {lane: n for n, lane in enumerate(lanes)}

    def line(mark: str, time: str, texts: Sequence[str]) -> str:
        body = "".join(f" | {_fit(t, w):<{w}}" for t, w in zip(texts, widths, strict=True))
        return f"{mark:<{len(FOCUS_MARK)}} {time:<{time_width}}{body}".rstrip()

    out = [
        line("", "time", lanes),
        "-" * prefix_width + "".join("-+-" + "-" * w for w in widths),
    ]
    for row in rows:
        if isinstance(row, _Gap):
            out.append(_fit(f"{'':<{len(FOCUS_MARK)}} {row.text()}", width))
            continue
        texts = [""] * len(lanes)
        texts[column[ordered[row].process]] = cells[row]
        mark = FOCUS_MARK if row == focus_index else ""
        out.append(line(mark, f"{times[row]:>{time_width}}", texts))
    return "\n".join(out)


def _event_list(
    *,
    ordered: Sequence[Event],
    rows: Sequence[int | _Gap],
    focus_index: int | None,
    times: Mapping[int, str],
    cells: Mapping[int, str],
    time_width: int,
    width: int,
) -> str:
    """The swimlane's fallback: one line per event, the lane named instead of placed."""
    lane_width = min(24, max(len(ordered[i].process) for i in cells))
    out: list[str] = []
    for row in rows:
        if isinstance(row, _Gap):
            out.append(_fit(f"{'':<{len(FOCUS_MARK)}} {row.text()}", width))
            continue
        mark = FOCUS_MARK if row == focus_index else ""
        lane = _fit(ordered[row].process, lane_width)
        text = f"{mark:<{len(FOCUS_MARK)}} {times[row]:>{time_width}}  {lane:<{lane_width}}  "
        out.append(_fit(text + cells[row], width).rstrip())
    return "\n".join(out)


# --------------------------------------------------------------------------- mermaid

_MERMAID_UNSAFE = re.compile(r"[#;<>]")
_ARROW = "->>"
_REPLY = "-->>"
_CROSS = "-x"


def _mermaid_text(text: str) -> str:
    """Text Mermaid can take after ``:`` or ``as``: one line, ``#;<>`` as entity codes.

    Mermaid ends a label at ``#``, ``;`` or a newline; ``#59;`` style codes are
    its own escape and render as the character.
    """
    one_line = " ".join(text.split())
    return _MERMAID_UNSAFE.sub(lambda m: f"#{ord(m.group())};", one_line)


def _mermaid_ids(lanes: Sequence[str]) -> dict[str, str]:
    """A Mermaid-safe id per lane: ``lane_`` keeps clear of keywords (``end``, ``note``...)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for lane in lanes:
        base = "lane_" + re.sub(r"[^A-Za-z0-9_]", "_", lane)
        candidate, n = base, 2
        while candidate.lower() in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate.lower())
        ids[lane] = candidate
    return ids


def _interaction(event: Event) -> tuple[str, str, str] | None:
    """``(from lane, to lane, arrow)`` for a message-like event, else ``None`` (a note)."""
    if event.site is None:
        return None
    client, train = client_lane(event.site), training_lane(event.site)
    here = event.process
    pairs = {
        EventKind.TASK_SENT: (here, train, _ARROW),
        EventKind.RESULT_SENT: (here, client, _ARROW),
        EventKind.SUBMIT: (client, here, _ARROW),
        EventKind.DOWNLOAD_START: (here, train, _ARROW),
        EventKind.DOWNLOAD_DONE: (train, here, _REPLY),
        EventKind.SIGNAL_SENT: (here, train, _CROSS),
    }
    pair = pairs.get(event.kind)
    if pair is None or pair[0] == pair[1]:
        return None
    return pair


@dataclass
class _ChunkRun:
    """Consecutive ``download_chunk`` events of one downloader, drawn as one note."""

    line: int
    first: Event
    last: Event
    count: int = 1


def mermaid(events: Sequence[Event]) -> str:
    """A Mermaid ``sequenceDiagram`` of the whole timeline.

    Participants are the lanes (plus lanes a message goes to that recorded
    nothing, such as a training process killed before it started).  Task,
    result, SubmitUpdate, download and signal events are arrows between lanes;
    every other event is a note over its lane.  Runs of ``download_chunk`` are
    one note with a count, so a large model does not drown the diagram.
    """
    ordered = _ordered(events)
    if not ordered:
        return "sequenceDiagram\n    title no events recorded"
    implied = [lane for e in ordered if (pair := _interaction(e)) for lane in pair[:2]]
    lanes = lane_order([e.process for e in ordered] + implied)
    ids = _mermaid_ids(lanes)
    origin = ordered[0].ts
    lines = ["sequenceDiagram"]
    lines += [f"    participant {ids[lane]} as {_mermaid_text(lane)}" for lane in lanes]
    pids = _PidTracker()
    runs: dict[tuple[str, str | None, int | None], _ChunkRun] = {}

    def label(event: Event, pid_changed: bool, *, site: bool) -> str:
        text = _describe(event, pid_changed=pid_changed, detail_limit=None, site=site)
        text = f"{_relative(event.ts, origin)} {text}"
        return _mermaid_text(_fit(text, MERMAID_LABEL_WIDTH))

    def close_run(key: tuple[str, str | None, int | None]) -> None:
        run = runs.pop(key)
        if run.count == 1:
            text = label(run.first, False, site=True)
        else:
            kind = _describe(run.first, pid_changed=False, detail_limit=0, site=True)
            text = _mermaid_text(
                f"{_relative(run.first.ts, origin)} {kind}"
                f" {run.count} chunks until {_relative(run.last.ts, origin)}"
            )
        lines[run.line] = f"    Note over {ids[run.first.process]}: {text}"

    for event in ordered:
        key = (event.process, event.site, event.round)
        if event.kind is EventKind.DOWNLOAD_CHUNK:
            if key in runs:
                runs[key].count += 1
                runs[key].last = event
            else:
                runs[key] = _ChunkRun(line=len(lines), first=event, last=event)
                lines.append("")  # filled when the run ends
            continue
        for open_key in [k for k in runs if k[:2] == key[:2]]:
            close_run(open_key)
        pid_changed = pids.changed(event)
        pair = _interaction(event)
        if pair is None:
            text = label(event, pid_changed, site=True)
            lines.append(f"    Note over {ids[event.process]}: {text}")
        else:
            source, target, arrow = pair
            text = label(event, pid_changed, site=False)
            lines.append(f"    {ids[source]}{arrow}{ids[target]}: {text}")
    for open_key in list(runs):
        close_run(open_key)
    return "\n".join(lines)


# --------------------------------------------------------------------------- failure report


def _shell_quote(text: str) -> str:
    """Always single-quoted, so ``[`` and ``::`` in node ids survive every shell."""
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _reproduce_command(reproduce: str, options: Sequence[str]) -> str:
    """``reproduce`` is a pytest node id, or a whole command starting with ``pytest``/``python``;
    each of ``options`` (``--name=value``) the command does not already set is added."""
    command = reproduce.strip()
    if not command.startswith(("pytest", "python")):
        command = f"pytest {_shell_quote(command)}"
    for option in options:
        name = option.split("=", 1)[0]
        if name not in command:
            command += f" {_shell_quote(option) if _needs_quotes(option) else option}"
    return command


def _needs_quotes(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_.,:=+/@%-]+", text) is None


@dataclass(frozen=True)
class Against:
    """What a run was judged against, and the options that select it again.

    ``options`` are command-line options (``--flrelia-known-bug=sync-stop``) that the
    ``reproduce:`` line must carry for a rerun to see the same system with the same times.
    """

    target: str = REFERENCE_TARGET
    known_bug: str | None = None
    """The selected variant (a known-bug slug for the reference target)."""
    options: tuple[str, ...] = ()
    version: str | None = None
    """What the target says is installed (``TargetInfo.version``)."""

    def text(self) -> str:
        """``the correct reference implementation``, ``the reference target, known bug 'x'``,
        ``target 'mine' 0.1``, ``target 'mine' 0.1, variant '2.7'``."""
        version = f" {self.version}" if self.version else ""
        if self.target != REFERENCE_TARGET:
            variant = f", variant {self.known_bug!r}" if self.known_bug is not None else ""
            return f"target {self.target!r}{version}{variant}"
        if self.known_bug is not None:
            return f"the {REFERENCE_TARGET} target{version}, known bug {self.known_bug!r}"
        return f"the correct {REFERENCE_TARGET} implementation{version}"


def _labelled(label: str, text: str) -> list[str]:
    """``  label: text``, continuation lines aligned under the text."""
    lead = f"  {label:<9} "
    body = text.splitlines() or [""]
    return [lead + body[0]] + [" " * len(lead) + rest for rest in body[1:]]


def _failure_lines(failure: CheckFailure, origin: float | None) -> list[str]:
    title = failure.name if failure.name == "expectation" else f"invariant {failure.name}"
    if failure.at is not None and origin is not None:
        title += f" at {_relative(failure.at, origin)}"
    lines = [title, *_labelled("expected:", failure.expected), *_labelled("seen:", failure.seen)]
    if failure.events:
        lines.append("  evidence:")
        start = origin if origin is not None else failure.events[0].ts
        pids = _PidTracker()
        for event in failure.events:
            text = _describe(event, pid_changed=pids.changed(event), detail_limit=None, site=True)
            row = f"    {_relative(event.ts, start)} {event.process} {text}"
            lines.append(_fit(row, REPORT_WIDTH))
    return lines


def failure_report(
    *,
    scenario_name: str,
    scenario_path: str,
    line: int,
    description: str,
    failures: Sequence[CheckFailure],
    events: Sequence[Event],
    reproduce: str,
    against: Against,
    seconds: float,
    not_applicable: Sequence[tuple[str, str]] = (),
) -> str:
    """The text of a failed scenario: what failed, the evidence, how to reproduce it.

    ``not_applicable`` lists (check, why) for the default checks that had nothing
    to judge in the run: a reader must see what was not checked.

    Times in the report are all milliseconds from the first event of the run,
    so ``seen``, the evidence and the swimlane agree.  The swimlane is centred
    on the first failure that has an ``at``.  ``reproduce`` is the scenario's
    pytest node id (or a whole command); ``against.options`` are added to it.
    """
    ordered = _ordered(events)
    origin = ordered[0].ts if ordered else None
    out = [
        f"scenario {scenario_name} ({scenario_path}:{line}) failed against {against.text()}"
        f" after {seconds:.2f}s"
    ]
    out += [f"  {text}" for text in description.strip().splitlines()]
    for failure in failures:
        out += _failure_lines(failure, origin)
    if not_applicable:
        out.append("not applicable (nothing to judge in this run):")
        out += [f"  {name}: {why}" for name, why in not_applicable]
    focus = next((f.at for f in failures if f.at is not None), None)
    return "\n".join(out + _closing_lines(ordered, focus, origin, reproduce, against))


def harness_error_report(
    *,
    scenario_name: str,
    scenario_path: str,
    line: int,
    error: str,
    events: Sequence[Event],
    reproduce: str,
    against: Against,
    seconds: float,
) -> str:
    """The text of a run the harness (or the target) crashed in: the whole traceback.

    No invariant is judged: a crash says nothing about the system under test, so
    the report says so instead of listing checks that failed for want of a result.
    """
    ordered = _ordered(events)
    origin = ordered[0].ts if ordered else None
    out = [
        f"scenario {scenario_name} ({scenario_path}:{line}): harness error against "
        f"{against.text()} after {seconds:.2f}s",
        "  the harness or the target raised; no invariant was judged",
    ]
    out += [f"  {text}" for text in error.rstrip().splitlines()]
    return "\n".join(out + _closing_lines(ordered, None, origin, reproduce, against))


def cut_report(
    *,
    scenario_name: str,
    scenario_path: str,
    line: int,
    description: str,
    message: str,
    artifacts: Sequence[Path] | None,
    events: Sequence[Event],
    reproduce: str,
    against: Against,
    seconds: float,
) -> str:
    """The text of a run pytest-timeout cut short: ``message`` (its own words), where the
    timeline so far went (``artifacts``; ``None`` without ``--flrelia-report``), the
    timeline's last events and how to rerun it.  No invariant is judged: the run was cut."""
    ordered = _ordered(events)
    origin = ordered[0].ts if ordered else None
    out = [
        f"scenario {scenario_name} ({scenario_path}:{line}) was cut by pytest-timeout "
        f"against {against.text()} after {seconds:.2f}s",
    ]
    out += [f"  {text}" for text in description.strip().splitlines()]
    out += [message, "  the run was aborted and its processes killed; no invariant was judged"]
    if artifacts is None:
        out.append("  its timeline was not kept: rerun with --flrelia-report=DIR to keep it")
    else:
        out.append(f"  its timeline so far: {', '.join(str(p) for p in artifacts)}")
    return "\n".join(out + _closing_lines(ordered, None, origin, reproduce, against))


def _closing_lines(
    ordered: Sequence[Event],
    focus: float | None,
    origin: float | None,
    reproduce: str,
    against: Against,
) -> list[str]:
    """How every report ends: the timeline (around ``focus``, if any), then how to rerun."""
    return [
        *_timeline_lines(ordered, focus, origin),
        "reproduce:",
        f"  {_reproduce_command(reproduce, against.options)}",
    ]


def _timeline_lines(
    ordered: Sequence[Event], focus: float | None, origin: float | None
) -> list[str]:
    if not ordered:
        return ["timeline: no events were recorded"]
    return [
        "timeline around the violation:" if focus is not None else "timeline:",
        swimlane(ordered, focus=focus, width=REPORT_WIDTH, origin=origin),
    ]


# --------------------------------------------------------------------------- artifacts

_MAX_NAME = 120


def safe_file_name(name: str) -> str:
    """``name`` usable as a file name anywhere: ``a[x=1]`` -> ``a_x_1_``.

    No separators, no leading dot (hidden files, ``..``), and a hash suffix when
    it had to be shortened, so two long names never collide.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    cleaned = re.sub(r"^\.", "_", cleaned) or "scenario"
    if len(cleaned) > _MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        cleaned = f"{cleaned[: _MAX_NAME - 13]}-{digest}"
    return cleaned


def write_verdict(
    directory: Path, name: str, lines: Sequence[str], against: Against | None = None
) -> Path:
    """Write ``<name>.verdict.txt``, one line per check (``n/a`` ones too), after an
    ``against ...`` line naming the target and variant when given; return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{safe_file_name(name)}.verdict.txt"
    head = [f"against {against.text()}"] if against is not None else []
    path.write_text("".join(f"{line}\n" for line in (*head, *lines)), encoding="utf-8")
    return path


def write_artifacts(directory: Path, name: str, events: Sequence[Event]) -> tuple[Path, Path]:
    """Write ``<name>.timeline.jsonl`` and ``<name>.mmd``; return their paths (in that order)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = safe_file_name(name)
    timeline_path = directory / f"{stem}.timeline.jsonl"
    mermaid_path = directory / f"{stem}.mmd"
    ordered = _ordered(events)
    timeline_path.write_text("".join(e.to_json() + "\n" for e in ordered), encoding="utf-8")
    mermaid_path.write_text(mermaid(ordered) + "\n", encoding="utf-8")
    return timeline_path, mermaid_path
