"""What juno-ingest did, as events on Kafka, version 1: the contract between the ingester (producer) and
whoever reacts to new raw data (juno-prod's keep-up reconstruction). etc/ingest-event.schema.json is
the same contract for other consumers; a unit test holds the two together.

One JSON object per event, key = the DID name (`scope:name`), published only after Rucio holds what the
event says (so a consumer that reads an event can always find its DID in Rucio):

    {"version": 1, "kind": "file_registered", "scope": "raw",
     "name": "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat",
     "dataset": "raw:juno.raw.20251009.JUNODAQ.global_trigger",
     "rse": "IHEP_DISK", "bytes": 1073741824, "adler32": "0a1b2c3d",
     "run": 10554, "stream": "JUNODAQ.global_trigger", "at": "2025-10-09T14:05:12.031Z"}

kinds: `file_registered` (a raw file is in Rucio with its replica and is attached to `dataset`),
`block_created` and `block_closed` (`name` is the block, `dataset` null, `rse` the RSE of its files;
`bytes` and `files` are the block's totals when closed). Events are a hint, never the record: a lost or
repeated event must not lose or duplicate work, consumers look at Rucio to be sure.
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

    def key(self) -> bytes:
        return self.did.encode()

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
    if body.get("version") != EVENT_VERSION:
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
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise InvalidEvent(f"{f}: {v!r} is not a whole number >= 0")
    for f in ("dataset", "rse", "stream"):
        v = body.get(f)
        if v is not None and not isinstance(v, str):
            raise InvalidEvent(f"{f}: {v!r} is not text")
    adler = body.get("adler32")
    if adler is not None and (not isinstance(adler, str) or not _ADLER.fullmatch(adler)):
        raise InvalidEvent(f"adler32: {adler!r} is not 8 lower-case hex digits")
    if kind == "file_registered" and (body.get("dataset") is None or body.get("rse") is None):
        raise InvalidEvent("file_registered needs dataset and rse")
    try:
        at = datetime.fromisoformat(str(body.get("at")).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"at: {body.get('at')!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise InvalidEvent(f"at: {body.get('at')!r} has no time zone")
    fields = {k: v for k, v in body.items() if k not in ("version", "at")}
    return IngestEvent(at=at.astimezone(UTC), **fields)


def _rfc3339(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("event times carry a zone")
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
