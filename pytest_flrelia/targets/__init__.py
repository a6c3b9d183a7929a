"""Finding the system under test: ``reference`` is built in; others come from a
``pytest_flrelia_make_target`` hook (a ``conftest.py``) or the ``flrelia.targets``
entry point group (the entry point names a class or a factory returning a
:class:`~pytest_flrelia.contract.target.Target`).
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_flrelia.contract.target import REFERENCE_TARGET, Target

MakeTarget = Callable[[str], "Target | None"]
"""Asked first for a target by name (the session's hook); ``None``: not one of its own."""


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


class Targets:
    """The targets of one session, each built once: from ``make`` (the session's
    ``pytest_flrelia_make_target`` hook) if it knows the name, else by :func:`load_target`.
    Without ``make`` (the Python API, the zoo) only built-in and installed targets exist."""

    def __init__(self, make: MakeTarget | None = None) -> None:
        self._make = make
        self._built: dict[str, Target] = {}

    def __call__(self, name: str) -> Target:
        target = self._built.get(name)
        if target is None:
            made = self._make(name) if self._make is not None else None
            target = made if made is not None else load_target(name)
            self._built[name] = target
        return target

    def provides(self, name: str) -> bool:
        """Whether ``make`` supplies ``name`` (built once, here, if so)."""
        if name in self._built:
            return True
        made = self._make(name) if self._make is not None else None
        if made is None:
            return False
        self._built[name] = made
        return True


__all__ = ["MakeTarget", "Targets", "load_target"]
