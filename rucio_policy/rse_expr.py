"""Rucio RSE expressions evaluated offline, against the RSEs and attributes of etc/sites.yaml.

Same grammar as rucio/core/rse_expression_parser.py: primitives are `*`, an RSE attribute test
`key=value`, `key<number`, `key>number`, or a bare name (attribute `name` is True; every RSE has
its own name as such an attribute, which is why bare RSE names work); operators `|` (union),
`&` (intersection), `\\` (difference) apply strictly left to right; parentheses group.

The policy validator uses it to catch unknown RSEs and rules asking for more copies than their
expression has RSEs, before anything reaches Rucio.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ATTRIBUTE = r"[A-Za-z0-9\._-]+[=<>][A-Za-z0-9_-]+"
_NAME = r"[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*"
_PRIMITIVE = re.compile(rf"(?:{_ATTRIBUTE}|{_NAME}|\*)")


class ExpressionError(ValueError):
    """An expression Rucio would reject, or one that selects nothing."""


def primitives(expression: str) -> list[str]:
    """The primitive terms of an expression, in order (syntax-checked)."""
    return [token for token in _tokens(expression) if token not in "|&\\()"]


def _tokens(expression: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(expression):
        char = expression[i]
        if char in "|&\\()":
            tokens.append(char)
            i += 1
            continue
        match = _PRIMITIVE.match(expression, i)
        if not match:
            raise ExpressionError(f"RSE expression {expression!r}: unexpected {expression[i:]!r} at position {i + 1}")
        tokens.append(match.group())
        i = match.end()
    return tokens


def _matches(attributes: Mapping[str, Any], primitive: str) -> bool:
    for op in "=<>":
        if op in primitive:
            key, value = primitive.split(op, 1)
            have = attributes.get(key)
            if have is None:
                return False
            if op == "=":
                if isinstance(have, bool):
                    return str(have).lower() == value.lower()
                return str(have) == value
            try:
                number = float(have)
                bound = float(value)
            except (TypeError, ValueError):
                return False
            return number < bound if op == "<" else number > bound
    return attributes.get(primitive) is True


def evaluate(expression: str, rses: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The names of the RSEs `expression` selects among `rses` (name → attributes)."""
    tokens = _tokens(expression)
    if not tokens:
        raise ExpressionError("empty RSE expression")
    position = 0

    def term() -> set[str]:
        nonlocal position
        if position >= len(tokens):
            raise ExpressionError(f"RSE expression {expression!r} ends where an RSE or '(' is expected")
        token = tokens[position]
        position += 1
        if token == "(":
            result = sequence()
            if position >= len(tokens) or tokens[position] != ")":
                raise ExpressionError(f"RSE expression {expression!r}: missing ')'")
            position += 1
            return result
        if token in "|&\\)":
            raise ExpressionError(f"RSE expression {expression!r}: {token!r} where an RSE or '(' is expected")
        if token == "*":
            return set(rses)
        return {name for name, attributes in rses.items() if _matches(attributes, token)}

    def sequence() -> set[str]:
        nonlocal position
        result = term()
        while position < len(tokens) and tokens[position] in "|&\\":
            op = tokens[position]
            position += 1
            right = term()
            result = result | right if op == "|" else result & right if op == "&" else result - right
        return result

    selected = sequence()
    if position != len(tokens):
        raise ExpressionError(f"RSE expression {expression!r}: unexpected {tokens[position]!r}")
    return selected
