"""The faults a target is asked to deliver, and how it says one acted.

A target receives the scenario's faults as :class:`FaultSpec` values (never a
runtime's failpoint strings) and records a ``fault`` event (:func:`fault_event`)
each time one of them really acts: the judge counts only those.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pytest_flrelia.contract.timeline import Event, EventKind, Timeline

LAST_CHUNK = "last"
"""The ``chunk:`` value of ``corrupt_chunk`` that names a tensor's last chunk, whatever
its count: part of the scenario language, which the runtime's failpoint suffix follows."""


@dataclass(frozen=True)
class FaultSpec:
    """One fault to inject; ``site``/``round`` ``None`` mean every site/round."""

    fault: str
    site: str | None
    round: int | None
    params: Mapping[str, object]
    """Parsed: durations in seconds, signals as :class:`signal.Signals`."""
    line: int
    optional: bool = False
    """``optional: true``: the fault may never act; ``faults_delivered`` does not judge it."""
    index: int = 0
    """Its position in the scenario's ``faults``: the id its ``fault`` events carry."""

    @property
    def tag(self) -> str:
        """``FAULT#ID``, how the injected fault names itself to the runtime."""
        return f"{self.fault}#{self.index}"

    def applies_to(self, site: str, round: int) -> bool:
        """Whether this fault strikes ``site`` in ``round``."""
        return self.site in (None, site) and self.round in (None, round)


def fault_event(
    timeline: Timeline,
    spec: FaultSpec,
    *,
    did: str,
    site: str | None = None,
    round: int | None = None,
    process: str | None = None,
    ts: float | None = None,
    **detail: object,
) -> Event:
    """Record on ``timeline`` that ``spec`` acted (``did``: what it did), stamped ``ts``
    (the moment the act began) or now; the event every target records for a fault."""
    event = Event(
        ts=time.monotonic() if ts is None else ts,
        kind=EventKind.FAULT,
        process=process or timeline.process,
        pid=os.getpid(),
        site=site,
        round=round,
        detail={"fault": spec.fault, "fault_id": spec.index, "did": did, **detail},
    )
    timeline.add(event)
    return event


def acted(events: Iterable[Event]) -> set[int]:
    """The ids of the planned faults that acted: each has a ``fault`` event."""
    return {
        int(e.detail["fault_id"])
        for e in events
        if e.kind is EventKind.FAULT and isinstance(e.detail.get("fault_id"), int)
    }


def delivered(specs: Iterable[FaultSpec], events: Iterable[Event]) -> list[FaultSpec]:
    """The planned faults that acted at least once in the run."""
    ids = acted(events)
    return [spec for spec in specs if spec.index in ids]


def describe(spec: FaultSpec) -> str:
    """``crash(at=after_download, code=1) at site-1 round 1``: the fault as planned."""
    params = ", ".join(
        f"{k}={_signal_name(v) if isinstance(v, signal.Signals) else v}"
        for k, v in spec.params.items()
        if v is not None
    )
    where = " ".join(p for p in (spec.site, f"round {spec.round}" if spec.round else None) if p)
    return f"{spec.fault}({params})" + (f" at {where}" if where else "")



def _signal_name(value: object) -> str:
    return signal.Signals(value).name if isinstance(value, int) else str(value)


__all__ = ["LAST_CHUNK", "FaultSpec", "acted", "delivered", "describe", "fault_event"]
