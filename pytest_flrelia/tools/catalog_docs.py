"""The "Fault catalog" section of ``docs/faults.md``, rendered from the catalog.

:data:`~pytest_flrelia.scenario.catalog.CATALOG` declares what a scenario may write;
the reference target declares how it delivers each fault (``TargetInfo.faults``: the
mechanics sentence and where each ``at:`` point strikes).  The page needs both; a test
keeps it equal to :func:`render_catalog`: code and docs cannot drift.
``python -m pytest_flrelia.tools.catalog_docs`` prints the section;
``--write docs/faults.md`` replaces it in place.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import yaml

from pytest_flrelia.contract.target import TargetInfo
from pytest_flrelia.scenario.catalog import AT_POINTS, CATALOG, SCOPE_KEYS, FaultType, Param
from pytest_flrelia.targets.reference import ReferenceTarget

SECTION_HEADING = "## Fault catalog"
"""Where the generated section starts; everything from it to the end is generated."""
WRAP_WIDTH = 90
_GLUE = "\x00"
"""Stands in for a space inside a code span while a paragraph is filled."""


REFERENCE_INFO: TargetInfo = ReferenceTarget.info
"""The page describes the reference target: its mechanics and ``at:`` points."""

MECHANICS: Mapping[str, str] = MappingProxyType(
    {name: support.mechanics for name, support in REFERENCE_INFO.faults.items()}
)
"""Fault name -> how the reference target delivers it (``FaultSupport.mechanics``)."""


_KIND_NAMES: Mapping[str, str] = {
    "duration": "duration",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "chunk": "chunk number >= 1 or `last`",
}


def render_catalog() -> str:
    """The markdown of the whole catalog section, from its heading to the end."""
    missing = sorted(set(CATALOG) - set(MECHANICS))
    if missing:
        raise KeyError(f"no mechanics written for fault(s) {', '.join(missing)} in catalog_docs")
    parts = [_intro(), *(_fault_section(f, MECHANICS[f.name]) for f in CATALOG.values())]
    return "\n".join(parts)


def replace_section(document: str, section: str) -> str:
    """``document`` with everything from :data:`SECTION_HEADING` on replaced by ``section``."""
    head, found, _ = document.partition(SECTION_HEADING + "\n")
    if not found:
        raise ValueError(f"no line {SECTION_HEADING!r} in the document")
    return head + section


def current_section(document: str) -> str:
    """What ``document`` holds from :data:`SECTION_HEADING` to the end ("" if none)."""
    _, found, rest = document.partition(SECTION_HEADING + "\n")
    return found + rest if found else ""


def _intro() -> str:
    rows = "".join(f"| [`{f.name}`](#{f.name}) | {f.summary} |\n" for f in CATALOG.values())
    at_rows = "".join(f"| `{at}` | {where} |\n" for at, where in _at_points().items())
    return (
        f"{SECTION_HEADING}\n\n"
        "Every fault a scenario can name, with its parameters, where and how the harness\n"
        "injects it, and the invariants it leaves out of a scenario's defaults. Generated\n"
        "from `pytest_flrelia.scenario.catalog.CATALOG` by\n"
        "`python -m pytest_flrelia.tools.catalog_docs --write docs/faults.md`; a test fails\n"
        "when this page and the catalog differ.\n\n"
        "Besides its parameters a fault takes `site` (`site-N`, default: every site) and\n"
        "`round` (default: every round) where its entry says so (the loader refuses a\n"
        "scope key a fault does not take), and `optional: true` (see below).\n"
        "*Subprocess* failpoints are passed to the training processes in\n"
        "`FLRELIA_FAILPOINTS`; *in-process* ones act in the harness process (server and\n"
        "clients); *live actions* act on the running executors when a timeline event is\n"
        "recorded; *script behaviours* switch the default training script's misbehaviour on\n"
        "through `FLRELIA_SCRIPT_BEHAVIOUR`. In a failpoint, `[site=S,round=R]` stands for\n"
        "the scope keys the entry gives, and `@FAULT#ID` tags the entry with the fault\n"
        "and its position in the scenario's `faults`.\n\n"
        "Every fault records a `fault` event (`fault`, `fault_id`, `did`) at the moment it\n"
        "acts, never when it is planned; each entry's **Delivered** says what counts as\n"
        "acting. The `faults_delivered` invariant fails a run in which a fault never\n"
        "acted, unless its entry says `optional: true`.\n\n"
        "| fault | what happens |\n|---|---|\n"
        f"{rows}\n"
        "The faults with an `at` parameter strike at one of these subprocess failpoints:\n\n"
        "| `at` | failpoint |\n|---|---|\n"
        f"{at_rows}"
    )


def _at_points() -> Mapping[str, str]:
    """Where the catalog's shared ``at`` points strike, from the faults that take them."""
    table: dict[str, str] = {}
    for name, support in REFERENCE_INFO.faults.items():
        param = CATALOG[name].params.get("at")
        if param is not None and tuple(param.choices) == AT_POINTS:
            for point in AT_POINTS:
                table.setdefault(point, support.at_detail[point])
    return table


