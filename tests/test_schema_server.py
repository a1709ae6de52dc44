"""JUNO's naming schema as the live Rucio server applies it: a corpus of valid and invalid names per scope.

Everything goes through the REST API as root (admins are bound by the naming rules too): collections
with add_did, files with add_replicas at IHEP-EOS (catalogue only, no bytes). Valid names are
accepted; invalid ones are rejected, and the rejection shows the pattern the name should follow.
Each run uses its own stream and suffixes, so the names are new every time.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from rucio.common.exception import AccessDenied, InvalidObject, RucioException

from rucio_policy import naming

pytestmark = pytest.mark.grid

TOKEN = uuid.uuid4().hex[:8]
STREAM = f"schema_{TOKEN}"
RAW_FILE = f"RUN.10554.JUNODAQ.Physics.ds-2.{STREAM}.20251009140223.002.dat"
STEM = RAW_FILE[: -len(".dat")]

# (scope, name, DATASET | CONTAINER | FILE)
VALID = [
    ("raw", RAW_FILE, "FILE"),
    ("raw", f"RUN.9541.JUNODAQ.Calib-ACU-Ge68-Global-Pos-x0y0z0.ds-2.{STREAM}.20250824120000.0001.dat", "FILE"),
    ("raw", f"RUN.0.TAODAQ.TEST.ds-0.{STREAM}.20250101000000.000.dat", "FILE"),
    ("raw", f"block.JUNODAQ.{STREAM}.20251009", "DATASET"),
    ("raw", f"block.TAODAQ.{STREAM}.20251231", "DATASET"),
    ("raw", f"stream.JUNODAQ.{STREAM}", "CONTAINER"),
    ("raw", f"stream.JUNODAQ.{STREAM}.2025", "CONTAINER"),
    ("raw", f"stream.JUNODAQ.{STREAM}.202510", "CONTAINER"),
    ("rtraw", f"{STEM}_J25.5.0.rtraw", "FILE"),
    ("rtraw", f"rtraw.J25.5.0.{STREAM}.20251009", "DATASET"),
    ("esd", f"{STEM}_J25.5.0_J25.5.0.b.esd", "FILE"),
    ("esd", f"esd.J25.5.0.{STREAM}", "CONTAINER"),
    ("mc", f"mc.IBD.J25.6.0.seed{TOKEN}.root", "FILE"),
    ("user.analyst1", f"user.analyst1.ibd.{TOKEN}", "DATASET"),
]

_FILE_PATTERN = naming.RAW_FILE_HELP.split(",")[0]  # RUN.<run>.<detector>.<run type>.ds-<n>.<stream>....dat
_BLOCK_PATTERN = "block.<detector>.<stream>.<YYYYMMDD>"
_CONTAINER_PATTERN = "stream.<detector>.<stream>[.<YYYY>[MM]]"
_SCOPE_PATTERN = "raw, rtraw, esd, mc, user.<account> or group.<name>"
_GENERIC_PATTERN = repr(naming.GENERIC_NAME_RE)  # Rucio's generic name pattern, as the schema error quotes it

# (scope, name, type, what the rejection must show)
INVALID = [
    # One path component in every scope: "/" could lead a storage path out of the scope's tree (issue 10).
    ("mc", f"/juno/mc/legacy/dfc/{TOKEN}/path.root", "FILE", _GENERIC_PATTERN),
    ("user.analyst1", f"out/{TOKEN}/part-1.root", "FILE", _GENERIC_PATTERN),
    ("user.analyst1", f"a/../../../../../raw/2025/1009/{TOKEN}.dat", "FILE", _GENERIC_PATTERN),
    ("raw", f"block.JUNODAQ.{STREAM}.2025-10-09", "DATASET", _BLOCK_PATTERN),
    ("raw", f"block.{STREAM}.20251009", "DATASET", _BLOCK_PATTERN),
    ("raw", f"block.junodaq.{STREAM}.20251009", "DATASET", _BLOCK_PATTERN),
    ("raw", f"block.JUNODAQ.{STREAM}.20250431", "DATASET", "20250431 is not a valid date (YYYYMMDD)"),
    ("raw", RAW_FILE, "DATASET", _BLOCK_PATTERN),  # a file name is not a block name
    ("raw", f"stream.JUNODAQ.{STREAM}.20251009", "CONTAINER", _CONTAINER_PATTERN),  # no day containers
    ("raw", f"STREAM.JUNODAQ.{STREAM}", "CONTAINER", _CONTAINER_PATTERN),
    ("raw", RAW_FILE.replace("RUN.10554", "RUN.010554"), "FILE", _FILE_PATTERN),  # no leading zeros
    ("raw", RAW_FILE.replace(".002.dat", ".2.dat"), "FILE", _FILE_PATTERN),  # at least 3 digits
    ("raw", RAW_FILE.replace("JUNODAQ", "junodaq"), "FILE", _FILE_PATTERN),
    ("raw", RAW_FILE.replace("ds-2", "ds2"), "FILE", _FILE_PATTERN),
    ("raw", RAW_FILE.replace("20251009140223", "20251309140223"), "FILE", _FILE_PATTERN),  # month 13
    ("raw", f"{STEM}.root", "FILE", _FILE_PATTERN),
    ("raw", f"notes.{TOKEN}.txt", "FILE", _FILE_PATTERN),
    ("RAW", f"x.{TOKEN}", "DATASET", _SCOPE_PATTERN),
    ("user.Analyst1", f"x.{TOKEN}", "DATASET", _SCOPE_PATTERN),
    ("scratch", f"x.{TOKEN}", "DATASET", _SCOPE_PATTERN),
    ("user.analyst1", f"bad,comma.{TOKEN}", "DATASET", _GENERIC_PATTERN),
    ("mc", f".hidden.{TOKEN}", "FILE", _GENERIC_PATTERN),
    ("esd", "a" * 251, "DATASET", "is too long"),
]


def register(client: Any, scope: str, name: str, did_type: str) -> None:
    if did_type == "FILE":
        client.add_replicas(rse="IHEP-EOS", files=[{"scope": scope, "name": name, "bytes": 1, "adler32": "0badc0de"}])
    else:
        client.add_did(scope, name, did_type)


def readable(err: Exception) -> str:
    """The server's message on one line: the schema's description strings are re-joined (pprint splits them)."""
    text = re.sub(r"'\s*\n\s*'", "", str(err))
    return " ".join(text.split())


@pytest.mark.parametrize(("scope", "name", "did_type"), VALID, ids=[f"{s}:{t}:{n[:40]}" for s, n, t in VALID])
def test_server_accepts(root: Any, scope: str, name: str, did_type: str) -> None:
    register(root, scope, name, did_type)
    assert root.get_did(scope, name)["type"] == did_type


@pytest.mark.parametrize(("scope", "name", "did_type", "shows"), INVALID,
                         ids=[f"{s}:{t}:{n[:40]}" for s, n, t, _ in INVALID])
def test_server_rejects_with_the_pattern(root: Any, scope: str, name: str, did_type: str, shows: str) -> None:
    with pytest.raises(RucioException) as rejected:
        register(root, scope, name, did_type)
    # The schema (InvalidObject) or, for what a regular expression cannot check (calendar dates, file
    # names in bulk calls), the permission module (AccessDenied) refuses it: never anything later.
    assert isinstance(rejected.value, InvalidObject | AccessDenied), repr(rejected.value)
    text = readable(rejected.value)
    assert shows in text, f"expected {shows!r} in: {text}"
