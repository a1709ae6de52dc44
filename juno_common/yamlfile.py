"""YAML that remembers where everything came from, so every error can say file:line.

We compose the node tree (which keeps start marks) instead of loading plain Python objects, and
read it with a few helpers. Duplicate keys, which PyYAML silently resolves to the last one, are
reported: in a policy file a duplicated class or rule is almost always a mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode


@dataclass(frozen=True)
class Issue:
    """One problem in a file: where it is, what is wrong, what to do."""

    file: str
    line: int
    where: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f" {self.where}:" if self.where else ""
        fix = f" ({self.fix})" if self.fix else ""
        return f"{self.file}:{self.line}:{where} {self.message}{fix}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "where": self.where, "message": self.message,
                "fix": self.fix}


def line_of(node: Node) -> int:
    return node.start_mark.line + 1


def compose(path: Path, display: str | None = None) -> tuple[Node | None, list[Issue]]:
    """The node tree of a YAML file, or the syntax error as an Issue."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        return None, [Issue(name, 0, "", f"cannot read the file: {err.strerror}", "check the path")]
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 0
        return None, [Issue(name, line, "", f"YAML syntax error: {err.problem or err}",
                            "fix the indentation or quoting on that line")]
    except yaml.YAMLError as err:
        return None, [Issue(name, 0, "", f"YAML error: {err}", "fix the YAML syntax")]
    if node is None:
        return None, [Issue(name, 1, "", "the file is empty", "see the comments in etc/ for the format")]
    return node, []


class _Constructor(yaml.constructor.SafeConstructor):
    """SafeLoader's scalar rules (int, float, bool, null, str) applied to single nodes."""


def value_of(node: Node) -> Any:
    """The plain Python value of a node (recursively), with YAML's safe types."""
    return _Constructor().construct_object(node, deep=True)


def kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = value_of(node)
    if value is None:
        return "empty"
    return f"{type(value).__name__} {value!r}"


@dataclass
class Reader:
    """Walks one file's nodes and collects Issues instead of stopping at the first."""

    file: str
    issues: list[Issue]

    def error(self, node: Node | None, where: str, message: str, fix: str = "") -> None:
        self.issues.append(Issue(self.file, line_of(node) if node is not None else 0, where, message, fix))

    def mapping(self, node: Node, where: str, allowed: Iterable[str] | None = None,
                required: Iterable[str] = (), owner: Node | None = None) -> dict[str, tuple[Node, Node]]:
        """key → (key node, value node); reports non-mappings, unknown, duplicate and missing keys.

        Missing keys are reported at `owner` (the line naming this mapping) if given.
        """
        if not isinstance(node, MappingNode):
            self.error(node, where, f"expected a mapping, found {kind(node)}",
                       "write indented 'key: value' lines under it")
            return {}
        allowed_set = list(allowed) if allowed is not None else None
        result: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            key = value_of(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str | int) or isinstance(key, bool):
                self.error(key_node, where, f"keys must be names, found {kind(key_node)}", "use a plain word as key")
                continue
            key = str(key)
            if key in result:
                first = line_of(result[key][0])
                self.error(key_node, _join(where, key), f"duplicate key (first at line {first})",
                           "keep one of them: YAML would silently use the last")
                continue
            if allowed_set is not None and key not in allowed_set:
                self.error(key_node, _join(where, key), "unknown key", _suggest(key, allowed_set))
                continue
            result[key] = (key_node, value_node)
        for key in required:
            if key not in result:
                self.error(owner or node, where, f"missing key {key!r}", f"add {key}: ...")
        return result

    def sequence(self, node: Node, where: str) -> list[Node]:
        if not isinstance(node, SequenceNode):
            self.error(node, where, f"expected a list, found {kind(node)}", "start each item with '- '")
            return []
        return list(node.value)

    def scalar(self, node: Node, where: str) -> tuple[bool, Any]:
        if not isinstance(node, ScalarNode):
            self.error(node, where, f"expected a single value, found {kind(node)}", "write one value after the colon")
            return False, None
        return True, value_of(node)

    def strings(self, node: Node, where: str) -> list[tuple[Node, str]]:
        """A string or a list of strings, each with its node."""
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        result = []
        for item in nodes:
            ok, value = self.scalar(item, where)
            if not ok:
                continue
            if value is None or isinstance(value, bool | dict | list):
                self.error(item, where, f"expected text, found {kind(item)}",
                           "quote it if YAML reads it as something else")
                continue
            result.append((item, str(value)))
        if isinstance(node, SequenceNode) and not result and not node.value:
            self.error(node, where, "empty list", "give at least one value or remove the key")
        return result


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _suggest(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    known = ", ".join(allowed)
    return f"did you mean {close[0]!r}? known keys: {known}" if close else f"known keys: {known}"
