"""Session settings: gathered once from the command line and the ini file, then frozen.

Every value goes through one ``_validate_*(value, where)`` function; ``where``
names the source (``--flrelia-time-scale`` or ``ini flrelia_time_scale``) so a
bad value is found where it was written.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from pytest_flrelia.contract.target import REFERENCE_TARGET
from pytest_flrelia.contract.units import UnitError, format_duration, parse_duration
from pytest_flrelia.scenario.catalog import close_match

if TYPE_CHECKING:
    from pytest_flrelia.targets import Targets

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

    def options(self) -> tuple[str, ...]:
        """The command-line options that select these settings again, defaults left out:
        what a ``reproduce:`` line must carry (the report directory changes no verdict)."""
        given: list[str] = []
        if self.target != REFERENCE_TARGET:
            given.append(f"{TARGET.option}={self.target}")
        if self.known_bug is not None:
            given.append(f"{KNOWN_BUG.option}={self.known_bug}")
        if self.time_scale != 1.0:
            given.append(f"{TIME_SCALE.option}={self.time_scale:g}")
        if self.default_within != DEFAULT_WITHIN:
            given.append(f"{WITHIN.option}={format_duration(self.default_within)}")
        return tuple(given)


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


class StoreOnce(argparse.Action):
    """``store`` for an option that takes one value: a second one is an error, not "last wins".

    ``--flrelia-known-bug=a --flrelia-known-bug=b`` would otherwise run ``b`` silently.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        previous = getattr(namespace, self.dest, None)
        if previous is not None:
            raise argparse.ArgumentError(
                self, f"given twice ({previous!r}, then {values!r}); it takes one value"
            )
        setattr(namespace, self.dest, values)


def settings_from_config(config: pytest.Config, targets: Targets | None = None) -> Settings:
    """The session's settings; a bad value is a :class:`pytest.UsageError` naming its source.
    ``targets`` are the session's (its ``pytest_flrelia_make_target`` hook among them)."""
    target = _read(
        config,
        TARGET,
        lambda value, where: _validate_target(value, where, targets),
        REFERENCE_TARGET,
    )
    if target == REFERENCE_TARGET or targets is None:
        known_bug = _read(config, KNOWN_BUG, _validate_known_bug, None)
    else:
        known_bug = _read(
            config,
            KNOWN_BUG,
            lambda value, where: _validate_variant(value, where, target, targets),
            None,
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


def target_entry_point(name: str) -> importlib.metadata.EntryPoint | None:
    """The ``flrelia.targets`` entry point called ``name``, if one is installed."""
    for entry_point in importlib.metadata.entry_points(group=TARGETS_ENTRY_POINT_GROUP):
        if entry_point.name == name:
            return entry_point
    return None


def _validate_target(value: str, where: str, targets: Targets | None = None) -> str:
    """A name the session's hook supplies, or a known name whose entry point imports: a
    broken plug-in is one usage error at start-up, not the same traceback once per scenario."""
    if targets is not None and targets.provides(value):
        return value
    valid = available_targets()
    if value not in valid:
        raise pytest.UsageError(_message(where, f"unknown target {value!r}", valid, value))
    entry_point = target_entry_point(value)
    if entry_point is not None:
        try:
            entry_point.load()
        except Exception as err:
            detail = "".join(traceback.format_exception(err)).rstrip()
            raise pytest.UsageError(
                f"{where}: target {value!r} cannot be loaded: its entry point "
                f"{entry_point.name} = {entry_point.value} (group {TARGETS_ENTRY_POINT_GROUP}) "
                f"raised {type(err).__name__}: {err}\n{detail}"
            ) from err
    return value


def _validate_known_bug(value: str, where: str) -> str:
    # imported here: the targets package imports this module
    from pytest_flrelia.targets.reference.variants import KNOWN_BUGS  # noqa: PLC0415

    valid = list(KNOWN_BUGS)
    if value not in valid:
        raise pytest.UsageError(_message(where, f"unknown known bug {value!r}", valid, value))
    return value


def _validate_variant(value: str, where: str, target: str, targets: Targets) -> str:
    """A variant the session's target declares (``TargetInfo.variants``)."""
    try:
        variants = list(targets(target).info.variants)
    except Exception as err:
        raise pytest.UsageError(
            f"{where}: target {target!r} could not be built to read its variants: "
            f"{type(err).__name__}: {err}"
        ) from err
    if value not in variants:
        reason = f"target {target!r} has no variant {value!r}"
        if not variants:
            raise pytest.UsageError(f"{where}: {reason}; it declares none")
        raise pytest.UsageError(_message(where, reason, variants, value))
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
