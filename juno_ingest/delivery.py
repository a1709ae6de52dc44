"""Produce records and wait until the broker holds every one (the dead-letter and event producers).

Both must be sure before the batch behind them is committed: a record the broker did not confirm is
a reason to retry the batch, never to go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, Any]] | None]  # key, value, headers


def deliver(producer: Producer, topic: str, records: Iterable[Record], *, timeout_s: float, noun: str) -> str | None:
    """Produce every record to `topic` and wait for the broker; None when all are stored, else what went
    wrong, in words (`noun` names the records: "dead letter", "event")."""
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    try:
        for key, value, headers in records:
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
                    break
                except BufferError:  # local queue full: let librdkafka send some first
                    producer.poll(0.1)
        left = producer.flush(timeout_s)
    except KafkaException as err:
        return f"cannot produce to {noun} topic {topic}: {err}"
    if left:
        return f"{left} {noun}(s) not confirmed by the broker within {timeout_s:.0f} s (topic {topic})"
    if errors:
        return f"{len(errors)} {noun}(s) not stored in topic {topic}: {errors[0]}"
    return None
