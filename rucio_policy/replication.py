"""The replication policy (etc/replication.yaml): typed model, loader and validator.

Computing coordinators edit the YAML; everything that acts on it (plan, apply, explain, the
ingester, the server's check of the ingest account's rules) loads it through `load_policy`, which
refuses an invalid file as a whole and lists every problem as `file:line: where: what (fix)`.
Nothing may touch Rucio with a policy that did not validate.

File format (see etc/replication.yaml for a commented example):

  version: 1
  defaults: {copies, grouping, activity, priority, lifetime, locked}    # optional
  classes:
    <class>:                       # lower case, digits, _ (it appears in rule comments and metadata)
      description: text
      match: {scope, name, did_type, meta}   # at least one; values may be lists; name is a glob
      rules:
        - id: <rule id>            # unique in the class
          rse_expression: IHEP-TAPE
          copies: 1
          fraction: 1/3            # optional: only this share of the bytes (see placement.py)
          lifetime: null | 3600 | 30d   (s, m, h, d, w)
          activity: T0 Export      # one of Rucio's activities
          grouping: DATASET        # DATASET | ALL | NONE
          priority: 3              # 1 (lowest) .. 5 (highest)
          locked: false
          comment: text
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, SequenceNode

from juno_common.errors import InvalidFile
from juno_common.yamlfile import Issue, Reader, compose, line_of
from rucio_policy import naming
from rucio_policy.placement import parse_fraction
from rucio_policy.rse_catalog import RseCatalog
from rucio_policy.rse_expr import ExpressionError, evaluate, primitives

POLICY_VERSION = 1
# Rucio 41's generic schema ACTIVITY enum: rules with any other activity are rejected by the server.
ACTIVITIES: tuple[str, ...] = (
    "Data Brokering", "Data Consolidation", "Data Rebalancing", "Debug", "Express", "Functional Test",
    "Group Subscriptions", "Production Input", "Production Output", "Analysis Input", "Analysis Output",
    "Staging", "T0 Export", "T0 Tape", "Upload/Download (Job)", "Upload/Download (User)",
    "User Subscriptions", "Data Challenge",
)
GROUPINGS = ("DATASET", "ALL", "NONE")
DID_TYPES = ("FILE", "DATASET", "CONTAINER")
PRIORITY_RANGE = (1, 5)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_CLASS_RE = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
_RULE_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

_TOP_KEYS = ("version", "defaults", "classes")
_DEFAULT_KEYS = ("copies", "grouping", "activity", "priority", "lifetime", "locked")
_CLASS_KEYS = ("description", "match", "rules")
_MATCH_KEYS = ("scope", "name", "did_type", "meta")
_RULE_KEYS = ("id", "rse_expression", "copies", "fraction", "lifetime", "activity", "grouping", "priority",
              "locked", "comment")
_BUILTIN_DEFAULTS: dict[str, Any] = {"copies": 1, "grouping": "DATASET", "activity": "T0 Export", "priority": 3,
                                     "lifetime": None, "locked": False}


# -- model ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """Which DIDs a data class covers. Every given criterion must hold; lists mean "any of"."""

    scopes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # shell-style globs
    did_types: tuple[str, ...] = ()
    meta: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def matches(self, scope: str, name: str, did_type: str | None, meta: Mapping[str, Any] | None = None) -> bool:
        if self.scopes and not any(fnmatch.fnmatchcase(scope, s) for s in self.scopes):
            return False
        if self.names and not any(fnmatch.fnmatchcase(name, n) for n in self.names):
            return False
        if self.did_types and naming.normalize_did_type(did_type) not in self.did_types:
            return False
        meta = meta or {}
        return all(key in meta and str(meta[key]) in values for key, values in self.meta)

    def describe(self) -> str:
        parts = []
        for label, values in (("scope", self.scopes), ("did_type", self.did_types), ("name", self.names)):
            if values:
                parts.append(f"{label} {'|'.join(values)}")
        parts += [f"meta {key}={'|'.join(values)}" for key, values in self.meta]
        return ", ".join(parts)


@dataclass(frozen=True)
class RuleSpec:
    id: str
    rse_expression: str
    copies: int
    fraction: Fraction | None
    lifetime: int | None  # seconds
    activity: str
    grouping: str
    priority: int
    locked: bool
    comment: str
    line: int


@dataclass(frozen=True)
class DataClass:
    name: str
    description: str
    match: Match
    rules: tuple[RuleSpec, ...]
    line: int


class AmbiguousClass(Exception):
    """A DID matched by several classes (only possible through metadata the validator cannot see)."""


@dataclass(frozen=True)
class Policy:
    source: str
    version: int
    classes: tuple[DataClass, ...]

    def class_for(self, scope: str, name: str, did_type: str | None,
                  meta: Mapping[str, Any] | None = None) -> DataClass | None:
        found = [c for c in self.classes if c.match.matches(scope, name, did_type, meta)]
        if len(found) > 1:
            raise AmbiguousClass(f"{scope}:{name} matches classes {', '.join(c.name for c in found)} in "
                                 f"{self.source}: make their match criteria disjoint")
        return found[0] if found else None

    def rule_shapes(self, scope: str) -> frozenset[tuple[str, int]]:
        """(rse_expression, copies) of every rule of the classes that can match DIDs of `scope`."""
        return frozenset((r.rse_expression, r.copies) for c in self.classes
                         if not c.match.scopes or any(fnmatch.fnmatchcase(scope, s) for s in c.match.scopes)
                         for r in c.rules)


class PolicyInvalid(InvalidFile):
    """The policy file is invalid: every problem as FILE:LINE (exit 3)."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(f"{len(issues)} problem(s):\n" + "\n".join(str(i) for i in issues))
        self.issues = issues


