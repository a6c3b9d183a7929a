"""The supported NVFlare range is checked from metadata alone, and refused clearly."""

from __future__ import annotations

from importlib import metadata

import pytest

from pytest_flrelia.errors import TargetUnavailableError
from pytest_flrelia.targets.nvflare import version


@pytest.mark.parametrize("text", ["2.7.1", "2.7.2rc13", "2.7.2", "2.8.3", "2.8.0rc1"])
def test_the_supported_versions_are_accepted(text: str) -> None:
    installed = version.check(version.parse(text))
    assert installed.label == f"nvflare {text}"


@pytest.mark.parametrize(
    ("text", "why"),
    [("2.9.0", "2.9.0 removed the launcher stack"), ("2.9.0rc2", "removed"),
     ("3.0.1", "removed"), ("2.7.0", "2.7.1 to 2.8.x"), ("2.6.2", "2.7.1 to 2.8.x")],
)
def test_a_version_outside_the_range_is_refused_naming_the_range(text: str, why: str) -> None:
    with pytest.raises(TargetUnavailableError, match=r">=2\.7\.1, <2\.9") as err:
        version.check(version.parse(text))
    assert why in str(err.value) and f"nvflare {text} is installed" in str(err.value)


def test_a_missing_nvflare_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version.metadata, "version", missing)
    with pytest.raises(TargetUnavailableError, match=r"pip install 'pytest-flrelia\[nvflare\]'"):
        version.installed()


def test_an_unsupported_install_is_refused_by_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(version.metadata, "version", lambda name: "2.9.1")
    with pytest.raises(TargetUnavailableError, match=r"2\.9\.1"):
        version.installed()


def test_a_string_that_is_no_version_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a version"):
        version.parse("two point seven")
