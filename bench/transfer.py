"""Benchmark: files of 50 MB replicated IHEP-EOS -> CNAF-DISK through Rucio and the transfer service, per copy mode.

The transfer service copies with gfal2 (FTS3's library) in the mode its per-link configuration names
(`<state>/fts/links.json`, links.py): the benchmark sets the IHEP-EOS -> CNAF-DISK link to each mode in turn,
replicates a fresh set of files through Rucio (rules, the daemons, the service) and compares with the plain
client doing the same copies in the same mode, as many at a time as the service has workers:
  root, stream   the service streams through itself  vs  plain `xrdcp` (streamed)
  root, tpc      XRootD third-party copy             vs  plain `xrdcp --tpc only`
  davs, ...      HTTP-TPC pull / push / streamed: not measured, the grid's storages do not serve davs yet

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
from juno_grid.config import FTS_COPY_MODE, GridConfig, load
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
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not 1 <= args.files <= 200 or not 1 <= args.mb <= 1000 or not set(modes) <= {"stream", "tpc"}:
        parser.error("keep it bounded: 1-200 files of 1-1000 MB; modes stream and/or tpc")
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=False, log=lambda m: print(m, file=sys.stderr)):
        return run(cfg, args.files, args.mb * 1_000_000, modes)


def set_link_mode(cfg: GridConfig, link: str, mode: str | None) -> None:
    """The service's per-link modes file (it re-reads it when it changes); None: remove the link."""
    from juno_grid.fts.links import set_link

    set_link(cfg.state_dir / "fts" / "links.json", link, mode, FTS_COPY_MODE)


def run(cfg: GridConfig, n_files: int, size: int, modes: list[str]) -> int:
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
            results[mode] = {"service_mb_s": round(service, 1), "client_mb_s": round(plain, 1),
                             "ratio": round(service / plain, 3), "rule_to_ok_s": round(rule_to_ok, 2),
                             "copy_window_s": round(copy_s, 2)}
            print(f"root {mode}: service {service:.1f} MB/s over {copy_s:.1f} s vs plain xrdcp"
                  f"{' --tpc only' if tpc else ''} {plain:.1f} MB/s: ratio {service / plain:.3f}; rules OK after "
                  f"{rule_to_ok:.1f} s", file=sys.stderr)
    finally:
        set_link_mode(cfg, link, None)
    headline = FTS_COPY_MODE if FTS_COPY_MODE in results else next(iter(results))
    result = {
        "ratio": results[headline]["ratio"],
        "ratio_mode": f"root {headline}",
        **{f"ratio_root_{m}": r["ratio"] for m, r in results.items()},
        "ratio_davs_pull": None, "ratio_davs_push": None, "ratio_davs_stream": None,
        "davs": "not measured: the grid's storages serve root:// only (HTTP-TPC not built yet)",
        "engine": engine,
        "modes": {f"root {m}": r for m, r in results.items()},
        "workers": WORKERS,
        "files": n_files,
        "mb_per_file": size / 1e6,
    }
    print(f"engine {engine}: " + "; ".join(f"root {m} ratio {r['ratio']}" for m, r in results.items()))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