# -- loading --------------------------------------------------------------------------------------


def load_policy(path: Path, catalog: RseCatalog | None, display: str | None = None) -> Policy:
    """The policy in `path`, or PolicyInvalid listing every problem. `catalog` None skips RSE checks."""
    policy, issues = validate_file(path, catalog, display)
    if issues or policy is None:
        raise PolicyInvalid(issues)
    return policy


def validate_file(path: Path, catalog: RseCatalog | None, display: str | None = None
                  ) -> tuple[Policy | None, list[Issue]]:
    name = display or str(path)
    root, issues = compose(path, name)
    if root is None:
        return None, issues
    reader = Reader(name, issues)
    policy = _read_policy(reader, root, catalog)
    issues = sorted(reader.issues, key=lambda issue: issue.line)  # stable: same-line order kept
    return (policy if not issues else None), issues


def parse_lifetime(value: Any) -> int | None:
    """Seconds from null, a positive integer of seconds, or '<n><s|m|h|d|w>'."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be positive")
        return value
    match = re.fullmatch(r"\s*([0-9]+)\s*([smhdw])\s*", str(value))
    if not match or int(match[1]) <= 0:
        raise ValueError("not a duration")
    return int(match[1]) * _UNITS[match[2]]


def _read_policy(reader: Reader, root: Node, catalog: RseCatalog | None) -> Policy:
    top = reader.mapping(root, "", _TOP_KEYS, required=("version", "classes"))
    version = 0
    if "version" in top:
        ok, version = reader.scalar(top["version"][1], "version")
        if ok and version != POLICY_VERSION:
            reader.error(top["version"][1], "version", f"unsupported version {version!r}",
                         f"this juno-policy reads version: {POLICY_VERSION}")
    defaults = dict(_BUILTIN_DEFAULTS)
    if "defaults" in top:
        for key, (_, node) in reader.mapping(top["defaults"][1], "defaults", _DEFAULT_KEYS).items():
            ok, value = _rule_field(reader, key, node, f"defaults.{key}")
            if ok:
                defaults[key] = value
    classes: list[DataClass] = []
    if "classes" in top:
        for class_name, (key_node, node) in reader.mapping(top["classes"][1], "classes").items():
            data_class = _read_class(reader, class_name, key_node, node, defaults, catalog)
            if data_class is not None:
                classes.append(data_class)
        if not classes and not reader.issues:
            reader.error(top["classes"][1], "classes", "no data classes", "define at least one class, e.g. raw")
    _check_overlaps(reader, classes)
    return Policy(source=reader.file, version=int(version or 0), classes=tuple(classes))


def _read_class(reader: Reader, name: str, key_node: Node, node: Node, defaults: dict[str, Any],
                catalog: RseCatalog | None) -> DataClass | None:
    where = f"classes.{name}"
    if not _CLASS_RE.match(name):
        reader.error(key_node, where, "invalid class name",
                     "use lower case letters, digits and _, starting with a letter, at most 30 characters")
    fields = reader.mapping(node, where, _CLASS_KEYS, required=("match", "rules"), owner=key_node)
    description = ""
    if "description" in fields:
        description = str(reader.scalar(fields["description"][1], f"{where}.description")[1] or "")
    match = _read_match(reader, fields["match"][1], f"{where}.match") if "match" in fields else Match()
    rules: list[RuleSpec] = []
    if "rules" in fields:
        items = reader.sequence(fields["rules"][1], f"{where}.rules")
        if not items and isinstance(fields["rules"][1], SequenceNode):
            reader.error(fields["rules"][1], f"{where}.rules", "no rules",
                         "give at least one rule, or remove the class")
        for index, item in enumerate(items):
            rule = _read_rule(reader, item, f"{where}.rules[{index}]", defaults, catalog)
            if rule is not None:
                rules.append(rule)
    _check_rule_set(reader, where, rules)
    return DataClass(name=name, description=description, match=match, rules=tuple(rules), line=line_of(key_node))


def _read_match(reader: Reader, node: Node, where: str) -> Match:
    fields = reader.mapping(node, where, _MATCH_KEYS)
    if not fields and isinstance(node, MappingNode):
        reader.error(node, where, "empty match would cover every DID",
                     "give at least one of scope, name, did_type, meta")
    scopes: list[str] = []
    for item, scope in reader.strings(fields["scope"][1], f"{where}.scope") if "scope" in fields else []:
        problem = None if any(c in scope for c in "*?[") else naming.scope_error(scope)
        if problem:
            reader.error(item, f"{where}.scope", problem, "use an existing JUNO scope or a glob such as user.*")
        scopes.append(scope)
    names = [n for _, n in reader.strings(fields["name"][1], f"{where}.name")] if "name" in fields else []
    did_types: list[str] = []
    for item, value in reader.strings(fields["did_type"][1], f"{where}.did_type") if "did_type" in fields else []:
        normalized = naming.normalize_did_type(value)
        if normalized is None:
            reader.error(item, f"{where}.did_type", f"unknown DID type {value!r}", f"use one of {', '.join(DID_TYPES)}")
        else:
            did_types.append(normalized)
    meta: list[tuple[str, tuple[str, ...]]] = []
    if "meta" in fields:
        for key, (_, value_node) in reader.mapping(fields["meta"][1], f"{where}.meta").items():
            values = tuple(v for _, v in reader.strings(value_node, f"{where}.meta.{key}"))
            meta.append((key, values))
    return Match(scopes=tuple(scopes), names=tuple(names), did_types=tuple(did_types), meta=tuple(meta))


def _rule_field(reader: Reader, key: str, node: Node, where: str) -> tuple[bool, Any]:
    """Read and check one rule field (also used for defaults); report what is wrong and how to fix it."""
    ok, value = reader.scalar(node, where)
    if not ok:
        return False, None
    if key == "copies":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            reader.error(node, where, f"copies must be a whole number >= 1, found {value!r}", "e.g. copies: 1")
            return False, None
    elif key == "fraction":
        try:
            fraction = parse_fraction(value)
        except ValueError as err:
            reader.error(node, where, str(err), "a share of the bytes in (0, 1], e.g. 1/3 or 0.5")
            return False, None
        if not 0 < fraction <= 1:
            reader.error(node, where, f"fraction {value!r} is outside (0, 1]",
                         "use a share of the bytes above 0 and at most 1, e.g. 1/3; remove it for a full copy")
            return False, None
        value = fraction
    elif key == "lifetime":
        try:
            value = parse_lifetime(value)
        except ValueError:
            reader.error(node, where, f"lifetime {value!r} is not a duration",
                         "use null (forever), seconds, or a number with s, m, h, d or w, e.g. 30d")
            return False, None
    elif key == "activity":
        if value not in ACTIVITIES:
            reader.error(node, where, f"unknown activity {value!r}", f"use one of: {', '.join(ACTIVITIES)}")
            return False, None
    elif key == "grouping":
        if str(value).upper() not in GROUPINGS:
            reader.error(node, where, f"unknown grouping {value!r}", f"use one of {', '.join(GROUPINGS)}")
            return False, None
        value = str(value).upper()
    elif key == "priority":
        low, high = PRIORITY_RANGE
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            reader.error(node, where, f"priority must be a whole number from {low} to {high}, found {value!r}",
                         "3 is Rucio's default")
            return False, None
    elif key == "locked":
        if not isinstance(value, bool):
            reader.error(node, where, f"locked must be true or false, found {value!r}",
                         "true: only a Rucio admin can delete the rule")
            return False, None
    elif key in ("id", "rse_expression", "comment"):
        if value is None or isinstance(value, bool | int | float):
            if not (key == "comment" and value is None):
                reader.error(node, where, f"{key} must be text, found {value!r}", "quote it")
                return False, None
        value = "" if value is None else str(value)
    return True, value


def _read_rule(reader: Reader, node: Node, where: str, defaults: dict[str, Any],
               catalog: RseCatalog | None) -> RuleSpec | None:
    fields = reader.mapping(node, where, _RULE_KEYS, required=("id", "rse_expression"))
    values = dict(defaults)
    values["fraction"] = None
    values["comment"] = ""
    for key, (_, value_node) in fields.items():
        ok, value = _rule_field(reader, key, value_node, f"{where}.{key}")
        if ok:
            values[key] = value
    if "id" in fields and "id" in values and not _RULE_ID_RE.match(values["id"]):
        reader.error(fields["id"][1], f"{where}.id", f"invalid rule id {values['id']!r}",
                     "use lower case letters, digits and _, starting with a letter, at most 40 characters")
    # A rule with a bad field is still returned (with the default for that field) so that the
    # checks across rules (duplicate ids, overlaps) see it too; the policy is invalid anyway.
    if "id" not in values or "rse_expression" not in values:
        return None
    expression_node = fields["rse_expression"][1]
    if catalog is not None:
        _check_expression(reader, expression_node, f"{where}.rse_expression", values["rse_expression"],
                          values["copies"], catalog)
    return RuleSpec(id=values["id"], rse_expression=values["rse_expression"], copies=values["copies"],
                    fraction=values["fraction"], lifetime=values["lifetime"], activity=values["activity"],
                    grouping=values["grouping"], priority=values["priority"], locked=values["locked"],
                    comment=values["comment"], line=line_of(node))


def _check_expression(reader: Reader, node: Node, where: str, expression: str, copies: int,
                      catalog: RseCatalog) -> bool:
    table = catalog.attribute_table()
    try:
        terms = primitives(expression)
    except ExpressionError as err:
        reader.error(node, where, str(err), "RSE names and key=value tests joined by |, & or \\")
        return False
    known_flags = {key for attributes in table.values() for key, value in attributes.items() if value is True}
    known_keys = {key for attributes in table.values() for key in attributes}
    good = True
    for term in terms:
        if term == "*":
            continue
        if any(op in term for op in "=<>"):
            key = re.split(r"[=<>]", term, maxsplit=1)[0]
            if key not in known_keys:
                attributes = ", ".join(sorted(known_keys - set(table)))
                reader.error(node, where, f"unknown RSE attribute {key!r} in {term!r}",
                             f"attributes in {catalog.source or 'the sites file'}: {attributes}")
                good = False
        elif term not in known_flags:
            close = [n for n in catalog.names if n.lower() == term.lower()] or \
                difflib.get_close_matches(term, catalog.names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            reader.error(node, where, f"unknown RSE {term!r}",
                         f"{hint}RSEs in {catalog.source or 'the sites file'}: {', '.join(catalog.names)}")
            good = False
    if not good:
        return False
    try:
        selected = evaluate(expression, table)
    except ExpressionError as err:
        reader.error(node, where, str(err), "check the operators and parentheses")
        return False
    if not selected:
        reader.error(node, where, f"{expression!r} selects no RSE", "check the attribute values against the sites file")
        return False
    if copies > len(selected):
        reader.error(node, where, f"{copies} copies but {expression!r} selects only {len(selected)} RSE(s) "
                     f"({', '.join(sorted(selected))})", "lower copies or widen the expression")
        return False
    return True


def _check_rule_set(reader: Reader, where: str, rules: list[RuleSpec]) -> None:
    seen_ids: dict[str, RuleSpec] = {}
    seen_expressions: dict[str, RuleSpec] = {}
    for rule in rules:
        if rule.id in seen_ids:
            reader.issues.append(Issue(reader.file, rule.line, f"{where}.rules", f"rule id {rule.id!r} used twice "
                                       f"(first at line {seen_ids[rule.id].line})", "give each rule its own id"))
        seen_ids.setdefault(rule.id, rule)
        if rule.rse_expression in seen_expressions:
            first = seen_expressions[rule.rse_expression]
            reader.issues.append(Issue(
                reader.file, rule.line, f"{where}.rules", f"rules {first.id!r} and {rule.id!r} both target "
                f"{rule.rse_expression!r}", "Rucio refuses the same rule twice on a DID: merge them (copies: 2)"))
        seen_expressions.setdefault(rule.rse_expression, rule)


# -- overlaps -------------------------------------------------------------------------------------


def _literal_ends(glob: str) -> tuple[str, str, bool]:
    """Literal prefix and suffix of a glob, and whether it has wildcards at all."""
    positions = [i for i, c in enumerate(glob) if c in "*?["]
    if not positions:
        return glob, glob, False
    return glob[: positions[0]], glob[positions[-1] + 1:], True


def globs_may_intersect(a: str, b: str) -> bool:
    """Conservative: False only when no string can match both globs."""
    a_prefix, a_suffix, a_wild = _literal_ends(a)
    b_prefix, b_suffix, b_wild = _literal_ends(b)
    if not a_wild:
        return fnmatch.fnmatchcase(a, b)
    if not b_wild:
        return fnmatch.fnmatchcase(b, a)
    prefixes_ok = a_prefix.startswith(b_prefix) or b_prefix.startswith(a_prefix)
    suffixes_ok = a_suffix.endswith(b_suffix) or b_suffix.endswith(a_suffix)
    return prefixes_ok and suffixes_ok


def _dimension_overlaps(a: tuple[str, ...], b: tuple[str, ...], glob: bool) -> bool:
    if not a or not b:
        return True  # an absent criterion matches everything
    if glob:
        return any(globs_may_intersect(x, y) for x in a for y in b)
    return bool(set(a) & set(b))


def classes_may_overlap(a: DataClass, b: DataClass) -> bool:
    ma, mb = a.match, b.match
    if not _dimension_overlaps(ma.scopes, mb.scopes, glob=True):
        return False
    if not _dimension_overlaps(ma.did_types, mb.did_types, glob=False):
        return False
    if not _dimension_overlaps(ma.names, mb.names, glob=True):
        return False
    meta_b = dict(mb.meta)
    return all(not (key in meta_b and not set(values) & set(meta_b[key])) for key, values in ma.meta)


def _check_overlaps(reader: Reader, classes: list[DataClass]) -> None:
    # A class without criteria is already reported; comparing it would only repeat that.
    classes = [c for c in classes if c.match != Match()]
    for i, a in enumerate(classes):
        for b in classes[i + 1:]:
            if classes_may_overlap(a, b):
                reader.issues.append(Issue(
                    reader.file, b.line, f"classes.{b.name}",
                    f"overlaps class {a.name!r} (line {a.line}): a DID can match both "
                    f"({a.match.describe() or 'anything'} / {b.match.describe() or 'anything'})",
                    "make the match criteria disjoint: a different scope, did_type, name pattern or meta value"))
