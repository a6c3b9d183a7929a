"""Timeouts that contradict each other, found in one place for every caller.

A job's waits are set one by one, but some only make sense in an order: a
deferred stop that gives up before the download gate closes SIGTERMs a process
the server is still pulling from, and the job fails "failed to download from
site-1" with nothing pointing at the cause.  NVFlare warns about its own such
pairs; so do we.  :func:`timeout_conflicts` returns what it finds as values;
the scenario loader turns them into pytest warnings naming ``file:line``, and
:func:`~reference_impl.job.run_job` into a :class:`TimeoutConflictWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

from pytest_flrelia.contract.job import Timeouts
from pytest_flrelia.contract.units import format_duration


class TimeoutConflictWarning(UserWarning):
    """A job runs with two timeouts that contradict each other (see ``conflict``).

    Built from its text alone as well: pytest-xdist rebuilds a worker's warning on the
    controller as ``cls(*warning.args)``, and ``conflict`` does not travel."""

    def __init__(self, text: str, conflict: TimeoutConflict | None = None) -> None:
        super().__init__(text)
        self.conflict = conflict


@dataclass(frozen=True)
class TimeoutConflict:
    """``shorter`` must not be shorter than ``longer``; here it is, and this is the harm."""

    rule: str
    """A stable name for the rule (tests and filters use it)."""
    shorter: str
    """The ``Timeouts`` field that is too short (the one to lengthen)."""
    shorter_value: float
    longer: str
    longer_value: float
    consequence: str
    fatal: bool = False
    """The job cannot work at all with these values (a scenario file refuses them)."""

    def message(self) -> str:
        shorter = f"{self.shorter} ({format_duration(self.shorter_value)})"
        longer = f"{self.longer} ({format_duration(self.longer_value)})"
        if self.fatal:
            return f"{shorter} must be longer than {longer}, or {self.consequence}"
        return f"{shorter} is shorter than {longer}: {self.consequence}"


@dataclass(frozen=True)
class _Rule:
    name: str
    shorter: str
    longer: str
    consequence: str
    conflicts: Callable[[float, float], bool] = lambda shorter, longer: shorter < longer
    fatal: bool = False


RULES: tuple[_Rule, ...] = (
    _Rule(
        "heartbeat_not_above_interval",
        "heartbeat",
        "heartbeat_interval",
        "every peer looks gone",
        conflicts=lambda shorter, longer: shorter <= longer,
        fatal=True,
    ),
    _Rule(
        "stop_wait_below_download_complete",
        "stop_wait",
        "download_complete",
        "the deferred stop SIGTERMs the training process while its download gate still "
        "waits, so a late pull fails ('failed to download from site-N')",
    ),
    _Rule(
        "download_complete_below_download_connect",
        "download_complete",
        "download_connect",
        "the gate closes before one download attempt may time out, so the retry of a "
        "failed attempt finds the training process gone",
    ),
    _Rule(
        "stop_wait_below_stop_grace",
        "stop_wait",
        "stop_grace",
        "a process is given less time to exit by itself than to die after SIGTERM",
    ),
)
"""Every rule, most harmful first; a field named here is a field of ``Timeouts``."""


def timeout_conflicts(timeouts: Timeouts) -> list[TimeoutConflict]:
    """Every rule ``timeouts`` breaks, in :data:`RULES` order; empty when they agree."""
    found = []
    for rule in RULES:
        shorter, longer = _value(timeouts, rule.shorter), _value(timeouts, rule.longer)
        if rule.conflicts(shorter, longer):
            found.append(
                TimeoutConflict(
                    rule.name,
                    rule.shorter,
                    shorter,
                    rule.longer,
                    longer,
                    rule.consequence,
                    rule.fatal,
                )
            )
    return found


def _value(timeouts: Timeouts, name: str) -> float:
    """The wait ``name`` in effect (an unset ``stop_wait`` is the gate's timeout)."""
    return timeouts.deferred_stop_wait if name == "stop_wait" else float(getattr(timeouts, name))


def warn_timeout_conflicts(timeouts: Timeouts, *, stacklevel: int = 2) -> list[TimeoutConflict]:
    """Warn (:class:`TimeoutConflictWarning`) once per broken rule; return what was found."""
    found = timeout_conflicts(timeouts)
    for conflict in found:
        warnings.warn(
            TimeoutConflictWarning(conflict.message(), conflict), stacklevel=stacklevel + 1
        )
    return found


__all__ = [
    "RULES",
    "TimeoutConflict",
    "TimeoutConflictWarning",
    "timeout_conflicts",
    "warn_timeout_conflicts",
]
