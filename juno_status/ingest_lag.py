"""How far the ingester is behind SPADE: Kafka messages published but not yet committed by its group.

Read from Kafka itself (committed offsets of the ingester's consumer group vs each partition's high
watermark), not from the ingester's /metrics: that answer is right even when the ingester is down,
which is exactly when it matters. "Running" means the group has members; then a few counters of the
ingester's metrics endpoint (files registered, dead-lettered) are added when it answers.

Topic, group and broker come from the ingester's own configuration (juno_ingest.config: etc/ingest.yaml,
JUNO_INGEST_* variables), so both always look at the same place.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

_TIMEOUT_S = 2.0
_METRIC = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")
_ACTIVE_STATES = ("STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE")  # a group with consumers in it
_WANTED_METRICS = {
    "juno_ingest_files_registered_total": "files_registered",
    "juno_ingest_messages_consumed_total": "messages_consumed",
    "juno_ingest_dead_lettered_total": "dead_lettered",
}


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed on this partition
    high: int
    lag: int


@dataclass
class IngestStatus:
    state: str  # running | stopped | not running | unreachable | unavailable
    detail: str
    bootstrap: str = ""
    topic: str = ""
    group: str = ""
    lag: int | None = None  # messages waiting for the ingester
    members: int = 0  # as the broker lists them (Tansu lists none even for an active group)
    partitions: list[PartitionLag] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_url: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _settings() -> Any:
    """The ingester's configuration, read exactly as the ingester reads it (file, then JUNO_INGEST_*)."""
    from juno_ingest import config

    return config.load()


def _quiet_logger() -> logging.Logger:
    # librdkafka reports refused connections on stderr by default; they belong in the status, not there.
    logger = logging.getLogger("juno_status.kafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def _scrape(url: str) -> dict[str, float]:
    """A few counters from the ingester's Prometheus endpoint; {} when nothing answers (loopback only)."""
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:  # noqa: S310 - a loopback http URL we built
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match and match["name"] in _WANTED_METRICS:
            key = _WANTED_METRICS[match["name"]]
            try:
                found[key] = found.get(key, 0.0) + float(match["value"])
            except ValueError:
                continue
    return found


def probe() -> IngestStatus:
    """The ingest lag now; never raises (a status page must show "ingest: unreachable", not crash)."""
    try:
        from juno_ingest import config

        cfg = _settings()
    except Exception as err:  # noqa: BLE001 - shown as the ingest line of the status
        return IngestStatus("unavailable", f"cannot read the ingester's configuration: {err}")
    kafka = cfg.kafka
    out = IngestStatus("unavailable", "", bootstrap=kafka.bootstrap_servers, topic=kafka.topic, group=kafka.group_id)
    try:
        from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
        from confluent_kafka.admin import AdminClient
    except ImportError as err:
        out.detail = f"confluent_kafka is not installed ({err}): pip install confluent-kafka"
        return out
    conf = {**config.kafka_common(cfg), "logger": _quiet_logger(), "socket.timeout.ms": int(_TIMEOUT_S * 1000)}
    try:
        admin = AdminClient(conf)
        groups = admin.list_consumer_groups(request_timeout=_TIMEOUT_S).result()
        group_ids = {g.group_id for g in groups.valid}
        # All topics, never list_topics(topic=...): a metadata request naming a missing topic makes
        # brokers with auto-creation on (Tansu does) create it, and a status must not change anything.
        topic_md = admin.list_topics(timeout=_TIMEOUT_S).topics.get(kafka.topic)
        partitions = sorted(topic_md.partitions) if topic_md is not None and topic_md.error is None else []
        # Describe the group whether listed or not: Tansu lists only groups that have committed offsets,
        # and describes an active group as STABLE without listing its members; the state says it.
        group = admin.describe_consumer_groups([kafka.group_id], request_timeout=_TIMEOUT_S)[kafka.group_id].result()
        out.members = len(group.members)
        active = out.members > 0 or getattr(group.state, "name", "") in _ACTIVE_STATES
        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(kafka.group_id)],
                                                    request_timeout=_TIMEOUT_S)[kafka.group_id].result()
        committed = {tp.partition: tp.offset for tp in offsets.topic_partitions
                     if tp.topic == kafka.topic and tp.offset >= 0}
        out.partitions = _lags(conf, kafka.topic, partitions, committed, TopicPartition)
    except KafkaException as err:
        out.state = "unreachable"
        out.detail = f"Kafka at {kafka.bootstrap_servers} did not answer: {err.args[0] if err.args else err}"
        return out
    out.lag = sum(p.lag for p in out.partitions)
    # Running means: the configured group has members. A metrics endpoint answering on the configured
    # port may belong to an ingester with another topic or group (tests, a second instance): it is
    # read only alongside a running group, never taken as proof of one.
    if active:
        out.state = "running"
        out.detail = f"group {kafka.group_id!r} is consuming" + (f" ({out.members} member(s))" if out.members else "")
        if cfg.metrics.port and cfg.metrics.host in ("127.0.0.1", "localhost", "::1"):
            out.metrics_url = f"http://{cfg.metrics.host}:{cfg.metrics.port}/metrics"
            out.metrics = _scrape(out.metrics_url)
    elif kafka.group_id not in group_ids and not committed:
        out.state = "not running"
        waiting = f"; {out.lag} message(s) wait on {kafka.topic}" if out.lag else ""
        out.detail = f"no consumer group {kafka.group_id!r} on {kafka.bootstrap_servers}{waiting}"
    else:
        out.state = "stopped"
        out.detail = f"group {kafka.group_id!r} has no member: the ingester is not consuming"
    if not partitions:
        out.detail += f"; topic {kafka.topic!r} does not exist yet"
    return out


def _lags(conf: dict[str, Any], topic: str, partitions: list[int], committed: dict[int, int],
          topic_partition: Any) -> list[PartitionLag]:
    if not partitions:
        return []
    from confluent_kafka import Consumer, KafkaError

    # A consumer that never subscribes or commits: it asks for watermarks, reads the last record batch
    # of each partition (see below) and joins no group.
    consumer = Consumer({**conf, "group.id": "juno-dci-status", "enable.auto.commit": False,
                         "enable.partition.eof": True})
    try:
        marks = {p: consumer.get_watermark_offsets(topic_partition(topic, p), timeout=_TIMEOUT_S) for p in partitions}
        # Kafka's high watermark is the offset after the last record. Tansu (the local grid's broker)
        # answers the last record *batch*'s base offset + 1 instead, short by the batch's other records
        # (3 records produced in one batch: watermark 1). The end is therefore read from the last batch
        # itself; on a real Kafka broker that is one record per partition.
        ends = {p: high for p, (_low, high) in marks.items()}
        tails = [topic_partition(topic, p, high - 1) for p, (low, high) in marks.items() if high > low]
        if tails:
            consumer.assign(tails)
            waiting = {t.partition for t in tails}
            deadline = time.monotonic() + _TIMEOUT_S
            while waiting and time.monotonic() < deadline:
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                error, partition, offset = msg.error(), msg.partition(), msg.offset()
                if partition is None:
                    continue
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        waiting.discard(partition)
                    continue
                if offset is not None:
                    ends[partition] = max(ends[partition], offset + 1)
        out = []
        for partition in partitions:
            low = marks[partition][0]
            done = committed.get(partition)
            end = ends[partition]
            out.append(PartitionLag(partition, done, end, max(0, end - (done if done is not None else low))))
        return out
    finally:
        consumer.close()
