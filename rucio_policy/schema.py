"""The JSON schemas the Rucio server validates requests with, made JUNO-aware.

Rucio imports `<policy package>.schema` at start-up (rucio/common/schema/__init__.py) and reads
from it: `SCHEMAS[name]` for validate_schema(), any module attribute through get_schema_value()
(e.g. NAME_LENGTH, SCOPE_LENGTH for the DB column widths) and `SCOPE_NAME_REGEXP` directly. We
start from a copy of every public name of Rucio's generic schema module, so whatever the server
looks up exists under the same name, then override what JUNO decides:

  SCOPE_LENGTH = 30   "user." + the longest account (25). It is a DB column width: the database
                      must be built with this package loaded (Rucio builds it from these values).
  NAME_LENGTH = 250   Rucio's default, kept on purpose: JUNO names are < 130 characters and the
                      column and its indexes are what Rucio is tested with.
  SCOPE               only JUNO scopes (raw, rtraw, esd, mc, user.<account>, group.<name>).
  DID, ATTACHMENT     no name has "/" (any scope: names are one path component); raw names must
                      follow naming.py; the message of a rejected name carries the
                      expected pattern in the failing schema's "description".

Generic schemas that refer to these by SchemaRef ("DIDS" → "DID", "ATTACHMENTS" → "ATTACHMENT")
resolve to ours, so bulk calls are checked the same way. The patterns come from naming.py, which
the permission module also applies (bulk `add_dids` has no schema check in Rucio 41).
"""

from __future__ import annotations

from typing import Any

import rucio.common.schema.generic as _generic

from rucio_policy import naming

# Every public name of the generic module, under the same name (overridden below where JUNO differs).
globals().update({key: value for key, value in vars(_generic).items() if key.isupper()})

ACCOUNT_LENGTH = naming.ACCOUNT_MAX
SCOPE_LENGTH = naming.SCOPE_MAX
NAME_LENGTH = naming.NAME_MAX
# Same as generic: the REST layer splits /<scope>/<name> URLs with it.
SCOPE_NAME_REGEXP = r"/([^/]+)/(.*)"

SCOPE: dict[str, Any] = {
    "description": f"JUNO scope: {naming.SCOPE_HELP}",
    "type": "string",
    "maxLength": SCOPE_LENGTH,
    "pattern": naming.SCOPE_RE,
}

_FILE_TYPES = ["FILE", "F"]


def _name_rule(scope: str, did_types: list[str] | None, pattern: str, expected: str) -> dict[str, Any]:
    """If scope (and type) match, the name must match `pattern`; `expected` shows up in the error."""
    condition: dict[str, Any] = {"properties": {"scope": {"const": scope}}, "required": ["scope"]}
    if did_types is None:
        condition["not"] = {"required": ["type"]}
    else:
        condition["properties"]["type"] = {"enum": did_types}
        condition["required"].append("type")
    return {"if": condition,
            "then": {"properties": {"name": {"description": f"expected {expected}",
                                             "pattern": naming.json_pattern(pattern)}}}}


def _any_raw_pattern() -> str:
    parts = (naming.RAW_FILE_RE, naming.BLOCK_RE, naming.CONTAINER_RE)
    return "|".join(f"(?:{naming.json_pattern(p)})" for p in parts)


_ANY_RAW_HELP = (f"a raw file {naming.RAW_FILE_HELP}; or a block {naming.BLOCK_HELP}; "
                 f"or a container {naming.CONTAINER_HELP}")

# DIDs in raw: files, blocks (datasets) and containers each have their pattern; a DID given without
# its type (attachment contents) must match one of them.
_RAW_NAME_RULES: list[dict[str, Any]] = [
    _name_rule("raw", _FILE_TYPES, naming.RAW_FILE_RE, f"a raw file name {naming.RAW_FILE_HELP}"),
    _name_rule("raw", ["DATASET"], naming.BLOCK_RE, f"a block name {naming.BLOCK_HELP}"),
    _name_rule("raw", ["CONTAINER"], naming.CONTAINER_RE, f"a raw container name {naming.CONTAINER_HELP}"),
    _name_rule("raw", None, _any_raw_pattern(), _ANY_RAW_HELP),
]

# Every scope: a name is one path component (no "/"), so lfn2pfn can never leave the scope's tree.
_ONE_COMPONENT: dict[str, Any] = {"properties": {"name": {
    "description": f"expected a DID name of {naming.GENERIC_NAME_HELP}",
    "pattern": naming.json_pattern(naming.GENERIC_NAME_RE)}}}

DID: dict[str, Any] = {"description": "Data Identifier (DID), JUNO naming",
                       "allOf": [_generic.DID, _ONE_COMPONENT, *_RAW_NAME_RULES]}

# The parent of an attachment is a collection: in raw, a block or a container.
_RAW_COLLECTION = "|".join(f"(?:{naming.json_pattern(p)})" for p in (naming.BLOCK_RE, naming.CONTAINER_RE))
ATTACHMENT: dict[str, Any] = {
    "description": "Attachment, JUNO naming",
    "allOf": [
        _generic.ATTACHMENT,
        _ONE_COMPONENT,
        {"if": {"properties": {"scope": {"const": "raw"}}, "required": ["scope"]},
         "then": {"properties": {"name": {
             "description": f"files go into blocks ({naming.BLOCK_HELP}), blocks into containers "
                            f"({naming.CONTAINER_HELP})",
             "pattern": _RAW_COLLECTION}}}},
    ],
}

SCHEMAS: dict[str, Any] = {**_generic.SCHEMAS, "scope": SCOPE, "did": DID, "attachment": ATTACHMENT}
