"""Test helpers shared by the NVFlare fault tests: a fault spec as a scenario would give
it, and a real :class:`ChildContext` recording into an in-memory timeline."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.timeline import Event, EventKind, Timeline
from pytest_flrelia.scenario.catalog import validate_params
from pytest_flrelia.targets.nvflare.points import ChildContext


def spec(fault: str, *, site: str | None = None, round: int | None = None, index: int = 0,
         **params: object) -> FaultSpec:
    return FaultSpec(fault, site, round, validate_params(fault, params, fault), line=1,
                     index=index)


class FakeChild(ChildContext):
    """A real :class:`ChildContext` on an in-memory timeline."""

    def __init__(self, faults: Sequence[FaultSpec], site: str = "site-1", round: int = 1
                 ) -> None:
        super().__init__(site=site, launched_for=round, faults=tuple(faults),
                         timeline=Timeline(process=f"train-{site}"))

    @property
    def records(self) -> list[Event]:
        return self.timeline.events()

    def fault_events(self) -> list[dict[str, object]]:
        return [e.detail for e in self.timeline.events() if e.kind is EventKind.FAULT]
