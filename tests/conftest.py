"""Shared test configuration."""

from collections.abc import Iterator

import pytest
from _processes import kill_leftover_children
from _reaper import Reaper

pytest_plugins = ["pytester"]

# Scenario files under data/ are fixtures of the plugin tests (many are broken on
# purpose); the suite itself must not collect them when the plugin is installed.
collect_ignore = ["data"]


@pytest.fixture
def reaper() -> Iterator[Reaper]:
    """Kills every process handed to it, its descendants and its group, at teardown."""
    keeper = Reaper()
    yield keeper
    survivors = keeper.reap()
    assert not survivors, f"could not kill: {[p.pid for p in survivors]}"


@pytest.fixture
def no_leftover_children() -> Iterator[None]:
    """Whatever a test starts must be gone (and reaped) when it ends."""
    yield
    leftovers = kill_leftover_children()
    assert leftovers == [], f"processes outlived the test: {leftovers}"
