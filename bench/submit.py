"""Benchmark: juno-submit plans and submits a task of 10,000 jobs over 100,000 files held at 4 sites.

The input is a dedicated year container of raw files, registered once in Rucio and reused by later
runs: `raw:stream.JUNODAQ.bench_submit.2025` (two month containers, 40 daily blocks of 2,500 files).
Every file has an IHEP-TAPE replica, as the replication policy gives raw data, and disk replicas at one
or two sites, varying by block, so the files fall into 8 groups of sites. The files have no bytes on
storage (the jobs never run), only catalogue entries with sizes and adler32.

Figures, all measured in this run:
  plan_s     resolve the container in Rucio, group by sites, split into jobs (`juno-submit plan`);
             median of --repeat runs
  submit_s   record the task, write the job specs and the items file, create the output dataset,
             submit one cluster (late materialization)
  total_s    plan_s + submit_s                                          (target < 10 s)
  rucio_s    the same Rucio requests alone, answers read but not even parsed; median of --repeat + 1
             runs, alternating with the plans (the machine is shared: load changes by the minute)
  ratio      total_s / rucio_s: what juno-submit adds on top of the catalogue
  status_s   `juno-submit status` for the 10,000 jobs right after submission, in-process: 20,000 new
             events read from the user log, the store updated, counts per state and site  (< 1 s);
             status_cli_s is the same as a command, Python start-up included

The jobs are submitted **on hold** (`hold = True`), so the 4-slot pool never runs them, and are
removed from the schedd at the end (also on failure).

Run from the repository root (as root; joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/submit.py [--jobs 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

from juno_grid import grid
from juno_grid.config import load

STREAM = "JUNODAQ.bench_submit"
YEAR_CONTAINER = f"stream.{STREAM}.2025"
N_BLOCKS = 40
FILES_PER_BLOCK = 2500
FILES = N_BLOCKS * FILES_PER_BLOCK
FIRST_DAY = date(2025, 1, 1)
BATCH = 1000  # the generic schema caps every bulk call at 1000 items
# Disk copies per block (block index mod 8): every site alone, then pairs.
PLACEMENT = [
    ("IHEP-EOS",), ("CNAF-DISK",), ("JINR-DISK",), ("IN2P3-DISK",),
    ("IHEP-EOS", "CNAF-DISK"), ("CNAF-DISK", "JINR-DISK"), ("JINR-DISK", "IN2P3-DISK"), ("IHEP-EOS", "IN2P3-DISK"),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _block_day(i: int) -> date:
    return FIRST_DAY + timedelta(days=i)


def _files_of_block(i: int) -> list[dict[str, Any]]:
    day = _block_day(i)
    rng = random.Random(i)  # the same sizes and checksums on every run
    return [
        {"scope": "raw",
         "name": f"RUN.{900000 + i}.JUNODAQ.Physics.ds-2.bench_submit.{day:%Y%m%d}120000.{seq:05d}.dat",
         "bytes": rng.randrange(500_000_000, 2_000_000_000), "adler32": f"{rng.getrandbits(32):08x}"}
        for seq in range(1, FILES_PER_BLOCK + 1)
    ]


def ensure_input(main_client: Any) -> None:
    """Register the benchmark's container once; later runs find it complete and reuse it."""
    client = main_client
    from rucio.common.exception import DataIdentifierAlreadyExists, DataIdentifierNotFound

    try:
        did = client.get_did("raw", YEAR_CONTAINER, dynamic_depth="FILE")
        if did.get("length") == FILES:
            log(f"input raw:{YEAR_CONTAINER} already registered ({FILES} files): reused")
            return
    except DataIdentifierNotFound:
        pass
    log(f"registering raw:{YEAR_CONTAINER}: {N_BLOCKS} blocks x {FILES_PER_BLOCK} files (once) ...")
    started = time.perf_counter()
    months = sorted({f"stream.{STREAM}.{_block_day(i):%Y%m}" for i in range(N_BLOCKS)})
    for name in [YEAR_CONTAINER, *months]:
        try:
            client.add_container("raw", name)
        except DataIdentifierAlreadyExists:
            pass
    for month in months:
        try:
            client.attach_dids("raw", YEAR_CONTAINER, [{"scope": "raw", "name": month}])
        except Exception as exc:  # noqa: BLE001 - already attached on a re-run of an interrupted registration
            if "already" not in str(exc).lower():
                raise

    def one_block(i: int) -> None:
        client = type(main_client)()  # one client per thread: requests sessions are not shared safely
        block = f"block.{STREAM}.{_block_day(i):%Y%m%d}"
        files = _files_of_block(i)
        try:
            client.add_dataset("raw", block)
        except DataIdentifierAlreadyExists:
            pass
        present = {f["name"] for f in client.list_files("raw", block)}
        todo = [f for f in files if f["name"] not in present]
        for k in range(0, len(todo), BATCH):
            client.attach_dids("raw", block, todo[k:k + BATCH], rse="IHEP-TAPE")
        for rse in PLACEMENT[i % len(PLACEMENT)]:
            for k in range(0, len(files), BATCH):
                client.add_replicas(rse=rse, files=files[k:k + BATCH])  # existing ones are skipped
        try:
            client.attach_dids("raw", f"stream.{STREAM}.{_block_day(i):%Y%m}", [{"scope": "raw", "name": block}])
        except Exception as exc:  # noqa: BLE001 - already attached
            if "already" not in str(exc).lower():
                raise
        log(f"  {block}: {len(files)} files at IHEP-TAPE + {', '.join(PLACEMENT[i % len(PLACEMENT)])}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one_block, range(N_BLOCKS)))
    log(f"registered in {time.perf_counter() - started:.0f} s")


TASK = """\
name: bench-submit
script: "true"
arguments: "{{inputs}}"
input:
  dids: raw:{container}
splitting:
  files_per_job: {files_per_job}
output:
  dataset: user.jcoord:bench-submit-{tag}
  files: out.root
resources: {{memory: 1GB, wall_time: 1h}}
retry: {{max_attempts: 3, memory: [1GB, 2GB]}}
"""


def rucio_queries_alone(client: Any) -> float:
    """The Rucio requests planning makes for this input, answers read and thrown away (not even parsed):
    the floor juno-submit stands on."""
    from juno_jobs.model import Did
    from juno_jobs.resolve import Resolver, files_body

    r = Resolver(client)
    started = time.perf_counter()
    roots = r.check_dids([Did("raw", YEAR_CONTAINER)])
    datasets, _ = r.datasets_of(roots)

    def one(d: Did) -> None:
        c = r._client()
        files_body(c, d.scope, d.name)
        for _ in c.list_dataset_replicas(d.scope, d.name, deep=True):
            pass

    with ThreadPoolExecutor(r.workers) as pool:
        list(pool.map(one, datasets))
    return time.perf_counter() - started


def _wait_gone(task_uuid: str, timeout: float = 180) -> None:
    """The schedd removes jobs in the background: wait until none of the benchmark's is left."""
    import htcondor2

    schedd = htcondor2.Schedd()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not schedd.query(f'JunoTask == "{task_uuid}"', projection=["ProcId"], limit=1):
                return
        except htcondor2.HTCondorException:
            pass
        time.sleep(1)
    raise RuntimeError(f"jobs of task {task_uuid} still in the schedd after {timeout:.0f} s: "
                       f"condor_rm -constraint 'JunoTask == \"{task_uuid}\"'")


def run(n_jobs: int, keep: bool = False, repeat: int = 3) -> int:
    import shutil
    import subprocess

    from juno_grid import condor
    from rucio.client import Client

    from juno_jobs import control, taskfile
    from juno_jobs.plan import make_plan
    from juno_jobs.settings import Settings
    from juno_jobs.store import Store

    cfg = load()
    client = Client()
    ensure_input(client)
    condor.configure_bindings(cfg)
    files_per_job = FILES // n_jobs
    tag = uuid.uuid4().hex[:8]
    work = condor.job_dir(cfg, f"bench-submit-{tag}")
    task_file = work / "bench.yaml"
    task_file.write_text(TASK.format(container=YEAR_CONTAINER, files_per_job=files_per_job, tag=tag))
    # max_idle = every job: held jobs count as idle for late materialization, and status should see the
    # events of all 10,000 jobs, not only of the first max_idle.
    settings = Settings(work_dir=work, backend="condor", job_owner=(condor.JOB_UID, condor.JOB_GID),
                        max_idle=n_jobs)
    sess = control.Session(cfg=settings, store=Store(settings.db_path), rucio=lambda: client, log=log)
    task = None
    try:
        # The machine is shared: baselines and plans alternate (B P B P ... B) and the medians count.
        rucio_runs: list[float] = []
        plan_runs: list[float] = []
        for i in range(repeat):
            log(f"Rucio queries alone ({i + 1}/{repeat + 1}) ...")
            rucio_runs.append(rucio_queries_alone(client))
            started = time.perf_counter()
            plan = make_plan(taskfile.load(task_file), client, log=log)
            plan_runs.append(time.perf_counter() - started)
            log(f"plan {plan_runs[-1]:.2f} s, Rucio alone {rucio_runs[-1]:.2f} s")
        plan_s = statistics.median(plan_runs)

        started = time.perf_counter()
        task = control.submit(sess, plan, hold=True)
        submit_s = time.perf_counter() - started

        import htcondor2

        schedd = htcondor2.Schedd()

        def in_schedd() -> int:
            # The schedd is busy while it materializes 10,000 jobs: a query can time out; ask again.
            for _ in range(20):
                try:
                    return len(schedd.query(f'JunoTask == "{task.uuid}"', projection=["ProcId"]))
                except htcondor2.HTCondorException:
                    time.sleep(1)
            raise RuntimeError("the schedd does not answer queries")

        deadline = time.monotonic() + 180
        while (materialized := in_schedd()) < len(plan.jobs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the schedd materialized only {materialized} jobs within 180 s")
            time.sleep(1)
        log(f"all {materialized} jobs are in the schedd (held)")

        # `juno-submit status TASK`: read the new events, update the store, count per state and site.
        started = time.perf_counter()
        report = control.sync(sess, task)
        counts = sess.store.counts(task.id)
        by_site = sess.store.counts_by_site(task.id)
        status_s = time.perf_counter() - started
        # The same through the command line, Python start-up and imports included.
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "juno_jobs.cli", "--dir", str(work), "-q", "status", str(task.id)],
                       check=True, stdout=subprocess.DEVNULL)
        status_cli_s = time.perf_counter() - started

        log(f"Rucio queries alone ({repeat + 1}/{repeat + 1}) ...")
        rucio_runs.append(rucio_queries_alone(client))
        rucio_s = statistics.median(rucio_runs)
    finally:
        if task is not None:
            n = control.kill(sess, task)  # the store knows: a later status does not take them for lost
            log(f"killed the benchmark's {n} job(s)")
            _wait_gone(task.uuid)
        if keep:
            log(f"kept {work} (task database and directory; the jobs are removed)")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = plan_s + submit_s
    result = {
        "plan_s": round(plan_s, 3), "submit_s": round(submit_s, 3), "total_s": round(total, 3),
        "rucio_s": round(rucio_s, 3), "ratio": round(total / rucio_s, 3), "status_s": round(status_s, 3),
        "status_cli_s": round(status_cli_s, 3), "jobs": len(plan.jobs), "files": plan.n_files,
        "jobs_in_schedd": materialized, "plan_runs_s": [round(x, 3) for x in plan_runs],
        "rucio_runs_s": [round(x, 3) for x in rucio_runs], "load_1min": round(os.getloadavg()[0], 1),
        "rucio_calls": plan.rucio_calls, "resolve_s": round(plan.resolve_s, 3),
        "site_groups": len(plan.groups), "held": True, "status_events": report.events,
    }
    print(f"plan {plan_s:.2f} s (resolve {plan.resolve_s:.2f} s, {plan.rucio_calls} Rucio calls) + submit "
          f"{submit_s:.2f} s = {total:.2f} s for {len(plan.jobs)} jobs over {plan.n_files} files "
          f"(target < 10 s); Rucio queries alone {rucio_s:.2f} s, ratio {total / rucio_s:.2f}")
    print(f"status {status_s:.3f} s in-process, {status_cli_s:.2f} s as a command (target < 1 s); "
          f"{counts} across {len(by_site)} site groups; {materialized} jobs were in the schedd (held), "
          "now removed")
    print(json.dumps(result))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to split the 100,000 files into")
    parser.add_argument("--register-only", action="store_true", help="register the input and stop")
    parser.add_argument("--keep", action="store_true", help="keep the task database and directory (profiling)")
    parser.add_argument("--repeat", type=int, default=3, help="plans (and baselines around them) to take medians of")
    args = parser.parse_args()
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=True, log=log):
        if args.register_only:
            from rucio.client import Client

            ensure_input(Client())
            return 0
        return run(args.jobs, keep=args.keep, repeat=max(1, args.repeat))


if __name__ == "__main__":
    sys.exit(main())
