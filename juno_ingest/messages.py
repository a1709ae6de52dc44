"""SPADE's file-arrival message, version 1: the one place that reads it (the Kafka edge).

SPADE publishes one JSON object per raw file it has landed on IHEP's disk storage:

    {"version": 1,
     "lfn": "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat",
     "path": "/eos/juno/dci/raw/2025/1009/RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat",
     "size": 1073741824, "adler32": "0a1b2c3d",
     "run": 10554, "stream": "JUNODAQ.global_trigger",
     "received_at": "2025-10-09T14:05:11.250Z",
     "checksums": {"md5": "..."}, "metadata": {"events": 120000}, "id": "spade-7f3a"}

`lfn` or `path` (or both) name the file; `run` and `stream` must agree with the name; `received_at`
(RFC 3339 with a zone) is when the file landed at IHEP and picks its block. The contract for
producers is etc/spade-message.schema.json; `parse` checks exactly the same rules (a unit test holds
them together) but by hand, because jsonschema costs ~70 µs a message and the ingester shares its
CPU with the Rucio server it feeds.

`parse` returns a typed SpadeMessage or an InvalidMessage with a reason a person can act on; it never
raises on bad input, and its cost is bounded whatever the input (edge.decode: size, encoding, nesting).

Every limit below is one the Rucio server (or its database) imposes, checked here so that a message that
passes can be registered (a value the server refuses would fail a whole bulk call):
  lfn          at most NAME_MAX (250) characters, JUNO's raw-file pattern, ASCII (Rucio's DID name column)
  stream       at most STREAM_MAX (70) characters (Rucio's stream_name column, set on blocks)
  size         0 .. 2**63-1 (Rucio's bytes column: signed 64-bit)
  run          0 .. 99,999,999 (the file name's 1-8 digits)
  received_at  a year 2000-2099 (block names carry 20YYMMDD); not more than the configured tolerance in
               the future (checked where the clock is: pipeline, `future_problem`)
  metadata     32 keys; text at most 256 characters without control characters or lone surrogates
               (PostgreSQL's JSON refuses \u0000 and broken surrogate pairs); whole numbers
               -2**63 .. 2**63-1; other numbers finite
  path, id     printable ASCII (no spaces or control characters); path at most PATH_MAX characters
Integer fields take integral numbers written as floats (1024.0), as JSON Schema does, up to 2**53 (where
a double stops being exact); larger values must be written as integers.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from juno_common.etc import etc_file
from juno_ingest.edge import Invalid, decode, show
from rucio_policy import naming

MESSAGE_VERSION = 1
SCHEMA_FILE = etc_file("spade-message.schema.json")

FIELDS = frozenset({"version", "lfn", "path", "size", "adler32", "run", "stream", "received_at", "checksums",
                    "metadata", "id"})
REQUIRED = ("version", "size", "adler32", "run", "stream", "received_at")
CHECKSUMS = {"md5": 32, "sha1": 40, "sha256": 64}  # algorithm → hex digits
MAX_SIZE = 2**63 - 1  # Rucio's bytes column is a signed 64-bit integer
MAX_METADATA_KEYS = 32
MAX_METADATA_TEXT = 256
MAX_ID = 128
NAME_MAX = naming.NAME_MAX  # Rucio's DID name column (rucio_policy.schema.NAME_LENGTH)
STREAM_MAX = 70  # Rucio's stream_name column (String(70)), which blocks and containers carry
PATH_MAX = 1024
RUN_MAX = 99_999_999  # the file name's run: 1-8 digits
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXACT_FLOAT_MAX = 2**53  # integral floats above this are not exact: write such numbers as integers
YEARS = (2000, 2099)  # received_at: block names carry the day as 20YYMMDD
METADATA_KEY_RE = r"^[a-z][a-z0-9_]{0,39}$"
# Keys SPADE may not set: Rucio's own DID columns (except `events`, which is what it means there) and
# the ingester's namespace.
RESERVED_METADATA = frozenset({
    "scope", "name", "account", "did_type", "is_open", "monotonic", "hidden", "obsolete", "complete",
    "is_new", "availability", "suppressed", "bytes", "length", "md5", "adler32", "expired_at", "purge_replicas",
    "deleted_at", "guid", "run_number", "stream_name", "datatype", "project", "version", "campaign", "task_id",
    "panda_id", "lumiblocknr", "provenance", "phys_group", "transient", "accessed_at", "closed_at", "eol_at",
    "is_archive", "constituent", "access_cnt", "created_at", "updated_at", "lifetime", "prod_step",
})
RESERVED_METADATA_PREFIX = "juno_"

# Patterns are used with fullmatch: `$` alone would let a trailing newline through (as it does in the
# server's own JSON Schema, whose DB column then refuses the value).
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_META_KEY = re.compile(METADATA_KEY_RE[1:-1])
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
                      r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})")
_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_PRINTABLE = re.compile(r"[!-~]+")  # printable ASCII without space
# Control characters (C0, DEL, C1), lone surrogates, and the two noncharacters U+FFFE/U+FFFF.
_BAD_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")

MetaValue = str | int | float | bool


@dataclass(frozen=True)
class SpadeMessage:
    """A valid file-arrival message, normalised (adler32 lower case, received_at in UTC)."""

    lfn: str
    size: int
    adler32: str
    run: int
    stream: str
    received_at: datetime
    path: str | None = None
    checksums: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, MetaValue] = field(default_factory=dict)
    id: str | None = None
    version: int = MESSAGE_VERSION
    started: datetime | None = field(default=None, compare=False, repr=False)  # run start, from the name

    @property
    def run_start(self) -> datetime:
        """The run start the file name encodes (the storage path's date)."""
        return self.started if self.started is not None else naming.parse_raw_file(self.lfn).started

    @property
    def md5(self) -> str | None:
        return self.checksums.get("md5")

    def as_dict(self) -> dict[str, Any]:
        """The wire form (what SPADE, or the simulator, publishes)."""
        out: dict[str, Any] = {"version": self.version, "lfn": self.lfn}
        if self.path is not None:
            out["path"] = self.path
        out.update({"size": self.size, "adler32": self.adler32, "run": self.run, "stream": self.stream,
                    "received_at": format_time(self.received_at)})
        if self.checksums:
            out["checksums"] = dict(self.checksums)
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        if self.id is not None:
            out["id"] = self.id
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":")).encode()


