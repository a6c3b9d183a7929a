"""The forced interleavings are asked for by name; a name nobody knows is an error that
says which exist, before any NVFlare object is built (no nvflare needed here)."""

from __future__ import annotations

import pytest

from pytest_flrelia.targets.nvflare import interleave


def test_nothing_is_forced_unless_asked() -> None:
    assert interleave.requested({}) == []
    assert interleave.requested({interleave.INTERLEAVE_ENV: " "}) == []


def test_each_named_interleaving_is_installed_once() -> None:
    assert interleave.requested({interleave.INTERLEAVE_ENV: "f5, f5"}) == ["f5"]


def test_an_unknown_interleaving_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown interleaving f9; known: f5"):
        interleave.requested({interleave.INTERLEAVE_ENV: "f5,f9"})
