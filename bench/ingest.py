"""Benchmark: juno-ingest against the raw Rucio bulk API, and its latency at JUNO's nominal rate.

Figures, all measured in this run against the same Rucio server:
  files_per_s          files registered by the ingester / its window, with messages already in Kafka: from the
                       first message read to the last commit, plus the time it spends closing blocks and deciding
                       their placement afterwards (the idle wait before that is not counted). Validation, Rucio
                       lookup, storage stat (xrdfs), block and container creation, the policy's rules
                       (rucio_policy.engine), registration and attachment, dead-letter checks, the ingest events
                       (published and confirmed by the broker before each commit; block_closed while closing),
                       offset commits and closing all inside the window
  ceiling_files_per_s  the raw bulk API on the same number of new files, with the ingester's own call: one
                       attach_dids(scope, block, files, rse=IHEP-EOS) per chunk of the same size (replica and
                       attachment in one transaction), with the same number of parallel clients, into blocks made
                       beforehand with the same policy rules (no validation, no lookup, no storage check; the
                       judge's work on attaches to ruled datasets loads both alike); measured before and after the
                       ingester, the mean of the two. ceiling_without_rules_files_per_s: the same into blocks
                       without rules, for reference
  ratio                files_per_s / ceiling_files_per_s   (target >= 0.8; files_per_s target >= 1,000)
  instances            with --instances N: the same work (new files, a topic of 6 partitions) ingested by 1, 2, ...
                       N `juno-ingest run` processes in one consumer group, each its own process as in
                       production; files/s from the first batch's first read to the last commit of any
                       instance, and its ratio to the same ceiling
  latency_median_s     JUNO's nominal rate is about one file a minute; replayed 60x faster (one message a
                       second, received_at = publication time) into a running ingester: median time from
                       publishing a message to its file being in Rucio (polled with get_did)   (target < 2 s)

The grid's background daemon loop (if it runs) is paused while the benchmark measures: what the judge does
afterwards with the new files (locks, transfer requests) is the daemons' work, done asynchronously, and would
otherwise land on whichever figure is measured next. Every test block's rules are deleted at the end, so the
grid's daemons do not copy the benchmark's files around.

Run from the repository root (as root; it joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/ingest.py [--files 5000] [--batch 1000] [--bulk 500] [--parallel 2] [--instances 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from juno_grid import grid
from juno_grid.config import load


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=5000, help="files for the throughput run")
    parser.add_argument("--size", type=int, default=1024, help="bytes per file")
    parser.add_argument("--batch", type=int, default=2000, help="ingester batch (messages)")
    parser.add_argument("--bulk", type=int, default=500, help="files per Rucio call, ingester and ceiling")
    parser.add_argument("--parallel", type=int, default=2, help="Rucio calls in flight, ingester and ceiling")
    parser.add_argument("--latency-files", type=int, default=40, help="messages for the latency run")
    parser.add_argument("--latency-rate", type=float, default=1.0,
                        help="messages per second for the latency run (nominal: 1/60; default 60x faster)")
    parser.add_argument("--keep-rules", action="store_true", help="leave the test blocks' rules in place")
    parser.add_argument("--no-rules", action="store_true",
                        help="diagnostic: the ingester gives blocks no rules (then the figures miss their cost)")
    parser.add_argument("--no-events", action="store_true",
                        help="diagnostic: the ingester publishes no ingest events (then the figures miss their cost)")
    parser.add_argument("--instances", type=int, default=0,
                        help="also ingest the same work with 1..N ingester processes in one consumer group")
    parser.add_argument("-v", "--verbose", action="store_true", help="the ingester's JSON logs on stderr")
    args = parser.parse_args()
    if args.verbose:
        from juno_ingest import logs

        logs.setup("INFO")
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=False, log=log), grid.daemons_paused(cfg, log):
        return run(args, cfg)


_ceiling_blocks: set[str] = set()


def ceiling(client_factory: Any, n: int, bulk: int, parallel: int, size: int, *, rules: bool) -> float:
    """attach_dids(..., rse=IHEP-EOS) of n new files in chunks of `bulk`, `parallel` clients: files/s (the
    single call the ingester's registrar makes: replicas registered and attached in one transaction).

    The blocks are made beforehand (not timed), with the policy's rules when `rules` (as the ingester's
    blocks have them: attaching to a dataset with rules makes Rucio's judge evaluate the new files, and
    that work competes with the attaches on the same server and database)."""
    from juno_ingest.mapping import SCOPE, plan_block
    from rucio_policy import engine

    tag = uuid.uuid4().hex[:7]
    stream = f"JUNODAQ.c{tag}"
    blocks = [plan_block(stream, day).name for day in _days(3)]
    _ceiling_blocks.update(blocks)
    client = client_factory()
    client.add_dids([{"scope": SCOPE, "name": b, "type": "DATASET"} for b in blocks])
    if rules:
        for block in blocks:
            engine.ensure_block_rules(client, SCOPE, block)
    run = 1_000_000 + zlib.crc32(tag.encode()) % 8_000_000
    files = [{"scope": SCOPE, "name": f"RUN.{run}.JUNODAQ.Physics.ds-2.c{tag}.20251009140223.{i:05d}.dat",
              "bytes": size, "adler32": f"{zlib.adler32(f'{tag}{i}'.encode()):08x}"} for i in range(n)]
    # Same shape as the ingester's work: each block gets its share, in chunks of `bulk`.
    chunks = []
    for k, block in enumerate(blocks):
        share = files[k::len(blocks)]
        chunks += [(block, share[i:i + bulk]) for i in range(0, len(share), bulk)]
    clients = [client_factory() for _ in range(parallel)]
    local = threading.local()
    counter = iter(range(parallel))

    def work(item: tuple[str, list[dict[str, Any]]]) -> None:
        if not hasattr(local, "client"):
            local.client = clients[next(counter)]
        block, chunk = item
        local.client.attach_dids(SCOPE, block, chunk, rse="IHEP-EOS")

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(work, chunks))
    return n / (time.perf_counter() - started)


def _days(n: int) -> list[Any]:
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    return [today - timedelta(days=n - 1 - i) for i in range(n)]


def run(args: argparse.Namespace, grid_cfg: Any) -> int:
    from rucio.client import Client

    from juno_ingest import simulate as sim
    from juno_ingest import verify
    from juno_ingest.config import DEFAULT_FILE
    from juno_ingest.config import load as load_config
    from juno_ingest.consumer import Ingester, default_client_factory
    from juno_ingest.storage_check import Endpoint
    from rucio_policy.topology import load as load_topology

    proto = load_topology().rse("IHEP-EOS").protocols["local"]
    endpoint = Endpoint(f"{proto.hostname}:{proto.port}", "/" + proto.prefix.strip("/"))
    tag = uuid.uuid4().hex[:7]
    streams = (f"JUNODAQ.b{tag}", f"JUNODAQ.d{tag}")
    topic = f"bench-ingest-{tag}"
    bootstrap = grid_cfg.kafka_bootstrap
    base = load_config(DEFAULT_FILE, env={})
    cfg = base.with_overrides(
        kafka={"bootstrap_servers": bootstrap, "topic": topic, "group_id": f"g-{topic}"},
        dlq={"topic": f"{topic}.dlq"}, events={"topic": f"{topic}.events", "enabled": not args.no_events},
        batch={"max_messages": args.batch, "max_wait_s": 0.5},
        rucio={"bulk_size": args.bulk, "parallel": args.parallel},
        blocks={"streams": list(streams), "grace_s": 0.0, "close_check_s": 1.0},
        metrics={"port": 0}, run={"once_idle_s": 2.0}, rules={"apply": not args.no_rules})
    factory = default_client_factory(cfg)
    root = Client()
    load_before = os.getloadavg()

    with_rules = not args.no_rules
    log(f"ceiling (before): attach_dids(..., rse=IHEP-EOS) of {args.files} files, chunks of {args.bulk}, "
        f"{args.parallel} clients, blocks {'with' if with_rules else 'without'} the policy's rules ...")
    ceiling_before = ceiling(factory, args.files, args.bulk, args.parallel, args.size, rules=with_rules)
    log(f"  {ceiling_before:.0f} files/s")
    log("ceiling without rules (for reference) ...")
    ceiling_bare = ceiling(factory, args.files, args.bulk, args.parallel, args.size, rules=False)
    log(f"  {ceiling_bare:.0f} files/s")

    plan = sim.make_plan(sim.SimSpec(files=args.files, size=args.size, days=3, streams=streams, reorder=20,
                                     prefix=endpoint.prefix))
    log(f"SPADE: writing {args.files} files of {args.size} bytes to {endpoint.url}, publishing to {topic} ...")
    sim.write_files(plan, endpoint)
    sim.ensure_topic(bootstrap, topic, 3)
    sim.publish(plan.messages, bootstrap, topic)

    log("ingester: messages already in Kafka -> registered, attached, rules applied ...")
    ingester = Ingester(cfg)
    closing = _time_block_closing(ingester)
    summary = ingester.run(once=True)
    if summary.registered != args.files or summary.dead_lettered:
        log(f"the ingester did not register everything: {summary.as_dict()}")
        return 1
    blocks_total = len(plan.expected_blocks())
    if not args.no_events and summary.events_published < args.files + blocks_total:
        log(f"the ingester published {summary.events_published} events for {args.files} files and {blocks_total} "
            "blocks: fewer than one per file and block")
        return 1
    assert summary.last_commit_at is not None
    # Closing and deciding blocks after the last commit is the ingester's work too (the idle wait before it is not).
    close_after_s = sum(end - max(start, summary.last_commit_at) for start, end in closing
                        if end > summary.last_commit_at)
    window_s = summary.busy_seconds + close_after_s
    files_per_s = summary.registered / window_s
    log(f"  {files_per_s:.0f} files/s ({summary.registered} files in {window_s:.2f} s, of which {close_after_s:.2f} s "
        f"closing blocks after the last commit; {summary.batches} batches, {summary.blocks_created} blocks)")

    log("ceiling (after) ...")
    ceiling_after = ceiling(factory, args.files, args.bulk, args.parallel, args.size, rules=with_rules)
    log(f"  {ceiling_after:.0f} files/s")
    ceiling_mean = (ceiling_before + ceiling_after) / 2

    log("checking Rucio against the plan ...")
    today = _days(1)[0]
    problems = verify.check_rucio(root, plan, closed_before=today, open_from=today, policy_rules=not args.no_rules)
    if problems:
        log("Rucio does not hold what it should:\n  " + "\n  ".join(problems))
        return 1

    log(f"latency: {args.latency_files} messages at {args.latency_rate}/s into a running ingester ...")
    latencies = latency_run(args, cfg, endpoint, bootstrap, root)
    median = statistics.median(latencies)
    p90 = sorted(latencies)[int(0.9 * (len(latencies) - 1))]
    log(f"  median {median:.2f} s, p90 {p90:.2f} s, max {max(latencies):.2f} s")

    scaling = []
    for k in range(1, args.instances + 1):
        log(f"scale-out: {args.files} files, {k} ingester process(es) in one consumer group ...")
        k_files_per_s, k_blocks = instances_run(k, args, cfg, endpoint, bootstrap, root)
        _ceiling_blocks.update(k_blocks)
        scaling.append({"instances": k, "files_per_s": round(k_files_per_s, 1),
                        "ratio": round(k_files_per_s / ceiling_mean, 3)})
        log(f"  {k_files_per_s:.0f} files/s, ratio {k_files_per_s / ceiling_mean:.2f}")

    blocks = set(plan.expected_blocks())
    if not args.keep_rules:
        deleted = verify.cleanup_rules(root, sorted(blocks | _latency_blocks | _ceiling_blocks))
        log(f"deleted {deleted} rules of the benchmark's blocks")
        # Gone for good before the daemon loop resumes: its judge would otherwise first give the files locks
        # and transfers, for the cleaner to remove again.
        from juno_grid import daemons

        time.sleep(1.5)
        daemons.run_once(["judge-cleaner"])
    result = {
        "ratio": round(files_per_s / ceiling_mean, 3),
        "files_per_s": round(files_per_s, 1),
        "ceiling_files_per_s": round(ceiling_mean, 1),
        "ceiling_before_files_per_s": round(ceiling_before, 1),
        "ceiling_after_files_per_s": round(ceiling_after, 1),
        "ceiling_without_rules_files_per_s": round(ceiling_bare, 1),
        "latency_median_s": round(median, 3),
        "latency_p90_s": round(p90, 3),
        "latency_rate_per_s": args.latency_rate,
        "window_s": round(window_s, 3),
        "closing_after_last_commit_s": round(close_after_s, 3),
        "files": summary.registered,
        "batches": summary.batches,
        "blocks": summary.blocks_created,
        "events": not args.no_events,
        "events_published": summary.events_published,
        "batch": args.batch, "bulk": args.bulk, "parallel": args.parallel, "rules": not args.no_rules,
        "instances": scaling,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"ingester {files_per_s:.0f} files/s vs bulk API {ceiling_mean:.0f} files/s: ratio {result['ratio']}; "
          f"latency median {median:.2f} s at {args.latency_rate} msg/s")
    print(json.dumps(result))
    return 0


_latency_blocks: set[str] = set()
PARTITIONS = 6


def instances_run(k: int, args: argparse.Namespace, cfg: Any, endpoint: Any, bootstrap: str,
                  root: Any) -> tuple[float, set[str]]:
    """The same work ingested by k `juno-ingest run --once` processes sharing one consumer group: files/s."""
    import subprocess
    import tempfile
    from datetime import datetime
    from pathlib import Path

    import yaml

    from juno_ingest import simulate as sim
    from juno_ingest import verify

    tag = uuid.uuid4().hex[:7]
    streams = (f"JUNODAQ.i{tag}", f"JUNODAQ.j{tag}")
    topic = f"bench-scale-{tag}"
    plan = sim.make_plan(sim.SimSpec(files=args.files, size=args.size, days=3, streams=streams, reorder=20,
                                     prefix=endpoint.prefix))
    sim.write_files(plan, endpoint)
    sim.ensure_topic(bootstrap, topic, PARTITIONS)
    sim.publish(plan.messages, bootstrap, topic)
    kcfg = cfg.with_overrides(kafka={"topic": topic, "group_id": f"g-{topic}"}, dlq={"topic": f"{topic}.dlq"},
                              events={"topic": f"{topic}.events"},
                              blocks={"streams": list(streams)}, run={"once_idle_s": 5.0})
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        config = Path(tmp) / "ingest.yaml"
        sections = {k: v for k, v in kcfg.as_dict(hide_secrets=False).items() if isinstance(v, dict)}
        config.write_text(yaml.safe_dump(sections))
        logs = [Path(tmp) / f"ingest-{i}.log" for i in range(k)]
        procs = [subprocess.Popen([sys.executable, "-m", "juno_ingest", "run", "--once", "--json", "--config",
                                   str(config)], stdout=subprocess.DEVNULL, stderr=log_path.open("w"))
                 for log_path in logs]
        codes = [p.wait(1800) for p in procs]
        if any(codes):
            raise RuntimeError(f"an ingester exited with {codes}: " + logs[codes.index(max(codes))].read_text()[-2000:])
        starts, ends, registered = [], [], 0
        for log_path in logs:
            for line in log_path.read_text().splitlines():
                event = json.loads(line) if line.startswith("{") else {}
                if event.get("msg") == "batch committed":
                    end = datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()
                    starts.append(end - float(event["seconds"]))
                    ends.append(end)
                    registered += int(event["registered"])
    if registered != args.files:
        raise RuntimeError(f"{k} instance(s) registered {registered} of {args.files} files")
    problems = verify.check_rucio(root, plan, closed_before=_days(1)[0], open_from=_days(1)[0],
                                  policy_rules=not args.no_rules)
    if problems:
        raise RuntimeError("Rucio does not hold what it should:\n  " + "\n  ".join(problems[:20]))
    return registered / (max(ends) - min(starts)), set(plan.expected_blocks())


def _time_block_closing(ingester: Any) -> list[tuple[float, float]]:
    """Wall-clock (start, end) of each call of the ingester's block closing (Ingester._close_due)."""
    inner = getattr(ingester, "_close_due", None)
    if inner is None:
        raise SystemExit("bench/ingest.py: Ingester._close_due is gone; time block closing where it moved")
    spans: list[tuple[float, float]] = []

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.time()
        try:
            return inner(*args, **kwargs)
        finally:
            spans.append((started, time.time()))

    ingester._close_due = timed
    return spans


