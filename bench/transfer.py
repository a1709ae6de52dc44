"""Benchmark: 20 files of 50 MB replicated IHEP-EOS -> CNAF-DISK through Rucio and the transfer service.

Figures, all measured in this run on the same storages:
  service_mb_s   bytes / (last copy finished - first copy started), from the transfer service's own
                 per-file start and finish times as Rucio recorded them (request history)
  xrdcp_mb_s     the same files copied with plain `xrdcp --tpc only`, same parallelism as the service's
                 workers; measured before and after the Rucio run, the mean of the two
  ratio          service_mb_s / xrdcp_mb_s   (target >= 0.7)
  xrdcp_stream_mb_s, ratio_same_mode
                 the grid's service streams by default (JUNO_FTS_COPY_MODE, see juno_grid/config.py):
                 plain streamed `xrdcp` (no --tpc) is the like-for-like baseline for that mode
  rule_to_ok_s   wall time from adding the rule to the rule being OK, daemon cycles included

Run from the repository root (as root; it joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/transfer.py [--files 20] [--mb 50]
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
from juno_grid.config import FTS_COPY_MODE, load
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
    args = parser.parse_args()
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=False, log=lambda m: print(m, file=sys.stderr)):
        return run(args.files, args.mb * 1_000_000)


def run(n_files: int, size: int) -> int:
    from juno_grid import daemons, storage
    from rucio.client import Client
    from rucio.db.sqla import models
    from rucio.db.sqla.constants import RequestState
    from rucio.db.sqla.session import get_session
    from sqlalchemy import func, select

    client = Client()
    tag = uuid.uuid4().hex[:8]
    names = [f"bench.transfer.{tag}.{i:03d}.bin" for i in range(n_files)]
    total = n_files * size
    with tempfile.TemporaryDirectory() as tmp:
        print(f"writing {n_files} x {size / 1e6:.0f} MB to IHEP-EOS ...", file=sys.stderr)
        pfns = []
        for name in names:
            local = storage.make_file(Path(tmp) / name, size)
            pfns.append(storage.put_replica(client, "IHEP-EOS", SCOPE, name, local)["pfn"])
            local.unlink()
    cnaf = load_topology().rse("CNAF-DISK").protocols["local"]
    dest = f"{cnaf.url}/{cnaf.prefix}/bench/xrdcp/{tag}"

    t_before = xrdcp_round(storage, pfns, dest + "/a", tpc=True)
    s_before = xrdcp_round(storage, pfns, dest + "/sa", tpc=False)
    print(f"xrdcp --tpc (before): {total / 1e6 / t_before:8.1f} MB/s; streamed {total / 1e6 / s_before:8.1f} MB/s",
          file=sys.stderr)

    started = time.perf_counter()
    # One rule per file, as Rucio makes for a list of DIDs; all of them must reach OK.
    rule_ids = client.add_replication_rule([{"scope": SCOPE, "name": n} for n in names], 1, "CNAF-DISK",
                                           grouping="NONE")
    cycles = daemons.drive_until(
        lambda: all(client.get_replication_rule(r)["state"] == "OK" for r in rule_ids), timeout=900, pause=0.2)
    rule_to_ok = time.perf_counter() - started

    t_after = xrdcp_round(storage, pfns, dest + "/b", tpc=True)
    s_after = xrdcp_round(storage, pfns, dest + "/sb", tpc=False)
    print(f"xrdcp --tpc (after):  {total / 1e6 / t_after:8.1f} MB/s; streamed {total / 1e6 / s_after:8.1f} MB/s",
          file=sys.stderr)

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
    xrdcp = total / 1e6 / ((t_before + t_after) / 2)
    streamed = total / 1e6 / ((s_before + s_after) / 2)
    same_mode = streamed if FTS_COPY_MODE == "stream" else xrdcp
    result = {
        "ratio": round(service / xrdcp, 3),
        "service_mb_s": round(service, 1),
        "xrdcp_mb_s": round(xrdcp, 1),
        "service_copy_mode": FTS_COPY_MODE,
        "xrdcp_stream_mb_s": round(streamed, 1),
        "ratio_same_mode": round(service / same_mode, 3),
        "rule_to_ok_s": round(rule_to_ok, 2),
        "copy_window_s": round(copy_s, 2),
        "daemon_cycles": cycles,
        "files": n_files,
        "mb_per_file": size / 1e6,
    }
    print(f"service copies: {service:8.1f} MB/s over {copy_s:.1f} s; rule to OK {rule_to_ok:.1f} s "
          f"({cycles} daemon cycles); ratio service/xrdcp --tpc {result['ratio']}, "
          f"to plain xrdcp in the service's mode ({FTS_COPY_MODE}) {result['ratio_same_mode']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
