"""Pass 1 of loading a scenario file: YAML, with the line of every key.

The file is parsed into plain data and a map from each key path to the line it
is written on (keys merged in with ``<<: *anchor`` included), so every later
pass can say ``file:line``.  What the schema could not see is refused here:
YAML syntax (shown with the source line and a caret under the spot), keys that
are not strings, duplicate keys, recursive aliases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from pytest_flrelia.errors import ScenarioError

KeyPath = tuple[str | int, ...]
"""Where a value sits in a file: ``("faults", 0, "fault")``."""

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TAG_KINDS = {
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:null": "null",
    "tag:yaml.org,2002:timestamp": "a date",
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


class Document:
    """A parsed file: its data and the line of every key path in it."""

    def __init__(
        self, path: Path, data: object, lines: dict[KeyPath, int], case: str | None = None
    ) -> None:
        self.path = path
        self.data = data
        self.lines = lines
        self.case = case

    @classmethod
    def parse(cls, path: Path, text: str) -> Document:
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

    def for_case(self, case: str, overrides: Mapping[KeyPath, int]) -> Document:
        """This document as seen by one matrix case: overridden keys point at the matrix."""
        return Document(self.path, self.data, {**self.lines, **overrides}, case)


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


__all__ = ["Document", "KeyPath", "format_key_path"]
