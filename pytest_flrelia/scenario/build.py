"""Pass 3 of loading a scenario file: meaning.

A mapping the schema accepted becomes :class:`~pytest_flrelia.scenario.model.Scenario`
values: a matrix expands into one scenario per combination, each read into a
job, faults and expectations.  What only the whole scenario can tell is
refused here (sites and rounds in range, regexes that compile, a round a fault
needs, a job that fits in memory, timeouts that contradict each other: fatal
ones raise, the others warn with a
:class:`~pytest_flrelia.errors.ScenarioTimeoutWarning`).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, cast

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts, name_problem
from pytest_flrelia.contract.memory_budget import memory_shortfall
from pytest_flrelia.contract.timeout_checks import timeout_conflicts
from pytest_flrelia.contract.units import (
    UnitError,
    check_whole_elements,
    describe_value,
    parse_count,
    parse_duration,
    parse_size,
)
from pytest_flrelia.errors import ParamError, ScenarioError, ScenarioTimeoutWarning
from pytest_flrelia.scenario.catalog import (
    CATALOG,
    INVARIANTS,
    OUTCOMES,
    UNPINNABLE,
    UNPINNABLE_WHY,
    close_match,
    validate_params,
)
from pytest_flrelia.scenario.model import Expectation, Scenario
from pytest_flrelia.scenario.source import Document, KeyPath, format_key_path

DTYPE_BYTES: Mapping[str, int] = MappingProxyType({"float32": 4, "float64": 8})


def expand(doc: Document, raw: Mapping[str, Any], prefix: KeyPath) -> list[Scenario]:
    """One scenario, or one per combination of its matrix values."""
    matrix: Mapping[str, list[Any]] | None = raw.get("matrix")
    if not matrix:
        return [_build(doc, raw, prefix, str(raw["name"]), ())]
    base = {key: value for key, value in raw.items() if key != "matrix"}
    targets: dict[KeyPath, str] = {}
    for key in matrix:
        target = _matrix_target(key)
        if target in targets:
            raise doc.error(
                (*prefix, "matrix", key), f"varies the same key as matrix key {targets[target]!r}"
            )
        if _get(base, target) is not None:
            raise doc.error(
                (*prefix, "matrix", key),
                f"{format_key_path(target)} is also set at line "
                f"{doc.line_of((*prefix, *target))}; set it in one place",
            )
        targets[target] = key
    scenarios = []
    keys = list(matrix)
    for indices in itertools.product(*(range(len(matrix[key])) for key in keys)):
        data = copy.deepcopy(base)
        overrides: dict[KeyPath, int] = {}
        case: list[tuple[str, object]] = []
        for key, index in zip(keys, indices, strict=True):
            value = matrix[key][index]
            target = _matrix_target(key)
            _set(data, target, copy.deepcopy(value))
            line = doc.line_of((*prefix, "matrix", key, index))
            if line is not None:
                target_path: KeyPath = (*prefix, *target)
                overrides[target_path] = line
            case.append((key, value))
        name = f"{raw['name']}[{'-'.join(f'{k}={_case_id(v)}' for k, v in case)}]"
        case_doc = doc.for_case(name, overrides)
        scenarios.append(_build(case_doc, data, prefix, name, tuple(case)))
    return scenarios


def _matrix_target(key: str) -> KeyPath:
    """A bare key is a job key; a dotted one is a full path."""
    return tuple(key.split(".")) if "." in key else ("job", key)


def _get(data: Mapping[str, Any], path: KeyPath) -> object:
    node: object = data
    for part in path:
        if isinstance(node, list) and isinstance(part, int):
            if not 0 <= part < len(node):
                return None
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _set(data: dict[str, Any], path: KeyPath, value: object) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(str(part), {})
    node[str(path[-1])] = value


def _case_id(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return ",".join(_case_id(item) for item in value)
    return str(value)


class _Reader:
    """Typed access to one validated scenario mapping; errors carry file:line."""

    def __init__(self, doc: Document, data: Mapping[str, Any], prefix: KeyPath) -> None:
        self.doc = doc
        self.data = data
        self.prefix = prefix

    def error(
        self, path: KeyPath, message: str, valid: Sequence[str] = (), suggestion: str | None = None
    ) -> ScenarioError:
        return self.doc.error((*self.prefix, *path), message, valid, suggestion)

    def get(self, path: KeyPath) -> object:
        return _get(self.data, path)

    def integer(self, path: KeyPath, default: int, minimum: int) -> int:
        value = self.get(path)
        if value is None:
            return default
        if isinstance(value, str):  # a YAML string is not a count, even "3"
            raise self.error(path, f"expected an integer, got {describe_value(value)}")
        try:
            return parse_count(value, format_key_path(path), minimum)
        except UnitError as err:
            raise self.error(path, err.reason, err.valid) from err

    def duration(self, path: KeyPath) -> float | None:
        value = self.get(path)
        if value is None:
            return None
        try:
            return parse_duration(value, format_key_path(path))
        except UnitError as err:
            raise self.error(path, err.reason, err.valid) from err

    def size(self, path: KeyPath, default: int, minimum: int) -> int:
        value = self.get(path)
        if value is None:
            return default
        try:
            size = parse_size(value, format_key_path(path))
        except UnitError as err:
            raise self.error(path, err.reason, err.valid) from err
        if size < minimum:
            raise self.error(path, f"must be at least {minimum} bytes, got {value!r}")
        return size

    def strings(self, path: KeyPath) -> tuple[str, ...]:
        value = self.get(path)
        return tuple(str(item) for item in value) if isinstance(value, list) else ()


def _build(
    doc: Document,
    data: Mapping[str, Any],
    prefix: KeyPath,
    name: str,
    case: tuple[tuple[str, object], ...],
) -> Scenario:
    reader = _Reader(doc, data, prefix)
    job = _build_job(reader)
    faults = tuple(_build_faults(reader, job))
    _refuse_overlaps(reader, faults)
    expect = _build_expect(reader)
    catches, pinned = _build_catches(reader)
    target = reader.get(("target",))
    description = reader.get(("description",))
    return Scenario(
        name=name,
        description=str(description) if description is not None else "",
        job=job,
        faults=faults,
        expect=expect,
        target=str(target) if target is not None else None,
        marks=reader.strings(("marks",)),
        catches=catches,
        path=doc.path,
        line=doc.line_of((*prefix, "name")) or 1,
        matrix_case=case,
        pinned=MappingProxyType(pinned),
    )


def _build_catches(reader: _Reader) -> tuple[tuple[str, ...], dict[str, str]]:
    """``catches: {slug: check}`` (pinned), or the older plain list of slugs."""
    # The reference target's registry is the only list of slugs; importing it loads no runtime.
    from pytest_flrelia.targets.reference.variants import KNOWN_BUGS  # noqa: PLC0415

    raw = reader.get(("catches",))
    entries: list[tuple[KeyPath, str, object]]
    if isinstance(raw, dict):
        entries = [(("catches", str(slug)), str(slug), check) for slug, check in raw.items()]
    else:
        slugs = reader.strings(("catches",))
        entries = [(("catches", index), slug, None) for index, slug in enumerate(slugs)]
    pinned: dict[str, str] = {}
    for at, slug, check in entries:
        if slug not in KNOWN_BUGS:  # the schema says so too; this guards the dataclass
            valid = list(KNOWN_BUGS)
            raise reader.error(
                at, f"unknown known-bug slug {slug!r}", valid, close_match(slug, valid)
            )
        if check is None:
            continue
        if check in UNPINNABLE or check not in INVARIANTS:  # the schema says so too
            valid = [name for name in INVARIANTS if name not in UNPINNABLE]
            raise reader.error(
                at,
                f"{check!r} cannot pin a known bug: {UNPINNABLE_WHY}",
                valid,
                close_match(check, valid),
            )
        pinned[slug] = str(check)
    return tuple(slug for _, slug, _ in entries), pinned


def _build_names(reader: _Reader) -> tuple[tuple[str, ...], str | None]:
    """``job.site_names`` (one per site, unique, each a valid name) and ``job.name``."""
    raw = cast(list[Any], reader.get(("job", "site_names")) or [])
    names: list[str] = []
    for index, value in enumerate(raw):
        at: KeyPath = ("job", "site_names", index)
        if not isinstance(value, str):  # the schema says so too
            raise reader.error(at, f"expected a string, got {describe_value(value)}")
        problem = name_problem(value)
        if problem is not None:
            raise reader.error(at, f"invalid site name {value!r}: {problem}")
        if value in names:
            first = names.index(value)
            raise reader.error(
                at, f"duplicate site name {value!r}: the same as job.site_names[{first}]"
            )
        names.append(value)
    sites = reader.get(("job", "sites"))
    if names and sites is not None and isinstance(sites, int) and sites != len(names):
        raise reader.error(
            ("job", "site_names"),
            f"{len(names)} site names for {sites} sites: give one name per site "
            "(or leave job.sites out: it defaults to the number of names)",
        )
    job_name = reader.get(("job", "name"))
    if job_name is not None:
        if not isinstance(job_name, str):  # the schema says so too
            raise reader.error(
                ("job", "name"), f"expected a string, got {describe_value(job_name)}"
            )
        problem = name_problem(job_name)
        if problem is not None:
            raise reader.error(("job", "name"), f"invalid job name {job_name!r}: {problem}")
    return tuple(names), job_name


def _build_job(reader: _Reader) -> JobConfig:
    named_sites, job_name = _build_names(reader)
    sites = reader.integer(("job", "sites"), len(named_sites) or 1, 1)
    rounds = reader.integer(("job", "rounds"), 1, 1)
    launch_once = reader.get(("job", "launch_once"))
    if launch_once is not None and not isinstance(launch_once, bool):
        raise reader.error(
            ("job", "launch_once"), f"expected true or false, got {describe_value(launch_once)}"
        )
    spec = TensorSpec()
    dtype = str(reader.get(("job", "tensors", "dtype")) or spec.dtype)
    if dtype not in DTYPE_BYTES:
        valid = list(DTYPE_BYTES)
        raise reader.error(
            ("job", "tensors", "dtype"),
            f"unknown dtype {dtype!r}",
            valid,
            close_match(dtype, valid),
        )
    itemsize = DTYPE_BYTES[dtype]
    size = reader.size(("job", "tensors", "size"), spec.size_bytes, 0)
    try:
        check_whole_elements(size, dtype, itemsize, "job.tensors.size")
    except UnitError as err:
        raise reader.error(("job", "tensors", "size"), err.reason) from err
    validate_rounds = []
    for index, value in enumerate(cast(list[Any], reader.get(("job", "validate_rounds")) or [])):
        round_number = reader.integer(("job", "validate_rounds", index), 1, 1)
        if round_number > rounds:
            raise reader.error(("job", "validate_rounds", index), _no_such_round(value, rounds))
        validate_rounds.append(round_number)
    tensors = TensorSpec(
        count=reader.integer(("job", "tensors", "count"), spec.count, 0),
        size_bytes=size,
        dtype=dtype,
    )
    shortfall = memory_shortfall(sites, tensors)
    if shortfall is not None:
        raise reader.error(("job", "tensors"), shortfall)
    return JobConfig(
        sites=sites,
        rounds=rounds,
        launch_once=bool(launch_once),
        tensors=tensors,
        timeouts=_build_timeouts(reader),
        download_retries=reader.integer(("job", "download_retries"), JobConfig.download_retries, 0),
        chunk_bytes=reader.size(("job", "chunk_size"), JobConfig.chunk_bytes, 1),
        validate_rounds=tuple(sorted(validate_rounds)),
        seed=reader.integer(("job", "seed"), 0, 0),
        named_sites=named_sites,
        name=job_name,
    )


def _build_timeouts(reader: _Reader) -> Timeouts:
    """``Timeouts.fast()`` with the scenario's values; stop_wait follows download_complete."""
    raw = reader.get(("job", "timeouts"))
    given: dict[str, float] = {}
    fields = {f.name for f in dataclasses.fields(Timeouts)}
    for key in cast(dict[str, Any], raw or {}):
        if key not in fields:  # the schema rejects these first
            raise reader.error(("job", "timeouts", key), f"unknown timeout {key!r}")
        seconds = reader.duration(("job", "timeouts", key))
        assert seconds is not None
        given[key] = seconds
    if "stop_wait" not in given and "download_complete" in given:
        given["stop_wait"] = given["download_complete"]
    timeouts = dataclasses.replace(Timeouts.fast(), **given)
    for key in ("heartbeat_interval", "stop_poll"):
        if getattr(timeouts, key) <= 0:
            raise reader.error(("job", "timeouts", key), "must be > 0")
    for conflict in timeout_conflicts(timeouts):
        # Point at the value the file wrote: the short one if it is there, else the other.
        key = conflict.shorter if conflict.shorter in given else conflict.longer
        located = reader.error(
            ("job", "timeouts", key) if key in given else ("job", "timeouts"), conflict.message()
        )
        if conflict.fatal:
            raise located
        warnings.warn_explicit(
            ScenarioTimeoutWarning(str(located), located),
            ScenarioTimeoutWarning,
            filename=str(reader.doc.path),
            lineno=located.line or 1,
        )
    return timeouts


