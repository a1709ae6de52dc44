"""Benchmark: files of 50 MB replicated IHEP-EOS -> CNAF-DISK through Rucio and the transfer service, per copy mode.

The transfer service copies with gfal2 (FTS3's library) in the mode its per-link configuration names
(`<state>/fts/links.json`, links.py): the benchmark sets the IHEP-EOS -> CNAF-DISK link to each mode in turn,
replicates a fresh set of files through Rucio (rules, the daemons, the service) and compares with the plain
client doing the same copies in the same mode, as many at a time as the service has workers:
  root, stream   the service streams through itself  vs  plain `xrdcp` (streamed)
  root, tpc      XRootD third-party copy             vs  plain `xrdcp --tpc only`
  davs, tpc      HTTP-TPC pull (the destination fetches)  vs  plain gfal2 (the library, no service) pull
  davs, push     HTTP-TPC push (the source sends)         vs  plain gfal2 push
  davs, stream   through the service                      vs  plain gfal2 streamed
Rucio transfers over root (`[conveyor] scheme`): the davs rounds submit the same FTS3 jobs Rucio would
straight to the service (all files of a round in one job, adler32 given, verify_checksum both) and time
them from the service's own per-file records; the plain gfal2 copies run in one /usr/bin/python3
process with as many threads as the service has workers, a gfal2 context each.

Figures per mode, all measured in this run on the same storages:
  service_mb_s   bytes / (last copy finished - first copy started), from the service's own per-file start
                 and finish times as Rucio recorded them (request history)
  client_mb_s    the same files with the plain client in that mode; measured before and after the Rucio run,
                 the mean of the two
  ratio          service_mb_s / client_mb_s
  rule_to_ok_s   wall time from adding the rules to every rule OK
The headline `ratio` is the grid's default mode (JUNO_FTS_COPY_MODE, `stream`) against the plain client
in that same mode; `ratio_<protocol>_<mode>` are all of them.

Run from the repository root (as root; it joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/transfer.py [--files 20] [--mb 50] [--modes stream,tpc]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from juno_grid import grid
from juno_grid.config import FTS_COPY_MODE, FTS_PYTHON, GridConfig, load
from juno_grid.config import FTS_WORKERS as WORKERS

from rucio_policy.topology import load as load_topology

SCOPE = "user.jcoord"


def xrdcp_round(storage, sources: list[str], dest_base: str, *, tpc: bool) -> float:  # noqa: ANN001
    """Copy every source with plain xrdcp (third-party or streamed), WORKERS at a time; return seconds."""
    started = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda s: storage.copy(s, f"{dest_base}/{uuid.uuid4().hex}", tpc=tpc), sources))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--modes", default="stream,tpc", help="root:// copy modes to measure (stream, tpc)")
    parser.add_argument("--davs-modes", default="tpc,push,stream",
                        help="davs:// copy modes to measure (tpc = HTTP-TPC pull, push, stream); '' for none")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    davs_modes = [m for m in args.davs_modes.split(",") if m]
    if not 1 <= args.files <= 200 or not 1 <= args.mb <= 1000 or not set(modes) <= {"stream", "tpc"} \
            or not set(davs_modes) <= {"tpc", "push", "stream"}:
        parser.error("keep it bounded: 1-200 files of 1-1000 MB; root modes stream/tpc, davs modes tpc/push/stream")
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=False, log=lambda m: print(m, file=sys.stderr)):
        return run(cfg, args.files, args.mb * 1_000_000, modes, davs_modes)


def set_link_mode(cfg: GridConfig, link: str, mode: str | None) -> None:
    """The service's per-link modes file (it re-reads it when it changes); None: remove the link."""
    from juno_grid.fts.links import set_link

    set_link(cfg.state_dir / "fts" / "links.json", link, mode, FTS_COPY_MODE)


GFAL_ROUND = r"""
import json, sys, time, gfal2
from concurrent.futures import ThreadPoolExecutor
mode, pairs, workers = json.loads(sys.argv[1])
http = {"tpc": "3rd pull", "push": "3rd push", "stream": "streamed"}[mode]
def one(pair):
    ctx = gfal2.creat_context()
    ctx.set_opt_string("HTTP PLUGIN", "DEFAULT_COPY_MODE", http)
    ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_FALLBACK_TPC_COPY", False)
    ctx.set_opt_string("BEARER", "TOKEN", "anonymous")
    p = ctx.transfer_parameters(); p.overwrite = True; p.create_parent = True
    p.set_checksum(gfal2.checksum_mode.both, "ADLER32", pair[2])
    ctx.filecopy(p, pair[0], pair[1])
t = time.perf_counter()
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(one, pairs))
print(time.perf_counter() - t)
"""


