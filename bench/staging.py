"""Benchmark: one job's stage-in and stage-out, as juno_jobs/wrapper.py does them, against the local grid's
IHEP-EOS (XRootD), for a keep-up job of N raw files (512 bytes each, as tests/test_prod_live.py's).

Set-up, not measured: N raw files written straight into IHEP-EOS's exported directory, at the PFNs the
wrapper computes. Measured, each --rounds times: `wrapper.stage_in` of the N files (adler32 checked
against the values given, as Rucio's) and `wrapper.stage_out` of N rtraw outputs named from them
(checksum query, copy without --force, the storage's adler32 compared with the worker's), to new names
every round. `--wrapper FILE` measures another version of the wrapper (e.g. the one before a change:
`git show REV:juno_jobs/wrapper.py > /tmp/old.py`). The wrapper runs here, in the grid's network namespace,
with the host's xrdcp, not inside the HTCondor chroot.

Run from the repository root (as root; joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/staging.py [--files 40] [--rounds 3] [--copies 4] [--wrapper FILE]
Last line: one JSON object with `files`, `stage_in_s`, `stage_out_s` (medians), `per_file_s`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

from juno_grid import grid
from juno_grid.config import load

ROOT = Path(__file__).resolve().parents[1]
RSE = "IHEP-EOS"


def load_wrapper(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"bench_wrapper_{uuid.uuid4().hex[:6]}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--wrapper", type=Path, default=ROOT / "juno_jobs" / "wrapper.py")
    args = ap.parse_args()
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=False, log=lambda m: print(m, file=sys.stderr)):
        from juno_jobs.pfns import NAMING
        return 0 if run(cfg, args, NAMING) else 1


def run(cfg: Any, args: argparse.Namespace, naming: dict[str, str]) -> bool:
    wrapper = load_wrapper(args.wrapper)
    tag = uuid.uuid4().hex[:8]
    prefix = f"eos/juno/dci/bench-staging-{tag}"
    base = f"root://127.0.0.1:{cfg.ports.xrootd_base}//{prefix}/"
    root = cfg.storage_dir(RSE) / prefix
    owner = cfg.storage_dir(RSE).stat()  # the XRootD server's user must be able to write there
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 86400))
    inputs = []
    for i in range(args.files):
        name = f"RUN.{90000 + i % 7}.JUNODAQ.Physics.ds-2.global_trigger.{stamp}.{i:03d}.dat"
        data = os.urandom(512)
        path = root / wrapper.lfn_path("raw", name, re.compile(naming["raw_file"]), re.compile(naming["derived_file"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        inputs.append(["raw", name, 512, f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"])
    for dirpath, _dirs, filenames in os.walk(root):
        for entry in [dirpath, *(os.path.join(dirpath, f) for f in filenames)]:
            os.chown(entry, owner.st_uid, owner.st_gid)
    bases = {RSE: {"site": "IHEP", "base": base}}
    task = {"naming": naming, "rse_bases": bases, "copies": args.copies,
            "output": {"scope": "rtraw", "rse": RSE, "naming": "file", "dataset": "x", "bases": bases}}
    spec = {"rses": [RSE], "sites": ["IHEP"], "inputs": inputs}
    ins: list[float] = []
    outs: list[float] = []
    scratch = Path(f"/tmp/bench-staging-{tag}")
    try:
        for r in range(args.rounds):
            work = scratch / str(r)
            t0 = time.monotonic()
            got = wrapper.stage_in(spec, task, "IHEP", work / "inputs")
            ins.append(time.monotonic() - t0)
            assert len(got) == args.files
            outdir = work / "outputs"
            outdir.mkdir()
            records = []
            for _scope, name, _size, _adler in inputs:
                out = f"{name[:-4]}_J{r + 1}.{int(tag[:2], 16) % 10}.0.rtraw"
                data = (work / "inputs" / name).read_bytes() + b"rtraw\n"
                (outdir / out).write_bytes(data)
                records.append({"file": out, "bytes": len(data), "adler32": f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"})
            t0 = time.monotonic()
            done = wrapper.stage_out(records, outdir, task, 0, "IHEP", [RSE])
            outs.append(time.monotonic() - t0)
            assert all(d["storage_adler32"] == d["adler32"] for d in done)
            print(f"round {r + 1}: stage-in {ins[-1]:.2f} s, stage-out {outs[-1]:.2f} s for {args.files} files; "
                  f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    i, o = statistics.median(ins), statistics.median(outs)
    print(json.dumps({"wrapper": str(args.wrapper), "files": args.files, "copies": args.copies,
                      "stage_in_s": round(i, 2), "stage_out_s": round(o, 2),
                      "per_file_s": round((i + o) / args.files, 3), "load_1min": round(os.getloadavg()[0], 2)}))
    return True


if __name__ == "__main__":
    sys.exit(main())
