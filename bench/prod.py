"""Benchmark: juno-prod runs a re-production campaign over 100,000 raw files in Rucio at 4 sites.

Input: bench/submit.py's container `raw:stream.JUNODAQ.bench_submit.2025` (40 daily blocks of 2,500 files;
disk replicas at one or two of the 4 sites per block, plus IHEP-TAPE), registered once and reused.

Figures, all measured in this run:
  submit_s              `juno-prod submit` of a two-step campaign (rtraw, 10 files per job) and its first
                        cycle (input found in Rucio, 100,000 files recorded and claimed, jobs grouped by the
                        sites holding their files, one juno_jobs task per claim) until every job is in the
                        schedd (submitted on hold: the 4-slot pool never runs them; removed at the end)
                                                                                   (target < 30 s)
  complete_files_per_s  a second campaign over 8 blocks (20,000 files; local backend, held) whose jobs are
                        then left finished as the wrapper leaves them (each output on storage, result record,
                        events); one cycle verifies every output on storage, registers it in Rucio with its
                        dataset, records the files processed, finds the next step's input in Rucio and
                        creates its jobs: files / seconds
  raw_files_per_s       the raw bulk API alone: attach_dids(..., rse=RSE) of as many fresh files, 1,000 a
                        call, before and after (mean)
  ratio                 complete_files_per_s / raw_files_per_s                     (target >= 0.7)
  status_s              `juno-prod status` of the 100,000-file campaign as a command (start-up included)
                                                                                   (target < 1 s)

Run from the repository root (as root; joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/prod.py [--complete-blocks 8] [--blocks N] [--profile FILE]
    (FILE: the completion cycle's cProfile; FILE.submit: submit and its first cycle's)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import submit as bench_submit  # noqa: E402 - bench/submit.py's input fixture
from complete import _make_dirs  # noqa: E402 - outputs placed as bench/complete.py places them
from juno_grid import grid  # noqa: E402
from juno_grid.config import load  # noqa: E402

TF = """\
name: {name}
release: J25.1.0
input: {{dids: [{dids}]}}
steps:
  - {{name: rtraw, payload: bin/juno-prod-step, files_per_job: 10, output: {{scope: rtraw, rse: site}},
      resources: {{memory: 1GB, wall_time: 1h}}}}
  - {{name: esd, payload: bin/juno-prod-step, files_per_job: 10, output: {{scope: esd, rse: site}},
      resources: {{memory: 1GB, wall_time: 1h}}}}
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prod_client() -> Any:
    from juno_grid.accounts import local_password
    from rucio.client import Client

    return Client(account="juno_prod", auth_type="userpass",
                  creds={"username": "juno_prod", "password": local_password("juno_prod")})


def production(work: Path, backend: str, client: Any, max_idle: int) -> Any:
    from juno_grid import condor

    from juno_jobs.settings import Settings
    from juno_prod.db import Db
    from juno_prod.engine import Production

    cfg = Settings(work_dir=work / "jobs", backend=backend, job_owner=(condor.JOB_UID, condor.JOB_GID),
                   max_idle=max_idle)
    cfg.tasks_dir.mkdir(parents=True, exist_ok=True)
    prod = Production(Db(f"sqlite:///{work / 'prod.sqlite'}"), work, lambda: client, cfg)
    prod.hold = True
    return prod


def tf_file(work: Path, name: str, dids: list[str]) -> Any:
    from juno_prod import transformation

    path = work / f"{name}.yaml"
    path.write_text(TF.format(name=name, dids=", ".join(f"'{d}'" for d in dids)))
    return transformation.load(path)


def in_schedd(uuids: list[str]) -> int:
    import htcondor2

    schedd = htcondor2.Schedd()
    constraint = " || ".join(f'JunoTask == "{u}"' for u in uuids)
    for _ in range(30):
        try:
            return len(schedd.query(constraint, projection=["ProcId"]))
        except htcondor2.HTCondorException:
            time.sleep(1)
    raise RuntimeError("the schedd does not answer")


