"""`make demo`: two days of SPADE raw data go through the whole JUNO chain on the local grid.

  1. SPADE (`juno-ingest simulate`) writes raw files of yesterday and today to IHEP-EOS and publishes
     their arrival messages to Kafka;
  2. the ingester (`juno-ingest run --once`) registers them in Rucio, in daily blocks with the
     replication policy's rules, and closes yesterday's blocks (IN2P3's third is decided then);
  3. Rucio's daemons and the transfer service replicate until every rule is OK;
  4. every copy's adler32 is read back from its storage through XRootD, and `juno-dci`'s per-site
     table (expected vs present vs verified) is printed and written as the status page;
  5. analyst1 runs an HTCondor task over one block (skip with --no-jobs);
  6. keep-up production: `juno-prod` turns every raw file into RTRAW then ESD at IHEP, outputs in Rucio
     with provenance and the policy's rules (skipped with --no-jobs).

Runs inside the grid (`juno-grid exec -- python -m juno_grid.demo`). With the grid's background
daemons running (`juno-grid up`) it watches them; without (the tests' grid) it drives them itself.
Each run uses new streams (`JUNODAQ.demo<N>_a`, `_b`), so running it again on the same grid works.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from juno_common.units import human_bytes
from rucio_policy import naming, topology
from rucio_policy.placement import meta_key

from . import daemons, storage
from .config import REPO_ROOT, VENV_BIN, GridConfig, load
from .grid import daemon_processes

SCOPE = naming.RAW_SCOPE
LANDING = "IHEP-EOS"
PLACEMENT_KEY = meta_key(naming.RAW_SCOPE, "in2p3_third")
_DEMO_STREAM = re.compile(r"^stream\.JUNODAQ\.demo(\d+)_[a-z]$")


class DemoFailed(Exception):
    """A step did not do what it should: the message says what, and where to look."""


@dataclass
class Outcome:
    """What the demo did (for the tests): 0 = every step worked."""

    code: int = 1
    number: int = 0
    streams: tuple[str, ...] = ()
    blocks: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    readback: dict[str, tuple[int, int]] = field(default_factory=dict)  # RSE -> (copies read, adler32 matches)
    report: Path | None = None
    seconds: float = 0.0


def say(msg: str = "") -> None:
    print(msg, flush=True)


class Clock:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.step = self.start

    def lap(self) -> str:
        now = time.monotonic()
        took, self.step = now - self.step, now
        return f"{took:.1f} s"

    def total(self) -> float:
        return time.monotonic() - self.start


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m juno_grid.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=240, help="raw files over the two days and two streams")
    parser.add_argument("--mb", type=float, default=2.0, help="size of each raw file, in MB")
    parser.add_argument("--timeout", type=float, default=900, help="seconds replication may take before the "
                                                                   "demo gives up")
    parser.add_argument("--no-jobs", action="store_true", help="stop after replication (no HTCondor task)")
    args = parser.parse_args(argv)
    if args.files < 4:
        parser.error("--files: at least 4 (one per stream and day)")
    if args.mb <= 0:
        parser.error("--mb must be > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return run(argv).code


def run(argv: Sequence[str] | None = None) -> Outcome:
    args = parse_args(argv)
    # Rucio's client logs a VO warning on every start; the demo's own lines say what happens.
    logging.basicConfig(level=logging.ERROR)
    from rucio.client import Client

    cfg = load()
    client = Client()
    out = Outcome()
    clock = Clock()
    try:
        _run(args, cfg, client, out, clock)
    except (DemoFailed, TimeoutError) as err:
        say(f"\nDEMO FAILED after {clock.total():.0f} s: {err}")
        return out
    out.seconds = clock.total()
    out.code = 0
    return out


def _run(args: argparse.Namespace, cfg: GridConfig, client: Any, out: Outcome, clock: Clock) -> None:
    out.number = next_demo_number(client)
    out.streams = (f"JUNODAQ.demo{out.number}_a", f"JUNODAQ.demo{out.number}_b")
    size = int(args.mb * 1_000_000)
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    pattern = f"block.JUNODAQ.demo{out.number}_*"
    say(f"juno-dci demo #{out.number}: {args.files} raw files of {human_bytes(size)} received yesterday ({yesterday}) "
        f"and today ({today}) in streams {' and '.join(out.streams)}, from SPADE to every site the "
        f"replication policy (etc/replication.yaml) names, checked by checksum"
        + ("" if args.no_jobs else ", then an analysis task on HTCondor") + ".")

    # -- 1. SPADE -------------------------------------------------------------------------------
    say(f"\n== 1. SPADE lands {args.files} raw files at IHEP-EOS and announces each on Kafka")
    sim = juno_ingest(["simulate", "--files", str(args.files), "--size", str(size), "--days", "2",
                       *[a for s in out.streams for a in ("--stream", s)], "--json"], what="the SPADE simulator")
    if sim.get("files_written") != args.files:
        raise DemoFailed(f"SPADE wrote {sim.get('files_written')} files, not {args.files}")
    say(f"   wrote {sim['files_written']} files ({human_bytes(sim['files_written'] * size)}) to {sim['storage']}, "
        f"runs {sim['runs'][0]}-{sim['runs'][-1]}")
    say(f"   published {sim['messages']} messages to Kafka topic {sim['topic']} in {sim['publish_seconds']} s "
        f"({clock.lap()})")
    expected_blocks: dict[str, int] = sim["blocks"]

    # -- 2. ingest --------------------------------------------------------------------------------
    say("\n== 2. juno-ingest registers them in Rucio: replicas at IHEP-EOS, daily blocks, the policy's rules")
    say("   (blocks.grace_s=0: yesterday's blocks close as soon as everything is read; "
        "the production setting waits 6 h after the day ends)")
    ing = juno_ingest(["run", "--once", "--metrics-port", "0", "--json"], what="the ingester",
                      env={"JUNO_INGEST_BLOCKS_GRACE_S": "0"})
    say(f"   {ing['messages']} messages: {ing['registered']} files registered, {ing['duplicates']} duplicates, "
        f"{ing['dead_lettered']} dead-lettered; {ing['blocks_created']} blocks created, "
        f"{len(ing['blocks_closed'])} closed ({clock.lap()})")
    out.blocks = sorted(expected_blocks)
    out.closed = sorted(b for b in out.blocks if b.endswith(f"{yesterday:%Y%m%d}"))
    files_by_block = {b: [f["name"] for f in client.list_files(SCOPE, b)] for b in out.blocks}
    out.files = [name for names in files_by_block.values() for name in names]
    if len(out.files) != args.files:
        raise DemoFailed(f"Rucio holds {len(out.files)} files in the demo's blocks, SPADE sent {args.files}: "
                         f"see `juno-grid exec -- juno-ingest dlq`")
    not_closed = [b for b in out.closed if client.get_did(SCOPE, b)["open"]]
    if not_closed:
        raise DemoFailed(f"the ingester did not close yesterday's block(s) {', '.join(not_closed)}")
    rules_by_block = {block: show_block(client, block) for block in out.blocks}

    # -- 3. replication ---------------------------------------------------------------------------
    background = bool(daemon_processes(cfg))
    say("\n== 3. Rucio replicates: judge -> conveyor -> transfer service (xrdcp, adler32 checked at the "
        "destination) -> rules OK")
    say("   " + ("the grid's Rucio daemons run as processes of their own; waiting for them" if background
                 else "no background daemons: running Rucio's daemon cycles here"))
    say("   (rules OK/total, then copies present/expected at the other RSEs, as juno-dci counts them. A new "
        "rule is OK with no files yet,\n   and REPLICATING once the judge has added the block's files to it)")
    wait_for_replication(pattern, background=background, timeout=args.timeout)
    say(f"   replication complete ({clock.lap()})")

    # -- 4. verify and show -----------------------------------------------------------------------
    say("\n== 4. Every copy's adler32, read back from its storage through XRootD, against Rucio's")
    out.readback = read_back(client, out.files)
    for rse, (read, good) in out.readback.items():
        say(f"   {rse:<11} {read:>5} copies read, {good:>5} adler32 match" + ("" if read == good else "  MISMATCH"))
    if any(read != good for read, good in out.readback.values()):
        raise DemoFailed("some copies do not have Rucio's adler32 (see above)")
    say(f"   all {sum(r for r, _ in out.readback.values())} copies verified ({clock.lap()})")

    out.status = status_of(pattern, ingest=True)
    check_against_rucio(client, files_by_block, rules_by_block, out.status)
    say(f"\n   $ juno-dci status --blocks '{pattern}'")
    from juno_status.text import render

    for line in render(out.status).splitlines():
        say(f"   {line}".rstrip())
    if not out.status["complete"]:
        raise DemoFailed("juno-dci finds the demo's data incomplete (see above)")
    out.report = write_report(cfg, out.number, out.status)
    say("\n   juno-dci's numbers are Rucio's: for every RSE, present = the demo's AVAILABLE replicas in Rucio")
    say(f"   status page (static, data inside): {out.report}")
    say(f"      open file://{out.report} in any browser (it loads nothing else; copy it anywhere)")
    say(f"   live page: .venv/bin/juno-grid exec -- juno-dci serve --blocks '{pattern}'   "
        "(http://127.0.0.1:18500 inside the grid's network namespace)")

    # -- 5. jobs ----------------------------------------------------------------------------------
    if not args.no_jobs:
        # A block IN2P3 holds too, if one was placed there: its jobs can then run at all four sites.
        at_in2p3 = [b for b in out.closed if any(r["rse_expression"] == "IN2P3-DISK" for r in rules_by_block[b])]
        run_task(cfg, (at_in2p3 or out.closed)[0])
        say(f"   ({clock.lap()})")
        keep_up(cfg, out, timeout=args.timeout)
        say(f"   ({clock.lap()})")

    say(f"\nDemo #{out.number} done in {clock.total():.0f} s: {args.files} files ({human_bytes(args.files * size)}) "
        f"from SPADE through Kafka into Rucio, {len(out.blocks)} blocks ({len(out.closed)} closed), "
        f"{out.status['rules']['total']} policy rules OK, "
        f"{sum(r for r, _ in out.readback.values())} copies at {len(out.readback)} RSEs verified by adler32"
        + ("" if args.no_jobs else ", an analysis task run where the data is, keep-up RTRAW and ESD at IHEP") + ".")
    say(f"Look around: .venv/bin/juno-grid exec -- rucio rule list --did raw:{out.closed[0]}")
    say(f"             .venv/bin/juno-grid exec -- juno-policy explain raw:{out.closed[0]}")


# -- helpers -------------------------------------------------------------------------------------


def next_demo_number(client: Any) -> int:
    """1 + the highest demo number whose stream containers exist (every run gets new streams)."""
    seen = [0]
    for name in client.list_dids(SCOPE, {"name": "stream.JUNODAQ.demo*"}, did_type="container"):
        if m := _DEMO_STREAM.match(name):
            seen.append(int(m.group(1)))
    return max(seen) + 1


def juno_ingest(args: list[str], *, what: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a juno-ingest command (printed as the user would type it) and return its JSON summary."""
    shown = [a for a in args if a != "--json"]
    extra = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    say(f"   $ {extra + ' ' if extra else ''}juno-ingest {' '.join(shown)}")
    done = subprocess.run([str(VENV_BIN / "juno-ingest"), *args], env={**os.environ, **(env or {})}, text=True,
                          capture_output=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(f"     {line}" for line in (done.stderr.strip().splitlines()[-15:]))
        raise DemoFailed(f"{what} failed (exit {done.returncode}):\n{tail}")
    return dict(json.loads(lines[-1]))


def show_block(client: Any, block: str) -> list[dict[str, Any]]:
    """Print the block (files, size, state, rules, IN2P3 decision); its rules."""
    did = client.get_did(SCOPE, block, dynamic_depth="FILE")
    rules = sorted(client.list_did_rules(SCOPE, block), key=lambda r: r["created_at"])
    state = "open" if did["open"] else "closed"
    say(f"   raw:{block}: {did['length']} files, {human_bytes(did['bytes'] or 0)}, {state}")
    say("      rules: " + ", ".join(r["rse_expression"] + (" (30 d)" if r.get("expires_at") else "")
                                   for r in rules))
    record = client.get_metadata(SCOPE, block, plugin="JSON").get(PLACEMENT_KEY)
    if record:
        from rucio_policy.placement import PlacementRecord

        say(f"      IN2P3's third, decided at closing: {PlacementRecord.from_meta(record).explain()}")
    else:
        say("      IN2P3's third: decided when the block closes (after its day)")
    return rules


def status_of(pattern: str, *, ingest: bool = False) -> dict[str, Any]:
    from juno_status.collect import Selection, collect

    return collect(Selection(blocks=pattern, transfers="blocks", ingest=ingest))


def wait_for_replication(pattern: str, *, background: bool, timeout: float) -> None:
    """Until juno-dci finds every expected copy present and every rule on the blocks OK; a progress line
    every few seconds. TimeoutError (with what is missing) after `timeout` seconds."""
    started = time.monotonic()
    last: dict[str, Any] = {"line": "", "at": float("-inf"), "status": None}

    def complete() -> bool:
        status = status_of(pattern)
        last["status"] = status
        rules = status["rules"]
        copies = [r for r in status["rses"] if r["rse"] != LANDING and r["expected"]["files"]]
        line = (f"rules OK {rules['states'].get('OK', 0)}/{rules['total']}, "
                f"copies {sum(r['present']['files'] for r in copies):,}/{sum(r['expected']['files'] for r in copies):,}"
                f" files, {human_bytes(sum(r['present']['bytes'] for r in copies))}/"
                f"{human_bytes(sum(r['expected']['bytes'] for r in copies))}, "
                f"in flight {status['transfers']['in_flight_files']:,}")
        if status["transfers"]["failed_attempts"]:
            line += f", failed attempts {status['transfers']['failed_attempts']:,} (retried)"
        now = time.monotonic()
        done = bool(status["complete"]) and rules["total"] > 0
        # A line when something moved (at most every 3 s), and every 15 s anyway.
        if done or (line != last["line"] and now - last["at"] >= 3) or now - last["at"] >= 15:
            say(f"   [{now - started:5.0f} s] {line}")
            last["line"], last["at"] = line, now
        return done

    def describe() -> str:
        status = last["status"]
        missing = "; ".join(status["incomplete"]) if status else "no status"
        return (f"replication not complete: {missing}. Logs: {os.environ.get('JUNO_GRID_DIR', '.grid')}/log/"
                "daemon-*.log and fts.log; `juno-grid exec -- juno-dci status --blocks '" + pattern + "'`")

    if not background:
        daemons.drive_until(complete, timeout=timeout, describe=describe, pause=0.2)
        return
    while not complete():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"after {timeout:.0f} s: {describe()}")
        time.sleep(2)


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def read_back(client: Any, names: list[str]) -> dict[str, tuple[int, int]]:
    """For every AVAILABLE copy of the files: the adler32 its storage computes (XRootD `query checksum`)
    against the one in Rucio. Per RSE: (copies read, matches)."""
    wanted: dict[str, list[tuple[str, str]]] = {}  # RSE -> [(pfn, adler32 in Rucio)]
    for chunk in _chunks(names, 500):
        for rep in client.list_replicas([{"scope": SCOPE, "name": n} for n in chunk], schemes=["root"]):
            for rse, pfns in rep["rses"].items():
                if pfns:
                    wanted.setdefault(rse, []).append((pfns[0], rep["adler32"]))
    order = [r.name for r in topology.load().rses]  # as etc/sites.yaml lists them
    rses = sorted(wanted, key=lambda r: (order.index(r) if r in order else len(order), r))
    with ThreadPoolExecutor(max_workers=len(rses) or 1) as pool:
        found = dict(zip(rses, pool.map(lambda r: storage.remote_adler32_many([p for p, _ in wanted[r]]), rses),
                         strict=True))
    return {rse: (len(wanted[rse]), sum(found[rse].get(p) == a for p, a in wanted[rse])) for rse in rses}


