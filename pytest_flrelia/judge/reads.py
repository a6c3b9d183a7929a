"""What each check reads: the event kinds it is handed, declared on the check itself.

:func:`~pytest_flrelia.judge.invariants.evaluate` hands a check only the events of
the kinds it declares, so the declaration cannot drift from what the check looks
at: a kind it reads without declaring is simply never there.  The declaration
also says which kinds a target must record for the check to judge it at all
(``needs``); the others it reads when they are there (``optional``).  A scenario
judged by a check whose needed kinds its target does not declare is skipped
with the reason (:mod:`pytest_flrelia.harness.support`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from pytest_flrelia.contract.timeline import EventKind

HARNESS_KINDS = frozenset({EventKind.ERROR})
"""Kinds the harness records itself (bounds, live violations, thread crashes): no
target has to declare them."""


@dataclass(frozen=True)
class Reads:
    """The kinds one check reads."""

    needs: frozenset[EventKind]
    """Without these the check cannot judge a run: a target must record them."""
    optional: frozenset[EventKind] = frozenset()
    """Read when present (another way to see the same thing, or evidence)."""
    launch_once: frozenset[EventKind] = frozenset()
    """Needed as well when one process serves every round (``launch_once: true``)."""

    @property
    def kinds(self) -> frozenset[EventKind]:
        return self.needs | self.optional | self.launch_once

    @property
    def from_target(self) -> frozenset[EventKind]:
        """The needed kinds a target must declare (the harness's own left out)."""
        return self.needs - HARNESS_KINDS

    def needed_for(self, *, launch_once: bool) -> frozenset[EventKind]:
        """What a target must declare for a job of that mode (the harness's own left out)."""
        return (self.needs | (self.launch_once if launch_once else frozenset())) - HARNESS_KINDS

    def __or__(self, other: Reads) -> Reads:
        return Reads(
            self.needs | other.needs,
            self.optional | other.optional,
            self.launch_once | other.launch_once,
        )


NOTHING = Reads(frozenset())

_F = TypeVar("_F", bound=Callable[..., object])
_ATTRIBUTE = "__flrelia_reads__"


def reads(
    *needs: EventKind, optional: Iterable[EventKind] = (), launch_once: Iterable[EventKind] = ()
) -> Callable[[_F], _F]:
    """Declare the kinds the decorated check reads (``needs``), may read (``optional``)
    and reads only of a ``launch_once`` job (then they are needed too)."""
    declared = Reads(
        frozenset(needs),
        frozenset(optional) - frozenset(needs),
        frozenset(launch_once) - frozenset(needs),
    )

    def mark(check: _F) -> _F:
        setattr(check, _ATTRIBUTE, declared)
        return check

    return mark


def declared_reads(check: Callable[..., object]) -> Reads:
    """What ``check`` declared with :func:`reads`; a check that declared nothing reads nothing."""
    found = getattr(check, _ATTRIBUTE, NOTHING)
    return found if isinstance(found, Reads) else NOTHING


__all__ = ["HARNESS_KINDS", "NOTHING", "Reads", "declared_reads", "reads"]
