"""A corpus of hostile SPADE messages, and valid ones at every limit (tests; trying a deployment).

    kinds = hostile_cases(template, prefix)       # [HostileCase(kind, key, value, code)], ~70 kinds
    value = at_limits(file, prefix, index)        # a valid message with one field at its limit
    mix_into(plan, prefix)                        # a simulated SPADE run with the corpus mixed in
                                                  # (`juno-ingest simulate --hostile`)

Each hostile case says the dead-letter code the ingester must give it. `template` is a valid file of
the stream under test; hostile cases never name a file that exists on storage with that content, so
a case that slipped through validation would show up as a wrong code (or as a registered file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from juno_ingest.edge import MAX_MESSAGE_BYTES
from juno_ingest.messages import INT64_MAX, INT64_MIN, MAX_ID, MAX_METADATA_KEYS, MAX_METADATA_TEXT, NAME_MAX
from juno_ingest.simulate import SimFile, SimMessage, SimPlan, adler32_of

Dict = dict[str, Any]


@dataclass(frozen=True)
class HostileCase:
    kind: str
    key: bytes | None
    value: bytes | None
    code: str  # the dead-letter code the ingester must give


def _dump(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")


def hostile_cases(template: SimFile, prefix: str) -> list[HostileCase]:
    """Every kind of hostile message we know, built on a valid file's message."""
    good: Dict = template.message(prefix).as_dict()
    key = template.lfn.encode()
    lfn, path = template.lfn, good["path"]

    def edit(**changes: Any) -> bytes:
        data = dict(good)
        for name, value in changes.items():
            if value is None:
                data.pop(name, None)
            else:
                data[name] = value
        return _dump(data)

    def meta(value: Any, name: str = "note") -> bytes:
        return edit(metadata={name: value})

    ten_mb = _dump({**good, "metadata": {"note": "x" * (10 << 20)}})
    deep_small = b'{"a":' * 10_000 + b"1" + b"}" * 10_000  # under the size limit: the nesting limit must stop it
    deep_huge = b"[" * 100_000 + b"]" * 100_000
    long_run_type = "P" * (NAME_MAX + 1 - len(lfn) + len("Physics"))
    cases: list[tuple[str, bytes | None, str]] = [
        # sizes, shapes, encodings
        ("ten_megabytes", ten_mb, "malformed"),
        ("just_over_size_limit", _dump({**good, "metadata": {"note": "x" * MAX_MESSAGE_BYTES}}), "malformed"),
        ("nested_10000_levels", deep_small, "malformed"),
        ("nested_100000_levels", deep_huge, "malformed"),
        ("empty", b"", "malformed"),
        ("tombstone", None, "malformed"),
        ("not_json", b"{this is not json", "malformed"),
        ("truncated_json", _dump(good)[:-10], "malformed"),
        ("json_array", _dump([good]), "malformed"),
        ("json_string", b'"RUN.1.dat"', "malformed"),
        ("json_null", b"null", "malformed"),
        ("wrong_shape_object", _dump({"files": [good]}), "malformed"),
        ("latin1_bytes", edit(id="caf\u00e9").replace("\u00e9".encode(), b"\xe9"), "malformed"),
        ("utf16_with_bom", json.dumps(good).encode("utf-16"), "malformed"),
        ("utf8_bom", b"\xef\xbb\xbf" + _dump(good), "malformed"),
        ("nan", _dump(good).replace(b'"size": ' + str(good["size"]).encode(), b'"size": NaN'), "malformed"),
        ("duplicate_keys", _dump(good)[:-1] + b', "size": 1}', "malformed"),
        ("number_5000_digits", _dump(good).replace(b'"size": ' + str(good["size"]).encode(),
                                                   b'"size": 1' + b"0" * 5000), "malformed"),
        # control characters and encodings in every text field
        ("lfn_trailing_newline", edit(lfn=lfn + "\n", path=None), "bad_name"),
        ("lfn_nul", edit(lfn=lfn[:5] + "\x00" + lfn[5:], path=None), "bad_name"),
        ("lfn_cyrillic_lookalike", edit(lfn="R\u0423N" + lfn[3:], path=None), "bad_name"),
        ("path_newline", edit(path=path.replace("/raw/", "/raw\n/")), "malformed"),
        ("path_space", edit(path=path.replace("/raw/", "/raw /")), "malformed"),
        ("stream_trailing_newline", edit(stream=good["stream"] + "\n"), "inconsistent"),
        ("adler32_trailing_newline", edit(adler32=good["adler32"] + "\n"), "malformed"),
        ("md5_trailing_newline", edit(checksums={"md5": "a" * 32 + "\n"}), "malformed"),
        ("received_at_arabic_digits", edit(received_at="\u0662\u0660\u0662\u0665-10-09T14:05:11Z"), "malformed"),
        ("received_at_trailing_newline", edit(received_at=good["received_at"] + "\n"), "malformed"),
        ("id_control", edit(id="spade\x1b[31m"), "malformed"),
        ("id_space", edit(id="spade 1"), "malformed"),
        ("metadata_nul", meta("a\x00b"), "malformed"),
        ("metadata_lone_surrogate_bytes", meta("a\ud800b"), "malformed"),
        ("metadata_lone_surrogate_escaped", json.dumps({**good, "metadata": {"note": "a\ud800b"}}).encode(),
         "malformed"),
        ("metadata_c1_control", meta("a\x85b"), "malformed"),
        ("metadata_key_newline", meta(1, "note\n"), "malformed"),
        ("metadata_key_empty", meta(1, ""), "malformed"),
        # numbers at and beyond every range
        ("size_negative", edit(size=-1), "malformed"),
        ("size_2_pow_63", edit(size=2**63), "malformed"),
        ("size_fraction", edit(size=1024.5), "malformed"),
        ("size_text", edit(size=str(good["size"])), "malformed"),
        ("size_bool", edit(size=True), "malformed"),
        ("size_float_beyond_2_pow_53", edit(size=float(2**60)), "malformed"),
        ("run_beyond_8_digits", edit(run=100_000_000), "malformed"),
        ("run_2_pow_31", edit(run=2**31), "malformed"),
        ("events_2_pow_63", meta(2**63, "events"), "malformed"),
        ("events_negative", meta(-1, "events"), "malformed"),
        ("metadata_int_2_pow_64", meta(2**64), "malformed"),
        ("metadata_int_below_int64", meta(INT64_MIN - 1), "malformed"),
        ("metadata_float_1e300", meta(1e300), "malformed"),
        ("metadata_float_1e999", _dump({**good, "metadata": {"note": 1}}).replace(b'"note": 1', b'"note": 1e999'),
         "malformed"),
        ("version_2", edit(version=2), "unsupported_version"),
        ("version_1_5", edit(version=1.5), "unsupported_version"),
        # names and texts at and beyond every length limit
        ("lfn_251_characters", edit(lfn=lfn.replace("Physics", long_run_type), path=None), "bad_name"),
        ("stream_71_characters", edit(lfn=lfn.replace(".ds-2." + good["stream"].split(".")[1] + ".",
                                                      ".ds-2.s" + "x" * 62 + "."), path=None,
                                      stream="JUNODAQ.s" + "x" * 62), "bad_name"),
        ("path_1025_characters", edit(path="/" + "p" * (1024 - len(lfn)) + "/" + lfn), "malformed"),
        ("id_129_characters", edit(id="i" * (MAX_ID + 1)), "malformed"),
        ("metadata_text_257", meta("t" * (MAX_METADATA_TEXT + 1)), "malformed"),
        ("metadata_33_keys", edit(metadata={f"k{i}": i for i in range(MAX_METADATA_KEYS + 1)}), "malformed"),
        ("metadata_key_41_characters", meta(1, "k" * 41), "malformed"),
        ("metadata_nested", meta({"a": [1, 2]}), "malformed"),
        # valid JSON, wrong contract
        ("received_at_2099", edit(received_at="2099-10-09T14:05:11Z"), "future"),
        ("received_at_1970", edit(received_at="1970-01-01T00:00:00Z"), "malformed"),
        ("received_at_year_0001", edit(received_at="0001-01-01T00:00:00+01:00"), "malformed"),
        ("received_at_feb_30", edit(received_at="2025-02-30T14:05:11Z"), "malformed"),
        ("null_field", edit(id=None)[:-1] + b', "id": null}', "malformed"),
        ("unknown_field", edit(colour="blue"), "malformed"),
        ("missing_adler32", edit(adler32=None), "malformed"),
    ]
    return [HostileCase(kind, key, value, code) for kind, value, code in cases]


