"""``planted``: the reference target whose variants are its known bugs plus the planted ones."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from planted.registry import PLANTED
from planted.registry import SUMMARIES as PLANTED_SUMMARIES
from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig
from pytest_flrelia.contract.result import JobResult
from pytest_flrelia.contract.target import RunContext
from pytest_flrelia.targets.reference.target import ReferenceTarget
from pytest_flrelia.targets.reference.variants import SUMMARIES as KNOWN_BUG_SUMMARIES
from reference_impl.job import Runtime

PLANTED_TARGET = "planted"
TESTS = Path(__file__).resolve().parent.parent


class PlantedTarget(ReferenceTarget):
    """The reference runtime; ``--flrelia-known-bug`` selects a KB slug or a planted one."""

    info = dataclasses.replace(
        ReferenceTarget.info,
        name=PLANTED_TARGET,
        variants=MappingProxyType({**KNOWN_BUG_SUMMARIES, **PLANTED_SUMMARIES}),
    )

    def run(self, job: JobConfig, faults: Sequence[FaultSpec], context: RunContext) -> JobResult:
        """The reference's run, with ``tests`` on the training processes' path (a planted
        agent is imported there by name)."""
        path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
        return super().run(
            job, faults, dataclasses.replace(context, env={**context.env, "PYTHONPATH": path})
        )

    def runtime_for(self, variant: str | None) -> Runtime:
        bug = PLANTED.get(variant) if variant is not None else None
        if bug is None:
            return super().runtime_for(variant)
        return Runtime().with_parts(**bug.parts_loaded())


__all__ = ["PLANTED_TARGET", "PlantedTarget"]