def check_against_rucio(client: Any, files_by_block: dict[str, list[str]],
                        rules_by_block: dict[str, list[dict[str, Any]]], status: dict[str, Any]) -> None:
    """juno-dci reads Rucio's database directly: its per-RSE present counts must equal what Rucio's API
    lists (AVAILABLE replicas of the blocks' files at the RSEs the blocks have rules for)."""
    from_api: dict[str, int] = {}
    for block, names in files_by_block.items():
        rses = {r["rse_expression"] for r in rules_by_block[block]}
        for chunk in _chunks(names, 500):
            for rep in client.list_replicas([{"scope": SCOPE, "name": n} for n in chunk], all_states=True):
                for rse, state in rep["states"].items():
                    if state == "AVAILABLE" and rse in rses:
                        from_api[rse] = from_api.get(rse, 0) + 1
    table = {r["rse"]: r["present"]["files"] for r in status["rses"] if r["present"]["files"]}
    if table != from_api:
        raise DemoFailed(f"juno-dci's present counts {table} differ from Rucio's API {from_api}")


def write_report(cfg: GridConfig, number: int, status: dict[str, Any]) -> Path:
    from juno_status.page import render_page

    path = cfg.state_dir / "demo" / f"status-demo{number}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(status, live=False), encoding="utf-8")
    path.chmod(0o644)
    return path


