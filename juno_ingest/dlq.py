"""The dead-letter topic: each message the ingester cannot use, unchanged, with why and where it came from.

Value and key are the original bytes. Headers:

    juno-dlq-reason        what was wrong, in words (e.g. "raw:X is already registered with different content ...")
    juno-dlq-code          malformed | bad_name | inconsistent | unsupported_version | unknown_stream |
                           path_mismatch | conflict | not_on_storage | size_mismatch | late | rejected
    juno-original-topic, juno-original-partition, juno-original-offset, juno-original-timestamp
    juno-dlq-ingester      juno-ingest/<version> <host> pid <pid>
    juno-dlq-at            when it was dead-lettered (RFC 3339, UTC)

Dead letters are produced, and their delivery confirmed, before the batch's offsets are committed: a
crash in between sends them again after the restart, so a dead letter may appear twice;
(original topic, partition, offset) identifies it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from juno_ingest import __version__
from juno_ingest.pipeline import Incoming, Outcome

REASON, CODE = "juno-dlq-reason", "juno-dlq-code"
TOPIC, PARTITION, OFFSET, TIMESTAMP = ("juno-original-topic", "juno-original-partition", "juno-original-offset",
                                       "juno-original-timestamp")
INGESTER, AT = "juno-dlq-ingester", "juno-dlq-at"


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

    @classmethod
    def from_message(cls, msg: Message) -> DeadLetter:
        raw = msg.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = {str(k): (v.decode() if isinstance(v, bytes) else str(v)) for k, v in pairs}
        return cls(reason=headers.get(REASON, ""), code=headers.get(CODE, ""), topic=headers.get(TOPIC, ""),
                   partition=int(headers.get(PARTITION, -1)), offset=int(headers.get(OFFSET, -1)),
                   key=msg.key(), value=msg.value())

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "topic": self.topic, "partition": self.partition,
                "offset": self.offset, "key": self.key.decode(errors="replace") if self.key else None,
                "value": self.value.decode(errors="replace") if self.value else None}


def headers_for(item: Incoming, outcome: Outcome, now: datetime | None = None
                ) -> list[tuple[str, str | bytes | None]]:
    now = now or datetime.now(UTC)
    return [
        (REASON, outcome.reason.encode()), (CODE, outcome.code.encode()),
        (TOPIC, item.position.topic.encode()), (PARTITION, str(item.position.partition).encode()),
        (OFFSET, str(item.position.offset).encode()),
        (TIMESTAMP, str(item.timestamp_ms if item.timestamp_ms is not None else "").encode()),
        (INGESTER, f"juno-ingest/{__version__} {socket.gethostname()} pid {os.getpid()}".encode()),
        (AT, now.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode()),
    ]


class DeadLetterProducer:
    def __init__(self, conf: Mapping[str, Any], topic: str, *, timeout_s: float = 30.0) -> None:
        settings = dict(conf)
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
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(str(err))

        now = datetime.now(UTC)
        try:
            for item, outcome in letters:
                while True:
                    try:
                        self._producer.produce(self.topic, value=item.value, key=item.key,
                                               headers=headers_for(item, outcome, now), on_delivery=delivered)
                        break
                    except BufferError:  # local queue full: let librdkafka send some first
                        self._producer.poll(0.1)
            left = self._producer.flush(self.timeout_s)
        except KafkaException as err:
            raise DeadLetterError(f"cannot produce to dead-letter topic {self.topic}: {err}") from err
        if left:
            raise DeadLetterError(f"{left} dead letter(s) not confirmed by the broker within {self.timeout_s:.0f} s "
                                  f"(topic {self.topic})")
        if errors:
            raise DeadLetterError(f"{len(errors)} dead letter(s) not stored in topic {self.topic}: {errors[0]}")

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
