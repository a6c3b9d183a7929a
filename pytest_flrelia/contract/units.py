"""Durations and sizes as people write them in scenario files and options.

``500ms``, ``5s``, ``2m``, ``1h`` or a number of seconds; ``1024``, ``64KiB``,
``1MiB``, ``1GiB`` (powers of 1024) or ``KB``/``MB``/``GB`` (powers of 1000).
One parser each, shared by the scenario loader, the plugin's settings and the
command line, so a value means the same thing wherever it is written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from decimal import Decimal

DURATION_FORMS: tuple[str, ...] = ("500ms", "5s", "2m", "1h", "a number of seconds (0.5)")
SIZE_FORMS: tuple[str, ...] = ("1024", "64KiB", "1MiB", "1GiB", "64KB", "1MB", "1GB")

DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}

# Kept as plain strings: the JSON Schema uses the very same patterns.
DURATION_PATTERN = r"^\s*(\d+(\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$"
SIZE_PATTERN = r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_SIZE_RE = re.compile(SIZE_PATTERN)


class UnitError(ValueError):
    """A duration or size that cannot be read; says where it came from and what works."""

    def __init__(self, where: str, reason: str, valid: Sequence[str]) -> None:
        self.where = where
        self.reason = reason
        self.valid = tuple(valid)
        shown = f"; valid: {', '.join(self.valid)}" if self.valid else ""
        super().__init__(f"{where}: {reason}{shown}")


def parse_duration(value: object, where: str) -> float:
    """Seconds from ``"500ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"5"`` or a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError(where, f"expected a duration, got {describe_value(value)}", DURATION_FORMS)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match is None:
            reason = (
                f"negative duration {value!r}"
                if value.strip().startswith("-")
                else f"invalid duration {value!r}"
            )
            raise UnitError(where, reason, DURATION_FORMS)
        number, unit = float(match.group(1)), match.group(3) or "s"
        # Dividing keeps "200ms" exactly 0.2, as 200 * 0.001 need not be.
        seconds = number / 1000 if unit == "ms" else number * DURATION_UNITS[unit]
    else:
        seconds = float(value)
        if seconds < 0:
            raise UnitError(where, f"negative duration {value!r}", DURATION_FORMS)
    if not math.isfinite(seconds):
        raise UnitError(where, f"duration {value!r} is not finite", DURATION_FORMS)
    return seconds


def parse_size(value: object, where: str) -> int:
    """Bytes from ``1024``, ``"1024"``, ``"64KiB"``, ``"1MiB"``, ``"1GiB"``, ``"1MB"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UnitError(where, f"expected a size, got {describe_value(value)}", SIZE_FORMS)
    if isinstance(value, int):
        if value < 0:
            raise UnitError(where, f"negative size {value!r}", SIZE_FORMS)
        return value
    match = _SIZE_RE.match(value)
    if match is None:
        negative = value.strip().startswith("-")
        reason = f"negative size {value!r}" if negative else f"invalid size {value!r}"
        raise UnitError(where, reason, SIZE_FORMS)
    return int(match.group(1)) * SIZE_UNITS[match.group(2) or "B"]


def parse_count(value: object, where: str, minimum: int) -> int:
    """A whole number ``>= minimum`` (sites, rounds, tensors): an int, or digits on a
    command line."""
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnitError(where, f"expected an integer, got {describe_value(value)}", ())
    if value < minimum:
        raise UnitError(where, f"must be >= {minimum}, got {value}", ())
    return value


def check_whole_elements(size: int, dtype: str, itemsize: int, where: str) -> int:
    """``size`` bytes if they are a whole, non-zero number of ``dtype`` elements."""
    if size < itemsize:
        raise UnitError(where, f"must be at least {itemsize} bytes, got {size}", ())
    if size % itemsize:
        raise UnitError(
            where,
            f"{size} bytes is not a whole number of {dtype} elements ({itemsize} bytes each)",
            (),
        )
    return size


def describe_value(value: object) -> str:
    """A value as the user wrote it in YAML (``true``, not ``True``), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def format_duration(seconds: float) -> str:
    """The shortest way to write ``seconds`` that reads back exactly (``0.2`` -> ``200ms``)."""
    for unit in ("h", "m", "s"):
        count = round(seconds / DURATION_UNITS[unit])
        if count >= 1 and count * DURATION_UNITS[unit] == seconds:
            return f"{count}{unit}"
    millis = round(seconds * 1000)
    if millis / 1000 == seconds:
        return f"{millis}ms"
    # The shortest repr round-trips; Decimal writes it without an exponent.
    return f"{Decimal(repr(seconds)):f}s"


def format_size(size: int) -> str:
    """The shortest exact way to write ``size`` bytes (``1048576`` -> ``1MiB``)."""
    for unit in ("GiB", "MiB", "KiB"):
        if size >= SIZE_UNITS[unit] and size % SIZE_UNITS[unit] == 0:
            return f"{size // SIZE_UNITS[unit]}{unit}"
    return str(size)