def finish_jobs(cfg: Any, prod: Any, tf: Any) -> int:
    """Leave every job of the campaign's first step finished, as the wrapper would: outputs on storage at
    the site's disk RSE, result records, events. Set-up, not measured. Returns the outputs written."""
    from juno_jobs.pfns import path_of
    from juno_jobs.taskdir import TaskDir
    from juno_prod import decide

    step = tf.steps[0]
    written = 0
    now = time.time()
    for claim in prod.db.claims(states=["running"]):
        task = prod.sess.store.task(int(claim["task_id"]))
        td = TaskDir(task.task_dir)
        bases = task.policy["output_bases"]
        by_job: dict[int, list[dict[str, Any]]] = {}
        for f in prod.db.claim_files(claim["token"]):
            by_job.setdefault(int(f["job"]), []).append(f)
        events = []
        for job_row in prod.sess.store.jobs(task.id):
            job = int(job_row["job"])
            sites = job_row["sites"].split(",")
            rse = next(r for r, b in sorted(bases.items()) if b["site"] in sites)
            root = cfg.storage_dir(rse)
            prefix = bases[rse]["base"].split("//", 2)[2]
            outs = []
            for f in by_job[job]:
                name = decide.output_name(tf.name, step, f)
                data = f"rtraw of {f['name']}\n".encode()
                adler = f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
                rel = path_of(step.scope, name)
                target = root / prefix.lstrip("/") / rel
                _make_dirs(target.parent, root)
                target.write_bytes(data)
                os.chown(target, root.stat().st_uid, root.stat().st_gid)
                outs.append({"file": name, "bytes": len(data), "adler32": adler, "scope": step.scope, "name": name,
                             "rse": rse, "url": bases[rse]["base"] + rel, "storage_adler32": adler})
                written += 1
            record = {"job": job, "attempt": 1, "site": bases[rse]["site"], "exit_code": 0, "failure": None,
                      "message": "", "inputs": [], "started": now, "finished": now, "max_rss_mb": 1, "outputs": outs}
            td.result(job, 1).write_text(json.dumps(record))
            td.stdout(job, 1).write_text("ok\n")
            td.stderr(job, 1).write_text("ok\n")
            for kind, extra in (("submit", {}), ("execute", {"site": bases[rse]["site"]}),
                                ("terminated", {"exit_code": 0})):
                events.append(json.dumps({"round": 1, "proc": job, "kind": kind, "time": now, **extra}))
        td.local_events.write_text("\n".join(events) + "\n")
    return written


