"""Finding the system under test: ``reference`` is built in; others plug in through
the ``flrelia.targets`` entry point group (the entry point names a class or a
factory returning a :class:`~pytest_flrelia.contract.target.Target`).
"""

from __future__ import annotations

from pytest_flrelia.contract.target import Target
from pytest_flrelia.judge.report import REFERENCE_TARGET


def load_target(name: str) -> Target:
    """The target called ``name``: built in, or from the entry point group.

    The session's settings have loaded the entry point once already, so a plug-in
    that cannot be imported never gets this far from a pytest run.
    """
    if name == REFERENCE_TARGET:
        # imported on first use: finding a target must not import the reference runtime
        from pytest_flrelia.targets.reference import ReferenceTarget  # noqa: PLC0415

        return ReferenceTarget()
    # imported here: the reference target's child-side fault code, loaded in training
    # processes, lives in this package and must not pull in pytest through the settings
    from pytest_flrelia.errors import UnknownTargetError  # noqa: PLC0415
    from pytest_flrelia.harness.settings import target_entry_point  # noqa: PLC0415

    entry_point = target_entry_point(name)
    if entry_point is None:
        raise UnknownTargetError(f"no flrelia target named {name!r}")
    factory = entry_point.load()
    target: Target = factory()
    return target