def latency_run(args: argparse.Namespace, cfg: Any, endpoint: Any, bootstrap: str, root: Any) -> list[float]:
    from rucio.common.exception import DataIdentifierNotFound

    from juno_ingest import simulate as sim
    from juno_ingest.consumer import Ingester

    tag = uuid.uuid4().hex[:7]
    stream = f"JUNODAQ.l{tag}"
    topic = f"bench-latency-{tag}"
    plan = sim.make_plan(sim.SimSpec(files=args.latency_files, size=args.size, streams=(stream,),
                                     prefix=endpoint.prefix))
    sim.write_files(plan, endpoint)
    sim.ensure_topic(bootstrap, topic, 3)
    lcfg = cfg.with_overrides(kafka={"topic": topic, "group_id": f"g-{topic}"}, dlq={"topic": f"{topic}.dlq"},
                              events={"topic": f"{topic}.events"},
                              blocks={"streams": [stream]})
    ingester = Ingester(lcfg)
    thread = threading.Thread(target=ingester.run, kwargs={"once": False}, daemon=True)
    thread.start()
    # Wait until the consumer has its partitions, so the first message does not count the group join.
    deadline = time.monotonic() + 60
    while not ingester.source.ever_assigned and time.monotonic() < deadline:
        time.sleep(0.1)
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    latencies: list[float] = []
    started = time.monotonic()
    try:
        for k, msg in enumerate(plan.messages):
            wait = started + k / args.latency_rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            sent = time.monotonic()
            producer.produce(topic, key=msg.key, value=sim.restamp_value(msg.value))
            producer.flush(10)
            assert msg.lfn is not None
            while True:
                try:
                    root.get_did("raw", msg.lfn)
                    break
                except DataIdentifierNotFound:
                    if time.monotonic() - sent > 60:
                        raise TimeoutError(f"{msg.lfn} not registered within 60 s") from None
                    time.sleep(0.05)
            latencies.append(time.monotonic() - sent)
    finally:
        ingester.request_stop()
        thread.join(60)
    _latency_blocks.update(ingester.closer.open)
    _latency_blocks.update(n for n in (ingester.pipeline.blocks if ingester.pipeline else {}))
    return latencies


if __name__ == "__main__":
    sys.exit(main())