def raw_attach(client: Any, n: int, tag: str) -> float:
    """The raw bulk API: attach_dids(..., rse=RSE) of n fresh small files, 1,000 a call, by RSE."""
    rses = ("IHEP-EOS", "CNAF-DISK", "JINR-DISK", "IN2P3-DISK")
    dataset = f"rtraw.bench-prod-raw-{tag}"
    client.add_dataset("rtraw", dataset)
    by_rse: dict[str, list[dict[str, Any]]] = {}
    for i in range(n):
        data = f"file {i} {tag}\n".encode()
        by_rse.setdefault(rses[i % 4], []).append({"scope": "rtraw", "name": f"{dataset}.{i:06d}", "bytes": len(data),
                                                   "adler32": f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"})
    started = time.perf_counter()
    for rse, files in by_rse.items():
        for i in range(0, len(files), 1000):
            client.attach_dids("rtraw", dataset, files[i:i + 1000], rse=rse)
    return time.perf_counter() - started


def blocks_ready(client: Any, n: int) -> list[str]:
    """The first n blocks of bench/submit.py's input, each complete (a smaller run on a busy machine)."""
    out = []
    for i in range(n):
        name = f"block.{bench_submit.STREAM}.{bench_submit._block_day(i):%Y%m%d}"
        did = client.get_did("raw", name, dynamic_depth="FILE")
        if did.get("length") != bench_submit.FILES_PER_BLOCK:
            raise SystemExit(f"raw:{name} is not complete: run without --blocks (registers all 40 blocks once)")
        out.append(f"raw:{name}")
    return out


def _profiler(profile: Path | None) -> Any:
    """A running cProfile when --profile was given (diagnosis only: a profiled run's figures are not
    comparable)."""
    if profile is None:
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def run(complete_blocks: int, keep: bool, blocks: int | None, profile: Path | None = None) -> int:
    from juno_grid import condor
    from juno_grid.accounts import write_account_config
    from rucio.client import Client

    from juno_jobs import control

    cfg = load()
    if blocks is None:
        bench_submit.ensure_input(Client())
        inputs = [f"raw:{bench_submit.YEAR_CONTAINER}"]
    else:
        inputs = blocks_ready(Client(), blocks)
    condor.configure_bindings(cfg)
    client = prod_client()
    tag = uuid.uuid4().hex[:6]
    work = condor.job_dir(cfg, f"bench-prod-{tag}")
    prod = None
    try:
        # 1. submit → every job in the schedd
        prod = production(work / "big", "condor", client, max_idle=20_000)
        tf = tf_file(work, f"bp-{tag}", inputs)
        log("submit and first cycle ...")
        submit_profiler = _profiler(profile)
        started = time.perf_counter()
        prod.submit(tf)
        report = prod.cycle()
        if submit_profiler is not None:
            submit_profiler.disable()
            submit_profiler.dump_stats(f"{profile}.submit")
            log(f"  profile of submit and the first cycle: {profile}.submit")
        uuids = [prod.sess.store.task(int(c["task_id"])).uuid for c in prod.db.claims(states=["running"])]
        n_jobs = report.jobs
        while (have := in_schedd(uuids)) < n_jobs:
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {have} of {n_jobs} jobs in the schedd after 600 s")
            time.sleep(0.5)
        submit_s = time.perf_counter() - started
        log(f"  {report.assigned} files, {n_jobs} jobs in {len(uuids)} clusters, all in the schedd: {submit_s:.2f} s")
        # 2. status of 100,000 files, as a command
        cli_cfg = write_account_config(Path(os.environ["RUCIO_CONFIG"]), "juno_prod", dest_dir=work)
        env = {**os.environ, "JUNO_PROD_DIR": str(work / "big"), "RUCIO_CONFIG": str(cli_cfg)}
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "juno_prod.cli", "status", tf.name], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
        status_s = min(times)
        log(f"  status {status_s:.2f} s (best of 3: {', '.join(f'{t:.2f}' for t in times)})")
        for c in prod.db.claims(states=["running"]):
            control.kill(prod.sess, prod.sess.store.task(int(c["task_id"])))
        # 3. completions → registered, next step's jobs created
        blocks = [f"raw:block.{bench_submit.STREAM}.{bench_submit._block_day(i):%Y%m%d}"
                  for i in range(complete_blocks)]
        small = production(work / "small", "local", client, max_idle=20_000)
        tf2 = tf_file(work, f"bc-{tag}", blocks)
        small.submit(tf2)
        r1 = small.cycle()
        log(f"  completion campaign: {r1.assigned} files in {r1.jobs} jobs; leaving them finished ...")
        n_out = finish_jobs(cfg, small, tf2)
        log("  raw bulk API (before) ...")
        raw_before = raw_attach(client, n_out, f"{tag}a")
        log(f"    {raw_before:.2f} s")
        profiler = _profiler(profile)
        started = time.perf_counter()
        r2 = small.cycle()
        complete_s = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
            log(f"  profile of the completion cycle: {profile} (python -m pstats)")
        log(f"  one cycle: {r2.processed} processed, {r2.discovered} next-step files found, {r2.jobs} next-step "
            f"jobs created in {complete_s:.2f} s; warnings {r2.warnings[:2]}")
        log("  raw bulk API (after) ...")
        raw_after = raw_attach(client, n_out, f"{tag}b")
        log(f"    {raw_after:.2f} s")
    finally:
        if prod is not None:
            for c in prod.db.claims(states=["running"]):
                try:
                    control.kill(prod.sess, prod.sess.store.task(int(c["task_id"])))
                except Exception as err:  # noqa: BLE001 - clean-up goes on
                    log(f"kill: {err}")
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    raw_fps = n_out / ((raw_before + raw_after) / 2)
    fps = r2.processed / complete_s
    result = {"submit_s": round(submit_s, 3), "files": report.assigned, "jobs": n_jobs, "clusters": len(uuids),
              "complete_files": r2.processed, "complete_s": round(complete_s, 3),
              "complete_files_per_s": round(fps, 1), "raw_files_per_s": round(raw_fps, 1),
              "ratio": round(fps / raw_fps, 3), "next_step_files": r2.discovered, "next_step_jobs": r2.jobs,
              "status_s": round(status_s, 3), "load_1min": round(os.getloadavg()[0], 1)}
    print(f"submit → {n_jobs} jobs for {report.assigned} files in the schedd: {submit_s:.2f} s (target < 30 s)")
    print(f"{r2.processed} completions registered and {r2.jobs} next-step jobs created: {fps:.0f} files/s; raw bulk "
          f"API {raw_fps:.0f} files/s; ratio {fps / raw_fps:.2f} (target >= 0.7)")
    print(f"status with {report.assigned} files: {status_s:.2f} s (target < 1 s)")
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--complete-blocks", type=int, default=8,
                        help="blocks (2,500 files each) of the completion part")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--blocks", type=int, default=None,
                        help="only the first N blocks (2,500 files each) of the input, already registered")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a cProfile of the completion cycle to this file, and of submit and its "
                        "first cycle to FILE.submit (diagnosis; slows it down)")
    args = parser.parse_args()
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=True, log=log):
        return run(args.complete_blocks, args.keep, args.blocks, args.profile)


if __name__ == "__main__":
    sys.exit(main())
