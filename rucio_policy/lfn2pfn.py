"""Deterministic paths of JUNO files on every RSE (Rucio's lfn2pfn algorithm "juno").

The path is appended to the RSE protocol's prefix (e.g. /eos/juno/dci/) and depends only on scope
and name, so every site stores a file at the same relative path and anyone can compute it:

  raw files                  raw/<YYYY>/<MMDD>/<name>            date = run start, from the name
  rtraw/esd named after raw  <scope>/<release>/<YYYY>/<MMDD>/<name>   release = last tag of the name
  everything else            <scope with . as />/<md5[0:2]>/<md5[2:4]>/<name>   (Rucio's "hash")

This mirrors JUNO's storage at IHEP (e.g. /eos/juno/rtraw/2025/0903/, /eos/juno/esd/J25.5.0.b/2025/0903/)
and keeps a day's files together, which is how tape families and operators think about raw data.

Registered by name through get_algorithms(); RSEs opt in with the attribute lfn2pfn_algorithm=juno.
The way back, PFN → scope:name (`[policy] pfn2lfn = juno`), is what Rucio uses when replicas are
declared bad or suspicious by PFN (conveyor-finisher, `rucio-admin replicas declare-bad`): Rucio's
default takes the first directory as the scope, which is wrong for user.<account> and group.<name>.
This module deliberately has no function called `lfn2pfn`: Rucio would silently make it the default
for every RSE without that attribute (RSEDeterministicTranslation._get_default_algorithm), and
clients without this package would then compute different paths than the server.
"""

from __future__ import annotations

import hashlib
from typing import Any

from rucio_policy import naming

ALGORITHM_NAME = "juno"
# Scopes "<kind>.<owner>" whose paths start <kind>/<owner>/ rather than with the scope as one directory.
_SPLIT_SCOPES = ("user", "group")


def _component(name: str) -> str:
    """`name` as one path component. The schema refuses "/" in names; DIDs registered before it did
    (or by a server without this package) are escaped, never followed: '/' → %2F, a leading '.' → %2E,
    so no name can reach outside its scope's directory ('..', '/abs', 'a/../../raw/...')."""
    escaped = name.replace("%", "%25").replace("/", "%2F")
    return "%2E" + escaped[1:] if escaped.startswith(".") else escaped


def _hashed(scope: str, name: str) -> str:
    # Same layout as Rucio's built-in "hash", so non-JUNO names look familiar to operators.
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    kind, dot, _ = scope.partition(".")
    top = scope.replace(".", "/") if dot and kind in _SPLIT_SCOPES else scope
    return f"{top}/{digest[0:2]}/{digest[2:4]}/{_component(name)}"


def juno_path(scope: str, name: str) -> str:
    """The path of scope:name below an RSE's prefix (no leading slash)."""
    if scope == naming.RAW_SCOPE:
        try:
            raw = naming.parse_raw_file(name)
        except naming.NamingError:
            return _hashed(scope, name)
        return f"raw/{raw.started:%Y}/{raw.started:%m%d}/{name}"
    if scope in ("rtraw", "esd"):
        try:
            derived = naming.parse_derived_file(name)
        except naming.NamingError:
            return _hashed(scope, name)
        return f"{scope}/{derived.release}/{derived.started:%Y}/{derived.started:%m%d}/{name}"
    return _hashed(scope, name)


def lfn2pfn_juno(scope: str, name: str, rse: str, rse_attrs: dict[str, Any],
                 protocol_attrs: dict[str, Any]) -> str:
    """The callable Rucio invokes (RSEDeterministicTranslation.path): RSE and protocol do not matter."""
    del rse, rse_attrs, protocol_attrs
    return juno_path(scope, name)


def pfn2lfn_juno(parsed_pfn: dict[str, str]) -> tuple[str, str]:
    """(name, scope) of a path made by juno_path (Rucio's pfn2lfn signature; parsed_pfn from the
    protocol's parse_pfns: `path` below the RSE prefix, `name` the last component). Names that contain
    '/' (registered before the schema refused them) come back from their escaped form."""
    parts = parsed_pfn["path"].strip("/").split("/")
    name = _uncomponent(parsed_pfn["name"])
    if parts[0] in _SPLIT_SCOPES and len(parts) > 1:
        return name, f"{parts[0]}.{parts[1]}"
    return name, parts[0]


def _uncomponent(component: str) -> str:
    text = "." + component[3:] if component.startswith("%2E") else component
    return text.replace("%2F", "/").replace("%25", "%")
