"""Ingest scales out on Kafka: several `juno-ingest run` processes in one consumer group share SPADE's
partitions. Live grid, real broker and server, nothing mocked.

Why it stays correct when two instances see the same block (messages are keyed by file name, so one
block's files arrive on every partition): creating a block, its containers and its rules is idempotent in
Rucio (DataIdentifierAlreadyExists, DuplicateRule are success), and a file attaches to one block only (the
server's one-block rule). Any instance may close a block whose day (plus blocks.grace_s) is over, but only
when the whole group has read every partition to its end (juno_ingest/group_lag.py): the test starts with
a backlog of yesterday's files, due to close at once, so an instance that closed on its own partitions'
word would dead-letter the others' files as late.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ingest_helpers import Child, child_env, ingest_config  # tests/ is on sys.path (pytest rootdir import)

from juno_ingest import simulate as sim
from juno_ingest import verify
from juno_ingest.storage_check import Endpoint
from rucio_policy import naming

pytestmark = pytest.mark.grid

PARTITIONS = 6
FULL = os.environ.get("JUNO_TEST_INGEST_FULL", "") not in ("", "0")  # the size: 10,000 messages
SESSION_TIMEOUT_S = 6.0  # session.timeout.ms of the ingester's consumer (juno_ingest: 6000)


def _assigned(child: Child) -> list[tuple[float, set[int]]]:
    out = []
    for event in child.events():
        if event.get("msg") == "partitions assigned":
            ts = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
            out.append((ts, set(event.get("partitions", []))))
    return out


def _committed(child: Child) -> int:
    return sum(1 for e in child.events() if e.get("msg") == "batch committed")


def _wait(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def test_three_instances_one_killed_one_added_ingest_everything_once(grid: Any, tmp_path: Path) -> None:
    files = 10_000 if FULL else 3_000
    streams = tuple(f"JUNODAQ.s{uuid.uuid4().hex[:7]}" for _ in range(2))
    topic = f"ingest-scale-{uuid.uuid4().hex[:8]}"
    proto = grid.topo.rse("IHEP-EOS").protocols["local"]
    endpoint = Endpoint(f"{proto.hostname}:{proto.port}", "/" + proto.prefix.strip("/"))
    plan = sim.make_plan(sim.SimSpec(files=files, size=64, days=2, streams=streams, duplicates=100, reorder=50,
                                     prefix=endpoint.prefix))
    blocks = sorted(plan.expected_blocks())
    today = datetime.now(UTC).date()
    # Yesterday's files wait in the topic (a backlog, as after an outage): their blocks are due to close
    # (grace 0) while the group still reads them. Today's files arrive while instances come and go.
    backlog = [m for m in plan.messages if m.file is not None and m.file.received_at.date() < today]
    live = [m for m in plan.messages if m not in set(backlog)]
    assert backlog and live
    sim.write_files(plan, endpoint)
    sim.ensure_topic(grid.cfg.kafka_bootstrap, topic, partitions=PARTITIONS)
    sim.publish(backlog, grid.cfg.kafka_bootstrap, topic)
    cfg = ingest_config(grid, topic, streams, batch={"max_messages": 200, "max_wait_s": 0.3}, rucio={"bulk_size": 200})
    env = child_env(cfg)
    logs = [tmp_path / f"ingest-{i}.log" for i in range(4)]
    children: list[Child] = []
    try:
        for log in logs[:3]:
            children.append(Child(env, log))
        for child in children:
            assert child.wait_for("partitions assigned", 90), child.events()[-3:]
        # Today's files arrive over about a minute, so that instances come and go while they do.
        publisher = threading.Thread(target=sim.publish, args=(live, grid.cfg.kafka_bootstrap, topic),
                                     kwargs={"rate": max(20.0, len(live) / 60)})
        publisher.start()
        victim = children[1]
        _wait("the victim's first commit", lambda: _committed(victim) >= 1, 120)
        victim_partitions = _assigned(victim)[-1][1]
        victim.kill9()
        killed_at = time.time()
        survivors = (children[0], children[2])
        _wait("the survivors to take over the victim's partitions",
              lambda: victim_partitions <= set().union(*(p for c in survivors for t, p in _assigned(c)[-1:]
                                                          if t >= killed_at)), 90)
        moved_s = min(t for c in survivors for t, p in _assigned(c) if t >= killed_at) - killed_at
        children.append(Child(env, logs[3]))  # a fourth instance joins mid-run
        assert children[3].wait_for("partitions assigned", 120), children[3].events()[-3:]
        publisher.join(300)
        _wait("every file in Rucio", lambda: len(verify.raw_files_of_streams(grid.client(), streams)) >= files, 600)
        closed = [f"raw:{b}" for b in blocks if naming.parse_block(b).day < today]
        _wait("yesterday's blocks closed", lambda: all(not grid.client().get_metadata(*b.split(":"))["is_open"]
                                                       for b in closed), 120)
        for child in (children[0], children[2], children[3]):
            child.proc.send_signal(signal.SIGTERM)
            code, _summary = child.finish(timeout=120)
            assert code == 0, child.log.read_text()[-3000:]
        print(f"victim's partitions {sorted(victim_partitions)} moved {moved_s:.1f} s after kill -9; "
              f"batches per instance: {[_committed(c) for c in children]}")
        assert moved_s < SESSION_TIMEOUT_S + 30, f"partitions moved only after {moved_s:.1f} s"
        assert _committed(children[3]) >= 1, "the added instance never committed a batch: it was not added mid-run"
        problems = verify.check_rucio(grid.client(), plan, closed_before=today, open_from=today)
        assert not problems, problems[:20]
        assert verify.dead_letters(grid.cfg.kafka_bootstrap, cfg.dlq.topic, idle_s=2, max_wait_s=15) == []
    finally:
        for child in children:
            if child.proc.poll() is None:
                child.kill9()
        verify.cleanup_rules(grid.client(), blocks)
