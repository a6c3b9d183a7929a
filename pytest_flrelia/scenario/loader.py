"""Scenario files: the data model and the loader that turns YAML into it.

A ``*.scenario.yaml`` file holds one scenario mapping or a list of them.  The
loader checks a file in three passes, each of which can only report what the
previous one let through: YAML (syntax, duplicate or non-string keys), the
shipped JSON Schema (shape, types, names), then meaning (sites and rounds in
range, regexes that compile, unique names).  Every error is one
:class:`ScenarioError` that names the file, the line, the key path, the valid
choices and the closest one.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.resources
import itertools
import json
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.job import JobConfig, TensorSpec, Timeouts
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
from pytest_flrelia.scenario.catalog import (
    CATALOG,
    INVARIANTS,
    OUTCOMES,
    SCOPE_KEYS,
    UNPINNABLE,
    UNPINNABLE_WHY,
    Outcome,
    ParamError,
    close_match,
    validate_params,
)
from pytest_flrelia.scenario.schema import (
    MARK_PATTERN,
    NAME_PATTERN,
    SITE_PATTERN,
    scenario_schema,
)

KeyPath = tuple[str | int, ...]
SCHEMA_RESOURCE = "scenario.schema.json"
DTYPE_BYTES: Mapping[str, int] = MappingProxyType({"float32": 4, "float64": 8})
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TAG_KINDS = {
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
}
_PATTERN_HINTS: Mapping[str, str] = {
    NAME_PATTERN: "use lowercase letters, digits, '.', '_' and '-'; start with a letter or digit",
    SITE_PATTERN: "expected site-N: site-1, site-2, ...",
    MARK_PATTERN: "a marker name is a Python identifier",
}
_JSON_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def format_key_path(path: Iterable[str | int]) -> str:
    """``("faults", 0, "fault")`` -> ``faults[0].fault``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


class ScenarioTimeoutWarning(pytest.PytestWarning):
    """A scenario file sets two timeouts that contradict each other; the text names
    ``file:line``, the key and both values (the rules:
    :mod:`pytest_flrelia.contract.timeout_checks`)."""

    def __init__(self, text: str, located: ScenarioError | None = None) -> None:
        super().__init__(text)
        self.located = located
        """Where and what, as a :class:`ScenarioError` would say it (never raised)."""


