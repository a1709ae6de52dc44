"""juno-ingest against the live grid: real Rucio, real Kafka (Tansu), real XRootD. Nothing mocked.

Sizes are moderate by default so the suite stays fast; JUNO_TEST_INGEST_FULL=1 runs the issue's full
acceptance sizes (5,000 messages over 3 days x 2 streams; 10 kill -9 during 10,000 messages; Rucio
stopped 30 s; 1,000 malformed or conflicting messages mixed in).

The grid is shared: every test uses its own topics, consumer groups and streams (from a uuid), stops
only the processes it started, stops the Rucio server only briefly (the outage test), and deletes the
rules it made on its test blocks at the end so the daemons do not copy test data around.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from ingest_helpers import (  # tests/ is on sys.path (pytest rootdir import)
    Child,
    child_env,
    endpoint_of,
    free_port,
    ingest_config,
    publish_plan,
    read_events,
    read_originals,
    unique_streams,
    unique_tag,
    utc_today,
)

from juno_ingest import simulate as sim
from juno_ingest import verify
from juno_ingest.consumer import DeadLetterLimitExceeded, Ingester
from juno_ingest.storage_check import Endpoint
from rucio_policy import naming

pytestmark = pytest.mark.grid

FULL = os.environ.get("JUNO_TEST_INGEST_FULL", "") not in ("", "0")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def endpoint(grid: Any) -> Endpoint:
    return endpoint_of(grid)


@pytest.fixture
def blocks_to_clean(grid: Any) -> Iterator[set[str]]:
    blocks: set[str] = set()
    yield blocks
    if blocks:
        verify.cleanup_rules(grid.client(), sorted(blocks))


def test_days_and_streams_become_blocks_with_rules(grid: Any, endpoint: Endpoint, blocks_to_clean: set[str]) -> None:
    files = 5000 if FULL else 600
    streams = unique_streams(2)
    topic = f"ingest-accept-{unique_tag()}"
    plan = sim.make_plan(sim.SimSpec(files=files, size=256, days=3, streams=streams, duplicates=files // 20,
                                     reorder=50, files_per_run=100, prefix=endpoint.prefix))
    blocks_to_clean |= set(plan.expected_blocks())
    sim.write_files(plan, endpoint)
    publish_plan(grid, plan, topic)

    summary = Ingester(ingest_config(grid, topic, streams)).run(once=True)

    assert (summary.registered, summary.duplicates, summary.dead_lettered) == (files, files // 20, 0), summary
    assert len(plan.expected_blocks()) == 6
    client = grid.client()
    today = utc_today()
    problems = verify.check_rucio(client, plan, closed_before=today, open_from=today)
    assert not problems, problems
    # Past days' blocks are closed with their placement decided (IN2P3's third); rules follow the record.
    decided = {}
    for block in plan.expected_blocks():
        meta = client.get_metadata("raw", block, plugin="ALL")
        if not meta["is_open"]:
            decided[block] = str(meta.get("juno_place_raw_in2p3_third", ""))
    assert len(decided) == 4 and all(v.startswith("v1;") for v in decided.values()), decided
    placed = [b for b, v in decided.items() if ";placed;" in v]
    print(f"IN2P3 placed on {len(placed)} of {len(decided)} closed blocks (balanced over every raw block of the grid)")

    # A file received on a day whose block is closed cannot join it: dead letter "late", nothing registered.
    past = min(decided)
    late = sim.make_plan(sim.SimSpec(files=1, size=64, streams=(streams[0],), last_day=naming.parse_block(past).day,
                                     prefix=endpoint.prefix))
    sim.write_files(late, endpoint)
    publish_plan(grid, late, topic)
    summary = Ingester(ingest_config(grid, topic, streams)).run(once=True)
    assert summary.dead_codes == Counter({"late": 1}), summary


# -- dead letters, conflicts, and a full replay --------------------------------------------------


def test_bad_messages_are_dead_lettered_with_reasons_and_replay_changes_nothing(
        grid: Any, endpoint: Endpoint, blocks_to_clean: set[str]) -> None:
    valid, malformed, conflicts = (4000, 750, 250) if FULL else (300, 45, 15)
    streams = unique_streams(2)
    topic = f"ingest-dlq-{unique_tag()}"
    plan = sim.make_plan(sim.SimSpec(files=valid, size=128, days=2, streams=streams, duplicates=20, reorder=20,
                                     malformed=malformed, conflicts=conflicts, prefix=endpoint.prefix))
    blocks_to_clean |= set(plan.expected_blocks())
    sim.write_files(plan, endpoint)
    publish_plan(grid, plan, topic)
    port = free_port()
    cfg = ingest_config(grid, topic, streams, metrics={"port": port})

    # Run it in a thread to scrape its Prometheus endpoint (loopback) while it idles before exiting.
    ingester = Ingester(cfg)
    done: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: done.setdefault("summary", ingester.run(once=True)))
    thread.start()
    scraped = ""
    while thread.is_alive():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                scraped = response.read().decode()
        except OSError:
            pass
        if f"juno_ingest_files_registered_total {float(valid)}" in scraped:
            break
        time.sleep(0.1)
    thread.join(300)
    summary = done["summary"]

    bad = malformed + conflicts
    assert f"juno_ingest_files_registered_total {float(valid)}" in scraped
    assert f'juno_ingest_dead_lettered_total{{reason="conflict"}} {float(conflicts)}' in scraped
    assert "juno_ingest_consumer_lag" in scraped and "juno_ingest_batch_seconds_bucket" in scraped
    assert (summary.registered, summary.duplicates, summary.dead_lettered) == (valid, 20, bad), summary
    assert summary.stopped == "idle"  # alive to the end: the limit was not reached
    letters = verify.dead_letters(grid.cfg.kafka_bootstrap, cfg.dlq.topic)
    assert len(letters) == bad
    # Each dead letter is the original message, with its origin and reason.
    originals = read_originals(grid.cfg.kafka_bootstrap, topic)
    for letter in letters:
        assert letter.topic == topic and letter.reason and letter.code
        assert originals[(letter.partition, letter.offset)] == letter.value
    want = Counter(m.code for m in plan.messages if m.expect == "dead")
    assert Counter(d.code for d in letters) == want
    conflict = next(d for d in letters if d.code == "conflict")
    assert "already registered with different content" in conflict.reason or "arrived twice" in conflict.reason
    assert not verify.check_rucio(grid.client(), plan, closed_before=utc_today(), open_from=utc_today())

    # The same topic again from the start (a new group: a full replay): no new DID, no error.
    replay = Ingester(cfg.with_overrides(kafka={"group_id": f"replay-{topic}"},
                                         dlq={"topic": f"{topic}.dlq2"})).run(once=True)
    assert (replay.registered, replay.duplicates, replay.dead_lettered) == (0, valid + 20, bad), replay
    assert not verify.check_rucio(grid.client(), plan, closed_before=utc_today(), open_from=utc_today())


def test_dead_letter_limit_stops_and_commits_nothing(grid: Any, endpoint: Endpoint) -> None:
    # SPADE announces files that are not on storage (as with a wrong RSE or storage configured):
    # the ingester stops instead of draining the topic into the dead-letter topic.
    streams = unique_streams(1)
    topic = f"ingest-limit-{unique_tag()}"
    plan = sim.make_plan(sim.SimSpec(files=40, size=64, streams=streams, prefix=endpoint.prefix))
    publish_plan(grid, plan, topic)  # files never written
    cfg = ingest_config(grid, topic, streams, dlq={"min_messages": 10, "max_ratio": 0.5})
    # However many of the 40 the first batch held when the limit was reached: the reason names them.
    with pytest.raises(DeadLetterLimitExceeded, match=r"not_on_storage x\d+"):
        Ingester(cfg).run(once=True)
    consumer = Consumer({"bootstrap.servers": grid.cfg.kafka_bootstrap, "group.id": cfg.kafka.group_id})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        consumer.close()
    assert all(tp.offset < 0 for tp in committed), committed
    assert verify.dead_letters(grid.cfg.kafka_bootstrap, cfg.dlq.topic, idle_s=2, max_wait_s=15) == []
    assert verify.raw_files_of_streams(grid.client(), streams) == {}


# -- crashes: kill -9 at random moments --------------------------------------------------------


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(grid: Any, endpoint: Endpoint, tmp_path: Path,
                                                                blocks_to_clean: set[str]) -> None:
    import random

    files, kills, batch = (10_000, 10, 200) if FULL else (600, 3, 25)
    streams = unique_streams(2)
    topic = f"ingest-kill-{unique_tag()}"
    plan = sim.make_plan(sim.SimSpec(files=files, size=128, days=2, streams=streams, duplicates=files // 50,
                                     reorder=30, prefix=endpoint.prefix))
    blocks_to_clean |= set(plan.expected_blocks())
    sim.write_files(plan, endpoint)
    publish_plan(grid, plan, topic)
    cfg = ingest_config(grid, topic, streams, batch={"max_messages": batch, "max_wait_s": 0.2},
                        rucio={"bulk_size": batch})
    env = child_env(cfg)
    log = tmp_path / "ingest.log"
    rng = random.Random()
    killed_after: list[int] = []
    for _ in range(kills):
        child = Child(env, log)
        assert child.wait_for("partitions assigned", 60), child.events()[-3:]
        # A random moment: after 0-3 committed batches, then somewhere inside the next one.
        for _ in range(rng.randrange(4)):
            done = sum(1 for e in child.events() if e.get("msg") == "batch committed")
            deadline = time.monotonic() + 30
            while sum(1 for e in child.events() if e.get("msg") == "batch committed") == done and \
                    time.monotonic() < deadline and child.proc.poll() is None:
                time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        killed_after.append(sum(1 for e in child.events() if e.get("msg") == "batch committed"))
        child.kill9()
    code, summary = Child(env, log, "--once").finish(timeout=600)
    assert code == 0, log.read_text()[-3000:]
    print(f"batches committed before each kill -9: {killed_after}; last run: {summary}")
    assert any(killed_after), "every kill came before the first commit: the test did not test much"
    problems = verify.check_rucio(grid.client(), plan, closed_before=utc_today(), open_from=utc_today())
    assert not problems, problems
    assert verify.dead_letters(grid.cfg.kafka_bootstrap, cfg.dlq.topic, idle_s=2, max_wait_s=15) == []
    # Events: at least once across the kills: every file announced, every block's creation too.
    got = read_events(grid.cfg.kafka_bootstrap, cfg.events.topic)
    assert {e.name for _, _, e in got if e.kind == "file_registered"} == {f.lfn for f in plan.files}
    assert {e.name for _, _, e in got if e.kind == "block_created"} == set(plan.expected_blocks())


# -- Rucio unreachable mid-run -----------------------------------------------------------------------


def test_rucio_outage_loses_nothing_and_the_backlog_drains(grid: Any, endpoint: Endpoint, tmp_path: Path,
                                                           blocks_to_clean: set[str]) -> None:
    from juno_grid import procs, rucio_server

    files, outage_s = (5000, 30.0) if FULL else (600, 10.0)
    streams = unique_streams(1)
    topic = f"ingest-outage-{unique_tag()}"
    plan = sim.make_plan(sim.SimSpec(files=files, size=128, days=1, streams=streams, prefix=endpoint.prefix))
    blocks_to_clean |= set(plan.expected_blocks())
    sim.write_files(plan, endpoint)
    half = len(plan.messages) // 2
    publish_plan(grid, plan, topic, plan.messages[:half])
    cfg = ingest_config(grid, topic, streams, batch={"max_messages": 50, "max_wait_s": 0.2},
                  rucio={"retry_initial_s": 0.5, "retry_max_s": 4.0, "timeout_s": 10.0})
    log = tmp_path / "ingest.log"
    child = Child(child_env(cfg), log)
    try:
        assert child.wait_for("batch committed", 60), log.read_text()[-2000:]
        stopped_at = time.monotonic()
        procs.stop(grid.cfg.run_dir, rucio_server.NAME)
        stop_s = time.monotonic() - stopped_at
        try:
            sim.publish(plan.messages[half:], grid.cfg.kafka_bootstrap, topic)  # the backlog grows meanwhile
            # The server is shared: the whole outage (stop + down + start, ~5 s) stays near outage_s.
            time.sleep(max(0.0, outage_s - (time.monotonic() - stopped_at) - 5.0))
        finally:
            restart_at = time.monotonic()
            rucio_server.start(grid.cfg)
        outage = time.monotonic() - stopped_at
        print(f"stopping took {stop_s:.1f} s, starting {time.monotonic() - restart_at:.1f} s")
        deadline = time.monotonic() + 180
        client = grid.client()
        while len(verify.raw_files_of_streams(client, streams)) < files and time.monotonic() < deadline:
            time.sleep(1)
        drained = time.monotonic() - stopped_at - outage
        child.proc.send_signal(signal.SIGTERM)  # finish the batch, commit, close
        code, summary = child.finish(timeout=60)
    finally:
        if child.proc.poll() is None:
            child.kill9()
    assert code == 0, log.read_text()[-3000:]
    retries = [e for e in child.events() if e.get("msg", "").startswith("rucio unavailable")]
    print(f"Rucio down {outage:.1f} s; {len(retries)} retries logged; backlog drained {drained:.1f} s after restart; "
          f"summary {summary}")
    assert retries, "the ingester never noticed the outage"
    assert summary["registered"] == files and summary["dead_lettered"] == 0, summary
    assert summary["stopped"] == "stop requested"
    problems = verify.check_rucio(grid.client(), plan, closed_before=None, open_from=utc_today())
    assert not problems, problems


# -- optimistic registration: duplicates and conflicts after a clean batch ------------------------


def test_duplicates_after_a_clean_batch_take_the_recheck_path(grid: Any, endpoint: Endpoint) -> None:
    """A clean batch makes the next one register without looking names up first; duplicates and a
    conflict in it must still end as duplicates and a dead letter, with Rucio unchanged for them."""
    from juno_ingest.batching import Position
    from juno_ingest.consumer import default_client_factory
    from juno_ingest.pipeline import Fate, Incoming, Pipeline
    from juno_ingest.registrar import NoRules, Registrar
    from juno_ingest.storage_check import StorageChecker

    stream = unique_streams(1)
    plan = sim.make_plan(sim.SimSpec(files=60, size=128, days=1, streams=stream, prefix=endpoint.prefix))
    sim.write_files(plan, endpoint)
    cfg = ingest_config(grid, f"unused-{unique_tag()}", stream)
    registrar = Registrar(default_client_factory(cfg), rse="IHEP-EOS", bulk_size=20, parallel=2, rules=NoRules())
    pipeline = Pipeline(registrar, StorageChecker(endpoint), prefix=endpoint.prefix, streams=frozenset(stream))
    offsets = iter(range(1_000))

    def incoming(values: list[bytes]) -> list[Incoming]:
        return [Incoming(Position("t", 0, next(offsets)), None, v) for v in values]

    first, second = plan.files[:30], plan.files[30:]
    try:
        result = pipeline.process(incoming([f.message(endpoint.prefix).to_json() for f in first]))
        assert [o.fate for o in result.outcomes] == [Fate.REGISTERED] * 30
        assert pipeline._lookup_all is False  # the next batch registers optimistically

        conflicting = first[0].message(endpoint.prefix, adler32="0badc0de").to_json()
        values = ([f.message(endpoint.prefix).to_json() for f in second[:15]]
                  + [f.message(endpoint.prefix).to_json() for f in first[:10]]  # replays of registered files
                  + [conflicting]
                  + [f.message(endpoint.prefix).to_json() for f in second[15:]])
        result = pipeline.process(incoming(values))
        fates = [o.fate for o in result.outcomes]
        assert fates.count(Fate.REGISTERED) == 30 and fates.count(Fate.DUPLICATE) == 10, result.outcomes
        [dead] = [o for o in result.outcomes if o.fate is Fate.DEAD]
        assert dead.code == "conflict" and "0badc0de" in dead.reason, dead
        assert pipeline._lookup_all is True  # a batch with duplicates: the next one looks up first
    finally:
        pipeline.close()
        registrar.close()

    client = grid.client()
    [block] = plan.expected_blocks()
    attached = [c["name"] for c in client.list_content("raw", block)]
    assert sorted(attached) == sorted(f.lfn for f in plan.files)  # each file once, none twice
    meta = client.get_metadata("raw", first[0].lfn)
    assert meta["adler32"] == first[0].adler32  # the conflict left the registered file untouched
    reps = list(client.list_replicas([{"scope": "raw", "name": f.lfn} for f in plan.files], all_states=True))
    assert all(list(r["states"].values()) == ["AVAILABLE"] for r in reps) and len(reps) == 60


def test_files_rucio_has_announced_under_new_blocks_create_no_empty_block(grid: Any, endpoint: Endpoint) -> None:
    """Files of a block that does not exist are registered without a lookup, except one per block: if
    Rucio has that one (SPADE announced known files under another day), the block's files are all
    looked up, and a block whose files are all known is never created."""
    from datetime import timedelta

    from rucio.common.exception import DataIdentifierNotFound

    from juno_ingest.batching import Position
    from juno_ingest.consumer import default_client_factory
    from juno_ingest.pipeline import Fate, Incoming, Pipeline
    from juno_ingest.registrar import NoRules, Registrar
    from juno_ingest.storage_check import StorageChecker

    stream = unique_streams(1)
    plan = sim.make_plan(sim.SimSpec(files=20, size=128, days=1, streams=stream, prefix=endpoint.prefix))
    sim.write_files(plan, endpoint)
    cfg = ingest_config(grid, f"unused-{unique_tag()}", stream)
    offsets = iter(range(1_000))

    def incoming(values: list[bytes]) -> list[Incoming]:
        return [Incoming(Position("t", 0, next(offsets)), None, v) for v in values]

    def pipeline() -> tuple[Pipeline, Registrar]:
        registrar = Registrar(default_client_factory(cfg), rse="IHEP-EOS", bulk_size=20, parallel=2, rules=NoRules())
        checker = StorageChecker(endpoint)
        return Pipeline(registrar, checker, prefix=endpoint.prefix, streams=frozenset(stream)), registrar

    known, fresh = plan.files[:15], plan.files[15]
    day_x = known[0].received_at - timedelta(days=5)  # blocks no file of this plan belongs to
    day_y = known[0].received_at - timedelta(days=6)
    first, reg1 = pipeline()
    try:
        result = first.process(incoming([f.message(endpoint.prefix).to_json() for f in known]))
        assert [o.fate for o in result.outcomes] == [Fate.REGISTERED] * 15
    finally:
        first.close()
        reg1.close()

    values = ([f.message(endpoint.prefix, received_at=day_x).to_json() for f in known[:5]]  # X: all known
              + [fresh.message(endpoint.prefix, received_at=day_y).to_json()]  # Y: its sample, new
              + [f.message(endpoint.prefix, received_at=day_y).to_json() for f in known[5:10]])  # Y: known
    second, reg2 = pipeline()  # a new process
    try:
        result = second.process(incoming(values))
        fates = [o.fate for o in result.outcomes]
        assert fates == [Fate.DUPLICATE] * 5 + [Fate.REGISTERED] + [Fate.DUPLICATE] * 5, result.outcomes
        block_x = result.outcomes[0].block
        block_y = result.outcomes[5].block
        assert block_x and block_y and block_x != block_y
        assert result.created_blocks == [block_y]

        # Y is now ensured here: after a clean batch, its files are registered without any lookup, and
        # a known file announced into it is refused by the server (one block per raw file), not attached.
        clean = second.process(incoming([f.message(endpoint.prefix, received_at=day_y).to_json()
                                         for f in plan.files[16:18]]))
        assert [o.fate for o in clean.outcomes] == [Fate.REGISTERED] * 2 and second._lookup_all is False
        mixed = second.process(incoming([known[10].message(endpoint.prefix, received_at=day_y).to_json(),
                                         plan.files[18].message(endpoint.prefix, received_at=day_y).to_json()]))
        assert [o.fate for o in mixed.outcomes] == [Fate.DUPLICATE, Fate.REGISTERED], mixed.outcomes
    finally:
        second.close()
        reg2.close()

    client = grid.client()
    with pytest.raises(DataIdentifierNotFound):
        client.get_did("raw", block_x)
    assert sorted(c["name"] for c in client.list_content("raw", block_y)) == sorted(
        f.lfn for f in [fresh, *plan.files[16:19]])
    [original] = {f.block for f in known}
    assert sorted(c["name"] for c in client.list_content("raw", original)) == sorted(f.lfn for f in known)
