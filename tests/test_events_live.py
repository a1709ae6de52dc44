"""Ingest events against the live grid: SPADE messages in (Tansu), Rucio (real server), events out on
the broker. Nothing mocked.

- messages in → events out: one file_registered per file, each block's events in order on one
  partition (block_created, files, block_closed with the block's totals), and every DID an event names is
  in Rucio, attached to the event's dataset with its replica, at the moment a consumer reads the event;
- a crash after Rucio registered a batch and before its events were out: the restart announces every
  file (at least once), nothing is lost;
- an event topic the broker refuses: nothing is committed, the failure is counted and logged, ingest
  goes on once the topic is fixed and every file is announced.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from confluent_kafka import Consumer
from ingest_helpers import endpoint_of, ingest_config, publish_plan, read_events, unique_streams, unique_tag, utc_today

from juno_ingest import events, verify
from juno_ingest import simulate as sim
from juno_ingest.consumer import Ingester
from juno_ingest.mapping import SCOPE
from rucio_policy import naming

pytestmark = pytest.mark.grid


@pytest.fixture
def blocks_to_clean(grid: Any) -> Any:
    blocks: set[str] = set()
    yield blocks
    if blocks:
        verify.cleanup_rules(grid.client(), sorted(blocks))


def _plan(grid: Any, files: int, streams: tuple[str, ...], days: int = 2) -> sim.SimPlan:
    plan = sim.make_plan(sim.SimSpec(files=files, size=64, days=days, streams=streams, reorder=10,
                                     prefix=endpoint_of(grid).prefix))
    sim.write_files(plan, endpoint_of(grid))
    return plan


def test_messages_in_events_out_in_order_and_in_rucio_when_read(grid: Any, blocks_to_clean: set[str]) -> None:
    streams = unique_streams(2)
    topic = f"events-{unique_tag()}"
    plan = _plan(grid, 240, streams)
    blocks_to_clean |= set(plan.expected_blocks())
    cfg = ingest_config(grid, topic, streams, batch={"max_messages": 50, "max_wait_s": 0.2})
    sim.ensure_topic(grid.cfg.kafka_bootstrap, cfg.events.topic, 3)
    client = grid.client()

    # A consumer of the events, as juno-prod would be, that looks each file up in Rucio the moment it reads it.
    seen: list[tuple[int, Any]] = []
    missing: list[str] = []
    stop = threading.Event()
    ready = threading.Event()

    def consume() -> None:
        consumer = Consumer({"bootstrap.servers": grid.cfg.kafka_bootstrap, "group.id": f"prod-{topic}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "session.timeout.ms": 6000})
        consumer.subscribe([cfg.events.topic])
        try:
            while not stop.is_set():
                for msg in consumer.consume(500, 0.3):
                    if msg.error() is not None:
                        continue
                    event = events.parse(msg.value() or b"")
                    seen.append((msg.partition(), event))
                    if event.kind == "file_registered":
                        try:
                            client.get_did(SCOPE, event.name)
                        except Exception:  # noqa: BLE001 - a DID Rucio does not hold is the failure we look for
                            missing.append(event.name)
                if consumer.assignment():
                    ready.set()
        finally:
            consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert ready.wait(60), "the event reader got no partition"
    publish_plan(grid, plan, topic)
    ingester = Ingester(cfg)
    summary = ingester.run(once=True)
    deadline = time.monotonic() + 60
    while len(seen) < summary.events_published and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # nothing more should come
    stop.set()
    reader.join(30)

    assert summary.registered == 240 and summary.dead_lettered == 0, summary
    assert missing == [], f"{len(missing)} file event(s) read before Rucio had the DID, e.g. {missing[0]}"
    files = Counter(e.name for _, e in seen if e.kind == "file_registered")
    assert files == Counter({f.lfn: 1 for f in plan.files}), "one file_registered per file, no more, no less"
    assert len(seen) == summary.events_published
    metric = ingester.metrics.registry.get_sample_value("juno_ingest_events_published_total",
                                                        {"kind": "file_registered"})
    assert metric == 240

    # Per block: one partition, in order: block_created, its files, block_closed (closed: the past day).
    expected = plan.expected_blocks()
    by_block: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for partition, event in seen:
        by_block[event.block].append((partition, event))
    assert set(by_block) == {f"raw:{b}" for b in expected}
    today = utc_today()
    for block, items in by_block.items():
        name = block.split(":", 1)[1]
        assert len({p for p, _ in items}) == 1, f"{block}: its events are on more than one partition"
        kinds = [e.kind for _, e in items]
        assert kinds[0] == "block_created", (block, kinds[:3])
        files_of = {e.name for _, e in items if e.kind == "file_registered"}
        assert files_of == expected[name]
        closed = [e for _, e in items if e.kind == "block_closed"]
        if naming.parse_block(name).day < today:
            assert kinds[-1] == "block_closed" and len(closed) == 1, (block, kinds[-3:])
            sizes = {f.lfn: f.size for f in plan.files}
            assert (closed[0].files, closed[0].bytes) == (len(files_of), sum(sizes[n] for n in files_of))
            assert not client.get_did(SCOPE, name)["open"]
        else:
            assert not closed
        # What the events say is what Rucio holds: attached to the dataset, replica at the RSE.
        content = {str(f["name"]): f for f in client.list_files(SCOPE, name)}
        for _, e in items:
            if e.kind == "file_registered":
                assert e.dataset == block and e.rse == "IHEP-EOS"
                assert (content[e.name]["bytes"], content[e.name]["adler32"]) == (e.bytes, e.adler32)


class _Crash(BaseException):
    pass


class _Crashing(Ingester):
    """Dies (as kill -9 would: nothing committed) at its second batch, after Rucio took it: before its events
    went out, or after they did but before the commit."""

    def __init__(self, *args: Any, when: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.when = when
        self.batches = 0
        self.names: dict[int, set[str]] = {}  # batch → its files (registered or duplicates)

    def _publish_batch_events(self, result: Any) -> None:
        self.batches += 1
        self.names[self.batches] = {o.plan.name for o in result.outcomes if o.plan is not None}
        if self.batches == 2 and self.when == "before events":
            raise _Crash(self.when)
        super()._publish_batch_events(result)
        if self.batches == 2:
            raise _Crash(self.when)


@pytest.mark.parametrize("when", ["before events", "after events, before the commit"])
def test_a_crash_after_rucio_repeats_events_never_loses_one(grid: Any, blocks_to_clean: set[str], when: str) -> None:
    streams = unique_streams(1)
    topic = f"events-crash-{unique_tag()}"
    plan = _plan(grid, 120, streams, days=1)
    blocks_to_clean |= set(plan.expected_blocks())
    cfg = ingest_config(grid, topic, streams, batch={"max_messages": 40, "max_wait_s": 0.2, "linger_s": 0.2})
    publish_plan(grid, plan, topic)
    crashing = _Crashing(cfg, when=when)
    with pytest.raises(_Crash):
        crashing.run(once=True)
    before = {e.name for _, _, e in read_events(grid.cfg.kafka_bootstrap, cfg.events.topic, idle_s=2)
              if e.kind == "file_registered"}
    crashed = crashing.names[2]
    assert crashed and crashed <= set(verify.raw_files_of_streams(grid.client(), streams))  # Rucio holds them
    assert before == crashing.names[1] | (crashed if when != "before events" else set())

    summary = Ingester(cfg).run(once=True)  # the restart reads the uncommitted batch again
    assert summary.duplicates >= len(crashed) and summary.dead_lettered == 0, summary
    announced = Counter(e.name for _, _, e in read_events(grid.cfg.kafka_bootstrap, cfg.events.topic)
                        if e.kind == "file_registered")
    assert set(announced) == {f.lfn for f in plan.files}, "a file registered in Rucio was never announced"
    repeated = {n for n, k in announced.items() if k > 1}
    if when == "before events":
        assert repeated == set(), "nothing was announced twice: the crash came before the events"
    else:
        assert repeated == crashed, "the crashed batch's files are announced again (at least once)"
    assert not verify.check_rucio(grid.client(), plan, closed_before=None, open_from=utc_today())


def test_an_event_topic_the_broker_refuses_commits_nothing_then_recovers(grid: Any,
                                                                          blocks_to_clean: set[str]) -> None:
    streams = unique_streams(1)
    topic = f"events-refused-{unique_tag()}"
    plan = _plan(grid, 40, streams, days=1)
    blocks_to_clean |= set(plan.expected_blocks())
    good = ingest_config(grid, topic, streams, rucio={"retry_initial_s": 0.2, "retry_max_s": 0.5},
                         run={"shutdown_timeout_s": 1.0})
    bad = good.with_overrides(events={"topic": "no topic has this name!", "timeout_s": 2.0})
    publish_plan(grid, plan, topic)
    ingester = Ingester(bad)
    thread = threading.Thread(target=ingester.run, kwargs={"once": False}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    retries = 0.0
    while time.monotonic() < deadline and retries < 2:
        retries = ingester.metrics.registry.get_sample_value("juno_ingest_retries_total", {"service": "events"}) or 0
        time.sleep(0.2)
    ingester.request_stop()
    thread.join(60)
    assert retries >= 2, "publishing to a refused topic was not retried and counted"
    assert ingester.summary.batches == 0, ingester.summary  # nothing committed
    assert "event topic" in ingester.summary.stopped
    # Rucio holds the first batch's files (the consumer may have handed over fewer than all 40).
    held = len(verify.raw_files_of_streams(grid.client(), streams))
    assert 0 < held <= 40

    # Fixed: the batch is read again (nothing was committed), its files are duplicates, and announced.
    summary = Ingester(good).run(once=True)
    assert (summary.registered, summary.duplicates) == (40 - held, held), summary
    got = read_events(grid.cfg.kafka_bootstrap, good.events.topic)
    assert {e.name for _, _, e in got if e.kind == "file_registered"} == {f.lfn for f in plan.files}