def _no_such_round(value: object, rounds: int) -> str:
    existing = "round 1" if rounds == 1 else f"rounds 1..{rounds}"
    return f"round {value} does not exist; this job has {existing}"


def _build_faults(reader: _Reader, job: JobConfig) -> Iterable[FaultSpec]:
    entries = cast(list[dict[str, Any]], reader.get(("faults",)) or [])
    for index, entry in enumerate(entries):
        at: KeyPath = ("faults", index)
        name = str(entry.get("fault"))
        try:
            params = validate_params(name, entry, format_key_path((*reader.prefix, *at)))
        except ParamError as err:
            key_path = (*at, err.key) if err.key in entry else at
            raise reader.error(key_path, err.reason, err.valid, err.suggestion) from err
        fault = CATALOG[name]
        site = entry.get("site")
        if site is not None:
            site = str(site)
            if site not in job.site_names():
                raise reader.error(
                    (*at, "site"),
                    f"site {site!r} does not exist; this job has {_site_list(job)}",
                    job.site_names() if job.named_sites else (),
                    close_match(site, job.site_names()) if job.named_sites else None,
                )
        round_number = entry.get("round")
        if round_number is not None:
            round_number = reader.integer((*at, "round"), 1, 1)
            if round_number > job.rounds:
                raise reader.error((*at, "round"), _no_such_round(round_number, job.rounds))
        if fault.round_required and round_number is None:
            raise reader.error(at, f"fault {name!r} needs a round (>= {fault.min_round})")
        if round_number is not None and round_number < fault.min_round:
            raise reader.error(
                (*at, "round"),
                f"fault {name!r} needs round >= {fault.min_round}: it replays an event of an "
                f"earlier round; got {round_number}",
            )
        if fault.per_round_only and job.launch_once:
            raise reader.error(
                (*at, "fault"),
                f"fault {name!r} needs one process per round (launch_once: false): it acts on "
                "the deferred stop between rounds, which launch_once has not",
            )
        if name == "stale_peer_gone":
            params = _stale_peer_gone(reader, at, params, cast(int, round_number))
        optional = entry.get("optional", False)
        if not isinstance(optional, bool):  # the schema says so too
            raise reader.error(
                (*at, "optional"), f"expected true or false, got {describe_value(optional)}"
            )
        yield FaultSpec(
            fault=name,
            site=site,
            round=round_number,
            params=MappingProxyType(params),
            line=reader.doc.line_of((*reader.prefix, *at)) or 1,
            optional=optional,
            index=index,
        )


