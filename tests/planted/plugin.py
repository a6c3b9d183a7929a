"""Supplies the ``planted`` target to pytest: ``-p planted.plugin`` (with ``tests`` on
``PYTHONPATH``), or through ``tests/planted/conftest.py`` for the tests beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from pytest_flrelia.contract.target import Target


def pytest_flrelia_make_target(name: str, config: pytest.Config) -> Target | None:
    from planted.target import PLANTED_TARGET, PlantedTarget  # noqa: PLC0415 (on first use)

    return PlantedTarget() if name == PLANTED_TARGET else None
