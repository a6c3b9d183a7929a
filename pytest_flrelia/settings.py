"""Session settings: gathered once from the command line and the ini file, then frozen.

Every value goes through one ``_validate_*(value, where)`` function; ``where``
names the source (``--flrelia-time-scale`` or ``ini flrelia_time_scale``) so a
bad value is found where it was written.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from pytest_flrelia.catalog import KNOWN_BUG_SLUGS, close_match
from reference_impl.units import UnitError, parse_duration

REFERENCE_TARGET = "reference"
TARGETS_ENTRY_POINT_GROUP = "flrelia.targets"
DEFAULT_WITHIN = 30.0

_T = TypeVar("_T")


@dataclass(frozen=True)
class Settings:
    """What every scenario of the session runs with."""

    target: str = REFERENCE_TARGET
    known_bug: str | None = None
    """A known-bug slug: run against that variant of the reference implementation."""
    report_dir: Path | None = None
    time_scale: float = 1.0
    """Multiplies every scenario duration (timeouts, delays, bounds); >1 on slow machines."""
    default_within: float = DEFAULT_WITHIN
    """The wall-clock bound of a scenario that sets no ``expect.within``."""


@dataclass(frozen=True)
class _Source:
    """One setting's two spellings: the command-line option and its ini twin."""

    option: str
    ini: str

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")


TARGET = _Source("--flrelia-target", "flrelia_target")
KNOWN_BUG = _Source("--flrelia-known-bug", "flrelia_known_bug")
REPORT = _Source("--flrelia-report", "flrelia_report")
TIME_SCALE = _Source("--flrelia-time-scale", "flrelia_time_scale")
WITHIN = _Source("--flrelia-within", "flrelia_within")
SOURCES: tuple[_Source, ...] = (TARGET, KNOWN_BUG, REPORT, TIME_SCALE, WITHIN)


def settings_from_config(config: pytest.Config) -> Settings:
    """The session's settings; a bad value is a :class:`pytest.UsageError` naming its source."""
    target = _read(config, TARGET, _validate_target, REFERENCE_TARGET)
    known_bug = _read(config, KNOWN_BUG, _validate_known_bug, None)
    if known_bug is not None and target != REFERENCE_TARGET:
        raise pytest.UsageError(
            f"{KNOWN_BUG.option}={known_bug} selects a variant of the {REFERENCE_TARGET!r} "
            f"target; it cannot be combined with {TARGET.option}={target}"
        )
    report_base = (
        config.invocation_params.dir
        if config.getoption(REPORT.dest, None) is not None
        else (config.inipath.parent if config.inipath is not None else config.rootpath)
    )
    return Settings(
        target=target,
        known_bug=known_bug,
        report_dir=_read(
            config,
            REPORT,
            lambda value, where: _validate_report_dir(value, where, report_base),
            None,
        ),
        time_scale=_read(config, TIME_SCALE, _validate_time_scale, 1.0),
        default_within=_read(config, WITHIN, _validate_within, DEFAULT_WITHIN),
    )


def _read(
    config: pytest.Config,
    source: _Source,
    validate: Callable[[str, str], _T],
    default: _T,
) -> _T:
    """The command-line value if given, else the ini value if set, else ``default``."""
    value = config.getoption(source.dest, None)
    if value is not None:
        return validate(str(value), source.option)
    ini_value = config.getini(source.ini)
    if ini_value not in (None, ""):
        return validate(str(ini_value).strip(), f"ini {source.ini}")
    return default


def available_targets() -> list[str]:
    """The built-in reference target and every target plugged in by entry point."""
    plugged = {ep.name for ep in importlib.metadata.entry_points(group=TARGETS_ENTRY_POINT_GROUP)}
    return sorted({REFERENCE_TARGET, *plugged})


def _validate_target(value: str, where: str) -> str:
    valid = available_targets()
    if value not in valid:
        raise pytest.UsageError(_message(where, f"unknown target {value!r}", valid, value))
    return value


def _validate_known_bug(value: str, where: str) -> str:
    valid = list(KNOWN_BUG_SLUGS)
    if value not in valid:
        raise pytest.UsageError(_message(where, f"unknown known bug {value!r}", valid, value))
    return value


def _validate_report_dir(value: str, where: str, base: Path) -> Path:
    if not value.strip():
        raise pytest.UsageError(f"{where}: expected a directory, got an empty value")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"{where}: {value!r} exists and is not a directory")
    return path


def _validate_time_scale(value: str, where: str) -> float:
    try:
        scale = float(value)
    except ValueError:
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise pytest.UsageError(f"{where}: expected a number > 0 (e.g. 2.5), got {value!r}")
    return scale


def _validate_within(value: str, where: str) -> float:
    try:
        seconds = parse_duration(value, where)
    except UnitError as err:
        raise pytest.UsageError(str(err)) from err
    if seconds <= 0:
        raise pytest.UsageError(f"{where}: must be > 0, got {value!r}")
    return seconds


def _message(where: str, reason: str, valid: list[str], value: str) -> str:
    text = f"{where}: {reason}; valid: {', '.join(valid)}"
    suggestion = close_match(value, valid)
    return text + (f"; did you mean '{suggestion}'?" if suggestion else "")
