"""The hooks pytest-flrelia adds (registered by ``pytest_addhooks``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_flrelia.contract.target import Target


@pytest.hookspec(firstresult=True)
def pytest_flrelia_make_target(name: str, config: pytest.Config) -> Target | None:
    """Return the target called ``name`` (``--flrelia-target=NAME``, or a scenario's
    ``target: NAME``), or ``None`` if it is not one of yours.

    Implement it in a ``conftest.py`` to supply a target without installing a
    distribution; it is asked before the ``flrelia.targets`` entry points and the
    built-in ``reference``, once per name and session.  A ``--flrelia-target`` name
    must be known when pytest configures: implement the hook in a ``conftest.py``
    pytest loads at start-up (the root one, or one beside the tests named on the
    command line).
    """
    return None


__all__ = ["pytest_flrelia_make_target"]
