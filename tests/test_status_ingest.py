"""The ingest lag of `juno-dci status`, against the grid's real Kafka broker (Tansu).

Each test uses its own topic and consumer group, pointed at through the ingester's own environment
overrides (JUNO_INGEST_KAFKA_TOPIC / _GROUP_ID), and deletes its topic afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from juno_status import ingest_lag

pytestmark = pytest.mark.grid
BOOTSTRAP = "127.0.0.1:19092"


@pytest.fixture
def topic(grid, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A 2-partition topic with 3 messages on partition 0 and 2 on partition 1."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    tag = uuid.uuid4().hex[:8]
    name, group = f"status-{tag}", f"g-status-{tag}"
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(30)
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    for partition, count in ((0, 3), (1, 2)):
        for i in range(count):
            producer.produce(name, value=f"m{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    monkeypatch.setenv("JUNO_INGEST_KAFKA_BOOTSTRAP_SERVERS", BOOTSTRAP)
    monkeypatch.setenv("JUNO_INGEST_KAFKA_TOPIC", name)
    monkeypatch.setenv("JUNO_INGEST_KAFKA_GROUP_ID", group)
    try:
        yield name, group
    finally:
        admin.delete_topics([name], operation_timeout=30)[name].result(30)


def _consumer(group: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "enable.auto.commit": False,
                     "session.timeout.ms": 6000, "auto.offset.reset": "earliest"})


def test_no_group_yet_is_not_running_and_everything_waits(topic: tuple[str, str]) -> None:
    status = ingest_lag.probe()
    assert status.state == "not running" and status.lag == 5
    assert "no consumer group" in status.detail and "5 message(s) wait" in status.detail


def test_committed_offsets_give_the_lag(topic: tuple[str, str]) -> None:
    from confluent_kafka import TopicPartition

    name, group = topic
    consumer = _consumer(group)
    consumer.commit(offsets=[TopicPartition(name, 0, 2), TopicPartition(name, 1, 2)], asynchronous=False)
    consumer.close()
    status = ingest_lag.probe()
    assert status.state == "stopped" and status.members == 0
    assert status.lag == 1
    assert [(p.partition, p.committed, p.high, p.lag) for p in status.partitions] == [(0, 2, 3, 1), (1, 2, 2, 0)]


def test_a_consuming_member_is_running(topic: tuple[str, str]) -> None:
    name, group = topic
    consumer = _consumer(group)
    consumer.subscribe([name])
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.5)
        assert consumer.assignment(), "the consumer got no partition"
        status = ingest_lag.probe()
    finally:
        consumer.close()
    assert status.state == "running" and status.lag == 5
    assert status.members in (0, 1)  # Tansu describes an active group without listing its members


def test_unreachable_broker_is_reported_not_raised(grid, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUNO_INGEST_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    status = ingest_lag.probe()
    assert status.state == "unreachable" and "127.0.0.1:1" in status.detail and status.lag is None
