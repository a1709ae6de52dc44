"""Whether the whole consumer group has read everything published, not only this instance's partitions.

Several ingesters in one group split SPADE's partitions, and one block's files arrive on every partition
(messages are keyed by file name). An instance that has read all of *its* partitions must not close day D
while another instance still has day D's messages in a backlog: they would arrive for a closed block and be
dead-lettered as late. So before closing, the closing instance looks at every partition of the topic: the
group's committed offset (what Rucio is known to hold) against the partition's end.

The end comes from a fetch, not from ListOffsets: a short-lived consumer with the group's id but *assigned*
partitions (it never joins the group, so it causes no rebalance, and it never commits) fetches from each
committed offset; the fetch responses carry each partition's high watermark. (Tansu, the local grid's
broker, answers ListOffsets with the start of the last record batch instead of the end of the partition;
fetches are right on Tansu and on Kafka alike.) Committed offsets trail what instances have read, so the
answer errs on the side of "not yet": a close waits for the next check, it never comes early.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition


def unread(start: Mapping[int, int], high: Mapping[int, int | None]) -> dict[int, int | None]:
    """Per partition: messages after the group's position (None: the end is not known). Pure."""
    return {p: (None if high.get(p) is None else max(0, int(high[p]) - offset)) for p, offset in start.items()}


def caught_up(start: Mapping[int, int], high: Mapping[int, int | None]) -> bool:
    """Every partition's end is known and nothing after the group's position is left. Pure."""
    left = unread(start, high)
    return bool(left) and all(n == 0 for n in left.values())


def group_caught_up(conf: Mapping[str, Any], topic: str, *, timeout_s: float = 5.0) -> bool:
    """Whether the group of `conf` (librdkafka settings with group.id) has committed every partition of
    `topic` to its end. False when anything cannot be known within timeout_s."""
    peek = Consumer({**conf, "enable.auto.commit": False, "enable.auto.offset.store": False,
                     "enable.partition.eof": False})
    try:
        partitions = sorted(peek.list_topics(topic, timeout=timeout_s).topics[topic].partitions)
        tps = [TopicPartition(topic, p) for p in partitions]
        start: dict[int, int] = {}
        for tp in peek.committed(tps, timeout=timeout_s):
            if tp.offset == OFFSET_INVALID or tp.offset < 0:
                low, _high = peek.get_watermark_offsets(tp, timeout=timeout_s, cached=False)
                start[tp.partition] = low  # nothing committed: the group starts at the beginning
            else:
                start[tp.partition] = tp.offset
        peek.assign([TopicPartition(topic, p, start[p]) for p in partitions])
        high: dict[int, int | None] = dict.fromkeys(partitions)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(h is None for h in high.values()):
            peek.consume(num_messages=len(partitions), timeout=0.2)
            for p in partitions:
                if high[p] is None:
                    _low, h = peek.get_watermark_offsets(TopicPartition(topic, p), cached=True)
                    high[p] = h if h is not None and h >= 0 else None
        return caught_up(start, high)
    except KafkaException:
        return False
    finally:
        peek.close()