def gfal_round(pairs: list[tuple[str, str, str]], mode: str) -> float:
    """Plain gfal2 copies (source, destination, adler32) in `mode`, WORKERS at a time; returns seconds."""
    import subprocess

    out = subprocess.run([FTS_PYTHON, "-c", GFAL_ROUND, json.dumps([mode, pairs, WORKERS])], capture_output=True,
                         text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"plain gfal2 round ({mode}) failed: {out.stderr.strip()[-800:]}")
    return float(out.stdout.strip().splitlines()[-1])


def service_round(cfg: GridConfig, pairs: list[tuple[str, str, str]], size: int) -> float:
    """One FTS3 job of all pairs to the grid's service; seconds from its first copy start to its last end."""
    import sqlite3

    import requests

    files = [{"sources": [s], "destinations": [d], "checksum": f"ADLER32:{c}", "filesize": size,
              "metadata": {"request_id": uuid.uuid4().hex}} for s, d, c in pairs]
    body = {"files": files, "params": {"verify_checksum": "both", "overwrite": True, "priority": 3}}
    job_id = requests.post(f"{cfg.fts_url}/jobs", data=json.dumps(body), timeout=30).json()["job_id"]
    deadline = time.monotonic() + 1800
    while True:
        job = requests.get(f"{cfg.fts_url}/jobs/{job_id}", timeout=30).json()
        if job["job_state"] in ("FINISHED", "FAILED", "FINISHEDDIRTY", "CANCELED"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"service job {job_id} not done in 1800 s")
        time.sleep(0.2)
    if job["job_state"] != "FINISHED":
        files = requests.get(f"{cfg.fts_url}/jobs/{job_id}/files", timeout=30).json()
        raise RuntimeError(f"service job {job_id} {job['job_state']}: {files[0].get('reason')}")
    db = sqlite3.connect(f"file:{cfg.state_dir / 'fts' / 'jobs.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        first, last = db.execute("SELECT min(start_time), max(finish_time) FROM files WHERE job_id = ?",
                                 (job_id,)).fetchone()
    finally:
        db.close()
    return max(last - first, 1e-3)


