"""Benchmark: N raw blocks ingested -> every policy rule OK, through Rucio's daemons and the transfer service.

SPADE's simulator writes N blocks' files (one block per past receiving day, one fresh stream) to IHEP-EOS and
publishes their messages; the real ingester registers them, gives each block the policy's rules and closes the
blocks (IN2P3's third is decided on close). Rucio's daemons run as the grid runs them, each its own process
(`juno-grid up`; started for the benchmark if the grid runs without them), and start on each rule as it is
made: the clock runs from the first rule's creation (Rucio's created_at) to every rule seen OK.

Figures, all measured in this run on the same storages:
  all_ok_s        first rule created -> every rule of the benchmark's blocks OK (the daemons' cycles, transfer
                  submission, queueing, copies with checksum checks, polling and finishing included)
  bytes, copies   what the transfer service copied for it (its own job records; every hop counts). JINR has no
                  link from IHEP: Rucio reaches it through CNAF-DISK, and as CNAF-DISK is a destination of
                  its own, it copies IHEP -> CNAF once and CNAF -> JINR once that copy is there
  copied_twice    copies made more than once to the same destination (should be 0)
  mb_s            bytes / all_ok_s
  xrdcp_mb_s      the baseline: the copies the service made (same source -> destination storages, same sizes,
                  a copy reading CNAF only once the copy to CNAF is done), replayed in its order with plain
                  `xrdcp` in the transfer service's copy mode (read from its command line: `stream` on this
                  grid unless JUNO_FTS_COPY_MODE=tpc when it started -> plain streamed `xrdcp`; `tpc` ->
                  `xrdcp --tpc only`), as many copies at a time as the service has workers
  ratio           mb_s / xrdcp_mb_s   (end to end through Rucio vs bare copies, same mode)
  copy_window_mb_s, ratio_copy_window
                  bytes / (first copy start -> last copy end), from the service's own per-file times: the copy
                  machinery alone, without the daemons' lead-in and tail
  xrdcp_tpc_mb_s (or xrdcp_stream_mb_s when the service does TPC), ratio_other_mode
                  the replayed set once more in the other copy mode, for reference
Where the time goes (seconds): lead_s (first rule -> first copy starts), copy_active_s (some copy running),
idle_s (all_ok_s - copy_active_s), tail_s (last copy ends -> all rules seen OK); copy_busy_s (sum of single
copies), parallel_mean (copy_busy_s / copy_active_s); fts_queue_mean_s / _max_s (a file ready in the service ->
a worker picks it up; a later hop is ready when its previous hop ends); rucio_wait_mean_s / _max_s (Rucio
request created -> submitted to the service); from the first rule: rules_made_s (the last rule made: the
ingester), requests_made_s (the last transfer request made: the judge-evaluator, as files are attached),
last_submitted_s (the last request submitted to the service).

Cleanup: the blocks' rules are deleted and the reaper removes their replicas (--keep leaves both); the
baseline's copies are removed from the storages. Left behind: the raw DIDs (files without replicas, closed
blocks of a stream named JUNODAQ.r<tag>, their containers) and the two Kafka topics bench-replicate-<tag>[.dlq].

Run from the repository root (as root; it joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/replicate.py [--blocks 4] [--files-per-block 10] [--mb 8]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sqlite3
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from juno_grid import grid
from juno_grid.config import FTS_COPY_MODE, FTS_WORKERS, GridConfig, load

SOURCE_RSE = "IHEP-EOS"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- copies ------------------------------------------------------------------------------------------


@dataclass
class Copy:
    """One copy of one file; `then` are the copies that read what this one wrote (the next hop of a
    multihop, or a copy Rucio sourced from a replica this run made)."""

    src_rse: str
    dst_rse: str
    size: int
    source_url: str = ""  # first copies only: the file at IHEP-EOS (or wherever the service read it)
    then: list[Copy] = field(default_factory=list)


@functools.cache  # etc/sites.yaml, read once (asked for every copy record)
def _topology() -> Any:
    from rucio_policy.topology import load as load_topology

    return load_topology()


def _surl_base(rse: str) -> str:
    proto = _topology().rse(rse).protocols["local"]
    return f"{proto.url}/{proto.prefix}"


def _rse_of_url(url: str) -> str:
    host = url.split("://", 1)[1].split("/", 1)[0]
    for rse in _topology().rses:
        proto = rse.protocols["local"]
        if host == f"{proto.hostname}:{proto.port}":
            return rse.name
    raise ValueError(f"{url}: no RSE of etc/sites.yaml serves {host}")


def replayed_copies(records: list[dict[str, Any]]) -> list[Copy]:
    """The copies the transfer service made (FINISHED files), in the order it started them; a copy that
    read a replica this run made (a multihop's next hop, or JINR from CNAF) follows the copy that made it."""
    made: dict[tuple[str, str], Copy] = {}
    roots = []
    for r in sorted((r for r in records if r["file_state"] == "FINISHED"), key=lambda r: r["start_time"]):
        name = r["dest_surl"].rsplit("/", 1)[-1]
        copy = Copy(_rse_of_url(r["source_surl"]), _rse_of_url(r["dest_surl"]),
                    int(r["transferred"] or r["filesize"] or 0))
        parent = made.get((name, copy.src_rse))
        if parent is not None:
            parent.then.append(copy)
        else:
            copy.source_url = r["source_surl"]
            roots.append(copy)
        made[(name, copy.dst_rse)] = copy
    return roots


def flatten(roots: list[Copy]) -> list[Copy]:
    out, todo = [], list(roots)
    while todo:
        c = todo.pop()
        out.append(c)
        todo += c.then
    return out


def xrdcp_round(roots: list[Copy], workers: int, tpc: bool, dest_dir: str) -> tuple[float, int]:
    """Every copy with plain xrdcp, `workers` at a time, in order; a copy that reads another one's
    destination is queued when that one is done (and reads it there). Returns (seconds, bytes)."""
    from juno_grid import storage

    bases = {rse: _surl_base(rse) for rse in {c.dst_rse for c in flatten(roots)}}
    lock = threading.Lock()
    futures: list[Future[int]] = []
    pool = ThreadPoolExecutor(workers)

    def one(copy: Copy, src: str) -> int:
        dst = f"{bases[copy.dst_rse]}/{dest_dir}/{copy.dst_rse}/{uuid.uuid4().hex}"
        storage.copy(src, dst, tpc=tpc)
        for child in copy.then:
            submit(child, dst)
        return copy.size

    def submit(copy: Copy, src: str) -> None:
        with lock:
            futures.append(pool.submit(one, copy, src))

    started = time.perf_counter()
    try:
        for root in roots:
            submit(root, root.source_url)
        moved, index = 0, 0
        while True:
            with lock:
                if index == len(futures):
                    break
                future = futures[index]
            moved += future.result()  # its follow-ups are queued before it returns
            index += 1
    finally:
        pool.shutdown(cancel_futures=True)
    return time.perf_counter() - started, moved


def remove_baseline(cfg: GridConfig, dest_dir: str) -> None:
    """The baseline's copies are not in Rucio: remove them from each storage's exported directory."""
    from juno_grid import xrootd

    for rse in _topology().rses:
        path = xrootd.storage_root(cfg, rse.name) / rse.protocols["local"].prefix.strip("/") / dest_dir
        shutil.rmtree(path, ignore_errors=True)


# -- records -----------------------------------------------------------------------------------------


def fts_records(cfg: GridConfig, marker: str) -> list[dict[str, Any]]:
    """The transfer service's own file records for the benchmark's files (its SQLite store, read only:
    per-file start and finish times to the sub-second, which its REST API rounds to seconds)."""
    path = cfg.state_dir / "fts" / "jobs.sqlite"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        rows = db.execute(
            "SELECT f.job_id, f.file_index, f.file_state, f.source_surl, f.dest_surl, f.filesize, f.transferred,"
            " f.start_time, f.finish_time, j.job_type, j.submit_time FROM files f JOIN jobs j ON j.job_id = f.job_id"
            " WHERE f.dest_surl LIKE ?", (f"%{marker}%",)).fetchall()
    finally:
        db.close()
    return [dict(r) for r in rows]


def rucio_requests(names: list[str]) -> list[dict[str, Any]]:
    """Rucio's transfer requests for the files (finished ones are in the history table)."""
    from rucio.common.types import InternalScope
    from rucio.db.sqla import models
    from rucio.db.sqla.session import get_session
    from sqlalchemy import select

    scope = InternalScope("raw")
    out = []
    session = get_session()
    try:
        for table in (models.Request, models.RequestHistory):
            for start in range(0, len(names), 500):
                rows = session.execute(select(table.created_at, table.submitted_at, table.state)
                                       .where(table.scope == scope).where(table.name.in_(names[start:start + 500])))
                out += [{"created_at": r[0], "submitted_at": r[1], "state": str(r[2])} for r in rows]
    finally:
        session.close()
    return out


def _epoch(when: datetime | None) -> float | None:
    return when.replace(tzinfo=UTC).timestamp() if when else None


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def fts_queue(records: list[dict[str, Any]]) -> list[float]:
    """Per copy: ready in the service (job submitted, or the previous hop finished) -> a worker took it."""
    by_job: dict[str, dict[int, dict[str, Any]]] = {}
    for r in records:
        by_job.setdefault(r["job_id"], {})[r["file_index"]] = r
    waits = []
    for r in records:
        if r["start_time"] is None:
            continue
        ready = r["submit_time"]
        if r["job_type"] == "H" and r["file_index"] > 0:
            previous = by_job[r["job_id"]].get(r["file_index"] - 1)
            ready = (previous or {}).get("finish_time") or ready
        waits.append(max(r["start_time"] - ready, 0.0))
    return waits


# -- the run -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4, help="blocks (one per past receiving day)")
    parser.add_argument("--files-per-block", type=int, default=10)
    parser.add_argument("--mb", type=float, default=8.0, help="MB (10^6 bytes) per file")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for every rule to be OK")
    parser.add_argument("--no-other-mode", action="store_true",
                        help="skip the reference round in the copy mode the service does not use")
    parser.add_argument("--keep", action="store_true", help="keep the blocks' rules and replicas")
    args = parser.parse_args()
    if not 1 <= args.blocks <= 60 or not 1 <= args.files_per_block <= 1000 or not 0 < args.mb <= 1000:
        parser.error("keep it bounded: 1-60 blocks, 1-1000 files per block, up to 1000 MB per file")
    cfg = load()
    with grid.session(cfg, daemons=True, condor_pool=False, log=log):
        return run(args, cfg)


def run(args: argparse.Namespace, cfg: GridConfig) -> int:
    from rucio.client import Client

    from juno_ingest import simulate as sim
    from juno_ingest.config import DEFAULT_FILE
    from juno_ingest.config import load as load_config
    from juno_ingest.consumer import Ingester
    from juno_ingest.mapping import SCOPE
    from juno_ingest.storage_check import Endpoint

    fts_argv = grid.cmdline(cfg, grid.FTS)
    mode = grid.option(fts_argv, "--copy-mode", FTS_COPY_MODE)
    workers = int(grid.option(fts_argv, "--workers", str(FTS_WORKERS)))
    other = "tpc" if mode == "stream" else "stream"
    root = Client()
    load_before = os.getloadavg()
    tag = uuid.uuid4().hex[:7]
    stream = f"JUNODAQ.r{tag}"
    marker = f".ds-2.r{tag}."  # in every file name of this run (see simulate._name_files)
    topic = f"bench-replicate-{tag}"
    dest_dir = f"bench/replicate/{tag}"
    size = int(args.mb * 1_000_000)
    n_files = args.blocks * args.files_per_block
    daemon_pids = grid.daemon_processes(cfg)
    log(f"Rucio's daemons: {len(daemon_pids)} processes of their own ({', '.join(daemon_pids)})")

    # -- SPADE and the ingester
    proto = _topology().rse(SOURCE_RSE).protocols["local"]
    endpoint = Endpoint(f"{proto.hostname}:{proto.port}", "/" + proto.prefix.strip("/"))
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    plan = sim.make_plan(sim.SimSpec(files=n_files, size=size, days=args.blocks, last_day=yesterday,
                                     streams=(stream,), prefix=endpoint.prefix))
    log(f"SPADE: {n_files} files x {size / 1e6:g} MB in {args.blocks} blocks of stream {stream} -> "
        f"{endpoint.url} ...")
    sim.write_files(plan, endpoint)
    sim.ensure_topic(cfg.kafka_bootstrap, topic, 1)
    sim.publish(plan.messages, cfg.kafka_bootstrap, topic)
    icfg = load_config(DEFAULT_FILE, env={}).with_overrides(
        kafka={"bootstrap_servers": cfg.kafka_bootstrap, "topic": topic, "group_id": f"g-{topic}"},
        dlq={"topic": f"{topic}.dlq"}, blocks={"streams": [stream], "grace_s": 0.0, "close_check_s": 1.0},
        metrics={"port": 0}, run={"once_idle_s": 1.0})
    blocks = sorted(plan.expected_blocks())
    names = [f.lfn for f in plan.files]
    files_by_block: dict[str, list[Any]] = {}
    for f in plan.files:
        files_by_block.setdefault(f.block, []).append(f)
    try:
        log("ingester: register, attach, the policy's rules, close the blocks (IN2P3's third decided); "
            "the daemons start on each rule as it is made ...")
        began = time.perf_counter()
        summary = Ingester(icfg).run(once=True)
        ingest_s = time.perf_counter() - began
        if summary.registered != n_files or summary.dead_lettered or sorted(summary.blocks_closed) != blocks:
            log(f"the ingester did not do what the plan says: {summary.as_dict()}")
            return 1
        log(f"  {n_files} files, {len(blocks)} blocks closed in {ingest_s:.1f} s")
        rules = {b: list(root.list_did_rules(SCOPE, b)) for b in blocks}
        rule_ids = [r["id"] for rs in rules.values() for r in rs]
        per_rse = Counter(str(r["rse_expression"]) for rs in rules.values() for r in rs)
        log(f"  {len(rule_ids)} rules: " + ", ".join(f"{k} x{v}" for k, v in sorted(per_rse.items())))
        t0_wall = min(_epoch(r["created_at"]) or time.time() for rs in rules.values() for r in rs)

        def states() -> dict[str, int]:
            """Rules by state; OK only with a lock on every file of the block: a rule made on a block
            before its files were attached stays OK until the judge-evaluator has seen the attachments."""
            out: dict[str, int] = {}
            for b in blocks:
                for r in root.list_did_rules(SCOPE, b):
                    state = str(r["state"])
                    if state == "OK" and int(r.get("locks_ok_cnt") or 0) < len(files_by_block[b]):
                        state = "OK (files not evaluated yet)"
                    out[state] = out.get(state, 0) + 1
            return out

        log(f"waiting for the daemon processes to bring the {len(rule_ids)} rules to OK ...")
        deadline = time.time() + args.timeout
        checks = 0
        while True:
            seen = states()
            checks += 1
            if seen == {"OK": len(rule_ids)}:
                break
            if time.time() > deadline:
                log(f"rules not all OK after {args.timeout:.0f} s: {seen}")
                return 1
            time.sleep(0.2)
        all_ok_s = time.time() - t0_wall
        log(f"  all {len(rule_ids)} rules OK {all_ok_s:.1f} s after the first was made")

        # -- what the service did
        records = fts_records(cfg, marker)
        done = [r for r in records if r["file_state"] == "FINISHED"]
        failed = [r for r in records if r["file_state"] == "FAILED"]
        twice = sum(n - 1 for n in Counter(r["dest_surl"] for r in done).values() if n > 1)
        moved = sum(int(r["transferred"] or 0) for r in done)
        intervals = [(r["start_time"], r["finish_time"]) for r in records if r["start_time"] and r["finish_time"]]
        first_start = min(a for a, _ in intervals)
        last_end = max(b for _, b in intervals)
        copy_active = union_seconds(intervals)
        copy_busy = sum(b - a for a, b in intervals)
        queue = fts_queue(records)
        requests = rucio_requests(names)
        waits = [_epoch(r["submitted_at"]) - _epoch(r["created_at"])  # type: ignore[operator]
                 for r in requests if r["submitted_at"] and r["created_at"]]
        durations = [b - a for a, b in intervals]
        # When each stage had seen all of the work, from the first rule: the rules made (the ingester), the
        # requests made (the judge-evaluator, as files are attached), the last one submitted (the submitter).
        rules_made_s = max(_epoch(r["created_at"]) or t0_wall for rs in rules.values() for r in rs) - t0_wall
        made = [_epoch(r["created_at"]) for r in requests if r["created_at"]]
        sent = [_epoch(r["submitted_at"]) for r in requests if r["submitted_at"]]
        requests_made_s = (max(made) - t0_wall) if made else None  # type: ignore[type-var,operator]
        last_submitted_s = (max(sent) - t0_wall) if sent else None  # type: ignore[type-var,operator]

        # -- baseline: replay the service's copies with the plain client, same mode, same parallelism
        replay = replayed_copies(records)
        t_base, b_base = xrdcp_round(replay, workers, mode == "tpc", f"{dest_dir}/base")
        remove_baseline(cfg, f"{dest_dir}/base")
        xrdcp = b_base / 1e6 / t_base
        log(f"xrdcp ({mode}; replay of the service's {len(done)} copies): {xrdcp:.1f} MB/s")
        other_mb_s = None
        if not args.no_other_mode:
            t_other, b_other = xrdcp_round(replay, workers, other == "tpc", f"{dest_dir}/other")
            remove_baseline(cfg, f"{dest_dir}/other")
            other_mb_s = b_other / 1e6 / t_other
            log(f"xrdcp ({other}, reference; replay): {other_mb_s:.1f} MB/s")
    finally:
        remove_baseline(cfg, dest_dir)
        if not args.keep:
            cleanup(root, blocks, names)

    mb_s = moved / 1e6 / all_ok_s
    window = max(last_end - first_start, 1e-3)
    copy_pairs = dict(Counter(f"{c.src_rse}>{c.dst_rse}" for c in flatten(replay)))
    result: dict[str, Any] = {
        "all_ok_s": round(all_ok_s, 2),
        "rules_made_s": round(rules_made_s, 2),
        "requests_made_s": None if requests_made_s is None else round(requests_made_s, 2),
        "last_submitted_s": None if last_submitted_s is None else round(last_submitted_s, 2),
        "mb_s": round(mb_s, 1),
        "xrdcp_mb_s": round(xrdcp, 1),
        "ratio": round(mb_s / xrdcp, 3),
        "copy_window_mb_s": round(moved / 1e6 / window, 1),
        "ratio_copy_window": round(moved / 1e6 / window / xrdcp, 3),
        "service_copy_mode": mode,
        "baseline": f"plain xrdcp{' --tpc only' if mode == 'tpc' else ' (streamed)'}, {workers} at a time, "
                    "replaying the service's copies",
        f"xrdcp_{other}_mb_s": round(other_mb_s, 1) if other_mb_s else None,
        "ratio_other_mode": round(mb_s / other_mb_s, 3) if other_mb_s else None,
        "files": n_files,
        "blocks": len(blocks),
        "rules": len(rule_ids),
        "bytes": moved,
        "copies": len(done),
        "copies_failed": len(failed),
        "copied_twice": twice,
        "copy_pairs": copy_pairs,
        "mb_per_file": size / 1e6,
        "workers": workers,
        "daemon_processes": len(daemon_pids),
        "ingest_s": round(ingest_s, 2),
        "rule_checks": checks,
        "lead_s": round(first_start - t0_wall, 2),
        "copy_window_s": round(window, 2),
        "copy_active_s": round(copy_active, 2),
        "idle_s": round(all_ok_s - copy_active, 2),
        "tail_s": round(t0_wall + all_ok_s - last_end, 2),
        "copy_busy_s": round(copy_busy, 2),
        "parallel_mean": round(copy_busy / copy_active, 2) if copy_active else None,
        "copy_mean_s": round(statistics.mean(durations), 2),
        "copy_max_s": round(max(durations), 2),
        "fts_queue_mean_s": round(statistics.mean(queue), 2) if queue else None,
        "fts_queue_max_s": round(max(queue), 2) if queue else None,
        "rucio_wait_mean_s": round(statistics.mean(waits), 2) if waits else None,
        "rucio_wait_max_s": round(max(waits), 2) if waits else None,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"{len(blocks)} blocks, {n_files} files x {size / 1e6:g} MB, {len(rule_ids)} rules: all OK "
          f"{all_ok_s:.1f} s after the first rule was made; {len(done)} copies ({twice} twice), "
          f"{moved / 1e6:.0f} MB -> {mb_s:.1f} MB/s end to end, {result['copy_window_mb_s']} MB/s over the copy window")
    print(f"baseline plain xrdcp ({mode}, {workers} at a time): {xrdcp:.1f} MB/s; ratio {result['ratio']} "
          f"(copy window {result['ratio_copy_window']})"
          + (f"; xrdcp {other}: {other_mb_s:.1f} MB/s, ratio {result['ratio_other_mode']}" if other_mb_s else ""))
    print(f"where the time went: first rule -> first copy {result['lead_s']} s (Rucio request -> submitted "
          f"mean {result['rucio_wait_mean_s']} s), copies running {result['copy_active_s']} s (mean "
          f"{result['parallel_mean']} at once, queue in the service mean {result['fts_queue_mean_s']} s), "
          f"last copy -> every rule OK {result['tail_s']} s")
    print(json.dumps(result))
    return 0


def cleanup(root: Any, blocks: list[str], names: list[str]) -> None:
    """Delete the blocks' rules for good, purging their replicas, and run the reaper until the replicas
    are gone (bounded). Rucio's API only soft-deletes a rule (it expires an hour later, and only then
    does the judge-cleaner remove it): this is the core deletion that daemon makes, done now."""
    from juno_grid import daemons
    from rucio.common.exception import DataIdentifierNotFound
    from rucio.core.rule import delete_rule

    from juno_ingest.mapping import SCOPE

    deleted = 0
    for block in blocks:
        try:
            block_rules = list(root.list_did_rules(SCOPE, block))
        except DataIdentifierNotFound:
            continue
        for rule in block_rules:
            delete_rule(rule["id"], purge_replicas=True, ignore_rule_lock=True)
            deleted += 1

    def left() -> int:
        return sum(len(r.get("rses") or {}) for r in root.list_replicas(
            [{"scope": SCOPE, "name": n} for n in names], all_states=True, ignore_availability=True))

    try:  # the grid's reaper process, or cycles of it here when it does not run
        daemons.drive_until(lambda: not left(), timeout=120, names=["reaper"])
    except TimeoutError:
        pass
    log(f"cleanup: deleted {deleted} rules; {left()} replicas of the benchmark's files left after the reaper")


if __name__ == "__main__":
    sys.exit(main())
