"""The NVFlare parity table in docs/reliability.md names only tests that exist, and its
totals are its rows' (so a filled-in TBD row cannot leave the totals stale)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Parity with NVFlare 2.7.2's tests"
REF = re.compile(r"`((?:tests|scenarios)/[\w/.-]+)::([\w-]+)`")
TOTALS = re.compile(
    r"\*\*Totals:\*\* (\d+) tests read, (\d+) apply, (\d+) covered directly, (\d+) TBD, "
    r"(\d+) not covered\."
)


def section() -> str:
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    assert HEADING in text, f"docs/reliability.md has no {HEADING!r} section"
    body = text.split(HEADING, 1)[1]
    return body.split("\n## ", 1)[0]


def rows() -> list[list[str]]:
    cells = [
        [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        for line in section().splitlines()
        if line.startswith("| `")
    ]
    assert all(len(row) == 4 for row in cells), [row for row in cells if len(row) != 4]
    return cells


def names_in(path: Path) -> set[str]:
    if path.suffix == ".py":
        return set(re.findall(r"^\s*def (test_\w+)\(", path.read_text(), re.MULTILINE))
    documents = yaml.safe_load(path.read_text(encoding="utf-8"))
    items = documents if isinstance(documents, list) else [documents]
    return {item["name"] for item in items}


def test_every_named_test_and_scenario_exists() -> None:
    refs = REF.findall(section())
    assert refs, "the table names no test"
    missing = [
        f"{file}::{name}"
        for file, name in refs
        if not (ROOT / file).is_file() or name not in names_in(ROOT / file)
    ]
    assert missing == []


def test_totals_are_the_rows() -> None:
    table = rows()
    nvflare = [row[0] for row in table]
    assert len(set(nvflare)) == len(nvflare), "an NVFlare test is listed twice"
    applies = [row for row in table if row[2] == "yes"]
    assert all(row[2] == "yes" or row[2].startswith("no: ") for row in table)
    direct = [row for row in applies if any(c.startswith("direct: ") for c in row[3].split("; "))]
    tbd = [row for row in applies if row not in direct and "TBD" in row[3]]
    match = TOTALS.search(section())
    assert match, "the totals line is missing"
    assert [int(n) for n in match.groups()] == [
        len(table),
        len(applies),
        len(direct),
        len(tbd),
        len(applies) - len(direct) - len(tbd),
    ]