def run(cfg: GridConfig, n_files: int, size: int, modes: list[str], davs_modes: list[str]) -> int:
    from juno_grid import daemons, storage
    from rucio.client import Client
    from rucio.db.sqla import models
    from rucio.db.sqla.constants import RequestState
    from rucio.db.sqla.session import get_session
    from sqlalchemy import func, select

    client = Client()
    total = n_files * size
    topo = load_topology()
    ihep, cnaf = topo.rse("IHEP-EOS").protocols["local"], topo.rse("CNAF-DISK").protocols["local"]
    link = f"{ihep.hostname}:{ihep.port}>{cnaf.hostname}:{cnaf.port}"
    fts_argv = grid.cmdline(cfg, grid.FTS)
    engine = grid.option(fts_argv, "--engine", "xrootd")
    results: dict[str, dict[str, float | int]] = {}
    try:
        for mode in modes:
            tag = uuid.uuid4().hex[:8]
            names = [f"bench.transfer.{tag}.{i:03d}.bin" for i in range(n_files)]
            with tempfile.TemporaryDirectory() as tmp:
                print(f"[{mode}] writing {n_files} x {size / 1e6:.0f} MB to IHEP-EOS ...", file=sys.stderr)
                pfns = []
                for name in names:
                    local = storage.make_file(Path(tmp) / name, size)
                    pfns.append(storage.put_replica(client, "IHEP-EOS", SCOPE, name, local)["pfn"])
                    local.unlink()
            dest = f"{cnaf.url}/{cnaf.prefix}/bench/xrdcp/{tag}"
            tpc = mode == "tpc"
            before = xrdcp_round(storage, pfns, dest + "/a", tpc=tpc)
            set_link_mode(cfg, link, mode)
            time.sleep(0.5)
            started = time.perf_counter()
            # One rule per file, as Rucio makes for a list of DIDs; all of them must reach OK.
            rule_ids = client.add_replication_rule([{"scope": SCOPE, "name": n} for n in names], 1, "CNAF-DISK",
                                                   grouping="NONE")
            daemons.drive_until(lambda ids=rule_ids: all(client.get_replication_rule(r)["state"] == "OK" for r in ids),
                                timeout=900, pause=0.2)
            rule_to_ok = time.perf_counter() - started
            after = xrdcp_round(storage, pfns, dest + "/b", tpc=tpc)
            session = get_session()
            try:
                first, last = session.execute(
                    select(func.min(models.RequestHistory.started_at), func.max(models.RequestHistory.transferred_at))
                    .where(models.RequestHistory.name.in_(names))
                    .where(models.RequestHistory.state == RequestState.DONE)
                ).one()
            finally:
                session.close()
            copy_s = max((last - first).total_seconds(), 1e-3)
            service = total / 1e6 / copy_s
            plain = total / 1e6 / ((before + after) / 2)
            results[f"root {mode}"] = {"service_mb_s": round(service, 1), "client_mb_s": round(plain, 1),
                             "ratio": round(service / plain, 3), "rule_to_ok_s": round(rule_to_ok, 2),
                             "copy_window_s": round(copy_s, 2)}
            print(f"root {mode}: service {service:.1f} MB/s over {copy_s:.1f} s vs plain xrdcp"
                  f"{' --tpc only' if tpc else ''} {plain:.1f} MB/s: ratio {service / plain:.3f}; rules OK after "
                  f"{rule_to_ok:.1f} s", file=sys.stderr)
        # davs: the same kind of files, HTTP modes, service vs plain gfal2 in the same mode.
        ihep_rse, cnaf_rse = topo.rse("IHEP-EOS"), topo.rse("CNAF-DISK")
        from juno_grid import xrootd

        davs_src = f"{xrootd.davs_url(ihep_rse)}/{ihep.prefix.strip('/')}"
        davs_dst = f"{xrootd.davs_url(cnaf_rse)}/{cnaf.prefix.strip('/')}"
        davs_link = f"{davs_src.split('/')[2]}>{davs_dst.split('/')[2]}"
        for mode in davs_modes:
            tag = uuid.uuid4().hex[:8]
            sums = []
            with tempfile.TemporaryDirectory() as tmp:
                print(f"[davs {mode}] writing {n_files} x {size / 1e6:.0f} MB to IHEP-EOS ...", file=sys.stderr)
                for i in range(n_files):
                    local = storage.make_file(Path(tmp) / f"{i}.bin", size)
                    sums.append(storage.adler32_file(local))
                    storage.copy(str(local), f"{ihep.url}//{ihep.prefix.strip('/')}/bench/davs/{tag}/{i}.bin")
                    local.unlink()
            src = [f"{davs_src}/bench/davs/{tag}/{i}.bin" for i in range(n_files)]
            plain_a = gfal_round([(s_, f"{davs_dst}/bench/davs/{tag}/a/{i}", c) for i, (s_, c)
                                  in enumerate(zip(src, sums, strict=True))], mode)
            set_link_mode(cfg, davs_link, mode)
            time.sleep(0.5)
            svc = service_round(cfg, [(s_, f"{davs_dst}/bench/davs/{tag}/svc/{i}", c) for i, (s_, c)
                                      in enumerate(zip(src, sums, strict=True))], size)
            plain_b = gfal_round([(s_, f"{davs_dst}/bench/davs/{tag}/b/{i}", c) for i, (s_, c)
                                  in enumerate(zip(src, sums, strict=True))], mode)
            service = total / 1e6 / svc
            plain = total / 1e6 / ((plain_a + plain_b) / 2)
            results[f"davs {mode}"] = {"service_mb_s": round(service, 1), "client_mb_s": round(plain, 1),
                                       "ratio": round(service / plain, 3), "copy_window_s": round(svc, 2)}
            print(f"davs {mode}: service {service:.1f} MB/s vs plain gfal2 {plain:.1f} MB/s: ratio "
                  f"{service / plain:.3f}", file=sys.stderr)
            set_link_mode(cfg, davs_link, None)
    finally:
        set_link_mode(cfg, link, None)
    headline = f"root {FTS_COPY_MODE}" if f"root {FTS_COPY_MODE}" in results else next(iter(results))
    names = {"root stream": "root_stream", "root tpc": "root_tpc", "davs tpc": "davs_pull", "davs push": "davs_push",
             "davs stream": "davs_stream"}
    result = {
        "ratio": results[headline]["ratio"],
        "ratio_mode": headline,
        **{f"ratio_{names[m]}": r["ratio"] for m, r in results.items()},
        "ratio_min": min(r["ratio"] for r in results.values()),
        "engine": engine,
        "modes": results,
        "workers": WORKERS,
        "files": n_files,
        "mb_per_file": size / 1e6,
    }
    print(f"engine {engine}: " + "; ".join(f"{m} ratio {r['ratio']}" for m, r in results.items()))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
