"""Durations and sizes read the way scenario authors write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_flrelia.contract.job import TensorSpec
from pytest_flrelia.contract.memory_budget import job_memory, memory_shortfall
from pytest_flrelia.contract.units import (
    DURATION_FORMS,
    SIZE_FORMS,
    UnitError,
    check_whole_elements,
    format_duration,
    format_size,
    parse_count,
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


# --- counts, whole elements and the memory budget (shared by the loader and the CLI) ----


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "must be >= 1, got 0"),
        ("-2", "must be >= 1, got -2"),
        ("two", "expected an integer, got 'two'"),
        (1.5, "expected an integer, got 1.5"),
        (True, "expected an integer, got true"),
    ],
)
def test_parse_count_refuses_what_is_not_a_count(value: object, reason: str) -> None:
    with pytest.raises(UnitError) as raised:
        parse_count(value, "--sites", 1)
    assert raised.value.reason == reason
    assert str(raised.value) == f"--sites: {reason}"  # no empty "valid:" tail


def test_parse_count_reads_digits_and_ints() -> None:
    assert parse_count("3", "--rounds", 1) == 3
    assert parse_count(0, "tensors.count", 0) == 0


def test_a_size_must_be_a_whole_number_of_elements() -> None:
    assert check_whole_elements(1024, "float32", 4, "size") == 1024
    with pytest.raises(UnitError, match=r"1001 bytes is not a whole number of float32 elements"):
        check_whole_elements(1001, "float32", 4, "size")
    with pytest.raises(UnitError, match=r"must be at least 8 bytes, got 4"):
        check_whole_elements(4, "float64", 8, "size")


def test_memory_shortfall_shows_the_arithmetic_and_the_budget() -> None:
    tensors = TensorSpec(count=4, size_bytes=1024**3)
    assert job_memory(2, tensors) == 12 * 1024**3
    assert memory_shortfall(2, tensors, available=12 * 1024**3) is None
    assert memory_shortfall(2, tensors, available=12 * 1024**3 - 1) == (
        "4 tensors x 1GiB x (2 sites + the server's model) = 12GiB at least, more than the "
        "12.0GiB of memory available on this host (the budget: "
        "psutil.virtual_memory().available); use fewer or smaller tensors"
    )
    assert memory_shortfall(1, TensorSpec(count=0)) is None  # nothing to hold