@dataclass(frozen=True)
class InvalidMessage:
    """Why a message cannot be ingested; `code` groups reasons for metrics and the dead-letter topic."""

    reason: str
    code: str = "malformed"


def format_time(when: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a Z, the form SPADE writes."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def as_int(value: object) -> int | None:
    """A whole number as JSON Schema counts one (1024 and 1024.0; not true, not 1024.5), else None.
    Floats above 2**53 are refused: 9007199254740993.0 has already become ...992 when it is read."""
    if _is_int(value):
        return value  # type: ignore[return-value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= EXACT_FLOAT_MAX:
        return int(value)
    return None


def text_problem(value: str, limit: int) -> str | None:
    """Why a text value cannot be stored (length, control characters, broken Unicode), or None."""
    if len(value) > limit:
        return f"is {len(value)} characters long; at most {limit}"
    bad = _BAD_TEXT.search(value)
    if bad:
        return (f"contains {bad.group()!r} at position {bad.start()}: control characters and lone surrogates "
                "cannot be stored")
    return None


def parse(raw: bytes | str | None) -> SpadeMessage | InvalidMessage:
    """Validate one Kafka message value; the typed message or why it is not one."""
    try:
        data = decode(raw)
    except Invalid as err:
        return InvalidMessage(str(err))
    return from_dict(data)


def future_problem(msg: SpadeMessage, now: datetime, tolerance_s: float) -> str | None:
    """Why a message's received_at is too far in the future to pick a block, or None.

    A file cannot land tomorrow: a received_at beyond `tolerance_s` (clock skew) is a producer's bug, and
    taking it would create a block that closes only after that day (2099: in 73 years)."""
    ahead = (msg.received_at - now).total_seconds()
    if ahead > tolerance_s:
        return (f"'received_at' {format_time(msg.received_at)} is {ahead:.0f} s in the future (tolerance "
                f"{tolerance_s:.0f} s, blocks.future_tolerance_s): a file cannot have landed yet; fix SPADE's clock "
                "or the message")
    return None


def from_dict(data: Mapping[str, Any]) -> SpadeMessage | InvalidMessage:
    version = data.get("version")
    if "version" not in data:
        return InvalidMessage("missing 'version': SPADE messages carry \"version\": 1")
    if as_int(version) != MESSAGE_VERSION:
        return InvalidMessage(f"version {show(version)} is not supported: this juno-ingest reads version "
                              f"{MESSAGE_VERSION}; upgrade juno-ingest or ask SPADE to publish version "
                              f"{MESSAGE_VERSION}", code="unsupported_version")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        return InvalidMessage(f"unknown field(s) {', '.join(map(show, unknown[:5]))}; version 1 has "
                              f"{', '.join(sorted(FIELDS))}")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        return InvalidMessage(f"missing field(s) {', '.join(map(repr, missing))}")
    nulls = sorted(key for key, value in data.items() if value is None)
    if nulls:  # null is not "absent": a producer that sends it has a bug worth seeing
        return InvalidMessage(f"field(s) {', '.join(map(repr, nulls))} are null: leave optional fields out instead")
    if "lfn" not in data and "path" not in data:
        return InvalidMessage("missing 'lfn' and 'path': give the file name (lfn), its path at IHEP, or both")

    lfn, path = data.get("lfn"), data.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/") or path.endswith("/")):
        return InvalidMessage(f"'path' must be the file's absolute path at IHEP (starting with /), got {show(path)}")
    if path is not None and (len(path) > PATH_MAX or not _PRINTABLE.fullmatch(path)):
        return InvalidMessage(f"'path' must be at most {PATH_MAX} printable ASCII characters without spaces, got "
                              f"{show(path)}")
    if lfn is None:
        assert isinstance(path, str)
        lfn = path.rsplit("/", 1)[1]
    if not isinstance(lfn, str):
        return InvalidMessage(f"'lfn' must be text, got {type(lfn).__name__}")
    if len(lfn) > NAME_MAX or not _NAME_CHARS.fullmatch(lfn):
        return InvalidMessage(f"'lfn' {show(lfn)} is not a JUNO raw file name: at most {NAME_MAX} characters of "
                              f"letters, digits, '.', '-' and '_' ({naming.RAW_FILE_HELP})", code="bad_name")
    if path is not None and path.rsplit("/", 1)[1] != lfn:
        return InvalidMessage(f"'path' {show(path)} does not end with the file name {show(lfn)}")
    try:
        name = naming.parse_raw_file(lfn)
    except naming.NamingError as err:
        return InvalidMessage(str(err), code="bad_name")
    if len(name.stream_key) > STREAM_MAX:
        return InvalidMessage(f"the file name's stream {show(name.stream_key)} is {len(name.stream_key)} characters "
                              f"long; Rucio stores at most {STREAM_MAX} (stream_name)", code="bad_name")

    size, adler32, run, stream = as_int(data["size"]), data["adler32"], as_int(data["run"]), data["stream"]
    if size is None or not 0 <= size <= MAX_SIZE:
        return InvalidMessage(f"'size' must be a whole number of bytes 0 .. {MAX_SIZE}, got {show(data['size'])}")
    if not isinstance(adler32, str) or not _HEX8.fullmatch(adler32):
        return InvalidMessage(f"'adler32' must be 8 hexadecimal digits, got {show(adler32)}")
    if run is None or not 0 <= run <= RUN_MAX:
        return InvalidMessage(f"'run' must be a whole number 0 .. {RUN_MAX}, got {show(data['run'])}")
    if run != name.run:
        return InvalidMessage(f"'run' {run} does not match the run in the file name ({name.run})", code="inconsistent")
    if not isinstance(stream, str):
        return InvalidMessage(f"'stream' must be text like JUNODAQ.global_trigger, got {show(stream)}")
    if stream != name.stream_key:
        return InvalidMessage(f"'stream' {show(stream)} does not match the file name's <detector>.<stream> "
                              f"({name.stream_key})", code="inconsistent")

    received_at = _parse_time(data["received_at"])
    if isinstance(received_at, InvalidMessage):
        return received_at

    checksums = _checksums(data.get("checksums"), adler32)
    if isinstance(checksums, InvalidMessage):
        return checksums
    metadata = _metadata(data.get("metadata"))
    if isinstance(metadata, InvalidMessage):
        return metadata
    msg_id = data.get("id")
    if msg_id is not None and (not isinstance(msg_id, str) or not 0 < len(msg_id) <= MAX_ID
                               or not _PRINTABLE.fullmatch(msg_id)):
        return InvalidMessage(f"'id' must be 1 to {MAX_ID} printable ASCII characters without spaces, got "
                              f"{show(msg_id)}")
    return SpadeMessage(lfn=lfn, size=size, adler32=adler32.lower(), run=run, stream=stream,
                        received_at=received_at, path=path, checksums=checksums, metadata=metadata, id=msg_id,
                        started=name.started)


def _parse_time(value: object) -> datetime | InvalidMessage:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return InvalidMessage(f"'received_at' must be an RFC 3339 time with a zone, e.g. 2025-10-09T14:05:11Z; "
                              f"got {show(value)}")
    # Python 3.11 reads neither a lower-case t/z nor more than 6 fractional digits; RFC 3339 allows both.
    text = value.upper()
    match = re.search(r"\.(\d+)", text)
    if match and len(match.group(1)) > 6:
        text = text[: match.start(1) + 6] + text[match.end(1):]
    try:
        when = datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return InvalidMessage(f"'received_at' {show(value)} is not a valid date and time")
    if not YEARS[0] <= when.year <= YEARS[1]:
        return InvalidMessage(f"'received_at' {show(value)} is not in the years {YEARS[0]}-{YEARS[1]} (UTC), which "
                              "block names can carry")
    return when


def _checksums(value: object, adler32: str) -> dict[str, str] | InvalidMessage:
    if value is None:
        return {}
    if not isinstance(value, dict):
        return InvalidMessage(f"'checksums' must be an object like {{\"md5\": \"...\"}}, got {type(value).__name__}")
    out: dict[str, str] = {}
    for algo, digest in value.items():
        if algo == "adler32":
            if not isinstance(digest, str) or not _HEX8.fullmatch(digest) or digest.lower() != adler32.lower():
                return InvalidMessage(f"'checksums.adler32' {show(digest)} differs from 'adler32' {show(adler32)}")
            continue
        digits = CHECKSUMS.get(algo)
        if digits is None:
            return InvalidMessage(f"unknown checksum {show(algo)}: version 1 knows {', '.join(sorted(CHECKSUMS))}")
        if not isinstance(digest, str) or not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", digest):
            return InvalidMessage(f"'checksums.{algo}' must be {digits} hexadecimal digits, got {show(digest)}")
        out[algo] = digest.lower()
    return out


def _metadata(value: object) -> dict[str, MetaValue] | InvalidMessage:
    if value is None:
        return {}
    if not isinstance(value, dict):
        return InvalidMessage(f"'metadata' must be an object, got {type(value).__name__}")
    if len(value) > MAX_METADATA_KEYS:
        return InvalidMessage(f"'metadata' has {len(value)} keys; at most {MAX_METADATA_KEYS}")
    out: dict[str, MetaValue] = {}
    for key, item in value.items():
        if not _META_KEY.fullmatch(key):
            return InvalidMessage(f"metadata key {show(key)} must be lower case letters, digits and _ "
                                  "(start with a letter, at most 40 characters)")
        if key in RESERVED_METADATA or key.startswith(RESERVED_METADATA_PREFIX):
            return InvalidMessage(f"metadata key {key!r} is reserved (Rucio's own fields and juno_*)")
        if key == "events":
            events = as_int(item)
            if events is None or not 0 <= events <= INT64_MAX:
                return InvalidMessage(f"metadata 'events' must be a whole number 0 .. {INT64_MAX}, got {show(item)}")
            item = events
        if isinstance(item, str):
            problem = text_problem(item, MAX_METADATA_TEXT)
            if problem:
                return InvalidMessage(f"metadata {key!r} {problem}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                return InvalidMessage(f"metadata {key!r} must be a finite number")
            if item.is_integer() and not INT64_MIN <= item <= INT64_MAX:  # JSON Schema counts it as an integer
                return InvalidMessage(f"metadata {key!r} is {show(item)}: whole numbers must fit 64 bits "
                                      f"({INT64_MIN} .. {INT64_MAX})")
        elif _is_int(item):
            if not INT64_MIN <= item <= INT64_MAX:
                return InvalidMessage(f"metadata {key!r} is {show(item)}: whole numbers must fit 64 bits "
                                      f"({INT64_MIN} .. {INT64_MAX})")
        elif not isinstance(item, bool):
            return InvalidMessage(f"metadata {key!r} must be text, a number or true/false, got "
                                  f"{type(item).__name__}")
        out[key] = item
    return out


def load_schema() -> dict[str, Any]:
    """The published JSON Schema (for producers, docs and the agreement tests)."""
    return dict(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
