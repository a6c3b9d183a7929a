"""Durations and sizes read the way scenario authors write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference_impl.units import (
    DURATION_FORMS,
    SIZE_FORMS,
    UnitError,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("200ms", 0.2),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        (" 3 s ", 3.0),
        ("7", 7.0),
        (0, 0.0),
        (5, 5.0),
        (0.25, 0.25),
    ],
)
def test_duration_forms_give_seconds(value: object, seconds: float) -> None:
    assert parse_duration(value, "job.timeouts.heartbeat") == seconds


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("5 sec", "invalid duration '5 sec'"),
        ("5S", "invalid duration '5S'"),
        ("1m30s", "invalid duration '1m30s'"),
        ("", "invalid duration ''"),
        ("-5s", "negative duration '-5s'"),
        (-1, "negative duration -1"),
        (True, "expected a duration, got true"),
        (None, "expected a duration, got null"),
        ([5], "expected a duration, got a list"),
        (float("inf"), "duration inf is not finite"),
        (float("nan"), "duration nan is not finite"),
    ],
)
def test_bad_durations_say_where_and_list_the_forms(value: object, reason: str) -> None:
    with pytest.raises(UnitError) as excinfo:
        parse_duration(value, "expect.within")
    assert excinfo.value.reason == reason
    assert str(excinfo.value) == f"expect.within: {reason}; valid: {', '.join(DURATION_FORMS)}"


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1024, 1024),
        ("1024", 1024),
        (0, 0),
        ("64KiB", 64 * 1024),
        ("1MiB", 1024**2),
        ("1GiB", 1024**3),
        ("64KB", 64_000),
        ("1MB", 1_000_000),
        ("2GB", 2_000_000_000),
        ("10B", 10),
        (" 4 MiB ", 4 * 1024**2),
    ],
)
def test_size_forms_give_bytes(value: object, size: int) -> None:
    assert parse_size(value, "job.tensors.size") == size


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("64kb", "invalid size '64kb'"),
        ("1.5MiB", "invalid size '1.5MiB'"),
        ("1TiB", "invalid size '1TiB'"),
        ("-1KiB", "negative size '-1KiB'"),
        (-3, "negative size -3"),
        (1.5, "expected a size, got 1.5"),
        (False, "expected a size, got false"),
        ({"a": 1}, "expected a size, got a mapping"),
    ],
)
def test_bad_sizes_say_where_and_list_the_forms(value: object, reason: str) -> None:
    with pytest.raises(UnitError) as excinfo:
        parse_size(value, "job.chunk_size")
    assert excinfo.value.reason == reason
    assert excinfo.value.where == "job.chunk_size"
    assert excinfo.value.valid == SIZE_FORMS


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5.0, "5s"), (0.2, "200ms"), (0.1, "100ms"), (120.0, "2m"), (3600.0, "1h"), (90.0, "90s")],
)
def test_format_duration_writes_the_shortest_exact_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_round_trips_whole_milliseconds(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds), "x") == seconds


@given(st.integers(min_value=0, max_value=1 << 40))
def test_format_size_round_trips(size: int) -> None:
    assert parse_size(format_size(size), "x") == size


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_format_duration_round_trips_any_duration(seconds: float) -> None:
    assert parse_duration(format_duration(seconds), "x") == seconds
