"""What juno-ingest did, as events on Kafka, version 1: the contract between the ingester (producer) and
whoever reacts to new raw data (juno-prod's keep-up reconstruction). etc/ingest-event.schema.json is
the same contract for other consumers; a unit test holds the two together.

One JSON object per event. Kafka key: the block (`scope:name` of the dataset a file joined, or of the
block itself), so a block's events share a partition and arrive in the order they were published:
block_created, its files' file_registered, block_closed. Published only after Rucio holds what the
event says (a consumer that reads an event finds its DID in Rucio) and before the SPADE messages that
caused it are committed: at least once. A crash between publishing and committing publishes again
(the replayed messages are duplicates in Rucio, and a duplicate still announces its file), so an event
may be repeated, never lost (juno_ingest.publisher says exactly when):

    {"version": 1, "kind": "file_registered", "scope": "raw",
     "name": "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat",
     "dataset": "raw:block.JUNODAQ.global_trigger.20251009",
     "rse": "IHEP-EOS", "bytes": 1073741824, "adler32": "0a1b2c3d",
     "run": 10554, "stream": "JUNODAQ.global_trigger", "at": "2025-10-09T14:05:12.031Z"}

kinds:
  file_registered  a raw file is in Rucio with its replica at `rse` and attached to `dataset`; bytes,
                   adler32, run and stream always given
  block_created    `name` is the block, now open in Rucio (dataset absent); stream given
  block_closed     `name` is the block, closed; `files` and `bytes` its totals, stream given
Events are a hint, never the record: a lost or repeated event must not lose or duplicate work, consumers
look at Rucio to be sure. A field added or changed is a new version (version 1 readers refuse unknown
fields, as `parse` does).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from juno_common.etc import etc_file

EVENT_VERSION = 1
SCHEMA_FILE = etc_file("ingest-event.schema.json")
DEFAULT_TOPIC = "juno.ingest.events"
KINDS = ("file_registered", "block_created", "block_closed")
Kind = Literal["file_registered", "block_created", "block_closed"]
_ADLER = re.compile(r"[0-9a-f]{8}")
_DID_PART = re.compile(r"[A-Za-z0-9_.\-]{1,250}")
_DID = re.compile(r"[A-Za-z0-9_.\-]{1,25}:[A-Za-z0-9_.\-]{1,250}")
_RSE = re.compile(r"[A-Z0-9_\-]{1,255}")
_STREAM = re.compile(r"[A-Z][A-Z0-9]*\.[a-z][a-z0-9_]*")
# Fields each kind must carry (beyond version, kind, scope, name, at).
REQUIRED: dict[str, tuple[str, ...]] = {
    "file_registered": ("dataset", "rse", "bytes", "adler32", "run", "stream"),
    "block_created": ("stream",),
    "block_closed": ("stream", "bytes", "files"),
}
# RFC 3339 with a zone (Z or +hh:mm), as encode writes it.
_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


class InvalidEvent(ValueError):
    """An event this version of the contract cannot read; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class IngestEvent:
    kind: Kind
    scope: str
    name: str
    at: datetime
    dataset: str | None = None
    rse: str | None = None
    bytes: int | None = None
    adler32: str | None = None
    files: int | None = None
    run: int | None = None
    stream: str | None = None

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    @property
    def block(self) -> str:
        """scope:name of the block the event is about (a file's dataset, or the block itself)."""
        return self.dataset if self.kind == "file_registered" and self.dataset else self.did

    def key(self) -> bytes:
        """The Kafka key: the block, so that one block's events keep their order (one partition)."""
        return self.block.encode()

    def encode(self) -> bytes:
        body: dict[str, Any] = {"version": EVENT_VERSION}
        for k, v in asdict(self).items():
            if v is None:
                continue
            body[k] = _rfc3339(v) if isinstance(v, datetime) else v
        return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def parse(value: bytes | str) -> IngestEvent:
    """The event in `value`, or InvalidEvent naming the first field that is wrong."""
    try:
        body = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidEvent("not a JSON object")
    if body.get("version") != EVENT_VERSION or isinstance(body.get("version"), bool):
        raise InvalidEvent(f"version: {body.get('version')!r} is not {EVENT_VERSION}")
    unknown = set(body) - {"version", *IngestEvent.__dataclass_fields__}
    if unknown:
        raise InvalidEvent(f"unknown field(s): {', '.join(sorted(unknown))}")
    kind = body.get("kind")
    if kind not in KINDS:
        raise InvalidEvent(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    for f in ("scope", "name"):
        if not isinstance(body.get(f), str) or not _DID_PART.fullmatch(body[f]):
            raise InvalidEvent(f"{f}: {body.get(f)!r} is not a DID part")
    for f in ("bytes", "files", "run"):
        v = body.get(f)
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:  # JSON Schema's integer: 5.0 is one
            v = body[f] = int(v)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**53):
            raise InvalidEvent(f"{f}: {v!r} is not a whole number from 0 to 2**53 - 1")
    for f, pattern, what in (("dataset", _DID, "scope:name"), ("rse", _RSE, "an RSE name"),
                             ("stream", _STREAM, "a stream key (DETECTOR.stream)"),
                             ("adler32", _ADLER, "8 lower-case hex digits")):
        v = body.get(f)
        if v is not None and (not isinstance(v, str) or not pattern.fullmatch(v)):
            raise InvalidEvent(f"{f}: {v!r} is not {what}")
    missing = [f for f in REQUIRED[kind] if body.get(f) is None]
    if missing:
        raise InvalidEvent(f"{kind} needs {', '.join(missing)}")
    text = body.get("at")
    if not isinstance(text, str) or not _AT.fullmatch(text):
        raise InvalidEvent(f"at: {text!r} is not an RFC 3339 time with a zone")
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"at: {text!r} is not an RFC 3339 time") from None
    fields = {k: v for k, v in body.items() if k not in ("version", "at")}
    return IngestEvent(at=at.astimezone(UTC), **fields)


def _rfc3339(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("event times carry a zone")
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