DISTINCT_BY: tuple[str, ...] = ("at", "chunk", "topic", "from_round")
"""Parameters that make two faults of one kind strike different places or events."""


def _refuse_overlaps(reader: _Reader, faults: Sequence[FaultSpec]) -> None:
    """Two faults of one kind whose scopes meet (the same site, or one of them every site;
    the same for rounds) at the same point are ambiguous: which delay, which exit code
    acts first? A target compiles them to one failpoint, where the second never acts or
    the failpoint engine refuses both, so the file is refused here, naming both."""
    for later_index, later in enumerate(faults):
        for earlier in faults[:later_index]:
            if earlier.fault != later.fault or not _meet(earlier, later):
                continue
            if any(earlier.params.get(k) != later.params.get(k) for k in DISTINCT_BY):
                continue
            raise reader.error(
                ("faults", later.index, "fault"),
                f"fault {later.fault!r} overlaps the {earlier.fault!r} at line {earlier.line}: "
                f"both strike {_where(earlier, later)}; one fault of a kind per site, round "
                "and point: merge them into one, or give them scopes that do not meet",
            )


def _meet(a: FaultSpec, b: FaultSpec) -> bool:
    """Whether the scopes of ``a`` and ``b`` share a site and a round."""
    return all(x is None or y is None or x == y for x, y in ((a.site, b.site), (a.round, b.round)))