class ScenarioError(Exception):
    """A scenario file that cannot be used, said the way a compiler would.

    ``str()`` is one line: ``file:line: key.path: message; valid: a, b; did you
    mean 'a'?``.
    """

    def __init__(
        self,
        path: Path,
        line: int | None,
        key_path: str,
        message: str,
        valid: Sequence[str] = (),
        suggestion: str | None = None,
        *,
        column: int | None = None,
        excerpt: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key_path = key_path
        self.message = message
        self.valid = tuple(valid)
        self.suggestion = suggestion
        self.column = column
        """1-based, when the error is at a character (a YAML syntax error)."""
        self.excerpt = excerpt
        """The offending source lines with a caret under the spot, shown below the message."""
        super().__init__(path, line, key_path, message, self.valid, suggestion)

    def format(self, path_text: str | None = None) -> str:
        """The message with the file shown as ``path_text`` (e.g. relative to rootdir)."""
        where = path_text if path_text is not None else str(self.path)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = (
            f"{where}: {self.key_path}: {self.message}"
            if self.key_path
            else (f"{where}: {self.message}")
        )
        if self.valid:
            text += f"; valid: {', '.join(self.valid)}"
        if self.suggestion:
            text += f"; did you mean '{self.suggestion}'?"
        if self.excerpt:
            text += "\n" + self.excerpt
        return text

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class Expectation:
    """What a run must show."""

    outcome: Outcome = "success"
    error: str | None = None
    """A regex the failure's error message must contain a match of (``re.search``)."""
    within: float | None = None
    """Wall-clock bound in seconds; ``None``: the session's ``--flrelia-within``."""
    invariants: tuple[str, ...] = ()
    """The invariants the scenario names; empty: every one that applies (see runner)."""

    def error_matches(self, text: str) -> bool:
        """Whether ``text`` satisfies ``error`` (always, when no error is expected)."""
        return self.error is None or re.search(self.error, text) is not None

    def within_or(self, default: float) -> float:
        """The bound to enforce, given the session default."""
        return default if self.within is None else self.within


@dataclass(frozen=True)
class Scenario:
    """One runnable scenario (a matrix entry expands into several)."""

    name: str
    description: str
    job: JobConfig
    faults: tuple[FaultSpec, ...]
    expect: Expectation
    target: str | None
    marks: tuple[str, ...]
    catches: tuple[str, ...]
    """Known-bug slugs the scenario is designed to catch, in file order."""
    path: Path
    line: int
    """1-based line of the scenario's ``name`` key."""
    matrix_case: tuple[tuple[str, object], ...] = field(default=())
    """The matrix values that made this scenario, as written (``()`` without a matrix)."""
    pinned: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Slug -> the check that must fail for it (``catches: {slug: check}``); a slug of
    the plain list form has no entry."""


def default_invariants(outcome: str) -> tuple[str, ...]:
    """The invariants that apply to ``outcome`` when a scenario does not list any."""
    return tuple(name for name, inv in INVARIANTS.items() if outcome in inv.outcomes)


def load_scenarios(path: Path) -> list[Scenario]:
    """Every scenario in the file at ``path``, matrices expanded, in file order.

    Raises :class:`ScenarioError` for the first problem found.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioError(path, None, "", f"not UTF-8 text: {err.reason}") from err
    except OSError as err:
        raise ScenarioError(path, None, "", f"cannot read the file: {err.strerror}") from err
    doc = _Document.parse(path, text)
    if doc.data is None:
        raise ScenarioError(
            path, None, "", "empty file: expected a scenario mapping or a list of them"
        )
    entries: list[tuple[dict[str, Any], KeyPath]]
    if isinstance(doc.data, dict):
        entries = [(doc.data, ())]
    elif isinstance(doc.data, list):
        if not doc.data:
            raise ScenarioError(path, doc.line_of(()), "", "empty list: expected scenarios")
        entries = []
        for index, item in enumerate(doc.data):
            if not isinstance(item, dict):
                raise doc.error(
                    (index,), f"expected a scenario mapping, got {describe_value(item)}"
                )
            entries.append((item, (index,)))
    else:
        raise ScenarioError(
            path,
            doc.line_of(()),
            "",
            "expected a scenario mapping or a list of them at the top level, "
            f"got {describe_value(doc.data)}",
        )
    scenarios: list[Scenario] = []
    first_line: dict[str, int] = {}
    for raw, prefix in entries:
        schema_error = _schema_error(doc, raw, prefix)
        if schema_error is not None:
            raise schema_error
        for scenario in _expand(doc, raw, prefix):
            if scenario.name in first_line:
                raise doc.error(
                    (*prefix, "name"),
                    f"duplicate scenario name {scenario.name!r}; "
                    f"first defined at line {first_line[scenario.name]}",
                )
            first_line[scenario.name] = scenario.line
            scenarios.append(scenario)
    return scenarios


@functools.lru_cache(maxsize=1)
def shipped_schema() -> dict[str, Any]:
    """The JSON Schema shipped beside this module (what editors see)."""
    resource = importlib.resources.files("pytest_flrelia.scenario").joinpath(SCHEMA_RESOURCE)
    text = resource.read_text("utf-8")
    return cast(dict[str, Any], json.loads(text))


@functools.lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(scenario_schema(shipped_schema()))


# --- pass 1: YAML -------------------------------------------------------------------


class _Document:
    """A parsed file: its data and the line of every key path in it."""

    def __init__(
        self, path: Path, data: object, lines: dict[KeyPath, int], case: str | None = None
    ) -> None:
        self.path = path
        self.data = data
        self.lines = lines
        self.case = case

    @classmethod
    def parse(cls, path: Path, text: str) -> _Document:
        loader = yaml.SafeLoader(text)
        lines: dict[KeyPath, int] = {}
        try:
            node = loader.get_single_node()
            if node is None:
                return cls(path, None, lines)
            lines[()] = node.start_mark.line + 1
            _record_lines(path, node, (), lines, set())
            return cls(path, loader.construct_document(node), lines)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = mark.line + 1 if mark is not None else None
            problem = err.problem or err.context or "cannot parse"
            message = f"invalid YAML: {problem}"
            if err.context and err.problem and err.context_mark is not None:
                message += f" ({err.context} at line {err.context_mark.line + 1})"
            marks = [m for m in (err.context_mark, err.problem_mark) if m is not None]
            raise ScenarioError(
                path,
                line,
                "",
                message,
                column=mark.column + 1 if mark is not None else None,
                excerpt=_excerpt(text, marks),
            ) from err
        except yaml.YAMLError as err:
            raise ScenarioError(path, None, "", f"invalid YAML: {err}") from err
        finally:
            loader.dispose()

    def line_of(self, key_path: KeyPath) -> int | None:
        """The line of ``key_path``, or of its nearest ancestor written in the file."""
        for end in range(len(key_path), -1, -1):
            line = self.lines.get(key_path[:end])
            if line is not None:
                return line
        return None

    def error(
        self,
        key_path: KeyPath,
        message: str,
        valid: Sequence[str] = (),
        suggestion: str | None = None,
    ) -> ScenarioError:
        if self.case is not None:
            message += f" (matrix case {self.case})"
        return ScenarioError(
            self.path,
            self.line_of(key_path),
            format_key_path(key_path),
            message,
            valid,
            suggestion,
        )

    def for_case(self, case: str, overrides: Mapping[KeyPath, int]) -> _Document:
        """This document as seen by one matrix case: overridden keys point at the matrix."""
        return _Document(self.path, self.data, {**self.lines, **overrides}, case)


def _excerpt(text: str, marks: Sequence[yaml.Mark]) -> str:
    """The source lines of ``marks``, numbered, each with a caret under its column.

    The caret's indent copies the line's tabs, so it lands under the character
    whatever the terminal's tab width.
    """
    lines = text.splitlines()
    width = len(str(max(m.line for m in marks) + 1))
    out: list[str] = []
    shown: set[tuple[int, int]] = set()
    for mark in sorted(marks, key=lambda m: (m.line, m.column)):
        if (mark.line, mark.column) in shown:
            continue
        shown.add((mark.line, mark.column))
        source = lines[mark.line] if mark.line < len(lines) else ""
        indent = "".join("\t" if c == "\t" else " " for c in source[: mark.column])
        if not out or out[-2].split("|", 1)[0].strip() != str(mark.line + 1):
            out.append(f"  {mark.line + 1:>{width}} | {source}".rstrip())
        out.append(f"  {'':>{width}} | {indent}^")
    return "\n".join(out)


def _record_lines(
    path: Path, node: yaml.Node, at: KeyPath, lines: dict[KeyPath, int], active: set[int]
) -> None:
    """Fill ``lines`` for every key under ``node``; reject keys the schema cannot see."""
    if id(node) in active:
        raise ScenarioError(
            path, node.start_mark.line + 1, format_key_path(at), "recursive YAML alias"
        )
    active.add(id(node))
    try:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            merged: list[yaml.Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    merged.append(value_node)
                    continue
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                    shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                    kind = _TAG_KINDS.get(key_node.tag, "not a string")
                    raise ScenarioError(
                        path,
                        line,
                        format_key_path(at),
                        f"key {shown!r} is read by YAML as {kind}; keys must be strings (quote it)",
                    )
                key = str(key_node.value)
                if key in seen:
                    raise ScenarioError(
                        path,
                        line,
                        format_key_path((*at, key)),
                        f"duplicate key {key!r}; first at line {seen[key]}",
                    )
                seen[key] = line
                key_path: KeyPath = (*at, key)
                lines[key_path] = line
                _record_lines(path, value_node, key_path, lines, active)
            for source in merged:
                _record_merged(path, source, at, lines, seen=seen, active=active)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                item_path: KeyPath = (*at, index)
                lines[item_path] = item.start_mark.line + 1
                _record_lines(path, item, item_path, lines, active)
    finally:
        active.discard(id(node))


def _record_merged(
    path: Path,
    source: yaml.Node,
    at: KeyPath,
    lines: dict[KeyPath, int],
    *,
    seen: dict[str, int],
    active: set[int],
) -> None:
    """Keys pulled in by ``<<: *anchor``; keys written in the mapping itself win."""
    sources = source.value if isinstance(source, yaml.SequenceNode) else [source]
    for mapping in sources:
        if not isinstance(mapping, yaml.MappingNode):
            continue  # the constructor reports it
        sub: dict[KeyPath, int] = {}
        _record_lines(path, mapping, at, sub, active)
        for key_path, line in sub.items():
            head = key_path[len(at)]
            if isinstance(head, str) and head not in seen:
                lines.setdefault(key_path, line)


# --- pass 2: JSON Schema ------------------------------------------------------------


def _schema_error(doc: _Document, raw: Mapping[str, Any], prefix: KeyPath) -> ScenarioError | None:
    """The first schema violation in file order, said in our words, or ``None``.

    A missing required key is reported only when nothing else is wrong: it is
    usually the consequence of a misspelt one, which says more.
    """
    found: list[tuple[int, int, int, ScenarioError]] = []
    for order, err in enumerate(_validator().iter_errors(raw)):
        key_path, error = _translate(doc, prefix, err)
        line = doc.line_of(key_path) or 0
        found.append((err.validator == "required", line, order, error))
    if not found:
        return None
    return min(found, key=lambda entry: entry[:3])[3]


def _translate(
    doc: _Document, prefix: KeyPath, err: ValidationError
) -> tuple[KeyPath, ScenarioError]:
    at: KeyPath = (*prefix, *err.absolute_path)
    instance: Any = err.instance
    schema: Any = err.schema
    kind = err.validator
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extras = [key for key in instance if key not in allowed]
        extra = min(extras, key=lambda key: doc.line_of((*at, key)) or 0)
        key_path: KeyPath = (*at, extra)
        valid = sorted(allowed)
        fault = CATALOG.get(str(instance.get("fault"))) if "fault" in allowed else None
        if fault is not None and extra in SCOPE_KEYS:
            message = f"fault {fault.name!r} does not take {extra!r}: {fault.scope_note}"
            return key_path, doc.error(key_path, message, valid)
        if "fault" in allowed and isinstance(instance.get("fault"), str):
            message = f"unknown parameter {extra!r} for fault {instance['fault']!r}"
        elif at[len(prefix) :] == ("matrix",):
            message = f"unknown matrix key {extra!r}"
            shown = [key for key in valid if "." not in key]
            shown += ["job.<any job key path>", *(k for k in allowed if k.startswith("expect."))]
            return key_path, doc.error(key_path, message, shown, close_match(extra, valid))
        else:
            message = f"unknown key {extra!r}"
        return key_path, doc.error(key_path, message, valid, close_match(extra, valid))
    if kind == "required":
        required = cast(list[str], err.validator_value)
        missing = next(key for key in required if key not in instance)
        if "fault" in schema.get("properties", {}) and "fault" in instance:
            message = f"fault {instance['fault']!r} needs parameter {missing!r}"
        else:
            message = f"missing required key {missing!r}"
        return at, doc.error(at, message)
    if kind == "type":
        expected_types: Any = err.validator_value
        types = expected_types if isinstance(expected_types, list) else [expected_types]
        expected = " or ".join(_JSON_TYPES.get(str(t), str(t)) for t in types)
        return at, doc.error(at, f"expected {expected}, got {describe_value(instance)}")
    if kind == "enum":
        valid = [str(value) for value in cast(list[Any], err.validator_value)]
        title = schema.get("title")
        if "propertyNames" in err.schema_path:  # a key of the mapping, not a value
            at = (*at, str(instance))
        if title == "pinned check" and instance in UNPINNABLE:
            message = f"{instance!r} cannot pin a known bug: {UNPINNABLE_WHY}"
            return at, doc.error(at, message, valid)
        message = f"unknown {title} {instance!r}" if title else f"invalid value {instance!r}"
        return at, doc.error(at, message, valid, close_match(instance, valid))
    if kind == "anyOf" and schema.get("title") in ("duration", "size"):
        parse = parse_duration if schema["title"] == "duration" else parse_size
        try:
            parse(instance, format_key_path(at))
        except UnitError as unit_err:
            return at, doc.error(at, unit_err.reason, unit_err.valid)
    if kind == "anyOf" and schema.get("title") == "chunk":
        return at, doc.error(at, f"expected a chunk number >= 1 or 'last', got {instance!r}")
    if kind == "anyOf" and err.context:
        # The branch whose type fits says what is wrong (catches: a mapping or a list).
        fitting = [sub for sub in err.context if sub.validator != "type"]
        if fitting:
            return _translate(doc, prefix, min(fitting, key=lambda sub: len(sub.path) * -1))
    if kind == "pattern":
        pattern = str(err.validator_value)
        hint = _PATTERN_HINTS.get(pattern, f"must match {pattern}")
        return at, doc.error(at, f"invalid value {instance!r}: {hint}")
    if kind == "minimum":
        return at, doc.error(at, f"must be >= {err.validator_value}, got {instance!r}")
    if kind in ("minItems", "minProperties", "minLength"):
        return at, doc.error(at, "must not be empty")
    if kind == "uniqueItems":
        seen: list[object] = []
        for value in instance:
            if value in seen:
                return at, doc.error(at, f"duplicate value {describe_value(value)}")
            seen.append(value)
    return at, doc.error(at, err.message)


# --- pass 3: meaning ----------------------------------------------------------------


def _expand(doc: _Document, raw: Mapping[str, Any], prefix: KeyPath) -> list[Scenario]:
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

    def __init__(self, doc: _Document, data: Mapping[str, Any], prefix: KeyPath) -> None:
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
    doc: _Document,
    data: Mapping[str, Any],
    prefix: KeyPath,
    name: str,
    case: tuple[tuple[str, object], ...],
) -> Scenario:
    reader = _Reader(doc, data, prefix)
    job = _build_job(reader)
    faults = tuple(_build_faults(reader, job))
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


def _build_job(reader: _Reader) -> JobConfig:
    sites = reader.integer(("job", "sites"), 1, 1)
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
                sites = "site-1" if job.sites == 1 else f"site-1..site-{job.sites}"
                raise reader.error(
                    (*at, "site"), f"site {site!r} does not exist; this job has {sites}"
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


__all__ = [
    "Expectation",
    "FaultSpec",
    "KeyPath",
    "Scenario",
    "ScenarioError",
    "ScenarioTimeoutWarning",
    "default_invariants",
    "format_key_path",
    "load_scenarios",
    "shipped_schema",
]
