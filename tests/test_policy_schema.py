"""JUNO scopes and DID names: a corpus of valid and invalid names per scope, checked by naming.py
(what the permission module and the ingester use) and by Rucio's own validate_schema() with this
package loaded, as the server does (in a subprocess with its own rucio.cfg, no database needed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest
from offline_rucio import offline_rucio_env

from rucio_policy import naming

RAW = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"
STEM = RAW[: -len(".dat")]
BLOCK = "block.JUNODAQ.global_trigger.20251009"

# (scope, name, did type or None for "given without a type", as in attachments)
VALID = [
    ("raw", RAW, "FILE"),
    ("raw", RAW, "F"),
    ("raw", "RUN.242.TAODAQ.TEST.ds-0.global_trigger.20250915171305.001.dat", "FILE"),
    ("raw", "RUN.5162.JUNODAQ.LSFilling.ds-2.global_trigger.20250415222246.137.dat", "FILE"),
    ("raw", "RUN.9541.JUNODAQ.Calib-ACU-Ge68-Global-Pos-x0y0z0.ds-2.global_trigger.20250824120000.0001.dat", "FILE"),
    ("raw", "RUN.10270.JUNODAQ.Physics.ds-2.global_trigger.20250922075923.2563.dat", "FILE"),
    ("raw", "RUN.0.JUNODAQ.TEST.ds-0.global_trigger.20250101000000.000.dat", "FILE"),
    ("raw", BLOCK, "DATASET"),
    ("raw", "block.TAODAQ.global_trigger.20251231", "DATASET"),
    ("raw", "stream.JUNODAQ.global_trigger", "CONTAINER"),
    ("raw", "stream.JUNODAQ.global_trigger.2025", "CONTAINER"),
    ("raw", "stream.JUNODAQ.global_trigger.202510", "CONTAINER"),
    ("raw", RAW, None),
    ("raw", BLOCK, None),
    ("raw", "stream.JUNODAQ.global_trigger.202510", None),
    ("rtraw", f"{STEM}_J25.5.0.rtraw", "FILE"),
    ("rtraw", "rtraw.J25.5.0.global_trigger.20251009", "DATASET"),
    ("esd", f"{STEM}_J25.5.0_J25.5.0.b.esd", "FILE"),
    ("mc", "mc.IBD.J25.6.0.seed1000.root", "FILE"),
    ("user.analyst1", "user.analyst1.ibd.v1", "DATASET"),
    ("user.a-b_c", "x", None),
    ("group.physics", "group.physics.ibd", "CONTAINER"),
    ("user." + "a" * 25, "x", "FILE"),
]

INVALID = [
    # A name is one path component in every scope: "/" could lead lfn2pfn out of the scope's tree.
    ("mc", "/juno/mc/legacy/dfc/path.root", "FILE"),
    ("user.analyst1", "out/part-1.root", "FILE"),
    ("user.analyst1", "a/../../../../../raw/2025/1009/x.dat", "FILE"),
    ("user.analyst1", "..", "FILE"),
    ("raw", f"{STEM}.rtraw", "FILE"),  # raw files end in .dat
    ("raw", RAW.replace("RUN.10554", "RUN.010554"), "FILE"),  # no leading zeros in run numbers
    ("raw", RAW.replace("JUNODAQ", "junodaq"), "FILE"),
    ("raw", RAW.replace("global_trigger", "Global_Trigger"), "FILE"),
    ("raw", RAW.replace("20251009140223", "20251309140223"), "FILE"),  # month 13
    ("raw", RAW.replace(".002.dat", ".2.dat"), "FILE"),  # sequence has at least 3 digits
    ("raw", RAW.replace("ds-2", "ds2"), "FILE"),
    ("raw", RAW, "DATASET"),  # a file name is not a block name
    ("raw", BLOCK, "FILE"),
    ("raw", "block.JUNODAQ.global_trigger.2025-10-09", "DATASET"),
    ("raw", "block.global_trigger.20251009", "DATASET"),
    ("raw", "stream.JUNODAQ.global_trigger.20251009", "CONTAINER"),  # no day-level containers
    ("raw", "data.txt", None),
    ("RAW", "x", "FILE"),
    ("user", "x", "FILE"),
    ("user.Analyst1", "x", "FILE"),
    ("users.analyst1", "x", "FILE"),
    ("scratch", "x", "FILE"),
    ("user." + "a" * 26, "x", "FILE"),  # scopes are at most 30 characters
    ("user.analyst1", "has space", "FILE"),
    ("mc", ".hidden", "FILE"),
    ("esd", "a" * 251, "FILE"),  # names are at most 250 characters
]

# The JSON schema cannot know calendars; the naming check (applied by the permission module to
# every DID creation) rejects these, with the schema accepting them.
IMPOSSIBLE_DATES = [
    ("raw", RAW.replace("20251009", "20250230"), "FILE"),
    ("raw", "block.JUNODAQ.global_trigger.20250431", "DATASET"),
]


@pytest.mark.parametrize(("scope", "name", "did_type"), VALID)
def test_valid_names(scope: str, name: str, did_type: str | None) -> None:
    assert naming.did_name_error(scope, name, did_type) is None


@pytest.mark.parametrize(("scope", "name", "did_type"), INVALID + IMPOSSIBLE_DATES)
def test_invalid_names_say_what_is_expected(scope: str, name: str, did_type: str | None) -> None:
    message = naming.did_name_error(scope, name, did_type)
    assert message is not None
    if scope == "raw":
        assert "expected" in message and "e.g." in message or "not a valid date" in message
    if naming.scope_error(scope):
        assert "raw, rtraw, esd, mc, user.<account> or group.<name>" in message or "longer than" in message
    with pytest.raises(naming.NamingError):
        naming.check_did_name(scope, name, did_type)


def test_raw_file_fields() -> None:
    raw = naming.parse_raw_file(RAW)
    assert (raw.run, raw.detector, raw.run_type, raw.data_stream, raw.stream, raw.seq) == \
        (10554, "JUNODAQ", "Physics", 2, "global_trigger", 2)
    assert raw.started.isoformat() == "2025-10-09T14:02:23"
    assert raw.stream_key == "JUNODAQ.global_trigger"
    derived = naming.parse_derived_file(f"{STEM}_J25.5.0_J25.5.0.b.esd")
    assert derived.raw_stem == STEM and derived.releases == ("J25.5.0", "J25.5.0.b") and derived.release == "J25.5.0.b"


def test_blocks_and_containers_for_the_ingester() -> None:
    raw = naming.parse_raw_file(RAW)
    received = date(2025, 10, 10)  # the receiving day, not the run start, picks the block
    assert naming.block_name(raw.stream_key, received) == "block.JUNODAQ.global_trigger.20251010"
    assert naming.container_names(raw.stream_key, received) == [
        "stream.JUNODAQ.global_trigger.202510", "stream.JUNODAQ.global_trigger.2025", "stream.JUNODAQ.global_trigger"]
    block = naming.parse_block("block.JUNODAQ.global_trigger.20251010")
    assert (block.stream_key, block.day) == ("JUNODAQ.global_trigger", received)
    levels = [naming.parse_container(c).level for c in naming.container_names(raw.stream_key, received)]
    assert levels == ["month", "year", "all"]
    for built in [naming.block_name(raw.stream_key, received), *naming.container_names(raw.stream_key, received)]:
        assert naming.did_name_error("raw", built) is None
    with pytest.raises(naming.NamingError, match="<detector>.<stream>"):
        naming.block_name("global_trigger", received)


@pytest.mark.parametrize(("did", "expected"), [
    (RAW, ("raw", RAW)),
    (BLOCK, ("raw", BLOCK)),
    ("stream.JUNODAQ.global_trigger", ("raw", "stream.JUNODAQ.global_trigger")),
    (f"{STEM}_J25.5.0.rtraw", ("rtraw", f"{STEM}_J25.5.0.rtraw")),
    ("user.jdoe.ibd.v1", ("user.jdoe", "user.jdoe.ibd.v1")),
    ("group.physics.x", ("group.physics", "group.physics.x")),
    ("mc:anything.root", ("mc", "anything.root")),
    ("mc.IBD.root", ("mc", "mc.IBD.root")),
])
def test_scope_extraction(did: str, expected: tuple[str, str]) -> None:
    assert naming.extract_scope_juno(did) == expected


# -- the same corpus through Rucio's validate_schema, as the server runs it --------------------------

_SCRIPT = textwrap.dedent("""
    import json, sys
    from rucio.common.schema import validate_schema, get_schema_value, schema_modules
    from rucio.common.exception import InvalidObject
    assert schema_modules["def"].__name__ == "rucio_policy.schema", schema_modules
    results = []
    for scope, name, did_type in json.load(sys.stdin):
        if did_type is None:
            call = ("dids", [{"scope": scope, "name": name}])
        else:
            call = ("did", {"scope": scope, "name": name, "type": did_type})
        try:
            validate_schema(*call)
            results.append([True, ""])
        except InvalidObject as err:
            results.append([False, str(err)])
    attachment = {"scope": "raw", "name": sys.argv[1], "dids": [{"scope": "raw", "name": sys.argv[2]}]}
    try:
        validate_schema("attachment", attachment)
        attach = "ok"
    except InvalidObject as err:
        attach = str(err)
    print(json.dumps({"results": results, "attach_to_file": attach,
                      "lengths": [get_schema_value("SCOPE_LENGTH"), get_schema_value("NAME_LENGTH"),
                                  get_schema_value("ACCOUNT_LENGTH")],
                      "activities": get_schema_value("ACTIVITY")["enum"],
                      "scope_name_regexp": schema_modules["def"].SCOPE_NAME_REGEXP}))
""")


def rucio_env(tmp_path: Path) -> dict[str, str]:
    return offline_rucio_env(tmp_path)


def test_rucio_validate_schema_agrees_with_naming(tmp_path: Path) -> None:
    corpus = VALID + INVALID + IMPOSSIBLE_DATES
    run = subprocess.run([sys.executable, "-c", _SCRIPT, RAW, RAW], input=json.dumps(corpus), capture_output=True,
                         text=True, env=rucio_env(tmp_path), timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    for (scope, name, did_type), (ok, message) in zip(corpus, out["results"], strict=True):
        expected = (scope, name, did_type) in VALID or (scope, name, did_type) in IMPOSSIBLE_DATES
        assert ok is expected, f"{scope}:{name} ({did_type}): {message}"
        if not ok and scope == "raw" and not naming.scope_error(scope):
            assert "'description': 'expected" in message, message  # the expected pattern reaches the client
            assert "e.g." in message
    # Files go into blocks, not into files.
    assert "files go into blocks" in out["attach_to_file"]
    assert out["lengths"] == [30, 250, 25]
    from rucio_policy.replication import ACTIVITIES

    assert tuple(out["activities"]) == ACTIVITIES
    assert out["scope_name_regexp"] == r"/([^/]+)/(.*)"
