"""No single message can stop ingest: a hostile corpus on the live grid (real Tansu, Rucio, XRootD).

Every hostile kind (juno_ingest.hostile, 60+) goes to one of three partitions, each followed on its
partition by a valid "canary"; valid messages at every limit and plain valid ones are mixed in. Every
valid file must be registered (exactly once, in one block), every hostile message must be in the
dead-letter topic with its code, and the ingester must neither exit nor stall. Then the same corpus with
kill -9 of the ingester in the middle and a restart. And a chunk Rucio refuses as a whole is narrowed to
the files it objects to.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from ingest_helpers import Child, child_env, endpoint_of  # tests/ is on sys.path (pytest rootdir import)

from juno_ingest import hostile, verify
from juno_ingest import simulate as sim
from juno_ingest.config import DEFAULT_FILE
from juno_ingest.config import load as load_config
from juno_ingest.consumer import Ingester
from juno_ingest.mapping import SCOPE, plan_block
from juno_ingest.registrar import Registrar
from juno_ingest.storage_check import Endpoint

pytestmark = pytest.mark.grid
PARTITIONS = 3


@pytest.fixture
def endpoint(grid: Any) -> Endpoint:
    return endpoint_of(grid)


class Corpus:
    """The messages, in order per partition, and what must become of each."""

    def __init__(self, endpoint: Endpoint, stream: str) -> None:
        now = datetime.now(UTC)
        spec = sim.SimSpec(files=0, streams=(stream,), seed=None, prefix=endpoint.prefix)
        template_plan = sim.make_plan(sim.SimSpec(files=1, streams=(stream,), prefix=endpoint.prefix), now=now)
        self.cases = hostile.hostile_cases(template_plan.files[0], endpoint.prefix)
        extra = 60  # plain valid messages, so dead letters stay well under dlq.max_ratio
        valid_plan = sim.make_plan(sim.SimSpec(files=len(self.cases) + extra + 6, streams=(stream,),
                                               prefix=endpoint.prefix, files_per_run=1000), now=now)
        files = list(valid_plan.files)
        files[-1] = hostile.long_name(files[-1])  # a name of exactly 250 characters
        self.files = files
        self.plan = sim.SimPlan(spec=spec, files=files, extra_files=[], messages=[])
        # (partition, key, value, expected): expected is "valid" or the dead-letter code
        self.sends: list[tuple[int, bytes | None, bytes | None, str]] = []
        canaries = iter(files[:len(self.cases)])
        for k, case in enumerate(self.cases):
            canary = next(canaries)
            self.sends.append((k % PARTITIONS, case.key, case.value, case.code))
            self.sends.append((k % PARTITIONS, canary.lfn.encode(), canary.message(endpoint.prefix).to_json(), "valid"))
        for k, f in enumerate(files[len(self.cases):]):
            value = (hostile.at_limits(f, endpoint.prefix, k) if k < 5 else f.message(endpoint.prefix).to_json())
            self.sends.insert((7 * k) % len(self.sends), (k % PARTITIONS, f.lfn.encode(), value, "valid"))

    def publish(self, bootstrap: str, topic: str) -> dict[tuple[int, int], str]:
        """Produce in order; (partition, offset) → expected."""
        sim.ensure_topic(bootstrap, topic, PARTITIONS)
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                             "message.max.bytes": 16 << 20})
        where: dict[tuple[int, int], str] = {}
        errors: list[str] = []

        for partition, key, value, expected in self.sends:
            def delivered(err: Any, msg: Any, expected: str = expected) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    where[(msg.partition(), msg.offset())] = expected
            producer.produce(topic, key=key, value=value, partition=partition, on_delivery=delivered)
            producer.poll(0)
        assert producer.flush(60) == 0 and not errors, errors[:3]
        return where


def _config(grid: Any, topic: str, stream: str) -> Any:
    cfg = load_config(DEFAULT_FILE, env={})
    return cfg.with_overrides(
        kafka={"bootstrap_servers": grid.cfg.kafka_bootstrap, "topic": topic, "group_id": f"g-{topic}"},
        dlq={"topic": f"{topic}.dlq"}, events={"topic": f"{topic}.events"},
        blocks={"streams": [stream], "grace_s": 86400.0},
        batch={"max_messages": 40}, metrics={"port": 0}, run={"once_idle_s": 3.0})


def _check(grid: Any, corpus: Corpus, where: dict[tuple[int, int], str], topic: str) -> dict[str, Any]:
    client = grid.client()
    stream = corpus.files[0].stream
    registered = verify.raw_files_of_streams(client, [stream])
    want = {f.lfn: f for f in corpus.files}
    assert set(registered) == set(want), (sorted(set(want) - set(registered))[:3],
                                           sorted(set(registered) - set(want))[:3])
    for name, row in registered.items():
        assert (row["bytes"], row["adler32"]) == (want[name].size, want[name].adler32), name
    # every file in exactly one block: the block of its receiving day
    blocks = {f.block for f in corpus.files}
    held: dict[str, int] = {}
    for block in blocks:
        for item in client.list_content(SCOPE, block):
            held[item["name"]] = held.get(item["name"], 0) + 1
    assert held == {name: 1 for name in want}
    letters = verify.dead_letters(grid.cfg.kafka_bootstrap, f"{topic}.dlq")
    got: dict[tuple[int, int], set[str]] = {}
    for letter in letters:
        got.setdefault((letter.partition, letter.offset), set()).add(letter.code)
        assert letter.reason
    hostile_at = {pos: code for pos, code in where.items() if code != "valid"}
    assert set(got) == set(hostile_at), (sorted(set(hostile_at) - set(got))[:5], sorted(set(got) - set(hostile_at))[:5])
    wrong = {pos: (codes, hostile_at[pos]) for pos, codes in got.items() if codes != {hostile_at[pos]}}
    assert not wrong, wrong
    big = [d for d in letters if d.truncated]
    assert big and all(d.size and d.size > len(d.value or b"") and len(d.sha256) == 64 for d in big)
    return {"registered": len(registered), "dead_letters": len(letters), "unique_dead": len(got)}


def _cleanup(grid: Any, corpus: Corpus) -> None:
    verify.cleanup_rules(grid.client(), sorted({f.block for f in corpus.files}))


def test_hostile_corpus_with_canaries_every_valid_file_registered(grid: Any, endpoint: Endpoint) -> None:
    stream = f"JUNODAQ.h{uuid.uuid4().hex[:7]}"
    topic = f"ingest-hostile-{uuid.uuid4().hex[:8]}"
    corpus = Corpus(endpoint, stream)
    assert len({c.kind for c in corpus.cases}) >= 30
    sim.write_files(corpus.plan, endpoint)
    where = corpus.publish(grid.cfg.kafka_bootstrap, topic)
    try:
        summary = Ingester(_config(grid, topic, stream)).run(once=True)
        assert summary.stopped == "idle"
        assert summary.registered == len(corpus.files)
        print("summary", json.dumps(summary.as_dict()))
        print("check", _check(grid, corpus, where, topic))
    finally:
        _cleanup(grid, corpus)


def test_hostile_corpus_with_kill_9_and_restart_same_result(grid: Any, endpoint: Endpoint, tmp_path: Path) -> None:
    stream = f"JUNODAQ.k{uuid.uuid4().hex[:7]}"
    topic = f"ingest-hostile-kill-{uuid.uuid4().hex[:8]}"
    corpus = Corpus(endpoint, stream)
    sim.write_files(corpus.plan, endpoint)
    where = corpus.publish(grid.cfg.kafka_bootstrap, topic)
    cfg = _config(grid, topic, stream).with_overrides(batch={"max_messages": 10})
    env = child_env(cfg)
    log = tmp_path / "ingest.log"
    try:
        child = Child(env, log, "--once")
        assert child.wait_for("batch committed", 120), log.read_text()[-3000:]
        while sum(1 for e in child.events() if e.get("msg") == "batch committed") < 4 and child.proc.poll() is None:
            time.sleep(0.05)
        committed = sum(1 for e in child.events() if e.get("msg") == "batch committed")
        child.kill9()
        assert committed < len(corpus.sends) // 10, "the kill came after the end: nothing was tested"
        child = Child(env, log, "--once")
        code, summary = child.finish(600)
        assert code == 0, log.read_text()[-3000:]
        print("killed after", committed, "batches; restart:", summary)
        print("check", _check(grid, corpus, where, topic))
    finally:
        _cleanup(grid, corpus)


def test_a_chunk_rucio_refuses_is_narrowed_to_its_culprits(grid: Any, endpoint: Endpoint) -> None:
    """1,000 files in one block, 3 of them with values the server refuses (not messages the ingester would
    pass: its validation agrees with the server; these are built directly): 997 registered, 3 rejected
    with Rucio's own reason, and the calls counted."""
    stream = f"JUNODAQ.n{uuid.uuid4().hex[:7]}"
    now = datetime.now(UTC)
    plan = sim.make_plan(sim.SimSpec(files=1000, streams=(stream,), prefix=endpoint.prefix, files_per_run=1000),
                         now=now)
    block = plan_block(stream, now.date())
    cfg = _config(grid, "unused", stream)
    from juno_ingest.consumer import default_client_factory
    from juno_ingest.registrar import PolicyRules

    registrar = Registrar(default_client_factory(cfg), rse="IHEP-EOS", bulk_size=1000, parallel=1,
                          rules=PolicyRules())
    try:
        registrar.connect()
        registrar.setup_blocks([block])
        files = [{"scope": SCOPE, "name": f.lfn, "bytes": f.size, "adler32": f.adler32} for f in plan.files]
        bad = {3: {"md5": "not-an-md5"}, 500: {"adler32": "0a1b2c3d\n"}, 998: {"bytes": 2**63}}
        for index, change in bad.items():
            files[index] = {**files[index], **change}
        results = registrar.register({block.name: files})
        res = results[block.name]
        print("narrowed", res.narrowed, "calls", res.calls, "rejected", res.rejected)
        assert len(res.registered) == 997 and not res.recheck and not res.closed
        assert set(res.rejected) == {files[i]["name"] for i in bad}
        assert all(reason.split(":")[0] in {"InvalidObject", "InputValidationError", "DatabaseException",
                                            "RucioException", "AccessDenied"} for reason in res.rejected.values())
        assert res.narrowed == 1 and 0 < res.calls < 80
        held = {item["name"] for item in grid.client().list_content(SCOPE, block.name)}
        assert held == {f["name"] for i, f in enumerate(files) if i not in bad}
    finally:
        registrar.close()
        verify.cleanup_rules(grid.client(), [block.name])
