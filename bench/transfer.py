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
Every round goes through Rucio (one rule per file, the daemons, the service): the root rounds with Rucio
choosing root, the davs rounds with Rucio choosing davs (the RSEs' third-party-copy priorities, juno_grid.tpc;
the choice in force before is restored at the end). The plain gfal2 copies run in one /usr/bin/python3 process
with as many threads as the service has workers, a gfal2 context each.

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


def run(cfg: GridConfig, n_files: int, size: int, modes: list[str], davs_modes: list[str]) -> int:
    from juno_grid import daemons, storage, tpc, xrootd
    from rucio.client import Client
    from rucio.db.sqla import models
    from rucio.db.sqla.constants import RequestState
    from rucio.db.sqla.session import get_session
    from sqlalchemy import func, select

    client = Client()
    total = n_files * size
    topo = load_topology()
    rse_names = [r.name for r in topo.rses]
    tape = {r.name for r in topo.rses if r.is_tape}
    ihep_rse, cnaf_rse = topo.rse("IHEP-EOS"), topo.rse("CNAF-DISK")
    ihep, cnaf = ihep_rse.protocols["local"], cnaf_rse.protocols["local"]
    links = {"root": f"{ihep.hostname}:{ihep.port}>{cnaf.hostname}:{cnaf.port}",
             "davs": f"{xrootd.davs_url(ihep_rse).split('//')[1]}>{xrootd.davs_url(cnaf_rse).split('//')[1]}"}
    davs_dst = f"{xrootd.davs_url(cnaf_rse)}/{cnaf.prefix.strip('/')}"
    fts_argv = grid.cmdline(cfg, grid.FTS)
    engine = grid.option(fts_argv, "--engine", "xrootd")
    chosen_before = tpc.current(client, rse_names)
    results: dict[str, dict[str, float | int]] = {}
    rounds = [("root", m) for m in modes] + [("davs", m) for m in davs_modes]
    try:
        for scheme, mode in rounds:
            # Rucio transfers over `scheme` (the RSEs' third-party-copy priorities), the link copies in `mode`.
            tpc.choose(client, rse_names, tape, scheme)
            tag = uuid.uuid4().hex[:8]
            names = [f"bench.transfer.{tag}.{i:03d}.bin" for i in range(n_files)]
            sums = []
            with tempfile.TemporaryDirectory() as tmp:
                print(f"[{scheme} {mode}] writing {n_files} x {size / 1e6:.0f} MB to IHEP-EOS ...", file=sys.stderr)
                for name in names:
                    local = storage.make_file(Path(tmp) / name, size)
                    sums.append(storage.put_replica(client, "IHEP-EOS", SCOPE, name, local)["adler32"])
                    local.unlink()
            dids = [{"scope": SCOPE, "name": n} for n in names]
            srcs = {r["name"]: r["rses"]["IHEP-EOS"][0] for r in client.list_replicas(dids, schemes=[scheme])}
            sources = [srcs[n] for n in names]

            def plain(sub: str, scheme: str = scheme, mode: str = mode, sources: list[str] = sources,
                      tag: str = tag, sums: list[str] = sums) -> float:
                if scheme == "root":
                    dest = f"{cnaf.url}/{cnaf.prefix}/bench/xrdcp/{tag}/{sub}"
                    return xrdcp_round(storage, sources, dest, tpc=mode == "tpc")
                return gfal_round([(s_, f"{davs_dst}/bench/gfal/{tag}/{sub}/{i}", c)
                                   for i, (s_, c) in enumerate(zip(sources, sums, strict=True))], mode)

            before = plain("a")
            set_link_mode(cfg, links[scheme], mode)
            time.sleep(0.5)
            started = time.perf_counter()
            # One rule per file, as Rucio makes for a list of DIDs; all of them must reach OK.
            rule_ids = client.add_replication_rule(dids, 1, "CNAF-DISK", grouping="NONE")
            daemons.drive_until(lambda ids=rule_ids: all(client.get_replication_rule(r)["state"] == "OK" for r in ids),
                                timeout=900, pause=0.2)
            rule_to_ok = time.perf_counter() - started
            set_link_mode(cfg, links[scheme], None)
            after = plain("b")
            session = get_session()
            try:
                first, last, used = session.execute(
                    select(func.min(models.RequestHistory.started_at), func.max(models.RequestHistory.transferred_at),
                           func.min(models.RequestHistory.dest_url))
                    .where(models.RequestHistory.name.in_(names))
                    .where(models.RequestHistory.state == RequestState.DONE)
                ).one()
            finally:
                session.close()
            if not str(used).startswith(f"{scheme}://"):
                raise RuntimeError(f"Rucio transferred over {str(used).split(':')[0]}, not {scheme}")
            copy_s = max((last - first).total_seconds(), 1e-3)
            service = total / 1e6 / copy_s
            plain_mb_s = total / 1e6 / ((before + after) / 2)
            results[f"{scheme} {mode}"] = {
                "service_mb_s": round(service, 1), "client_mb_s": round(plain_mb_s, 1),
                "ratio": round(service / plain_mb_s, 3), "rule_to_ok_s": round(rule_to_ok, 2),
                "copy_window_s": round(copy_s, 2)}
            client_name = ("xrdcp" + (" --tpc only" if mode == "tpc" else "")) if scheme == "root" else f"gfal2 {mode}"
            print(f"{scheme} {mode}: service {service:.1f} MB/s over {copy_s:.1f} s vs plain {client_name} "
                  f"{plain_mb_s:.1f} MB/s: ratio {service / plain_mb_s:.3f}; rules OK after {rule_to_ok:.1f} s",
                  file=sys.stderr)
    finally:
        for link in links.values():
            set_link_mode(cfg, link, None)
        previous = "davs" if "davs" in chosen_before.values() else "root"
        tpc.choose(client, rse_names, tape, previous)
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
