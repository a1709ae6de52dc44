"""Benchmark: `juno-policy plan` over 10,000 raw blocks that already have their rules.

Figures, all measured in this run against the grid's Rucio:
  list_s    listing the rules of scope raw from Rucio alone (Client.list_replication_rules, the
            same bulk call plan makes), median of the rounds
  plan_s    engine.plan over scope raw: the rule listing plus the blocks, their placement records,
            and the diff of every block against the policy, median of the rounds
  ratio     plan / listing, per round (the two back to back, alternating which goes first), median
            over the rounds   (target <= 1.5). The grid is shared and its load drifts: a round
            compares both under the same load.
  *_cpu_s   this process's CPU time (the client's share of each), median; load_avg_1m and cpus
            say how busy the machine was (the grid is shared: other work slows both sides)
  blocks    the benchmark's blocks (raw:block.JUNODAQ.benchpolicy.<YYYYMMDD>, one per day from 2030-01-01)

The blocks are made once and reused by later runs: empty, closed datasets carrying the placement
record an empty block gets (IN2P3: not placed), created with bulk calls; their rules are added by
the engine itself (plan + apply). They are the only thing this benchmark writes.

Run from the repository root (as root; it joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/policy.py [--blocks 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

from juno_grid import grid
from juno_grid.config import load

STREAM = "JUNODAQ.benchpolicy"
FIRST_DAY = date(2030, 1, 1)  # far from any test data's dates
PATTERN = f"block.{STREAM}.*"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def block_names(n: int) -> list[str]:
    from rucio_policy import naming

    return [naming.block_name(STREAM, FIRST_DAY + timedelta(days=i)) for i in range(n)]


def prepare(client: Any, policy: Any, n: int) -> None:
    """Make sure the n blocks exist, are closed, carry their placement record and have their rules."""
    from rucio_policy import engine
    from rucio_policy.placement import decide, meta_key

    names = block_names(n)
    have = set(client.list_dids("raw", [{"name": PATTERN}], did_type="dataset"))
    missing = [name for name in names if name not in have]
    if missing:
        data_class = next(c for c in policy.classes if c.name == "raw")
        records = {}
        tallies = engine.placement_tallies(client, policy, "raw")
        for rule in data_class.rules:
            if rule.fraction is not None and rule.fraction < 1:
                key = meta_key("raw", rule.id)
                records[key] = decide(tallies.get(key, _tally()), 0, rule.fraction).to_meta()
        log(f"creating {len(missing)} blocks (bulk) ...")
        for start in range(0, len(missing), 1000):
            client.add_dids([{"scope": "raw", "name": name, "type": "DATASET", "meta": records}
                             for name in missing[start:start + 1000]])
    opened = [row["name"] for start in range(0, n, 500)
              for row in client.get_metadata_bulk([{"scope": "raw", "name": x} for x in names[start:start + 500]],
                                                  plugin="DID_COLUMN") if row.get("is_open")]
    if opened:
        log(f"closing {len(opened)} blocks ...")
        _close_all(opened)
    started = time.perf_counter()
    plan = engine.plan(client, policy, scope_filter="raw", name_filter=PATTERN)
    if plan.actions:
        log(f"adding their rules through the engine: {plan.summary()}")
        result = engine.apply(client, plan, policy=policy)
        log(f"  {result.summary()} in {time.perf_counter() - started:.0f} s")
        if result.failed:
            raise SystemExit(f"apply failed: {result.failed[0][1]}")


def _tally() -> Any:
    from rucio_policy.placement import Tally

    return Tally()


def _close_all(names: list[str]) -> None:
    from rucio.client import Client

    def close(chunk: list[str]) -> None:
        client = Client()
        for name in chunk:
            client.close("raw", name)

    chunks = [names[i::8] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(close, chunks))


def measure(client: Any, policy: Any, rounds: int) -> dict[str, Any]:
    """Rounds of (listing, plan) back to back, in alternating order: the grid is shared, its load drifts,
    so each round's ratio compares the two under the same load and the result is the median ratio."""
    from rucio_policy import engine

    cpu: dict[str, list[float]] = {"list": [], "plan": []}  # this process's CPU seconds (the client's share)

    def listing() -> tuple[float, int]:
        started, cpu_started = time.perf_counter(), time.process_time()
        count = sum(1 for _ in client.list_replication_rules({"scope": "raw"}))
        cpu["list"].append(time.process_time() - cpu_started)
        return time.perf_counter() - started, count

    def planning() -> tuple[float, Any]:
        started, cpu_started = time.perf_counter(), time.process_time()
        result = engine.plan(client, policy, scope_filter="raw")
        cpu["plan"].append(time.process_time() - cpu_started)
        return time.perf_counter() - started, result

    listing()  # warm both paths once (server caches, connection pools)
    planning()
    cpu["list"].clear()
    cpu["plan"].clear()
    list_times: list[float] = []
    plan_times: list[float] = []
    ratios: list[float] = []
    rules, plan = 0, None
    for index in range(rounds):
        if index % 2 == 0:
            (list_s, rules), (plan_s, plan) = listing(), planning()
        else:
            (plan_s, plan), (list_s, rules) = planning(), listing()
        list_times.append(list_s)
        plan_times.append(plan_s)
        ratios.append(plan_s / list_s)
        log(f"round {index + 1}: list {list_s:.2f} s ({rules} rules), plan {plan_s:.2f} s ({plan.dids} DIDs), "
            f"ratio {ratios[-1]:.2f}; plan's parts {plan.timings}")
    assert plan is not None
    bench_actions = [a for a in plan.actions if a.name.startswith(f"block.{STREAM}.")]
    return {"ratio": round(statistics.median(ratios), 3), "plan_s": round(statistics.median(plan_times), 3),
            "list_s": round(statistics.median(list_times), 3), "ratios": [round(r, 3) for r in ratios],
            "list_cpu_s": round(statistics.median(cpu["list"]), 3),
            "plan_cpu_s": round(statistics.median(cpu["plan"]), 3),
            "rules": rules, "dids_planned": plan.dids, "bench_block_actions": len(bench_actions), "rounds": rounds,
            "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=False, log=log):
        from rucio.client import Client

        from rucio_policy import engine

        client = Client()
        policy = engine.load_default_policy()
        prepare(client, policy, args.blocks)
        result = {**measure(client, policy, args.rounds), "blocks": args.blocks}
    print(f"plan over {result['dids_planned']} DIDs ({result['blocks']} benchmark blocks, {result['rules']} rules): "
          f"{result['plan_s']} s; listing the rules alone {result['list_s']} s; ratio {result['ratio']} "
          f"(target <= 1.5)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
