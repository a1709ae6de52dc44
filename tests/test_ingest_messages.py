"""SPADE message v1: parsing, the reasons given for bad messages, and agreement with the JSON Schema."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from juno_ingest import messages
from juno_ingest.messages import InvalidMessage, SpadeMessage, parse

LFN = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"
PATH = f"/eos/juno/dci/raw/2025/1009/{LFN}"
GOOD: dict[str, Any] = {"version": 1, "lfn": LFN, "path": PATH, "size": 1073741824, "adler32": "0A1B2C3D",
                        "run": 10554, "stream": "JUNODAQ.global_trigger", "received_at": "2025-10-09T16:05:11.25+02:00",
                        "checksums": {"md5": "9E107D9D372BB6826BD81D3542A419D6"}, "metadata": {"events": 12},
                        "id": "spade-1"}


def with_(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key)
        else:
            data[key] = value
    return data


_DROP = object()


def parsed(data: Any) -> SpadeMessage | InvalidMessage:
    return parse(json.dumps(data).encode())


def test_a_good_message_is_typed_and_normalised() -> None:
    msg = parsed(GOOD)
    assert isinstance(msg, SpadeMessage)
    assert msg.lfn == LFN and msg.path == PATH and msg.size == 1073741824 and msg.run == 10554
    assert msg.adler32 == "0a1b2c3d" and msg.md5 == "9e107d9d372bb6826bd81d3542a419d6"
    assert msg.received_at == datetime(2025, 10, 9, 14, 5, 11, 250000, tzinfo=UTC)
    assert msg.metadata == {"events": 12} and msg.id == "spade-1"


def test_round_trip() -> None:
    msg = parsed(GOOD)
    assert isinstance(msg, SpadeMessage)
    assert parse(msg.to_json()) == msg


def test_lfn_or_path_is_enough() -> None:
    only_path = parsed(with_(lfn=_DROP))
    only_lfn = parsed(with_(path=_DROP))
    assert isinstance(only_path, SpadeMessage) and only_path.lfn == LFN
    assert isinstance(only_lfn, SpadeMessage) and only_lfn.path is None
    neither = parsed(with_(lfn=_DROP, path=_DROP))
    assert isinstance(neither, InvalidMessage) and "lfn" in neither.reason and "path" in neither.reason


def test_nanosecond_times_are_read() -> None:
    msg = parsed(with_(received_at="2025-10-09T14:05:11.123456789Z"))
    assert isinstance(msg, SpadeMessage) and msg.received_at.microsecond == 123456


@pytest.mark.parametrize(("raw", "code", "words"), [
    (b"", "malformed", "empty"),
    (None, "malformed", "empty"),
    (b"{not json", "malformed", "not JSON"),
    (b"\xff\xfe", "malformed", "not UTF-8"),
    (b"[1]", "malformed", "JSON object"),
])
def test_unreadable_messages(raw: bytes | None, code: str, words: str) -> None:
    result = parse(raw)
    assert isinstance(result, InvalidMessage) and result.code == code and words in result.reason


@pytest.mark.parametrize(("changes", "code", "words"), [
    ({"version": _DROP}, "malformed", "missing 'version'"),
    ({"version": 2}, "unsupported_version", "version 2 is not supported"),
    ({"version": "1"}, "unsupported_version", "not supported"),
    ({"colour": "blue"}, "malformed", "unknown field(s) 'colour'"),
    ({"adler32": _DROP}, "malformed", "missing field(s) 'adler32'"),
    ({"size": "12"}, "malformed", "'size' must be a whole number"),
    ({"size": -1}, "malformed", "'size'"),
    ({"size": True}, "malformed", "'size'"),
    ({"adler32": "xyz"}, "malformed", "8 hexadecimal digits"),
    ({"run": 10555}, "inconsistent", "does not match the run in the file name"),
    ({"stream": "JUNODAQ.other"}, "inconsistent", "does not match the file name"),
    ({"stream": 3}, "malformed", "'stream' must be text"),
    ({"received_at": "2025-10-09 14:05"}, "malformed", "RFC 3339"),
    ({"received_at": "2025-10-09T14:05:11"}, "malformed", "with a zone"),
    ({"received_at": "2025-02-30T14:05:11Z"}, "malformed", "not a valid date"),
    ({"lfn": "file.dat", "path": _DROP}, "bad_name", "not a JUNO raw file name"),
    ({"lfn": LFN.replace("20251009", "20250231"), "path": _DROP}, "bad_name", "not a valid date"),
    ({"path": "eos/juno/x.dat"}, "malformed", "absolute path"),
    ({"path": "/eos/juno/dci/raw/2025/1009/other.dat"}, "malformed", "does not end with the file name"),
    ({"checksums": {"crc32": "00000000"}}, "malformed", "unknown checksum 'crc32'"),
    ({"checksums": {"md5": "abc"}}, "malformed", "32 hexadecimal digits"),
    ({"checksums": {"adler32": "ffffffff"}}, "malformed", "differs from 'adler32'"),
    ({"metadata": {"run_number": 5}}, "malformed", "reserved"),
    ({"metadata": {"juno_x": 5}}, "malformed", "reserved"),
    ({"metadata": {"Bad-Key": 5}}, "malformed", "lower case"),
    ({"metadata": {"events": -3}}, "malformed", "'events'"),
    ({"metadata": {"note": "x" * 300}}, "malformed", "300 characters long; at most 256"),
    ({"metadata": {"nested": {"a": 1}}}, "malformed", "text, a number or true/false"),
    ({"id": ""}, "malformed", "'id'"),
])
def test_reasons(changes: dict[str, Any], code: str, words: str) -> None:
    result = parsed(with_(**changes))
    assert isinstance(result, InvalidMessage), result
    assert result.code == code
    assert words in result.reason


# -- the published JSON Schema says the same -------------------------------------------------------

# What JSON Schema cannot express: parse rejects these, the schema lets them through (documented in
# the schema's description).
SEMANTIC_ONLY = {"inconsistent"}
SEMANTIC_CASES = [
    {"received_at": "2025-02-30T14:05:11Z"},  # impossible date
    {"lfn": LFN.replace("20251009", "20250231"), "path": _DROP},
    {"path": "/eos/juno/dci/raw/2025/1009/other.dat"},  # path must end with lfn
    {"checksums": {"adler32": "ffffffff"}},  # must equal the top-level adler32
    {"size": float(2**60)},  # integral, so an integer to JSON Schema; but beyond 2**53 a double is not exact
    {"received_at": "2099-02-29T14:05:11Z"},  # impossible date (2099 is not a leap year)
]


def _corpus() -> list[tuple[dict[str, Any], bool]]:
    """(message, semantic) pairs: the good one and every structural mutation we can think of."""
    cases: list[dict[str, Any]] = [copy.deepcopy(GOOD), with_(lfn=_DROP), with_(path=_DROP),
                                   with_(checksums=_DROP, metadata=_DROP, id=_DROP)]
    for key in GOOD:
        cases.append(with_(**{key: _DROP}))
        for bad in (None, True, 1.5, -1, "", "x", [], {}, 2**64):
            cases.append(with_(**{key: bad}))
    cases += [with_(size=1024.0), with_(run=10554.0), with_(version=1.0), with_(metadata={"events": 12.0}),
              with_(lfn=LFN + "\n", path=_DROP), with_(adler32="0a1b2c3d\n"), with_(stream="JUNODAQ.global_trigger\n"),
              with_(metadata={"note": "a\x00b"}), with_(metadata={"note": "a\ud800"}), with_(metadata={"n": 2**63}),
              with_(metadata={"n": -(2**63)}), with_(metadata={"events": 2**63}), with_(id="a b"), with_(id="i" * 128),
              with_(path=PATH.replace("/raw/", "/r w/")), with_(received_at="1999-12-31T23:59:59Z"),
              with_(received_at="2025-10-09T14:05:11Z\n"), with_(run=10**8),
              with_(metadata={"note": "\u00e9" * 256}), with_(metadata={"note\n": 1})]
    cases += [with_(extra=1), with_(metadata={"events": True}), with_(metadata={"ok_key": 1.5, "flag": False}),
              with_(metadata={f"k{i}": i for i in range(33)}), with_(checksums={"sha256": "a" * 64}),
              with_(checksums={"sha1": "a" * 39}), with_(adler32="0a1b2c3"), with_(received_at="2025-10-09T14:05:11z")]
    out = [(c, False) for c in cases]
    out += [(with_(**c), True) for c in SEMANTIC_CASES]
    return out


def test_schema_is_valid_and_its_example_parses() -> None:
    schema = messages.load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for example in schema["examples"]:
        assert isinstance(messages.from_dict(example), SpadeMessage)


def test_parser_and_schema_agree() -> None:
    validator = jsonschema.Draft202012Validator(messages.load_schema())
    disagreements = []
    for data, semantic in _corpus():
        schema_ok = validator.is_valid(data)
        result = parsed(data)
        parser_ok = isinstance(result, SpadeMessage)
        if parser_ok and not schema_ok:
            disagreements.append(("parser accepts what the schema rejects", data))
        if schema_ok and not parser_ok and not semantic and result.code not in SEMANTIC_ONLY:  # type: ignore[union-attr]
            disagreements.append(("schema accepts what the parser rejects", data, result))
    assert not disagreements, disagreements[:3]


# -- the two contract questions ---------------------------------------------------------------------

def test_integral_floats_count_as_integers_up_to_2_pow_53() -> None:
    msg = parsed(with_(size=1073741824.0, run=10554.0, metadata={"events": 12.0}))
    assert isinstance(msg, SpadeMessage) and msg.size == 1073741824 and isinstance(msg.size, int)
    assert msg.metadata == {"events": 12} and isinstance(msg.metadata["events"], int)
    for bad in (1024.5, float(2**53 + 2), float("1e19")):
        result = parsed(with_(size=bad))
        assert isinstance(result, InvalidMessage) and "'size'" in result.reason


def test_received_at_in_the_future_beyond_the_tolerance_is_refused() -> None:
    msg = parsed(with_(received_at="2099-10-09T14:05:11Z"))
    assert isinstance(msg, SpadeMessage)  # the format is right: the clock decides (pipeline)
    now = datetime(2025, 10, 9, 14, 0, tzinfo=UTC)
    problem = messages.future_problem(msg, now, 3600)
    assert problem is not None and "in the future" in problem and "future_tolerance_s" in problem
    soon = parsed(with_(received_at="2025-10-09T14:59:00Z"))
    assert isinstance(soon, SpadeMessage) and messages.future_problem(soon, now, 3600) is None
    late = parsed(with_(received_at="2025-10-09T15:00:01Z"))
    assert isinstance(late, SpadeMessage) and messages.future_problem(late, now, 3600) is not None
