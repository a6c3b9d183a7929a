"""The event contract: what a target records, in which lane, with which detail keys.

Every event has a *lane* (``Event.process``): the server, one site's client (the
launcher side), one site's training process, or the harness.  Lanes are built and
read by the functions here, never by string prefixes elsewhere.  ``Event.pid`` is
always the OS process that recorded the event; a process an event is *about* is
``detail["pid"]``.

:data:`CONTRACT` says, per :class:`EventKind`, which lane records it and which
detail keys it must carry; :func:`violations` checks a run's events against it.
Which checks read which kinds is the judge's to declare
(``pytest_flrelia.judge``); ``docs/events.md`` shows both, generated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from pytest_flrelia.contract.timeline import Event, EventKind


class LaneKind(str, Enum):
    """Who records an event."""

    SERVER = "server"
    CLIENT = "client"
    """One site's client: the launcher, the executor, its pipe handler."""
    TRAINING = "train"
    """One site's training process (the subprocess the launcher started)."""
    HARNESS = "harness"
    """The harness itself: injected faults, bounds, live checks."""


@dataclass(frozen=True)
class Lane:
    kind: LaneKind
    site: str | None = None

    def __str__(self) -> str:
        return self.kind.value if self.site is None else f"{self.kind.value}-{self.site}"


def server_lane() -> str:
    return str(Lane(LaneKind.SERVER))


def harness_lane() -> str:
    return str(Lane(LaneKind.HARNESS))


def client_lane(site: str) -> str:
    return str(Lane(LaneKind.CLIENT, site))


def training_lane(site: str) -> str:
    return str(Lane(LaneKind.TRAINING, site))


def lane_of(process: str) -> Lane | None:
    """The lane a ``Event.process`` names, or ``None`` if it names none of the contract."""
    for kind in LaneKind:
        if process == kind.value and kind in (LaneKind.SERVER, LaneKind.HARNESS):
            return Lane(kind)
        prefix = f"{kind.value}-"
        if kind in (LaneKind.CLIENT, LaneKind.TRAINING) and process.startswith(prefix):
            return Lane(kind, process[len(prefix):])
    return None


def in_lane(event: Event, kind: LaneKind) -> bool:
    lane = lane_of(event.process)
    return lane is not None and lane.kind is kind


def is_training(event: Event) -> bool:
    """Recorded by a training process (not by the launcher that watches it)."""
    return in_lane(event, LaneKind.TRAINING)


@dataclass(frozen=True)
class EventSpec:
    """The contract of one event kind."""

    lanes: frozenset[LaneKind]
    """Who may record it."""
    required: tuple[str, ...] = ()
    """Detail keys it must carry."""
    meaning: str = ""
    """One line: what happened when it is recorded (and what ``detail["pid"]`` is, if any)."""


CONTRACT: Mapping[EventKind, EventSpec] = MappingProxyType({})
"""Every kind's contract.  (Filled in by the event-contract change.)"""


def violations(events: Iterable[Event]) -> list[str]:
    """Each event that breaks :data:`CONTRACT`, one line each (empty: all keep it)."""
    problems: list[str] = []
    for event in events:
        spec = CONTRACT.get(event.kind)
        if spec is None:
            continue
        lane = lane_of(event.process)
        if lane is None or lane.kind not in spec.lanes:
            problems.append(
                f"{event.kind.value} recorded in lane {event.process!r}; "
                f"the contract allows {sorted(k.value for k in spec.lanes)}"
            )
        missing = [key for key in spec.required if key not in event.detail]
        if missing:
            problems.append(f"{event.kind.value} in lane {event.process} lacks {missing}")
    return problems


__all__ = [
    "CONTRACT",
    "EventSpec",
    "Lane",
    "LaneKind",
    "client_lane",
    "harness_lane",
    "in_lane",
    "is_training",
    "lane_of",
    "server_lane",
    "training_lane",
    "violations",
]
