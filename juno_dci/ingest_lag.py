"""How far the ingester is behind SPADE: Kafka messages published but not yet committed by its group.

Read from Kafka itself (committed offsets of the ingester's consumer group vs each partition's high
watermark), not from the ingester's /metrics: that answer is right even when the ingester is down,
which is exactly when it matters. When the ingester's metrics endpoint answers, a few of its
counters are added (files registered, dead-lettered) and it counts as running.

Topic, group and broker come from the ingester's own configuration (juno_ingest.config: etc/ingest.yaml,
JUNO_INGEST_* variables), so both always look at the same place.
"""

from __future__ import annotations

import logging
import re
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_TIMEOUT_S = 2.0
_METRIC = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")
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
    members: int = 0
    partitions: list[PartitionLag] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_url: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _settings() -> Any:
    """The ingester's configuration; its defaults when etc/ingest.yaml is not there (yet)."""
    import os

    from juno_ingest import config

    path = Path(os.environ.get(config.CONFIG_ENV) or config.DEFAULT_FILE)
    return config.load(path) if path.is_file() else config.IngestConfig()


def _quiet_logger() -> logging.Logger:
    # librdkafka reports refused connections on stderr by default; they belong in the status, not there.
    logger = logging.getLogger("juno_dci.kafka")
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
    if cfg.metrics.port and cfg.metrics.host in ("127.0.0.1", "localhost", "::1"):
        out.metrics_url = f"http://{cfg.metrics.host}:{cfg.metrics.port}/metrics"
        out.metrics = _scrape(out.metrics_url)
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
        committed: dict[int, int] = {}
        if kafka.group_id in group_ids:
            described = admin.describe_consumer_groups([kafka.group_id], request_timeout=_TIMEOUT_S)
            out.members = len(described[kafka.group_id].result().members)
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
    if kafka.group_id not in group_ids:
        out.state = "running" if out.metrics else "not running"
        waiting = f"; {out.lag} message(s) wait on {kafka.topic}" if out.lag else ""
        out.detail = f"no consumer group {kafka.group_id!r} on {kafka.bootstrap_servers}{waiting}"
    elif out.members or out.metrics:
        out.state = "running"
        out.detail = f"group {kafka.group_id!r}: {out.members} member(s)"
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
    from confluent_kafka import Consumer

    # A consumer that never subscribes or commits: it only asks for watermarks and joins no group.
    consumer = Consumer({**conf, "group.id": "juno-dci-status", "enable.auto.commit": False})
    try:
        out = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(topic_partition(topic, partition), timeout=_TIMEOUT_S)
            done = committed.get(partition)
            out.append(PartitionLag(partition, done, high, max(0, high - (done if done is not None else low))))
        return out
    finally:
        consumer.close()
