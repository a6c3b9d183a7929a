"""The scenario-file JSON Schema, generated from the catalog and the key definitions below.

``python -m pytest_flrelia.scenario.schema > pytest_flrelia/scenario/scenario.schema.json``
regenerates the shipped file; a test keeps the two identical.  The loader
validates with the shipped file, so editors and pytest check the same rules.
The key definitions here are the single source of every key's type, default
and one-line meaning.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from pytest_flrelia.contract.faults import LAST_CHUNK
from pytest_flrelia.contract.job import (
    DOWNLOAD_CHUNK_BYTES,
    DOWNLOAD_RETRIES,
    TensorSpec,
    Timeouts,
)
from pytest_flrelia.contract.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    format_duration,
    format_size,
)
from pytest_flrelia.scenario.catalog import (
    CATALOG,
    ENTRY_KEYS,
    INVARIANTS,
    OUTCOMES,
    SCOPE_KEYS,
    UNPINNABLE,
    Param,
)

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
SITE_PATTERN = r"^site-[1-9][0-9]*$"
MARK_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
DTYPES: tuple[str, ...] = ("float32", "float64")

TIMEOUT_DOCS: Mapping[str, str] = {
    "download_complete": "how long the agent's gate waits for the server to download every tensor",
    "submit_update": "how long the server waits for a site's SubmitUpdate in one round",
    "heartbeat_interval": "time between two heartbeats on the pipe",
    "heartbeat": "silence on the pipe after which the peer is reported gone",
    "pre_init": "how long execute() waits for a fresh subprocess to call init()",
    "execution": "how long execute() waits for the result of one task",
    "stop_grace": "between SIGTERM to the process group and SIGKILL",
    "stop_poll": "how often the deferred-stop thread checks the run status and the abort "
    "(it wakes at the process's exit in between)",
    "download_retry_delay": "pause before the downloader retries a failed chunk",
    "download_connect": "how long the downloader waits to connect to a download service",
    "stop_wait": "how long the deferred stop waits for a natural exit, and the next round for "
    "it; default: download_complete",
}
"""Scenario timeout keys, in the order the docs list them, mapped to Timeouts fields."""

EXPECT_MATRIX_KEYS: tuple[str, ...] = ("expect.outcome", "expect.error", "expect.within")


def _described(schema: Schema, description: str, default: object = None) -> Schema:
    """``schema`` with the annotations an editor shows on hover."""
    out = dict(schema)
    out["description"] = description
    if default is not None:
        out["default"] = default
    return out


DURATION: Schema = {"$ref": "#/$defs/duration"}
SIZE: Schema = {"$ref": "#/$defs/size"}


def _definitions() -> Schema:
    return {
        "duration": {
            "title": "duration",
            "description": "seconds as a number, or a string with a unit: 500ms, 5s, 2m, 1h",
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
        },
        "size": {
            "title": "size",
            "description": "bytes as an integer, or a string: 1024, 64KiB, 1MiB, 1GiB, 1KB, 1MB",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
        },
        "scenario": _scenario(),
        "fault": _fault(),
    }


def _job() -> Schema:
    fast = Timeouts.fast()
    tensors = TensorSpec()
    timeouts = {
        key: _described(
            DURATION,
            doc,
            None if key == "stop_wait" else format_duration(getattr(fast, key)),
        )
        for key, doc in TIMEOUT_DOCS.items()
    }
    return {
        "type": "object",
        "description": "the federated job: sites, rounds, tensors, timeouts",
        "additionalProperties": False,
        "properties": {
            "sites": _described(
                {"type": "integer", "minimum": 1},
                "number of sites (site-1 ... site-N unless job.site_names names them)",
                1,
            ),
            "rounds": _described({"type": "integer", "minimum": 1}, "number of rounds", 1),
            "launch_once": _described(
                {"type": "boolean"},
                "one subprocess per site serves every round (false: a fresh one per round)",
                False,
            ),
            "tensors": {
                "type": "object",
                "description": "the tensors each site returns per round",
                "additionalProperties": False,
                "properties": {
                    "count": _described(
                        {"type": "integer", "minimum": 0},
                        "tensors per result; 0 means nothing to download",
                        tensors.count,
                    ),
                    "size": _described(SIZE, "bytes per tensor", format_size(tensors.size_bytes)),
                    "dtype": _described(
                        {"title": "dtype", "enum": list(DTYPES)}, "element type", tensors.dtype
                    ),
                },
            },
            "timeouts": {
                "type": "object",
                "description": "scaled-down production timeouts; unset ones take "
                "Timeouts.fast() values",
                "additionalProperties": False,
                "properties": timeouts,
            },
            "download_retries": _described(
                {"type": "integer", "minimum": 0},
                "retries of a failed download before the server gives up on a site",
                DOWNLOAD_RETRIES,
            ),
            "chunk_size": _described(
                SIZE, "bytes per served chunk", format_size(DOWNLOAD_CHUNK_BYTES)
            ),
            "validate_rounds": _described(
                {"type": "array", "uniqueItems": True, "items": {"type": "integer", "minimum": 1}},
                "rounds whose task is a validate: the result carries no tensors",
            ),
            "seed": _described(
                {"type": "integer", "minimum": 0}, "seed for the tensors' contents", 0
            ),
            "site_names": _described(
                {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1},
                },
                "the sites' names, one per site (default: site-1 ... site-N); spaces and "
                "non-ASCII allowed; only a target that declares named sites runs them",
            ),
            "name": _described(
                {"type": "string", "minLength": 1},
                "the job's name (default: the target's); only a target that declares "
                "named sites runs it",
            ),
        },
    }


def _expect() -> Schema:
    return {
        "type": "object",
        "description": "what the run must show",
        "additionalProperties": False,
        "properties": {
            "outcome": _described(
                {"title": "outcome", "enum": list(OUTCOMES)},
                "whether the job must succeed or fail",
                "success",
            ),
            "error": _described(
                {"type": "string"},
                "regex the failure's error must match; only with outcome failure",
            ),
            "within": _described(
                DURATION, "wall-clock bound for the whole run; default: --flrelia-within (30s)"
            ),
            "invariants": _described(
                {
                    "type": "array",
                    "uniqueItems": True,
                    "items": {"title": "invariant", "enum": list(INVARIANTS)},
                },
                "invariants to check; default: all that apply to the outcome",
            ),
        },
    }


def _leaf_paths(schema: Schema, prefix: str) -> Iterator[tuple[str, Schema]]:
    """Every non-object key under ``schema`` as (dotted path, its schema)."""
    for key, sub in schema["properties"].items():
        path = f"{prefix}.{key}" if prefix else key
        if sub.get("type") == "object":
            yield from _leaf_paths(sub, path)
        else:
            yield path, sub


def _matrix(job: Schema, expect: Schema) -> Schema:
    """Matrix keys: bare top-level job keys, dotted ``job.*`` leaves, ``expect.*``."""
    leaves: dict[str, Schema] = {}
    for key, sub in job["properties"].items():
        if sub.get("type") != "object":
            leaves[key] = sub
    leaves.update(_leaf_paths(job, "job"))
    leaves.update(
        (path, sub) for path, sub in _leaf_paths(expect, "expect") if path in EXPECT_MATRIX_KEYS
    )
    properties: Schema = {}
    for path, sub in leaves.items():
        item = {k: v for k, v in sub.items() if k not in ("description", "default")}
        properties[path] = {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": item,
            "description": f"values of {path if '.' in path else 'job.' + path}",
        }
    return {
        "type": "object",
        "description": "one scenario per combination of these values; a bare key is a job key",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": properties,
    }


def _scenario() -> Schema:
    # The reference target's registry is the only list of slugs; importing it loads no runtime.
    from pytest_flrelia.targets.reference.variants import KNOWN_BUGS  # noqa: PLC0415

    slugs = list(KNOWN_BUGS)
    job = _job()
    expect = _expect()
    return {
        "type": "object",
        "description": "one scenario: a job, the faults injected into it, what it must show",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": _described(
                {"type": "string", "pattern": NAME_PATTERN},
                "unique within the session; the test id",
            ),
            "description": _described({"type": "string"}, "what the scenario shows, for people"),
            "job": job,
            "faults": _described(
                {"type": "array", "items": {"$ref": "#/$defs/fault"}},
                "faults to inject",
            ),
            "target": _described(
                {"type": "string", "minLength": 1},
                "run only against this target (--flrelia-target); default: any",
            ),
            "marks": _described(
                {
                    "type": "array",
                    "uniqueItems": True,
                    "items": {"type": "string", "pattern": MARK_PATTERN},
                },
                "pytest marker names applied to the test item",
            ),
            "catches": _described(
                {
                    "anyOf": [
                        {
                            "type": "object",
                            "minProperties": 1,
                            "propertyNames": {
                                "title": "known-bug slug",
                                "enum": slugs,
                            },
                            "additionalProperties": {
                                "title": "pinned check",
                                "enum": pinnable_checks(),
                            },
                        },
                        {
                            "type": "array",
                            "uniqueItems": True,
                            "items": {"title": "known-bug slug", "enum": slugs},
                        },
                    ]
                },
                "known bugs this scenario is designed to catch, each mapped to the check that "
                "must fail for it (slug: check); a plain list of slugs pins no check",
            ),
            "expect": expect,
            "matrix": _matrix(job, expect),
        },
    }


def pinnable_checks() -> list[str]:
    """The checks a ``catches`` entry may pin: every invariant but the unpinnable ones."""
    return [name for name in INVARIANTS if name not in UNPINNABLE]


def param_schema(param: Param) -> Schema:
    """JSON Schema of one fault parameter."""
    schema: Schema
    if param.kind == "duration":
        schema = dict(DURATION)
    elif param.kind == "int":
        schema = {"type": "integer"}
    elif param.kind == "float":
        schema = {"type": "number"}
    elif param.kind == "bool":
        schema = {"type": "boolean"}
    elif param.kind == "signal":
        schema = {"title": "signal", "enum": list(param.choices)}
    elif param.kind == "chunk":
        schema = {
            "title": "chunk",
            "anyOf": [{"type": "integer", "minimum": 1}, {"const": LAST_CHUNK}],
        }
    else:
        schema = {"enum": list(param.choices)}
    if param.minimum is not None and param.kind in ("int", "float"):
        schema["minimum"] = int(param.minimum) if param.kind == "int" else param.minimum
    return _described(schema, param.doc, param.default)


def _fault() -> Schema:
    branches = []
    for fault in CATALOG.values():
        properties: Schema = {key: True for key in ("fault", *fault.scopes, "optional")}
        properties.update((name, param_schema(p)) for name, p in fault.params.items())
        then: Schema = {
            "description": fault.summary,
            "additionalProperties": False,
            "properties": properties,
        }
        required = [name for name, p in fault.params.items() if p.required]
        if required:
            then["required"] = required
        branches.append(
            {
                "if": {"properties": {"fault": {"const": fault.name}}, "required": ["fault"]},
                "then": then,
            }
        )
    return {
        "type": "object",
        "description": "one fault: its name, where and when it strikes, its parameters",
        "required": ["fault"],
        "properties": {
            "fault": _described(
                {"title": "fault", "enum": sorted(CATALOG)}, "which fault to inject"
            ),
            "site": _described(
                {"type": "string", "minLength": 1},
                "the site it strikes, e.g. site-2 (or a name of job.site_names); "
                "default: every site",
            ),
            "round": _described(
                {"type": "integer", "minimum": 1}, "the round it strikes; default: every round"
            ),
            "optional": _described(
                {"type": "boolean"},
                "the fault may never act in a run (faults_delivered does not judge it)",
                False,
            ),
        },
        "allOf": branches,
        "examples": [dict(f.example) for f in CATALOG.values()],
    }


def build_schema() -> Schema:
    """The whole scenario-file schema: one scenario mapping, or a list of them."""
    return {
        "$schema": DIALECT,
        "title": "pytest-flrelia scenario file",
        "description": "A scenario mapping, or a list of them (*.scenario.yaml).",
        "$defs": _definitions(),
        "anyOf": [
            {"$ref": "#/$defs/scenario"},
            {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/scenario"}},
        ],
    }


def scenario_schema(schema: Schema) -> Schema:
    """``schema`` narrowed to one scenario mapping (the loader checks them one by one)."""
    narrowed = {k: copy.deepcopy(v) for k, v in schema.items() if k != "anyOf"}
    narrowed["$ref"] = "#/$defs/scenario"
    return narrowed


def render_schema() -> str:
    """The text of the shipped ``scenario.schema.json``."""
    return json.dumps(build_schema(), indent=2) + "\n"


def key_paths(schema: Schema) -> list[str]:
    """Every documented key path: ``job.tensors.count``, ``faults[].fault``, ``crash.code``.

    Fault parameters are ``<fault>.<param>``; ``matrix`` is one key (its keys
    are the other paths).  docs/scenarios.md lists exactly these.
    """
    defs = schema["$defs"]
    paths: list[str] = []

    def walk(node: Schema, prefix: str) -> None:
        for key, sub in node.get("properties", {}).items():
            path = f"{prefix}.{key}" if prefix else key
            paths.append(path)
            if key == "matrix" and not prefix:
                continue
            if sub.get("type") == "object":
                walk(sub, path)
            elif sub.get("type") == "array" and sub.get("items") == {"$ref": "#/$defs/fault"}:
                walk(defs["fault"], f"{path}[]")

    walk(defs["scenario"], "")
    for branch in defs["fault"]["allOf"]:
        fault = branch["if"]["properties"]["fault"]["const"]
        params = [
            k for k in branch["then"]["properties"] if k not in (*ENTRY_KEYS, *SCOPE_KEYS)
        ]
        paths.extend(f"{fault}.{param}" for param in params)
    return paths


def main() -> None:
    sys.stdout.write(render_schema())


if __name__ == "__main__":
    main()