def run_task(cfg: GridConfig, block: str) -> None:
    """An analyst's task over one block: jobs run on HTCondor at the sites holding the files."""
    say("\n== 5. analyst1 runs a task over the block: jobs go where the data is, outputs go to Rucio")
    env = {**os.environ, "RUCIO_CONFIG": str(cfg.rucio_cfg.parent / "analyst1.cfg")}
    task = REPO_ROOT / "etc" / "tasks" / "raw-checksum.yaml"
    submit = [str(VENV_BIN / "juno-submit"), "submit", str(task), "--input", f"raw:{block}", "--wait"]
    say(f"   $ juno-submit submit etc/tasks/raw-checksum.yaml --input raw:{block} --wait")
    done = subprocess.run(submit, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900)
    for line in done.stdout.splitlines():
        say(f"   {line}".rstrip())
    if done.returncode != 0:
        raise DemoFailed(f"the task did not complete (exit {done.returncode}): see above")
    status = subprocess.run([str(VENV_BIN / "juno-submit"), "status", "--jobs"], env=env, text=True,
                            capture_output=True, timeout=120)
    lines = status.stdout.splitlines()
    # The task's summary was printed above: only the per-job table (where each job ran, its exit code).
    header = next((i for i, line in enumerate(lines) if line.split()[:2] == ["job", "state"]), 0)
    say("   $ juno-submit status --jobs")
    for line in lines[header:]:
        say(f"   {line}".rstrip())