def _fault_section(fault: FaultType, mechanics: str) -> str:
    return (
        f"### {fault.name}\n\n"
        f"{_wrap(_sentence(fault.summary))}\n\n"
        f"{_param_table(tuple(fault.params.values()))}\n"
        f"{_wrap('**Scope:** ' + _scopes(fault))}\n\n"
        f"{_wrap('**Mechanics:** ' + mechanics)}\n\n"
        f"{_wrap('**Delivered:** ' + _sentence(fault.delivered))}\n\n"
        f"**Voids:** {_voids(fault.voids)}\n\n"
        + (
            "**Needs** one process per round (`launch_once: false`): the loader refuses it "
            "otherwise.\n\n"
            if fault.per_round_only
            else ""
        )
        + f"```yaml\n{_example(fault.example)}```\n"
    )


def _wrap(text: str) -> str:
    """Fill to :data:`WRAP_WIDTH`, never breaking inside a `code span`."""
    glued = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", _GLUE), text)
    filled = textwrap.fill(glued, WRAP_WIDTH, break_long_words=False, break_on_hyphens=False)
    return filled.replace(_GLUE, " ")


def _sentence(text: str) -> str:
    """A summary as a sentence; one that starts with an identifier keeps its case."""
    first = text.split(maxsplit=1)[0] if text else ""
    if not any(mark in first for mark in "_()"):
        text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _param_table(params: Sequence[Param]) -> str:
    if not params:
        return "No parameters.\n"
    lines = [
        "| parameter | kind | required / default | meaning |",
        "|---|---|---|---|",
        *(f"| `{p.name}` | {_kind(p)} | {_default(p)} | {p.doc} |" for p in params),
    ]
    return "\n".join(lines) + "\n"


def _kind(param: Param) -> str:
    if param.kind in ("choice", "signal"):
        choices = ", ".join(f"`{c}`" for c in param.choices)
        return f"signal: {choices}" if param.kind == "signal" else f"one of {choices}"
    kind = _KIND_NAMES[param.kind]
    if param.minimum is not None:
        kind += f" >= {param.minimum:g}"
    return kind


def _default(param: Param) -> str:
    if param.required:
        return "required"
    if param.default is None:
        return "optional"
    if isinstance(param.default, bool):
        return f"`{'true' if param.default else 'false'}`"
    return f"`{param.default}`"


def _scopes(fault: FaultType) -> str:
    applied = ", ".join(f"`{key}`" for key in fault.scopes) or "none"
    refused = [f"`{key}`" for key in SCOPE_KEYS if key not in fault.scopes]
    note = fault.scope_note
    if refused and note:
        note = f"{' and '.join(refused)} refused: {note}"
    notes = [note] if note else []
    if fault.round_required:
        notes.insert(0, f"`round` is required, at least {fault.min_round}")
    return f"{applied} ({'; '.join(notes)})." if notes else f"{applied}."


def _voids(voids: Sequence[str]) -> str:
    if not voids:
        return "nothing; every default invariant applies."
    names = ", ".join(f"`{name}`" for name in voids)
    return f"{names}, left out of a scenario's default invariants."


def _example(example: Mapping[str, object]) -> str:
    body = yaml.safe_dump([dict(example)], sort_keys=False, default_flow_style=False)
    return "faults:\n" + "".join(f"  {line}\n" for line in body.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_flrelia.tools.catalog_docs",
        description="Print the fault-catalog section of docs/faults.md, or write it in place.",
    )
    parser.add_argument(
        "--write",
        metavar="PATH",
        type=Path,
        help=f"replace everything from {SECTION_HEADING!r} to the end of PATH",
    )
    args = parser.parse_args(argv)
    section = render_catalog()
    if args.write is None:
        sys.stdout.write(section)
        return 0
    path: Path = args.write
    path.write_text(replace_section(path.read_text(), section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
