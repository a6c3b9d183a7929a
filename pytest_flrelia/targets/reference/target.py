""":class:`ReferenceTarget`: the embedded reference runtime behind the target SPI."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.target import REFERENCE_TARGET, FaultSupport, RunContext, TargetInfo
from pytest_flrelia.contract.timeline import EventKind, Timeline
from pytest_flrelia.scenario.catalog import CATALOG
from pytest_flrelia.targets.reference.faults import (
    AT_FAILPOINTS,
    AUX_EVENT_AT,
    FaultPlan,
    build_plan,
    fault_names,
)
from pytest_flrelia.targets.reference.mechanics import MECHANICS
from pytest_flrelia.targets.reference.oracle import ReferenceModelOracle
from pytest_flrelia.targets.reference.variants import SUMMARIES, runtime_for
from reference_impl.executor import LauncherExecutor
from reference_impl.job import Runtime, run_job


def _support(name: str) -> FaultSupport:
    """What the catalog lets a scenario write for ``name``, as this target delivers it."""
    fault = CATALOG[name]
    at: Mapping[str, str] = {}
    if name == "aux_event":
        at = {point: f"`{kind.value}` ({when})" for point, (kind, when) in AUX_EVENT_AT.items()}
    elif "at" in fault.params:
        at = {point: f"`{failpoint}`" for point, failpoint in AT_FAILPOINTS.items()}
    return FaultSupport(
        scopes=frozenset(fault.scopes),
        at=frozenset(at) if at else None,
        mechanics=MECHANICS[name],
        at_detail=MappingProxyType(dict(at)),
    )


def _info() -> TargetInfo:
    return TargetInfo(
        name=REFERENCE_TARGET,
        faults=MappingProxyType({name: _support(name) for name in fault_names()}),
        events=frozenset(EventKind),
        variants=SUMMARIES,
        oracle=ReferenceModelOracle(),
        named_sites=True,
    )


class ReferenceTarget:
    """The embedded reference runtime, or one of its known-bug variants."""

    info = _info()

    def run(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> JobResult:
        return self.run_plan(
            job,
            build_plan(faults, job),
            known_bug=context.variant,
            timeline=context.timeline,
            abort=context.abort,
            env=context.env,
        )

    def run_plan(
        self,
        job: JobConfig,
        plan: FaultPlan,
        *,
        known_bug: str | None,
        timeline: Timeline,
        abort: threading.Event,
        env: Mapping[str, str],
    ) -> JobResult:
        """Run ``job`` with a fault plan already built (tests build their own)."""
        executors: dict[str, LauncherExecutor] = {}
        detach = plan.attach(timeline, executors)
        try:
            with failpoints.scoped(plan.local_spec()):
                return run_job(
                    job,
                    runtime=self.runtime_for(known_bug),
                    timeline=timeline,
                    abort=abort,
                    subprocess_env={**plan.subprocess_env(), **env},
                    on_site_ready=lambda site, executor: _ready(plan, executors, site, executor),
                )
        finally:
            detach()


    def runtime_for(self, variant: str | None) -> Runtime:
        """The runtime of ``variant`` (a known-bug slug; ``None``: the correct one).

        A subclass with variants of its own (the test suite's planted bugs) overrides
        this one step."""
        return runtime_for(variant)


def _ready(
    plan: FaultPlan, executors: dict[str, LauncherExecutor], site: str, executor: LauncherExecutor
) -> None:
    executors[site] = executor
    plan.site_ready(executor)


__all__ = ["REFERENCE_TARGET", "ReferenceTarget"]