KUP = """\
name: kup-demo{number}
release: J25.1.0
input: {{new_raw: {{streams: [{streams}]}}}}
steps:
  - {{name: rtraw, payload: bin/juno-prod-step, where: [IHEP], files_per_job: 40,
      output: {{scope: rtraw, rse: IHEP-EOS}}, resources: {{memory: 256MB, wall_time: 10m}}}}
  - {{name: esd, payload: bin/juno-prod-step, where: [IHEP], files_per_job: 40,
      output: {{scope: esd, rse: IHEP-EOS}}, resources: {{memory: 256MB, wall_time: 10m}}}}
"""


def keep_up(cfg: GridConfig, out: Outcome, *, timeout: float) -> None:
    """Keep-up production over the demo's streams: RAW → RTRAW → ESD at IHEP with juno-prod."""
    from juno_prod import release

    from .condor import release_dir

    say("\n== 6. keep-up production: juno-prod reconstructs every raw file at IHEP, RAW -> RTRAW -> ESD")
    release.install(release_dir(cfg) / "J25.1.0")
    name = f"kup-demo{out.number}"
    path = cfg.state_dir / "prod" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(KUP.format(number=out.number, streams=", ".join(out.streams)))
    env = {**os.environ, "RUCIO_CONFIG": str(cfg.rucio_cfg.parent / "juno_prod.cfg")}
    jp = [str(VENV_BIN / "juno-prod")]
    say(f"   $ juno-prod submit {path}")
    done = subprocess.run([*jp, "submit", str(path)], env=env, text=True, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise DemoFailed(f"juno-prod submit failed (exit {done.returncode}): {done.stderr.strip()}")
    say("   $ juno-prod run --once   (again until every file is through both steps)")
    deadline = time.monotonic() + timeout
    want = len(out.files)
    while True:
        run = subprocess.run([*jp, "run", "--once", "--transformation", name, "--json", "-q"], env=env,
                             text=True, capture_output=True, timeout=600)
        if run.returncode not in (0, 7):
            raise DemoFailed(f"juno-prod run failed (exit {run.returncode}): {run.stderr.strip()[-500:]}")
        data = json.loads(run.stdout)["transformations"][0]
        steps = {s["step"]: s["files"] for s in data["steps"]}
        if any(f.get("problematic") for f in steps.values()):
            raise DemoFailed(f"keep-up files became problematic: {steps} (juno-prod files {name} --state problematic)")
        if all(f.get("processed", 0) == want for f in steps.values()):
            break
        if time.monotonic() > deadline:
            raise DemoFailed(f"keep-up not done after {timeout:.0f} s: {steps}")
        time.sleep(3)
    status = subprocess.run([*jp, "status", name], env=env, text=True, capture_output=True, timeout=120)
    say("   $ juno-prod status " + name)
    for line in status.stdout.splitlines():
        say(f"   {line}".rstrip())
    say(f"   outputs: .venv/bin/juno-grid exec -- rucio did list 'rtraw:rtraw.{name}.*'  "
        f"(provenance: rucio did metadata list --plugin JSON rtraw:<file>)")


if __name__ == "__main__":
    sys.exit(main())
