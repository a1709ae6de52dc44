"""Benchmark: finalizing blocks at close time, one by one vs as one round (engine.finalize_blocks).

finalize_block decides a closed block's fraction placements (IN2P3's third) against the tally of every
decision recorded so far in its class: it lists the class's decided blocks (a JSON-metadata query)
and reads their records, so its cost grows with the number of blocks ever decided. The ingester
closes all the blocks that are due together (every stream's block of a day): finalize_blocks reads
the tally once for the round and adds each decision to it.

Figures, all measured in this run against the grid's Rucio:
  decided        blocks with a placement record in raw (the benchmark's own, made once and reused,
                 plus whatever the grid holds)
  tally_s        reading the tally alone (engine.placement_tallies), median of the rounds
  one_by_one_s   finalize_block on each of --blocks closed blocks, one after the other, median
  round_s        finalize_blocks on --blocks other closed blocks, median
  ratio          one_by_one_s / round_s, per round (the two back to back, alternating which goes first),
                 median   (> 1: the round is cheaper)
  tally_share    tally_s * blocks / one_by_one_s: how much of one-by-one finalizing is the tally

The measured blocks are empty (no files: no transfers follow) and get the policy's unconditional rules
before they are closed (not timed), so what is timed is the decision: reads, tally, record, re-read.
Their rules are deleted at the end.

Run from the repository root (as root; it joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/finalize.py [--decided 3000] [--blocks 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import date, timedelta
from typing import Any

from juno_grid import grid
from juno_grid.config import load

STREAM = "JUNODAQ.benchfinal"
FIRST_DAY = date(2031, 1, 1)  # far from any test data's dates


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decided", type=int, default=3000, help="decided blocks to have in raw (made once)")
    parser.add_argument("--blocks", type=int, default=4, help="blocks finalized per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=False, log=log), grid.daemons_paused(cfg, log):
        return run(args)


def ensure_decided(client: Any, n: int) -> int:
    """n blocks of STREAM carrying a placement record (a third placed), made once with bulk calls."""
    from rucio_policy import naming
    from rucio_policy.placement import PlacementRecord, Tally, meta_key

    key = meta_key("raw", "in2p3_third")
    have = set(client.list_dids("raw", {"name": f"block.{STREAM}.*"}, did_type="dataset"))
    todo = []
    for i in range(n):
        name = naming.block_name(STREAM, FIRST_DAY + timedelta(days=i))
        if name not in have:
            record = PlacementRecord(placed=i % 3 == 0, block_bytes=1_000_000, before=Tally(), fraction=_third())
            todo.append({"scope": "raw", "name": name, "type": "DATASET", "meta": {key: record.to_meta()}})
    for start in range(0, len(todo), 500):
        client.add_dids(todo[start:start + 500])
    return len(todo)


def _third() -> Any:
    from fractions import Fraction

    return Fraction(1, 3)


def closed_blocks(client: Any, k: int) -> list[str]:
    """k new empty blocks with the policy's unconditional rules, closed (ready to finalize)."""
    from rucio_policy import engine, naming

    stream = f"JUNODAQ.bf{uuid.uuid4().hex[:8]}"
    names = [naming.block_name(stream, date(2025, 10, 1) + timedelta(days=i)) for i in range(k)]
    client.add_dids([{"scope": "raw", "name": n, "type": "DATASET"} for n in names])
    engine.ensure_blocks_rules(client, "raw", names)
    for name in names:
        client.close("raw", name)
    return names


def run(args: argparse.Namespace) -> int:
    from juno_grid.accounts import local_password
    from rucio.client import Client

    from juno_ingest import verify
    from rucio_policy import engine

    root = Client()
    ingest = Client(account="juno_ingest", auth_type="userpass",
                    creds={"username": "juno_ingest", "password": local_password("juno_ingest")})
    policy = engine.load_default_policy()
    load_before = os.getloadavg()
    made = ensure_decided(root, args.decided)
    log(f"decided blocks of {STREAM}: {args.decided} ({made} made now)")
    tallies = engine.placement_tallies(ingest, policy, "raw")
    decided = sum(1 for _ in ingest.list_dids("raw", [{"juno_place_raw_in2p3_third": "v*"}], did_type="all"))
    log(f"raw blocks with a placement record: {decided}; tally {tallies}")

    tally_s, one_s, round_s, ratios = [], [], [], []
    made_blocks: list[str] = []
    for r in range(args.rounds):
        started = time.perf_counter()
        engine.placement_tallies(ingest, policy, "raw")
        tally_s.append(time.perf_counter() - started)
        a, b = closed_blocks(ingest, args.blocks), closed_blocks(ingest, args.blocks)
        made_blocks += a + b

        def one_by_one(names: list[str] = a) -> float:
            started = time.perf_counter()
            for name in names:
                engine.finalize_block(ingest, "raw", name, policy=policy)
            return time.perf_counter() - started

        def as_round(names: list[str] = b) -> float:
            started = time.perf_counter()
            engine.finalize_blocks(ingest, "raw", names, policy=policy)
            return time.perf_counter() - started

        if r % 2 == 0:
            one, whole = one_by_one(), as_round()
        else:
            whole, one = as_round(), one_by_one()
        one_s.append(one)
        round_s.append(whole)
        ratios.append(one / whole)
        log(f"round {r + 1}: tally {tally_s[-1]:.2f} s; {args.blocks} blocks one by one {one:.2f} s, "
            f"as a round {whole:.2f} s (ratio {one / whole:.2f})")

    deleted = verify.cleanup_rules(root, made_blocks)
    log(f"deleted {deleted} rules of the measured blocks")
    result = {
        "ratio": round(statistics.median(ratios), 3),
        "one_by_one_s": round(statistics.median(one_s), 3),
        "round_s": round(statistics.median(round_s), 3),
        "tally_s": round(statistics.median(tally_s), 3),
        "tally_share": round(min(1.0, statistics.median(tally_s) * args.blocks / statistics.median(one_s)), 3),
        "decided": decided,
        "blocks": args.blocks,
        "rounds": args.rounds,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"finalizing {args.blocks} blocks with {decided} decided in raw: one by one {result['one_by_one_s']} s, "
          f"as a round {result['round_s']} s (ratio {result['ratio']}); the tally alone {result['tally_s']} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
