"""What the NVFlare target declares about the catalog's faults (no nvflare needed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_flrelia.scenario.catalog import AT_POINTS, CATALOG
from pytest_flrelia.targets.nvflare.child_faults import CHILD_FAULTS
from pytest_flrelia.targets.nvflare.fault_support import (
    FAULT_SUPPORT,
    NO_DOWNLOAD_POINTS,
    UNSUPPORTED,
    declarations,
    has_download_path,
)
from pytest_flrelia.targets.nvflare.parent_faults import PARENT_FAULTS


def test_every_catalog_fault_is_delivered_or_declared_unsupported() -> None:
    assert set(FAULT_SUPPORT) | set(UNSUPPORTED) == set(CATALOG)
    assert not set(FAULT_SUPPORT) & set(UNSUPPORTED)


def test_every_supported_fault_has_code_on_one_side() -> None:
    assert set(FAULT_SUPPORT) == CHILD_FAULTS | PARENT_FAULTS
    assert not CHILD_FAULTS & PARENT_FAULTS


def test_supported_scopes_are_the_catalogs_and_at_points_are_documented() -> None:
    for name, support in FAULT_SUPPORT.items():
        assert support.scopes == frozenset(CATALOG[name].scopes), name
        assert support.mechanics, name
        if name == "aux_event":
            assert support.at == {"during_execute", "launch"}  # no init_seen is recorded
        elif support.at is not None:
            assert support.at == frozenset(AT_POINTS)
        if support.at is not None:
            assert set(support.at_detail) == support.at


@pytest.mark.parametrize(
    "version,has", [("2.7.1", False), ("2.7.2rc11", False), ("2.7.2rc13", True),
                    ("2.7.2", True), ("2.8.3", True)]
)
def test_the_download_path_arrived_in_rc12(version: str, has: bool) -> None:
    assert has_download_path(version) is has


def test_2_7_1_declares_the_download_and_deferred_faults_unsupported() -> None:
    faults, unsupported = declarations("2.7.1")
    assert set(unsupported) == {"delayed_download", "corrupt_chunk", "stop_error", "slow_stop"}
    assert all("2.7.1" in why for why in unsupported.values())
    assert set(faults) | set(unsupported) == set(CATALOG)
    assert faults["crash"].at == frozenset(AT_POINTS) - NO_DOWNLOAD_POINTS
    assert declarations("2.8.3") == (FAULT_SUPPORT, UNSUPPORTED)


def test_the_declarations_load_no_nvflare() -> None:
    code = (
        "import sys, pytest_flrelia.targets.nvflare.fault_support;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nvflare'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("version", ["2.7.1", "2.7.2rc13", "2.7.2", "2.8.3"])
def test_stuck_exit_thread_is_refused_on_every_version(version: str) -> None:
    """Every training process of this target ends in ``os._exit``, which no thread holds."""
    faults, _ = declarations(version)
    refused = faults["stuck_exit"].refused
    assert set(refused) == {"mode"}
    assert set(refused["mode"]) == {"thread"}
    assert "os._exit" in refused["mode"]["thread"]
