"""Loading scenario files: YAML in, :class:`Scenario` values out.

A ``*.scenario.yaml`` file holds one scenario mapping or a list of them.  The
loader checks a file in three passes, each of which can only report what the
previous one let through, each in its own module:
:mod:`~pytest_flrelia.scenario.source` (YAML: syntax, duplicate or non-string
keys), :mod:`~pytest_flrelia.scenario.validate` (the shipped JSON Schema:
shape, types, names), then :mod:`~pytest_flrelia.scenario.build` (meaning:
sites and rounds in range, regexes that compile; matrices expanded).  This
module runs them over a file and checks what spans scenarios (unique names).
Every error is one :class:`ScenarioError` that names the file, the line, the
key path, the valid choices and the closest one.

The names importers use live on here: the model (:mod:`~pytest_flrelia.scenario.model`)
and the errors (:mod:`pytest_flrelia.errors`) are re-exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_flrelia.contract.faults import FaultSpec
from pytest_flrelia.contract.units import describe_value
from pytest_flrelia.errors import ScenarioError, ScenarioTimeoutWarning
from pytest_flrelia.scenario.build import expand
from pytest_flrelia.scenario.model import Expectation, Scenario, default_invariants
from pytest_flrelia.scenario.source import Document, KeyPath, format_key_path
from pytest_flrelia.scenario.validate import schema_error, shipped_schema


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
    doc = Document.parse(path, text)
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
        refused = schema_error(doc, raw, prefix)
        if refused is not None:
            raise refused
        for scenario in expand(doc, raw, prefix):
            if scenario.name in first_line:
                raise doc.error(
                    (*prefix, "name"),
                    f"duplicate scenario name {scenario.name!r}; "
                    f"first defined at line {first_line[scenario.name]}",
                )
            first_line[scenario.name] = scenario.line
            scenarios.append(scenario)
    return scenarios


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
