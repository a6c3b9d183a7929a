"""pytest hooks, options and fixtures of pytest-flrelia, in the order pytest calls them."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "flrelia(**settings): scenario settings for a test that uses the flrelia fixture"
    )