def at_limits(f: SimFile, prefix: str, index: int) -> bytes:
    """A valid message for file `f` with fields at their limits; `index` picks which limits (several
    variants, so one corpus covers them all)."""
    data: Dict = f.message(prefix).as_dict()
    variants: list[Callable[[Dict], None]] = [
        lambda d: d.update(size=float(d["size"])),  # an integral float counts as an integer
        lambda d: d.update(metadata={"events": INT64_MAX}, id="i" * MAX_ID),
        lambda d: d.update(metadata={f"k{i}": ("\u00e9\u4e2d\U0001f600" * 100)[:MAX_METADATA_TEXT]
                                     for i in range(MAX_METADATA_KEYS)}),
        lambda d: d.update(metadata={"low": INT64_MIN, "high": INT64_MAX, "ratio": -1.5e-308,
                                     "pi": 3.141592653589793, "ok": False}),
        lambda d: d.update(checksums={"md5": "A" * 32, "sha1": "b" * 40, "sha256": "C" * 64, "adler32": d["adler32"]}),
    ]
    variants[index % len(variants)](data)
    return _dump(data)


def long_name(f: SimFile, length: int = NAME_MAX) -> SimFile:
    """The same file renamed so that its name is exactly `length` characters (a longer run type)."""
    grow = length - len(f.lfn)
    lfn = f.lfn.replace(".Physics.", ".Physics" + "X" * grow + ".", 1)
    seed = f.seed + ":long"
    return SimFile(lfn, f.stream, f.run, f.size, f.received_at, seed, adler32_of(seed, f.size))


def mix_into(plan: SimPlan, prefix: str) -> int:
    """Put the corpus into a simulated run: each hostile message right before a valid one (its canary, on
    the same key's partition only if keys agree: the canary's key is used). Returns how many were added."""
    valid = [k for k, m in enumerate(plan.messages) if m.expect == "registered"]
    if not valid:
        raise ValueError("--hostile needs valid files to follow the hostile messages: give --files > 0")
    cases = hostile_cases(plan.files[0], prefix)
    out: list[SimMessage] = []
    canary_at: dict[int, list[HostileCase]] = {}
    for k, case in enumerate(cases):
        canary_at.setdefault(valid[k % len(valid)], []).append(case)
    for k, msg in enumerate(plan.messages):
        for case in canary_at.get(k, []):
            out.append(SimMessage(msg.key, case.value or b"", f"hostile:{case.kind}", "dead", case.code))
        out.append(msg)
    plan.messages = out
    return len(cases)
