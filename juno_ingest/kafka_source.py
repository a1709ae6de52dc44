"""The Kafka side of the ingester (a thin adapter): subscribe, read batches, pause while a service is
down, commit offsets, know the lag. Decisions about batches are batching.BatchPolicy's (pure).

    source = KafkaSource(cfg, metrics, policy, stopping=..., past_deadline=...)
    source.connect()
    batch, first_at = source.accumulate()     # [] when idle
    source.commit(batch)                      # highest offset + 1 per partition still owned
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from juno_ingest import group_lag
from juno_ingest.batching import BatchPolicy, Position, commit_offsets
from juno_ingest.config import IngestConfig, kafka_common
from juno_ingest.logs import fields
from juno_ingest.metrics import IngestMetrics
from juno_ingest.pipeline import Incoming

log = logging.getLogger("juno_ingest.consumer")

# Kafka settings the ingester's guarantees depend on: users cannot override these.
_FORCED = {"enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": False}
_DEFAULTS = {"auto.offset.reset": "earliest",
             # DESIGN.md: with the default 45 s, the first assignment on Tansu takes ~23 s instead of ~3 s.
             "session.timeout.ms": 6000}


class KafkaSetupError(Exception):
    """Kafka is not set up as the configuration says (missing topic, no partitions assigned)."""


class KafkaSource:
    def __init__(self, cfg: IngestConfig, metrics: IngestMetrics, policy: BatchPolicy, *,
                 stopping: Callable[[], bool], past_deadline: Callable[[], bool]) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.policy = policy
        self._stopping = stopping
        self._past_shutdown_deadline = past_deadline
        self._carry: list[Incoming] = []
        self._assigned: set[tuple[str, int]] = set()
        self.ever_assigned = False
        self.group_conf: dict[str, Any] = {}
        self._lag: dict[tuple[str, int], int] = {}
        self.consumer: Any = None

    @property
    def stopping(self) -> bool:
        return self._stopping()

    def connect(self) -> None:
        common = kafka_common(self.cfg, consumer=False)
        conf = {**_DEFAULTS, **kafka_common(self.cfg), "group.id": self.cfg.kafka.group_id, **_FORCED}
        self.group_conf = conf
        self.consumer = Consumer(conf)
        try:
            topics = self.consumer.list_topics(timeout=15).topics
        except KafkaException as err:
            raise KafkaSetupError(f"cannot reach Kafka at {self.cfg.kafka.bootstrap_servers} ({err}): check "
                                  "kafka.bootstrap_servers and kafka.settings (security)") from None
        if self.cfg.kafka.topic not in topics:
            raise KafkaSetupError(f"topic {self.cfg.kafka.topic!r} does not exist on "
                                  f"{self.cfg.kafka.bootstrap_servers}: create it (SPADE publishes there, keyed by "
                                  "file name) or fix kafka.topic")
        if self.cfg.dlq.topic not in topics:
            self._create_topic(common, self.cfg.dlq.topic)
        self.consumer.subscribe([self.cfg.kafka.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        log.info("subscribed", extra=fields(topic=self.cfg.kafka.topic, group=self.cfg.kafka.group_id,
                                            dlq=self.cfg.dlq.topic, bootstrap=self.cfg.kafka.bootstrap_servers))

    @staticmethod
    def _create_topic(conf: dict[str, Any], topic: str) -> None:
        admin = AdminClient(conf)  # kept referenced until the answer: a collected client cancels its requests
        futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        try:
            futures[topic].result(15)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(f"dead-letter topic {topic!r} does not exist and cannot be created ({err}): "
                                      "create it or fix dlq.topic") from err

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self.ever_assigned = True
        log.info("partitions assigned", extra=fields(partitions=sorted(p.partition for p in partitions)))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._assigned -= gone
        # Messages read from them but not handled yet go back to Kafka (the next owner reads them
        # from the committed offset): keeping them would only mean committing for a partition we lost.
        self._carry = [m for m in self._carry if (m.position.topic, m.position.partition) not in gone]
        for key in gone:
            self._lag.pop(key, None)
        log.info("partitions revoked", extra=fields(partitions=sorted(p.partition for p in partitions)))

    def accumulate(self) -> tuple[list[Incoming], float | None]:
        """A batch: until full, or max_wait_s after its first message, or the stop flag. ([] when idle.)"""
        batch, self._carry = self._carry, []
        first_at = time.monotonic() if batch else None
        while not self.stopping and not self.policy.full(len(batch)):
            msgs = self._read(self.policy.max_messages - len(batch), first_at)
            for msg in msgs:
                item = self._incoming(msg)
                if item is not None:
                    batch.append(item)
                    first_at = first_at or time.monotonic()
            self.update_lag()
            if not batch:
                return [], None
            if not msgs or self.policy.due(len(batch), first_at, time.monotonic()):
                break  # nothing more came within linger_s (or the batch is full or old): it goes
        return batch, first_at

    def _read(self, want: int, first_at: float | None) -> list[Message]:
        """Up to `want` messages: what is already fetched at once; else, for an empty batch, wait up to 0.5 s
        for the first one, and for a started batch up to linger_s for more. (librdkafka's consume() with a
        timeout returns only when it has `want` messages or the timeout is over: a lone message would
        always wait the whole timeout.)"""
        msgs = self.consumer.consume(num_messages=want, timeout=0)
        if msgs:
            return msgs
        if first_at is not None:
            return self.consumer.consume(num_messages=want, timeout=self.policy.wait_left(first_at, time.monotonic()))
        first = self.consumer.poll(0.5)  # returns as soon as a message (or an error event) is there
        if first is None:
            return []
        return [first, *self.consumer.consume(num_messages=want - 1, timeout=0)] if want > 1 else [first]

    def _incoming(self, msg: Message) -> Incoming | None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaSetupError(f"Kafka consumer error (fatal): {err}")
            log.warning("Kafka consumer error", extra=fields(error=str(err)))
            return None
        ts_type, ts = msg.timestamp()
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None  # a message without error has them
        return Incoming(Position(topic, partition, offset), msg.key(), msg.value(), ts if ts_type else None)


    def wait_paused(self, seconds: float) -> None:
        """Wait without reading further but still polling, so the group does not evict us."""
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                if self._past_shutdown_deadline():
                    break
                msg = self.consumer.poll(min(left, 0.5))
                if msg is not None:
                    item = self._incoming(msg)
                    if item is not None:
                        self._carry.append(item)  # never drop what was read: it goes first in the next batch
        finally:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)


    def commit(self, batch: list[Incoming]) -> None:
        offsets = commit_offsets(m.position for m in batch)
        # Only partitions we still own: after a rebalance the new owner re-reads from its committed offset.
        tps = [TopicPartition(t, p, off) for (t, p), off in sorted(offsets.items()) if (t, p) in self._assigned]
        if not tps:
            return
        for attempt in range(3):
            try:
                self.consumer.commit(offsets=tps, asynchronous=False)
                for tp in tps:
                    self.metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(tp.offset)
                return
            except KafkaException as err:
                log.warning("offset commit failed; Rucio holds the batch, so a replay only finds duplicates",
                            extra=fields(error=str(err), attempt=attempt + 1))
                time.sleep(0.5 * (attempt + 1))


    def _partition_lag(self, tp: TopicPartition) -> int | None:
        """Messages published but not yet read in one partition; None when that cannot be known yet."""
        try:
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high is None or high < 0:  # no fetch answered yet (just assigned): ask the broker
                low, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            [pos] = self.consumer.position([tp])
            offset = pos.offset
            if offset < 0:  # nothing read yet: we start from the committed offset, or the beginning
                [committed] = self.consumer.committed([tp], timeout=5)
                offset = committed.offset if committed.offset >= 0 else low
        except KafkaException:
            return None
        if high is None or high < 0 or offset < 0:
            return None
        return high - offset

    def update_lag(self) -> bool:
        """Refresh the lag of every assigned partition; whether all of them are known."""
        known = True
        for topic, partition in list(self._assigned):
            lag = self._partition_lag(TopicPartition(topic, partition))
            if lag is None:
                known = False
                continue
            self._lag[(topic, partition)] = lag
            self.metrics.lag.labels(topic, str(partition)).set(lag)
        return known

    def caught_up(self) -> bool:
        """Everything published so far was read: every assigned partition's lag is known and none is left.
        (Right after an assignment nothing is known yet: that is not caught up, or a restart would close
        a day's blocks before reading that day's remaining messages.)"""
        known = self.update_lag()
        return bool(self.ever_assigned) and known and all(
            self._lag.get(tp, 1) <= 0 for tp in self._assigned)


    def group_caught_up(self) -> bool:
        """Every partition of the topic read to its end by the whole group, also the partitions other
        instances own (group_lag.py): closing a day waits for that."""
        return group_lag.group_caught_up(self.group_conf, self.cfg.kafka.topic)

    def close(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as err:
                log.warning("closing the Kafka consumer", extra=fields(error=str(err)))
