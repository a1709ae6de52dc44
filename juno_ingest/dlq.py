"""The dead-letter topic: each message the ingester cannot use, with why and where it came from.

It takes whatever Kafka delivered. Value and key are the original bytes, unchanged up to
dlq.max_value_bytes (256 KiB) and KEY_MAX (1 KiB); a larger original is kept truncated to that size (a
10 MB message would be refused by the dead-letter topic itself, and the ingester could then neither use
nor dead-letter it), and the headers say so. Headers:

    juno-dlq-reason        what was wrong, in words (e.g. "raw:X is already registered with different content ...")
    juno-dlq-code          malformed | bad_name | inconsistent | unsupported_version | unknown_stream | future |
                           path_mismatch | conflict | not_on_storage | size_mismatch | late | rejected (Rucio
                           refused the file; the reason is the server's) | internal (a bug of ours)
    juno-original-topic, juno-original-partition, juno-original-offset, juno-original-timestamp
    juno-original-size     the original value's size in bytes ("" for a null value)
    juno-original-sha256   its SHA-256 (hex): identifies it even when truncated
    juno-dlq-truncated     "value", "key" or "value,key" when the stored bytes are the first part only
    juno-original-key-size the original key's size in bytes
    juno-dlq-ingester      juno-ingest/<version> <host> pid <pid>
    juno-dlq-at            when it was dead-lettered (RFC 3339, UTC)

The reason is at most REASON_MAX bytes (reasons quote values shortened already: edge.show).

Dead letters are produced, and their delivery confirmed, before the batch's offsets are committed: a
crash in between sends them again after the restart, so a dead letter may appear twice;
(original topic, partition, offset) identifies it.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message, Producer

from juno_ingest import __version__
from juno_ingest.delivery import Record, deliver
from juno_ingest.pipeline import Incoming, Outcome

REASON, CODE = "juno-dlq-reason", "juno-dlq-code"
TOPIC, PARTITION, OFFSET, TIMESTAMP = ("juno-original-topic", "juno-original-partition", "juno-original-offset",
                                       "juno-original-timestamp")
INGESTER, AT = "juno-dlq-ingester", "juno-dlq-at"
SIZE, SHA256, TRUNCATED, KEY_SIZE = ("juno-original-size", "juno-original-sha256", "juno-dlq-truncated",
                                     "juno-original-key-size")
VALUE_MAX = 256 * 1024
KEY_MAX = 1024
REASON_MAX = 2000


class DeadLetterError(Exception):
    """Dead letters could not be delivered; the batch is not committed and will be retried."""


@dataclass(frozen=True)
class DeadLetter:
    """A message read back from the dead-letter topic (the CLI's `dlq` command, tests)."""

    reason: str
    code: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    size: int | None = None  # the original value's size (None: a null value, or an older dead letter)
    sha256: str = ""
    truncated: str = ""  # "value", "key" or "value,key": what is stored is the first part only

    @classmethod
    def from_message(cls, msg: Message) -> DeadLetter:
        raw = msg.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = {str(k): (v.decode(errors="replace") if isinstance(v, bytes) else str(v)) for k, v in pairs}

        def number(name: str) -> int | None:
            text = headers.get(name, "")
            return int(text) if text.lstrip("-").isdigit() else None

        partition, offset = number(PARTITION), number(OFFSET)
        return cls(reason=headers.get(REASON, ""), code=headers.get(CODE, ""), topic=headers.get(TOPIC, ""),
                   partition=-1 if partition is None else partition, offset=-1 if offset is None else offset,
                   key=msg.key(), value=msg.value(), size=number(SIZE), sha256=headers.get(SHA256, ""),
                   truncated=headers.get(TRUNCATED, ""))

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "topic": self.topic, "partition": self.partition,
                "offset": self.offset, "key": self.key.decode(errors="replace") if self.key else None,
                "value": self.value.decode(errors="replace") if self.value else None,
                "size": self.size, "sha256": self.sha256, "truncated": self.truncated}


def _cut(data: bytes | None, limit: int) -> bytes | None:
    return data if data is None or len(data) <= limit else data[:limit]


def stored(item: Incoming, max_value_bytes: int = VALUE_MAX) -> tuple[bytes | None, bytes | None, str]:
    """(value, key) as the dead-letter topic keeps them, and what was truncated ("" if nothing)."""
    cut = [name for name, data, limit in (("value", item.value, max_value_bytes), ("key", item.key, KEY_MAX))
           if data is not None and len(data) > limit]
    return _cut(item.value, max_value_bytes), _cut(item.key, KEY_MAX), ",".join(cut)


def headers_for(item: Incoming, outcome: Outcome, now: datetime | None = None, truncated: str = ""
                ) -> list[tuple[str, str | bytes | None]]:
    now = now or datetime.now(UTC)
    reason = outcome.reason.encode("utf-8", "backslashreplace")
    if len(reason) > REASON_MAX:
        reason = reason[:REASON_MAX - 3] + b"..."
    value = item.value
    return [
        (REASON, reason), (CODE, outcome.code.encode()),
        (TOPIC, item.position.topic.encode()), (PARTITION, str(item.position.partition).encode()),
        (OFFSET, str(item.position.offset).encode()),
        (TIMESTAMP, str(item.timestamp_ms if item.timestamp_ms is not None else "").encode()),
        (SIZE, str(len(value)).encode() if value is not None else b""),
        (SHA256, hashlib.sha256(value).hexdigest().encode() if value is not None else b""),
        (KEY_SIZE, str(len(item.key)).encode() if item.key is not None else b""),
        *([(TRUNCATED, truncated.encode())] if truncated else []),
        (INGESTER, f"juno-ingest/{__version__} {socket.gethostname()} pid {os.getpid()}".encode()),
        (AT, now.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
    ]


class DeadLetterProducer:
    def __init__(self, conf: Mapping[str, Any], topic: str, *, timeout_s: float = 30.0,
                 max_value_bytes: int = VALUE_MAX) -> None:
        settings = dict(conf)
        self.max_value_bytes = max_value_bytes
        # Every dead letter must be stored before we commit past its message.
        settings.setdefault("acks", "all")
        settings.setdefault("linger.ms", 5)
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = Producer(settings)

    def send(self, letters: Sequence[tuple[Incoming, Outcome]]) -> None:
        """Produce and wait for every delivery; DeadLetterError if any failed (nothing is committed then)."""
        if not letters:
            return
        now = datetime.now(UTC)

        def records() -> Iterator[Record]:
            for item, outcome in letters:
                value, key, truncated = stored(item, self.max_value_bytes)
                yield key, value, headers_for(item, outcome, now, truncated)

        problem = deliver(self._producer, self.topic, records(), timeout_s=self.timeout_s, noun="dead letter")
        if problem:
            raise DeadLetterError(problem)

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
