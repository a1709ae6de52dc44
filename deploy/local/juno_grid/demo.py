"""`make demo`: JUNO raw files land at IHEP and Rucio replicates them to CNAF, verified by checksum.

Runs inside the grid (`juno-grid exec -- python -m juno_grid.demo`) with the background daemons up.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from . import daemons, procs, storage
from .config import REPO_ROOT, VENV_BIN, GridConfig, load
from .grid import DAEMONS


def say(msg: str) -> None:
    print(msg, flush=True)


def raw_name(run: int, started: datetime, seq: int) -> str:
    return f"RUN.{run}.JUNODAQ.Physics.ds-2.global_trigger.{started:%Y%m%d%H%M%S}.{seq:03d}.dat"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--mb", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--no-jobs", action="store_true", help="stop after replication (no HTCondor task)")
    args = parser.parse_args(argv)
    # Rucio's client logs a VO warning on every start; the demo's own lines say what happens.
    logging.basicConfig(level=logging.ERROR)

    from rucio.client import Client
    from rucio.common.exception import DataIdentifierAlreadyExists, DuplicateRule

    client = Client()
    now = datetime.now(UTC)
    run = 20000 + int(now.timestamp()) % 70000  # a fresh run number on every demo
    day = f"{now:%Y%m%d}"
    block = f"block.JUNODAQ.global_trigger.{day}"
    names = [raw_name(run, now, seq) for seq in range(1, args.files + 1)]

    say(f"\n== 1. SPADE lands {args.files} raw files of {args.mb} MB at IHEP (run {run})")
    files = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            local = storage.make_file(Path(tmp) / name, args.mb * 1_000_000)
            item = storage.put_replica(client, "IHEP-EOS", "raw", name, local, register=False)
            files.append(item)
            say(f"   {name}  adler32 {item['adler32']}")
    try:
        client.add_dataset("raw", block, meta={"stream": "JUNODAQ.global_trigger", "day": day})
    except DataIdentifierAlreadyExists:
        pass
    # Registers the replicas at IHEP and attaches them to the day's block in one call.
    client.attach_dids("raw", block, [{k: f[k] for k in ("scope", "name", "bytes", "adler32")} for f in files],
                       rse="IHEP-EOS")
    say(f"   registered in Rucio as raw:<file> at IHEP-EOS, attached to raw:{block}")

    say("\n== 2. A rule asks for a copy at CNAF; Rucio's daemons and the transfer service move the bytes")
    dids = [{"scope": "raw", "name": n} for n in names]
    # One rule on the day's block: it covers every file attached to it.
    try:
        [rule_id] = client.add_replication_rule([{"scope": "raw", "name": block}], 1, "CNAF-DISK",
                                                grouping="DATASET", comment="juno-dci demo: raw block to CNAF")
    except DuplicateRule:
        # A demo earlier today made the rule; it covers the files just attached as well.
        rule_id = next(r["id"] for r in client.list_did_rules("raw", block)
                       if r["rse_expression"] == "CNAF-DISK" and r["account"] == client.account)
    cfg = load()
    # With the grid's background daemons (make demo) just watch; without them (tests), drive them here.
    background = procs.alive(procs.read(cfg.run_dir, DAEMONS))
    say(f"   rule {rule_id}: raw:{block} -> CNAF-DISK")
    started = time.monotonic()
    state = ""
    while time.monotonic() - started < args.timeout:
        rule = client.get_replication_rule(rule_id)
        new = f"{rule['state']} (ok {rule['locks_ok_cnt']}, replicating {rule['locks_replicating_cnt']}, " \
              f"stuck {rule['locks_stuck_cnt']})"
        if new != state:
            state = new
            say(f"   [{time.monotonic() - started:5.1f} s] rule {state}")
        at_cnaf = sum(r["states"].get("CNAF-DISK") == "AVAILABLE"
                      for r in client.list_replicas(dids, all_states=True))
        # The rule alone is not enough: files attached to a block that already has its rule are
        # added to it by the judge a moment later.
        if rule["state"] == "OK" and at_cnaf == len(dids):
            break
        if background:
            time.sleep(1)
        else:
            daemons.run_once()
    else:
        say(f"   the files did not all reach CNAF within {args.timeout:.0f} s: see .grid/log/rucio-daemons.log "
            "and .grid/log/fts.log")
        return 1

    say("\n== 3. Where the bytes are, and their adler32 as each storage computes it")
    say(f"   {'file':<70} {'Rucio':<9} {'IHEP-EOS':<9} {'CNAF-DISK':<9}")
    ok = True
    for rep in client.list_replicas(dids, schemes=["root"]):
        ihep = storage.remote_adler32(rep["rses"]["IHEP-EOS"][0])
        cnaf = storage.remote_adler32(rep["rses"]["CNAF-DISK"][0])
        good = rep["adler32"] == ihep == cnaf
        ok &= good
        verdict = "ok" if good else "MISMATCH"
        say(f"   {rep['name']:<70} {rep['adler32']:<9} {ihep or '-':<9} {cnaf or '-':<9} {verdict}")
    say(f"\n{'All copies verified.' if ok else 'Checksum mismatch: see above.'} "
        f"Try: .venv/bin/juno-grid exec -- rucio rule list --did raw:{block}")
    if not ok:
        return 1
    if args.no_jobs:
        return 0
    return run_task(cfg, block)


def run_task(cfg: GridConfig, block: str) -> int:
    """An analyst's task over the demo's block: jobs run on HTCondor at the sites holding the files."""
    say("\n== 4. analyst1 runs a task over the block: jobs go where the data is, outputs go to Rucio")
    env = {**os.environ, "RUCIO_CONFIG": str(cfg.rucio_cfg.parent / "analyst1.cfg")}
    task = REPO_ROOT / "etc" / "tasks" / "raw-checksum.yaml"
    submit = [str(VENV_BIN / "juno-submit"), "submit", str(task), "--input", f"raw:{block}", "--wait"]
    say(f"   $ juno-submit submit etc/tasks/raw-checksum.yaml --input raw:{block} --wait")
    done = subprocess.run(submit, env=env, text=True, capture_output=True, timeout=900)
    for line in (done.stdout + done.stderr).splitlines():
        say(f"   {line}")
    if done.returncode != 0:
        say(f"   the task did not complete (exit {done.returncode})")
        return 1
    status = subprocess.run([str(VENV_BIN / "juno-submit"), "status", "--jobs"], env=env, text=True,
                            capture_output=True, timeout=120)
    for line in status.stdout.splitlines():
        say(f"   {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
