"""Systems under test.  ``reference`` is built in; others plug in through the
``flrelia.targets`` entry point group (the entry point names a class or a
factory returning a :class:`Target`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Protocol

from pytest_flrelia.contract import failpoints
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.timeline import Timeline
from pytest_flrelia.harness.settings import REFERENCE_TARGET, target_entry_point
from pytest_flrelia.targets.reference.faults import FaultPlan
from pytest_flrelia.targets.reference.known_bugs import runtime_for
from reference_impl.executor import LauncherExecutor
from reference_impl.job import JobResult, run_job


class Target(Protocol):
    """Runs one job with a fault plan applied and returns what happened."""

    name: str

    def run(
        self,
        job: JobConfig,
        plan: FaultPlan,
        *,
        known_bug: str | None,
        timeline: Timeline,
        abort: threading.Event,
        env: Mapping[str, str],
    ) -> JobResult: ...


class ReferenceTarget:
    """The embedded reference runtime, or one of its known-bug variants."""

    name = REFERENCE_TARGET

    def run(
        self,
        job: JobConfig,
        plan: FaultPlan,
        *,
        known_bug: str | None,
        timeline: Timeline,
        abort: threading.Event,
        env: Mapping[str, str],
    ) -> JobResult:
        executors: dict[str, LauncherExecutor] = {}
        detach = plan.attach(timeline, executors)
        try:
            with failpoints.scoped(plan.local_spec()):
                return run_job(
                    job,
                    runtime=runtime_for(known_bug),
                    timeline=timeline,
                    abort=abort,
                    subprocess_env={**plan.subprocess_env(), **env},
                    on_site_ready=executors.__setitem__,
                )
        finally:
            detach()


class UnknownTargetError(LookupError):
    pass


def load_target(name: str) -> Target:
    """The target called ``name``: built in, or from the entry point group.

    The session's settings have loaded the entry point once already, so a plug-in
    that cannot be imported never gets this far from a pytest run.
    """
    if name == REFERENCE_TARGET:
        return ReferenceTarget()
    entry_point = target_entry_point(name)
    if entry_point is None:
        raise UnknownTargetError(f"no flrelia target named {name!r}")
    factory = entry_point.load()
    target: Target = factory()
    return target
