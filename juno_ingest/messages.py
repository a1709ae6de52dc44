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
raises on bad input.
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

_HEX8 = re.compile(r"^[0-9a-fA-F]{8}$")
_META_KEY = re.compile(METADATA_KEY_RE)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$")

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


def parse(raw: bytes | str | None) -> SpadeMessage | InvalidMessage:
    """Validate one Kafka message value; the typed message or why it is not one."""
    if raw is None or len(raw) == 0:
        return InvalidMessage("empty message: expected a JSON object (SPADE file-arrival message, version 1)")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as err:
        return InvalidMessage(f"not JSON ({err}); expected a SPADE file-arrival message (a JSON object)")
    if not isinstance(data, dict):
        return InvalidMessage(f"expected a JSON object, found {type(data).__name__}")
    return from_dict(data)


def from_dict(data: Mapping[str, Any]) -> SpadeMessage | InvalidMessage:
    version = data.get("version")
    if "version" not in data:
        return InvalidMessage("missing 'version': SPADE messages carry \"version\": 1")
    if not _is_int(version) or version != MESSAGE_VERSION:
        return InvalidMessage(f"version {version!r} is not supported: this juno-ingest reads version "
                              f"{MESSAGE_VERSION}; upgrade juno-ingest or ask SPADE to publish version "
                              f"{MESSAGE_VERSION}", code="unsupported_version")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        return InvalidMessage(f"unknown field(s) {', '.join(map(repr, unknown))}; version 1 has "
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
        return InvalidMessage(f"'path' must be the file's absolute path at IHEP (starting with /), got {path!r}")
    if lfn is None:
        assert isinstance(path, str)
        lfn = path.rsplit("/", 1)[1]
    if not isinstance(lfn, str):
        return InvalidMessage(f"'lfn' must be text, got {type(lfn).__name__}")
    if path is not None and path.rsplit("/", 1)[1] != lfn:
        return InvalidMessage(f"'path' {path!r} does not end with the file name {lfn!r}")
    try:
        name = naming.parse_raw_file(lfn)
    except naming.NamingError as err:
        return InvalidMessage(str(err), code="bad_name")

    size, adler32, run, stream = data["size"], data["adler32"], data["run"], data["stream"]
    if not _is_int(size) or not 0 <= size <= MAX_SIZE:
        return InvalidMessage(f"'size' must be a whole number of bytes >= 0, got {size!r}")
    if not isinstance(adler32, str) or not _HEX8.match(adler32):
        return InvalidMessage(f"'adler32' must be 8 hexadecimal digits, got {adler32!r}")
    if not _is_int(run) or run < 0:
        return InvalidMessage(f"'run' must be a whole number >= 0, got {run!r}")
    if run != name.run:
        return InvalidMessage(f"'run' {run} does not match the run in the file name ({name.run})", code="inconsistent")
    if not isinstance(stream, str):
        return InvalidMessage(f"'stream' must be text like JUNODAQ.global_trigger, got {stream!r}")
    if stream != name.stream_key:
        return InvalidMessage(f"'stream' {stream!r} does not match the file name's <detector>.<stream> "
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
    if msg_id is not None and (not isinstance(msg_id, str) or not 0 < len(msg_id) <= MAX_ID):
        return InvalidMessage(f"'id' must be text of 1 to {MAX_ID} characters, got {msg_id!r}")
    return SpadeMessage(lfn=lfn, size=size, adler32=adler32.lower(), run=run, stream=stream,
                        received_at=received_at, path=path, checksums=checksums, metadata=metadata, id=msg_id,
                        started=name.started)


def _parse_time(value: object) -> datetime | InvalidMessage:
    if not isinstance(value, str) or not _RFC3339.match(value):
        return InvalidMessage(f"'received_at' must be an RFC 3339 time with a zone, e.g. 2025-10-09T14:05:11Z; "
                              f"got {value!r}")
    # Python 3.11 reads neither a lower-case t/z nor more than 6 fractional digits; RFC 3339 allows both.
    text = value.upper()
    match = re.search(r"\.(\d+)", text)
    if match and len(match.group(1)) > 6:
        text = text[: match.start(1) + 6] + text[match.end(1):]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return InvalidMessage(f"'received_at' {value!r} is not a valid date and time")
    return when.astimezone(UTC)


def _checksums(value: object, adler32: str) -> dict[str, str] | InvalidMessage:
    if value is None:
        return {}
    if not isinstance(value, dict):
        return InvalidMessage(f"'checksums' must be an object like {{\"md5\": \"...\"}}, got {type(value).__name__}")
    out: dict[str, str] = {}
    for algo, digest in value.items():
        if algo == "adler32":
            if not isinstance(digest, str) or digest.lower() != adler32.lower():
                return InvalidMessage(f"'checksums.adler32' {digest!r} differs from 'adler32' {adler32!r}")
            continue
        digits = CHECKSUMS.get(algo)
        if digits is None:
            return InvalidMessage(f"unknown checksum {algo!r}: version 1 knows {', '.join(sorted(CHECKSUMS))}")
        if not isinstance(digest, str) or not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", digest):
            return InvalidMessage(f"'checksums.{algo}' must be {digits} hexadecimal digits, got {digest!r}")
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
        if not _META_KEY.match(key):
            return InvalidMessage(f"metadata key {key!r} must be lower case letters, digits and _ "
                                  "(start with a letter, at most 40 characters)")
        if key in RESERVED_METADATA or key.startswith(RESERVED_METADATA_PREFIX):
            return InvalidMessage(f"metadata key {key!r} is reserved (Rucio's own fields and juno_*)")
        if key == "events" and not (_is_int(item) and item >= 0):
            return InvalidMessage(f"metadata 'events' must be a whole number >= 0, got {item!r}")
        if isinstance(item, str):
            if len(item) > MAX_METADATA_TEXT:
                return InvalidMessage(f"metadata {key!r} is longer than {MAX_METADATA_TEXT} characters")
        elif isinstance(item, float):
            if not math.isfinite(item):
                return InvalidMessage(f"metadata {key!r} must be a finite number")
        elif not isinstance(item, int | bool):
            return InvalidMessage(f"metadata {key!r} must be text, a number or true/false, got "
                                  f"{type(item).__name__}")
        out[key] = item
    return out


def load_schema() -> dict[str, Any]:
    """The published JSON Schema (for producers, docs and the agreement tests)."""
    return dict(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
