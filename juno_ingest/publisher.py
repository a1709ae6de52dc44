"""Ingest events (juno_ingest.events) onto Kafka: which events a batch makes (pure), and the producer.

    events = batch_events(result, rse="IHEP-EOS", at=now, confirmed=...)
    EventPublisher(conf, topic).publish(events)     # returns once the broker holds them all

Guarantee: at least once, in order per block. The consumer publishes a batch's events after Rucio holds
the batch and before it commits the batch's offsets, and waits for the broker's acknowledgement of every
one (acks=all, idempotent producer: librdkafka's retries neither reorder nor duplicate within a run).
A crash before the commit makes the restarted ingester read the batch again: its files are then
duplicates in Rucio, and a duplicate announces its file again when Rucio has it in the block the
message names (`confirmed`), so the event is repeated, not lost. A SPADE message sent again for a file
Rucio already has under another block (another receiving day) announces nothing: that file's own
message did. block_created is published for every open block this process ensures for the first time
(created now, or found open after a restart), so it too may repeat; block_closed after Rucio closed the
block, and again for recently closed blocks at start-up when blocks.streams is set (their recovery scan).

Order, per block (the Kafka key, so one partition): every file_registered comes after a block_created
(each ingester announces a block it opens before its files, so also with several ingesters in a group),
and block_closed after every file_registered of the block (a block is closed only when the whole group
has committed what it read, and events go out before the commit).

If the broker does not take the events, nothing is committed: the consumer retries with backoff
(juno_ingest_retries_total{service="events"}, a warning each time) and ingests nothing new meanwhile,
so a broken event topic stops ingest visibly and loses nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from confluent_kafka import Producer

from juno_ingest.delivery import deliver
from juno_ingest.events import IngestEvent
from juno_ingest.mapping import SCOPE
from juno_ingest.pipeline import BatchResult, Fate


class EventPublishError(Exception):
    """The broker did not confirm every event; the batch is not committed and will be published again."""


def batch_events(result: BatchResult, *, rse: str, at: datetime, confirmed: Mapping[str, set[str]],
                 streams: Mapping[str, str] | None = None) -> list[IngestEvent]:
    """A batch's events, in publishing order: block_created for the blocks it opened, then file_registered
    for each message that registered its file or found it already in its block (`confirmed`: block →
    names Rucio has attached to it), once per file, in message order."""
    streams = dict(streams or {})
    for outcome in result.outcomes:
        if outcome.plan is not None:
            streams.setdefault(outcome.plan.block.name, outcome.plan.block.stream)
    events = [IngestEvent(kind="block_created", scope=SCOPE, name=block, at=at, stream=streams[block])
              for block in result.opened_blocks if block in streams]
    seen: set[str] = set()
    for outcome in result.outcomes:
        plan = outcome.plan
        if plan is None or plan.name in seen:
            continue
        if outcome.fate is Fate.DUPLICATE and plan.name not in confirmed.get(plan.block.name, ()):
            continue
        if outcome.fate not in (Fate.REGISTERED, Fate.DUPLICATE):
            continue
        seen.add(plan.name)
        events.append(IngestEvent(kind="file_registered", scope=SCOPE, name=plan.name, at=at,
                                  dataset=f"{SCOPE}:{plan.block.name}", rse=rse, bytes=plan.size,
                                  adler32=plan.adler32, run=plan.run, stream=plan.block.stream))
    return events


def duplicate_blocks(result: BatchResult) -> dict[str, set[str]]:
    """block → the batch's duplicates planned for it (to confirm in Rucio before announcing them)."""
    out: dict[str, set[str]] = {}
    for outcome in result.outcomes:
        if outcome.fate is Fate.DUPLICATE and outcome.plan is not None:
            out.setdefault(outcome.plan.block.name, set()).add(outcome.plan.name)
    return out


class EventPublisher:
    """A Kafka producer for ingest events that returns only when the broker holds every event."""

    def __init__(self, conf: Mapping[str, Any], topic: str, *, timeout_s: float = 30.0) -> None:
        settings = dict(conf)
        settings.setdefault("acks", "all")
        settings.setdefault("enable.idempotence", True)  # retries keep order, never duplicate within a run
        settings.setdefault("linger.ms", 5)
        self.topic = topic
        self.timeout_s = timeout_s
        self._settings = settings
        self._producer = Producer(settings)

    def publish(self, events: Sequence[IngestEvent]) -> None:
        """Produce and wait for every delivery; EventPublishError if any was not stored."""
        if not events:
            return
        problem = deliver(self._producer, self.topic, ((e.key(), e.encode(), None) for e in events),
                          timeout_s=self.timeout_s, noun="event")
        if problem:
            self._reset()
            raise EventPublishError(problem)

    def _reset(self) -> None:
        """A new producer for the retry: what the failed one still queues is dropped (the retry sends it
        all again), and an idempotent producer's fatal error does not outlive the failure."""
        self._producer.purge()
        self._producer.flush(0)
        self._producer = Producer(self._settings)

    def close(self) -> None:
        self._producer.flush(self.timeout_s)