def _where(a: FaultSpec, b: FaultSpec) -> str:
    site = a.site or b.site
    number = a.round or b.round
    return (f"site {site}" if site else "every site") + (
        f", round {number}" if number else ", every round"
    )


def _site_list(job: JobConfig) -> str:
    """The job's sites as an error message says them."""
    if job.named_sites:
        return ", ".join(repr(name) for name in job.named_sites)
    return "site-1" if job.sites == 1 else f"site-1..site-{job.sites}"


def _stale_peer_gone(
    reader: _Reader, at: KeyPath, params: dict[str, object], round_number: int
) -> dict[str, object]:
    """``from_round`` defaults to the round before; it must be an earlier one."""
    from_round = params.get("from_round")
    if from_round is None:
        return {**params, "from_round": round_number - 1}
    if not isinstance(from_round, int) or from_round >= round_number:
        raise reader.error(
            (*at, "from_round"),
            f"from_round must be an earlier round than {round_number} "
            f"(1..{round_number - 1}), got {from_round}",
        )
    return params


def _build_expect(reader: _Reader) -> Expectation:
    outcome = str(reader.get(("expect", "outcome")) or "success")
    if outcome not in OUTCOMES:  # the schema says so too
        valid = list(OUTCOMES)
        raise reader.error(
            ("expect", "outcome"),
            f"unknown outcome {outcome!r}",
            valid,
            close_match(outcome, valid),
        )
    error = reader.get(("expect", "error"))
    if error is not None:
        if outcome != "failure":
            raise reader.error(
                ("expect", "error"),
                "an error is only checked when the outcome is failure; "
                "set expect.outcome: failure or remove expect.error",
            )
        try:
            re.compile(str(error))
        except re.error as err:
            raise reader.error(
                ("expect", "error"), f"invalid regex {error!r}: {err.msg} at position {err.pos}"
            ) from err
    within = reader.duration(("expect", "within"))
    if within is not None and within <= 0:
        raise reader.error(("expect", "within"), "must be > 0")
    named = reader.strings(("expect", "invariants"))
    for index, name in enumerate(named):
        invariant = INVARIANTS.get(name)
        if invariant is None:  # the schema says so too
            names = list(INVARIANTS)
            raise reader.error(
                ("expect", "invariants", index),
                f"unknown invariant {name!r}",
                names,
                close_match(name, names),
            )
        if outcome not in invariant.outcomes:
            raise reader.error(
                ("expect", "invariants", index),
                f"invariant {name!r} does not apply when the outcome is {outcome}",
            )
    return Expectation(
        outcome=outcome,
        error=str(error) if error is not None else None,
        within=within,
        invariants=named,
    )


__all__ = ["DTYPE_BYTES", "expand"]
