"""The embedded reference runtime as a target: its fault plan, variants and model oracle.

The runner, the invariants and the report know only the contract
(:mod:`pytest_flrelia.contract`); everything specific to the reference runtime
(failpoint strings, script switches, live actions on its executor objects, its
known bugs, its model oracle) lives here.

Importing this package loads nothing of the runtime: :class:`ReferenceTarget`
(:mod:`.target`) is imported on first use, so the registry of variants
(:mod:`.variants`) can be read at collection time, and the child-side fault code
(:mod:`.child_faults`) can be loaded in a training process, without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_flrelia.contract.target import REFERENCE_TARGET

if TYPE_CHECKING:
    from pytest_flrelia.targets.reference.target import ReferenceTarget


def __getattr__(name: str) -> object:
    if name == "ReferenceTarget":
        from pytest_flrelia.targets.reference.target import (  # noqa: PLC0415
            ReferenceTarget,
        )

        return ReferenceTarget
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REFERENCE_TARGET", "ReferenceTarget"]
