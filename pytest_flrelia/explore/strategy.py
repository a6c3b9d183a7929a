"""The Hypothesis strategy of schedules, bounded by what a target declares.

A schedule is a scenario mapping (the YAML a user would write, without its name): a
job shape, 0-3 benign faults and at most one fatal fault (:mod:`.effects`), and the
expectation that follows from them.  Every choice is drawn so that Hypothesis's
shrinker moves toward the simpler schedule: fewer sites, rounds and faults, smaller
tensors, shorter delays, no fatal fault, the first fault of the list below.

Constraints (each one keeps the correct outcome statable; docs/explore.md lists them):

* only faults, scopes and ``at:`` points the target declares (:class:`TargetInfo`);
* ``per_round_only`` faults only with ``launch_once: false``; faults that act on a launch
  or an init only in round 1 (or every round) with ``launch_once: true``;
* download faults only in a training round of a job with tensors; ``chunk`` within the
  tensor's chunks; ``times`` within ``download_retries`` (benign) or just past it (fatal);
* delays at most a third of the timeout they race;
* a fatal fault is pinned to one site and round R; every other fault to a round < R;
* with a target that declares ``named_sites``, the sites and the job may be renamed
  (:mod:`.names`, drawn last).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from pytest_flrelia.contract.target import TargetInfo
from pytest_flrelia.explore.effects import (
    ABRUPT_SIGNALS,
    KILL_AT,
    KILLING_SIGNALS,
    NO_DOWNLOAD,
    PIPE_STOPPED,
    PROCESS_KILLERS,
    Fatal,
)
from pytest_flrelia.explore.names import with_names
from pytest_flrelia.scenario.catalog import CATALOG

Draw = Callable[[st.SearchStrategy[Any]], Any]
Entry = dict[str, Any]

MAX_SITES = 3
MAX_ROUNDS = 3
MAX_BENIGN = 3
CONTINUE_ODDS = 5
"""One more benign fault unless a draw of 0..5 gives 0 (the shrinker's way to end it)."""
DRAW_ATTEMPTS = 4
"""Faults tried for one slot before it stays empty (most are refused by some shapes)."""
MAX_TENSORS = 3
MAX_TENSOR_KIB = 64
DOWNLOAD_RETRIES = 2
CONNECT = 1.0
"""``download_connect`` of every schedule (seconds)."""
SUBMIT_MARGIN_MS = 6000
"""``submit_update`` is the stop wait plus this much (stop_grace 1 s and the round)."""


@dataclass(frozen=True)
class Shape:
    """The job of a schedule, as far as the fault draws need it."""

    sites: int
    rounds: int
    launch_once: bool
    tensors: int
    chunks: int
    """Chunks per tensor."""
    validate: tuple[int, ...]
    wait: float
    """``download_complete`` and ``stop_wait`` (seconds)."""

    @property
    def train_rounds(self) -> list[int]:
        return [r for r in range(1, self.rounds + 1) if r not in self.validate]

    @property
    def downloads(self) -> bool:
        """Whether some round downloads anything."""
        return self.tensors > 0 and bool(self.train_rounds)

    def site_names(self) -> list[str]:
        return [f"site-{i + 1}" for i in range(self.sites)]


@dataclass(frozen=True)
class Window:
    """The rounds a benign fault may be scoped to: all (``before`` None) or < ``before``."""

    before: int | None

    def rounds(self, shape: Shape, among: Sequence[int] | None = None) -> list[int]:
        last = shape.rounds if self.before is None else self.before - 1
        pool = range(1, shape.rounds + 1) if among is None else among
        return [r for r in pool if r <= last]

    @property
    def unscoped_ok(self) -> bool:
        """A fault without ``round`` strikes every round: only without a fatal fault."""
        return self.before is None


def _ms(draw: Draw, low: int, high: int) -> str:
    return f"{draw(st.integers(low, max(low, high)))}ms"


def _shape(draw: Draw) -> tuple[Shape, dict[str, Any]]:
    sites = draw(st.integers(1, MAX_SITES))
    rounds = draw(st.integers(1, MAX_ROUNDS))
    launch_once = draw(st.booleans())
    tensors = draw(st.integers(0, MAX_TENSORS))
    kib = draw(st.integers(1, MAX_TENSOR_KIB))
    chunks = draw(st.integers(1, 4))
    validate = tuple(r for r in range(1, rounds + 1) if draw(st.booleans()))
    wait_ms = draw(st.integers(1500, 3000))
    shape = Shape(sites, rounds, launch_once, tensors, chunks, validate, wait_ms / 1000)
    job: dict[str, Any] = {"sites": sites, "rounds": rounds}
    if launch_once:
        job["launch_once"] = True
    job["tensors"] = {"count": tensors, "size": f"{kib}KiB"}
    # In bytes, whatever the dtype: most boundaries fall inside an element (the
    # reference's sink refused such chunks until exploring found it).
    job["chunk_size"] = math.ceil(kib * 1024 / chunks)
    if validate:
        job["validate_rounds"] = list(validate)
    job["download_retries"] = DOWNLOAD_RETRIES
    job["timeouts"] = {
        "download_complete": f"{wait_ms}ms",
        "stop_wait": f"{wait_ms}ms",
        "download_connect": f"{int(CONNECT * 1000)}ms",
        # The server's wait for a round's result covers a boundary held by a forced stop
        # (stop_wait, then stop_grace) and the round itself: found by exploring, when a
        # fast 5 s submit_update failed a correct run whose previous round was stuck.
        "submit_update": f"{wait_ms + SUBMIT_MARGIN_MS}ms",
    }
    return shape, job


def honoured(info: TargetInfo, name: str) -> frozenset[str]:
    """The scope keys of fault ``name`` the catalog offers and the target honours: a
    scope the target would ignore is never drawn (the fault would strike wider)."""
    return frozenset(CATALOG[name].scopes) & frozenset(info.faults[name].scopes)


def _scope(
    draw: Draw,
    entry: Entry,
    shape: Shape,
    window: Window,
    scopes: frozenset[str],
    *,
    site: bool = True,
    rounds: Sequence[int] | None = None,
    required_round: bool = False,
) -> Entry | None:
    """``entry`` with a drawn ``site`` and ``round`` among ``scopes`` (``rounds``: the
    eligible ones), or ``None`` when no round is eligible or one is needed and the
    target does not honour it."""
    if site and "site" in scopes and draw(st.booleans()):
        entry["site"] = draw(st.sampled_from(shape.site_names()))
    if "round" not in scopes:
        if required_round or CATALOG[entry["fault"]].round_required:
            return None
        return entry if window.unscoped_ok else None
    eligible = window.rounds(shape, rounds)
    unscoped = window.unscoped_ok and not required_round
    if not eligible and not unscoped:
        return None
    if eligible and (not unscoped or draw(st.booleans())):
        entry["round"] = draw(st.sampled_from(eligible))
    return entry


def _launch_rounds(shape: Shape) -> list[int] | None:
    """Rounds in which a process launches: every round, or only round 1."""
    return [1] if shape.launch_once else None


def _benign(
    draw: Draw, name: str, shape: Shape, window: Window, info: TargetInfo
) -> list[Entry] | None:
    """One benign fault ``name`` (with ignore_sigterm: the stuck_exit it needs), or
    ``None`` when it cannot be drawn for this shape."""
    scopes = honoured(info, name)
    wait_ms = int(shape.wait * 1000)
    fault = CATALOG[name]
    if fault.per_round_only and shape.launch_once:
        return None
    entry: Entry = {"fault": name}
    if name == "delayed_download":
        if not shape.downloads:
            return None
        entry["delay"] = _ms(draw, 50, wait_ms // 3)
        scoped = _scope(draw, entry, shape, window, scopes, rounds=shape.train_rounds)
    elif name == "slow_aggregation":
        if not shape.downloads:
            return None
        entry["delay"] = _ms(draw, 50, 600)
        scoped = _scope(draw, entry, shape, window, scopes, site=False, rounds=shape.train_rounds)
    elif name == "slow_start":
        entry["delay"] = _ms(draw, 50, 800)
        scoped = _scope(draw, entry, shape, window, scopes, rounds=_launch_rounds(shape))
    elif name == "orphan_child":
        scoped = _scope(draw, entry, shape, window, scopes, rounds=_launch_rounds(shape))
    elif name in ("stale_peer_gone", "stale_pipe_message"):
        # Into a training round of a job with tensors only (see aux_event below).
        if not shape.downloads:
            return None
        if name == "stale_pipe_message":
            entry["topic"] = draw(st.sampled_from(("END", "PEER_GONE")))
        later = [r for r in shape.train_rounds if r >= 2]
        scoped = _scope(draw, entry, shape, window, scopes, rounds=later, required_round=True)
        if scoped is not None and name == "stale_peer_gone" and scoped["round"] >= 3:
            # From any retired round, the one just before first (the default): a launcher
            # that ignores only the previous round's handler obeys an older one.
            older = draw(st.sampled_from(range(scoped["round"] - 1, 0, -1)))
            if older != scoped["round"] - 1:
                scoped["from_round"] = older
    elif name == "aux_event":
        entry["at"] = draw(st.sampled_from(("during_execute", "launch", "init")))
        # In a round with nothing to download the process says END right after its
        # result: the judge reads that handler stop as the auxiliary event's
        # (stale_events_ignored failed on a correct runtime, intermittently, for every
        # ``at:``; reported), so it lands only in training rounds of a job with tensors.
        if not shape.downloads:
            return None
        train = shape.train_rounds
        rounds = [1] if shape.launch_once and entry["at"] != "during_execute" else train
        scoped = _scope(
            draw,
            entry,
            shape,
            window,
            scopes,
            rounds=[r for r in rounds if r in train],
            required_round=bool(shape.validate),  # unscoped, it would strike those too
        )
    elif name == "stop_error":
        scoped = _scope(draw, entry, shape, window, scopes)
    elif name == "slow_stop":
        entry["delay"] = _ms(draw, 50, min(600, wait_ms // 3))
        scoped = _scope(draw, entry, shape, window, scopes)
    elif name == "heartbeat_loss":
        if not window.unscoped_ok:  # it takes no round: it would strike a fatal's round
            return None
        entry["duration"] = _ms(draw, 50, 600)
        scoped = _scope(draw, entry, shape, window, scopes)
    elif name == "corrupt_chunk":
        if not shape.downloads:
            return None
        entry["times"] = draw(st.integers(1, DOWNLOAD_RETRIES))
        entry["chunk"] = draw(st.sampled_from([*range(1, shape.chunks + 1), "last"]))
        scoped = _scope(draw, entry, shape, window, scopes, rounds=shape.train_rounds)
    elif name == "stuck_exit":
        if shape.launch_once and not window.unscoped_ok:
            return None  # one process exits at the end of the job, after the fatal round
        refused = info.faults[name].refused.get("mode", {})
        modes = [m for m in CATALOG[name].params["mode"].choices if m not in refused]
        entry["mode"] = draw(st.sampled_from(modes))
        # with one process for all rounds, no round of its own
        every: list[int] | None = [] if shape.launch_once else None
        scoped = _scope(draw, entry, shape, window, scopes, rounds=every)
        partner_ok = "ignore_sigterm" in info.faults and scoped is not None and all(
            key in honoured(info, "ignore_sigterm") for key in ("site", "round") if key in scoped
        )
        if scoped is not None and partner_ok and draw(st.booleans()):
            partner: Entry = {"fault": "ignore_sigterm"}
            partner.update({k: v for k, v in scoped.items() if k in ("site", "round")})
            return [scoped, partner]
    elif name in PROCESS_KILLERS:  # at after_download: the round is complete already
        if not shape.downloads:
            return None
        entry["at"] = "after_download"
        if name == "early_sigterm":
            entry["signal"] = draw(st.sampled_from(KILLING_SIGNALS))
        if shape.launch_once:  # the one process may end only after the last round
            if not window.unscoped_ok or shape.rounds not in shape.train_rounds:
                return None
            if "round" not in scopes:
                return None
            if "site" in scopes and draw(st.booleans()):
                entry["site"] = draw(st.sampled_from(shape.site_names()))
            entry["round"] = shape.rounds
            scoped = entry
        else:
            scoped = _scope(draw, entry, shape, window, scopes, rounds=shape.train_rounds)
    else:
        return None
    return None if scoped is None else [scoped]


BENIGN: tuple[str, ...] = (
    "delayed_download",
    "slow_start",
    "slow_aggregation",
    "stale_peer_gone",
    "aux_event",
    "corrupt_chunk",
    "slow_stop",
    "stop_error",
    "stale_pipe_message",
    "heartbeat_loss",
    "orphan_child",
    "stuck_exit",
    "crash",
    "early_sigterm",
)
"""Benign faults in shrink order (the shrinker prefers the first)."""


def _fatal(draw: Draw, shape: Shape, names: set[str], info: TargetInfo) -> tuple[Entry, str] | None:
    """One fatal fault pinned to a site and round, and the error pattern it must carry."""
    options: list[tuple[str, str]] = []
    pinned = {"site", "round"}  # a fatal fault strikes one site in one round
    names = {n for n in names if pinned <= honoured(info, n)}
    for name in ("crash", "early_sigterm"):
        if name in names:
            points = info.faults[name].at
            options += [
                (name, at)
                for at, effect in KILL_AT.items()
                if effect is not None and (points is None or at in points)
            ]
    if "broken_pipe" in names:
        points = info.faults["broken_pipe"].at
        if points is None or "after_task_received" in points:
            options.append(("broken_pipe", "after_task_received"))
    if "corrupt_chunk" in names and shape.downloads:
        options.append(("corrupt_chunk", ""))
    if not options:
        return None
    name, at = draw(st.sampled_from(options))
    site = draw(st.sampled_from(shape.site_names()))
    entry: Entry = {"fault": name, "site": site}
    rounds = list(range(1, shape.rounds + 1))
    effect: Fatal
    if name == "corrupt_chunk":
        rounds = shape.train_rounds
        effect = NO_DOWNLOAD
    else:
        entry["at"] = at
        known = KILL_AT[at] if name in PROCESS_KILLERS else PIPE_STOPPED
        assert known is not None
        effect = known
        if at in ("after_result_sent", "mid_download"):
            if not shape.downloads or (at == "mid_download" and shape.chunks < 2):
                return None
            rounds = shape.train_rounds
        if (at == "before_init" or name == "broken_pipe") and shape.launch_once:
            rounds = [1]
    if not rounds:
        return None
    entry["round"] = draw(st.sampled_from(rounds))
    if name == "early_sigterm":
        entry["signal"] = draw(st.sampled_from(ABRUPT_SIGNALS))
    elif name == "crash":
        entry["code"] = draw(st.integers(1, 9))
    elif name == "corrupt_chunk":
        entry["times"] = DOWNLOAD_RETRIES + 1
    return entry, effect.pattern(site)


@dataclass(frozen=True)
class Schedule:
    """A drawn schedule: the scenario mapping (no name yet) and what it was drawn from."""

    mapping: dict[str, Any]
    faults: int

    def named(self, name: str, header_description: str = "") -> dict[str, Any]:
        """The mapping with its ``name`` (and a description) first, as a file holds it."""
        out: dict[str, Any] = {"name": name}
        if header_description:
            out["description"] = header_description
        out.update(self.mapping)
        return out


def supported(info: TargetInfo) -> set[str]:
    """Faults the target declares that the generator knows how to draw."""
    known = {*BENIGN, "ignore_sigterm", "broken_pipe"}
    return {name for name in info.faults if name in known and name in CATALOG}


def bound(shape: Shape, entries: Sequence[Entry]) -> float:
    """A generous ``within`` (seconds): the job's own time plus every wait a fault adds,
    with room for a loaded 2-core machine (a correct run must never hit it)."""
    per_round = 3.0
    for entry in entries:
        for key in ("delay", "duration"):
            if key in entry:
                per_round += float(str(entry[key]).removesuffix("ms")) / 1000
        if entry["fault"] == "stuck_exit":
            per_round += shape.wait + 2.0
        if entry["fault"] == "corrupt_chunk":
            per_round += 1.0
    return 10.0 + shape.rounds * per_round


EXCLUSIVE: tuple[frozenset[str], ...] = (
    frozenset({"corrupt_chunk"}),
    frozenset({"stuck_exit", *PROCESS_KILLERS}),
    frozenset({"stale_pipe_message", "stuck_exit", *PROCESS_KILLERS}),
)
"""At most one fault of each group per schedule: two corruptions of one site add up past
``download_retries``; a process killed after its download never reaches a stuck exit; a
process killed after its download, or stopped by force after a stuck exit, says no
goodbye, so its round's handler may still be running when the late message comes and
read it, and the message is never left in the pipe (the fault is reported not
delivered; all found by exploring the correct runtime)."""


def _excluded(name: str, drawn: Sequence[str]) -> bool:
    """One fault of a name per schedule (the loader refuses two of a kind whose scopes
    meet, found with two slow_aggregation), and one of each :data:`EXCLUSIVE` group."""
    return name in drawn or any(
        name in group and any(d in group for d in drawn) for group in EXCLUSIVE
    )


def focus_of(info: TargetInfo, index: int) -> str | None:
    """The benign fault schedule ``index`` leans toward: each the target supports in turn,
    so a rare one (a stale PEER_GONE message, a corrupt last chunk) comes up in one
    schedule of every ``len(BENIGN) * 2`` instead of hanging on a uniform draw."""
    names = [n for n in BENIGN if n in supported(info)]
    return names[index % len(names)] if names else None


@st.composite
def schedules(draw: Draw, info: TargetInfo, focus: str | None = None) -> Schedule:
    """A schedule for ``info``'s target: valid by construction, with its expectation.
    With ``focus``, half the draws start with that fault (the flag shrinks to "no", so a
    failure that does not need it sheds it)."""
    names = supported(info)
    shape, job = _shape(draw)
    fatal = _fatal(draw, shape, names, info) if draw(st.integers(0, 3)) == 3 else None
    window = Window(None if fatal is None else int(fatal[0]["round"]))
    entries: list[Entry] = []
    candidates = [n for n in BENIGN if n in names]
    # A list the shrinker deletes from anywhere: each fault is one block behind its own
    # "one more?" draw (a count drawn up front makes deleting a middle fault two edits).
    if focus in candidates and draw(st.integers(0, 1)):
        entries.extend(_benign(draw, focus, shape, window, info) or ())
    for _ in range(MAX_BENIGN if candidates else 0):
        if not draw(st.integers(0, CONTINUE_ODDS)):
            break
        for _attempt in range(DRAW_ATTEMPTS):  # a fault this shape cannot take: another
            name = draw(st.sampled_from(candidates))
            if _excluded(name, [e["fault"] for e in entries]):
                continue
            drawn = _benign(draw, name, shape, window, info)
            if drawn is not None:
                entries.extend(drawn)
                break
    expect: dict[str, Any] = {"outcome": "success"}
    if fatal is not None:
        entries.append(fatal[0])
        expect = {"outcome": "failure", "error": fatal[1]}
    expect["within"] = f"{round(bound(shape, entries) * 1000)}ms"
    mapping: dict[str, Any] = {"job": job}
    if entries:
        mapping["faults"] = entries
    mapping["expect"] = expect
    if info.named_sites:  # drawn last: a target without names draws what it drew before
        mapping = with_names(draw, mapping, shape.sites)
    return Schedule(mapping, len(entries))


__all__ = ["BENIGN", "Schedule", "Shape", "bound", "focus_of", "schedules", "supported"]
