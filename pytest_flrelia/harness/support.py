"""Whether a target can run a scenario at all, from what it declares (its ``TargetInfo``).

A scenario needing a fault, a scope key, an ``at:`` point, a parameter value or an event
kind its target does not declare proves nothing about that target: it is skipped with the reason
(at collection, and by :func:`~pytest_flrelia.harness.runner.run_scenario`), never
run and passed.  Pure: nothing here runs anything.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.target import TargetInfo
from pytest_flrelia.judge.invariants import FAULTS_DELIVERED, STALE_FAULTS, kinds_needed_by
from pytest_flrelia.scenario.loader import Scenario


def why_unsupported(
    scenario: Scenario, info: TargetInfo, invariants: Sequence[str]
) -> str | None:
    """Why ``info``'s target cannot run ``scenario`` judged by ``invariants``; ``None``: it can."""
    lead = f"target {info.name!r}"
    if scenario.job.has_names and not info.named_sites:
        given = "site_names" if scenario.job.named_sites else "name"
        return (
            f"{lead} does not declare named sites: it cannot run job.{given} "
            "with those names (TargetInfo.named_sites)"
        )
    for spec in scenario.faults:
        reason = _fault_unsupported(spec, info)
        if reason is not None:
            return f"{lead} cannot deliver fault {spec.fault!r} (line {spec.line}): {reason}"
    for name in ("expectation", *invariants):
        if not _judged(name, scenario.faults):
            continue
        missing = kinds_needed_by(name, launch_once=scenario.job.launch_once) - info.events
        if missing:
            kinds = ", ".join(sorted(k.value for k in missing))
            return f"{lead} does not record {kinds}, which invariant {name} reads"
    return None


def _fault_unsupported(spec: FaultSpec, info: TargetInfo) -> str | None:
    support = info.faults.get(spec.fault)
    if support is None:
        return info.unsupported.get(spec.fault, "it does not declare it")
    used = [key for key, value in (("site", spec.site), ("round", spec.round)) if value is not None]
    lacking = [key for key in used if key not in support.scopes]
    if lacking:
        return (
            f"it does not honour the scope key {', '.join(lacking)} for it "
            f"(it honours: {', '.join(sorted(support.scopes)) or 'none'})"
        )
    at = spec.params.get("at")
    if at is not None and support.at is not None and at not in support.at:
        return f"it cannot strike at: {at} (only at {', '.join(sorted(support.at))})"
    for param, reasons in support.refused.items():
        value = spec.params.get(param)
        if isinstance(value, str) and value in reasons:
            return f"it cannot deliver {param}: {value}: {reasons[value]}"
    return None


def _judged(name: str, faults: Sequence[FaultSpec]) -> bool:
    """Whether the scenario gives ``name`` something to judge: the checks that judge faults
    need their kinds only when the scenario injects such faults."""
    if name == FAULTS_DELIVERED:
        return bool(faults)
    if name == "stale_events_ignored":
        return any(spec.fault in STALE_FAULTS for spec in faults)
    return True


__all__ = ["why_unsupported"]
