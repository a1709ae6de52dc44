"""Benchmark: juno-submit completes 10,000 finished jobs: reads their events, verifies every output on
storage by checksum query, registers every output in Rucio.

The jobs do not run: the benchmark leaves, for each job, what the wrapper would have left. One small
output per job already on the storage of a disk RSE (round robin over the four sites' disk RSEs, at the
PFN the job would have computed; written straight into the XRootD servers' exported directories, which
is set-up, not measured), its result record in results/JOB.1.json, its capped stdout and stderr in
logs/, and the batch system's events (submitted, running, ended with 0) in the task's event log. The task
itself is a real juno-submit task (a jobvars task of N jobs, submitted on hold with the local backend, so
nothing runs).

Figures, all measured in this run, against the same Rucio server:
  complete_s           one `sync` pass with no time budget: events read, 10,000 result records read and
                       checked, 10,000 checksum queries to the storages, Rucio asked which names it has,
                       bulk registration (attach_dids(..., rse=RSE), 1,000 files a call), store updated
  files_per_s          outputs registered / complete_s
  ceiling_files_per_s  the raw bulk call alone: `attach_dids(scope, dataset, files, rse=RSE)` for the same
                       number of files, same sizes and RSEs, same batch size (fresh names: the task's
                       names are taken), timed before and after juno-submit's pass; the mean counts
  ratio                files_per_s / ceiling_files_per_s                       (target >= 0.8)
  status_s             the slowest `juno-submit status TASK` command (Python start-up included) while a
                       second task of 1,000 jobs that all ended together (events in the log, outputs on
                       storage, nothing registered) is completed: the first status reads the 1,000 ended
                       events and starts the registrar (`juno-submit sync --follow`, a process of its
                       own), the following ones run while it verifies and registers; status commands
                       go on until every job is done and the dataset closed             (target < 1 s)

Run from the repository root (as root; joins the grid's namespace, starting the grid if needed):
    .venv/bin/python bench/complete.py [--jobs 10000]
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

from juno_grid import grid
from juno_grid.config import load

DISK_RSES = ("IHEP-EOS", "CNAF-DISK", "JINR-DISK", "IN2P3-DISK")
SITE_OF = {"IHEP-EOS": "IHEP", "CNAF-DISK": "CNAF", "JINR-DISK": "JINR", "IN2P3-DISK": "IN2P3"}
BATCH = 1000
TASK = """\
name: bench-complete-{tag}
script: |
  echo never runs
splitting:
  jobvars:
    n: {{type: range, first: 0, count: {jobs}}}
output:
  files: out.txt
  rse: site
resources: {{memory: 256MB, wall_time: 10m}}
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def finished_task(cfg: Any, client: Any, work: Path, n_jobs: int, tag: str) -> tuple[Any, Any]:
    """A submitted task whose n_jobs jobs all ended, as their wrappers and HTCondor would leave them."""
    from juno_jobs import control, taskfile
    from juno_jobs.plan import make_plan
    from juno_jobs.settings import Settings
    from juno_jobs.store import Store
    from juno_jobs.taskdir import TaskDir

    task_file = work / f"{tag}.yaml"
    task_file.write_text(TASK.format(tag=tag, jobs=n_jobs))
    settings = Settings(work_dir=work, backend="local")
    sess = control.Session(cfg=settings, store=Store(settings.db_path), rucio=lambda: client, log=lambda m: None)
    plan = make_plan(taskfile.load(task_file), client)
    task = control.submit(sess, plan, backend="local", hold=True)
    td = TaskDir(task.task_dir)
    bases = task.policy["output_bases"]
    scope, dataset = task.output_scope, task.output_dataset
    from juno_jobs.pfns import path_of

    owner = {rse: (cfg.storage_dir(rse).stat().st_uid, cfg.storage_dir(rse).stat().st_gid) for rse in DISK_RSES}
    now = time.time()
    events = []
    for job in range(n_jobs):
        rse = DISK_RSES[job % len(DISK_RSES)]
        name = f"{dataset}.{job:05d}.out.txt"
        data = f"job {job} of {dataset}\n".encode()
        adler = f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"
        rel = path_of(scope, name)
        url = bases[rse]["base"] + rel
        # The storage's exported directory: root://HOST:PORT//PREFIX/rel is <storage_root>/PREFIX/rel.
        prefix = bases[rse]["base"].split("//", 2)[2]
        root = cfg.storage_dir(rse)
        target = root / prefix.lstrip("/") / rel
        _make_dirs(target.parent, root)
        target.write_bytes(data)
        os.chown(target, owner[rse][0], owner[rse][1])
        record = {"job": job, "attempt": 1, "site": SITE_OF[rse], "exit_code": 0, "failure": None, "message": "",
                  "inputs": [], "started": now, "finished": now, "max_rss_mb": 1,
                  "outputs": [{"file": "out.txt", "bytes": len(data), "adler32": adler, "scope": scope, "name": name,
                               "rse": rse, "url": url, "storage_adler32": adler}]}
        td.result(job, 1).write_text(json.dumps(record))
        td.stdout(job, 1).write_text(f"job {job}\n")
        td.stderr(job, 1).write_text(f"[juno-wrapper] staged out {name} to {rse}\n")
        for kind, extra in (("submit", {}), ("execute", {"site": SITE_OF[rse]}), ("terminated", {"exit_code": 0})):
            events.append(json.dumps({"round": 1, "proc": job, "kind": kind, "time": now, **extra}))
    td.local_events.write_text("\n".join(events) + "\n")
    return sess, task


def _make_dirs(path: Path, root: Path) -> None:
    """mkdir -p below a storage's exported directory, each new directory owned as the server's own
    (the XRootD server must be able to write there afterwards)."""
    st = root.stat()
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        os.chown(d, st.st_uid, st.st_gid)


def raw_attach(client: Any, scope: str, n: int, tag: str) -> float:
    """attach_dids(..., rse=RSE) of n fresh small files, 1,000 a call, grouped by RSE as juno-submit does."""
    dataset = f"{scope}.bench-complete-raw-{tag}"
    client.add_dataset(scope, dataset)
    by_rse: dict[str, list[dict[str, Any]]] = {}
    for job in range(n):
        rse = DISK_RSES[job % len(DISK_RSES)]
        data = f"job {job} of {dataset}\n".encode()
        by_rse.setdefault(rse, []).append({"scope": scope, "name": f"{dataset}.{job:05d}.out.txt",
                                           "bytes": len(data), "adler32": f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"})
    started = time.perf_counter()
    for rse, files in by_rse.items():
        for i in range(0, len(files), BATCH):
            client.attach_dids(scope, dataset, files[i:i + BATCH], rse=rse)
    return time.perf_counter() - started


def status_under_load(cfg: Any, client: Any, work: Path, n_jobs: int) -> tuple[float, int, int]:
    """(slowest status command, how many it took, outputs registered) for n_jobs that ended together.
    Also logs the median and the slowest CPU time of the commands (the wall time on a machine whose
    load is ten times its cores is mostly waiting for a core)."""
    import compileall
    import resource
    import statistics

    import juno_common
    import juno_jobs
    from juno_jobs import registrar

    # juno-submit as installed: a wheel's modules are byte-compiled at install (pip does it); this
    # editable checkout on a machine with PYTHONDONTWRITEBYTECODE=1 would compile juno_jobs anew in every
    # command (0.15-0.7 s). Writing the .pyc files once is set-up, not measured.
    for pkg in (juno_jobs, juno_common):
        compileall.compile_dir(str(Path(pkg.__file__).parent), quiet=1)
    sess, task = finished_task(cfg, client, work, n_jobs, f"status-{uuid.uuid4().hex[:6]}")
    env = dict(os.environ, JUNO_SUBMIT_BACKEND="local", JUNO_SUBMIT_REGISTRAR="on")
    times, cpus = [], []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "juno_jobs.cli", "--dir", str(work), "-q", "status", str(task.id)],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if sess.store.task(task.id).dataset_closed:
            break
        time.sleep(0.2)
    while registrar.running(work) and time.monotonic() < deadline:
        time.sleep(0.5)  # it stops by itself once every task of the work directory is finished
    log(f"  status commands: median {statistics.median(times):.3f} s, slowest {max(times):.3f} s; CPU time "
        f"median {statistics.median(cpus):.3f} s, most {max(cpus):.3f} s; load {os.getloadavg()[0]:.1f}")
    return max(times), len(times), len(sess.store.outputs(task.id))


def status_only(status_jobs: int) -> int:
    """Only the status part (e.g. after changing how status registers): no ratio."""
    from juno_grid import condor

    cfg = load()
    work = condor.job_dir(cfg, f"bench-complete-status-{uuid.uuid4().hex[:8]}")
    try:
        status_s, calls, registered = status_under_load(cfg, _analyst_client(cfg), work, status_jobs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"status: slowest command {status_s:.2f} s over {calls} commands while {status_jobs} ended jobs were "
          f"completed ({registered} outputs registered; target < 1 s)")
    print(json.dumps({"status_s": round(status_s, 3), "status_jobs": status_jobs, "status_calls": calls,
                      "status_registered": registered, "load_1min": round(os.getloadavg()[0], 1)}))
    return 0


def run(n_jobs: int, status_jobs: int, keep: bool) -> int:
    from juno_grid import condor
    from rucio.client import Client

    from juno_jobs import control

    cfg = load()
    client = Client()  # root: reads any scope
    scope = "user.analyst1"
    tag = uuid.uuid4().hex[:8]
    work = condor.job_dir(cfg, f"bench-complete-{tag}")
    try:
        analyst = _analyst_client(cfg)
        log(f"setting up {n_jobs} finished jobs ...")
        started = time.perf_counter()
        sess, task = finished_task(cfg, analyst, work, n_jobs, tag)
        log(f"  set up in {time.perf_counter() - started:.1f} s")
        log("raw bulk call (before) ...")
        raw_before = raw_attach(analyst, scope, n_jobs, f"{tag}a")
        log(f"  {raw_before:.2f} s")
        log("juno-submit: one sync pass over the finished jobs ...")
        started = time.perf_counter()
        report = control.sync(sess, task)
        complete_s = time.perf_counter() - started
        registered = len(sess.store.outputs(task.id))
        done = sess.store.counts(task.id).get("done", 0)
        log(f"  {complete_s:.2f} s: {registered} outputs registered, {done} jobs done, {report.warnings[:3]}")
        log("raw bulk call (after) ...")
        raw_after = raw_attach(analyst, scope, n_jobs, f"{tag}b")
        log(f"  {raw_after:.2f} s")
        in_rucio = sum(1 for _ in client.list_files(task.output_scope, task.output_dataset))
        log(f"status commands while {status_jobs} jobs are completed ...")
        status_s, status_calls, status_registered = status_under_load(cfg, analyst, work, status_jobs)
        log(f"  slowest {status_s:.2f} s over {status_calls} commands; {status_registered} outputs registered")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    raw_s = (raw_before + raw_after) / 2
    ceiling = n_jobs / raw_s
    files_per_s = registered / complete_s
    result = {"ratio": round(files_per_s / ceiling, 3), "files_per_s": round(files_per_s, 1),
              "ceiling_files_per_s": round(ceiling, 1), "jobs": n_jobs, "status_s": round(status_s, 3),
              "complete_s": round(complete_s, 3), "registered": registered, "in_rucio": in_rucio,
              "raw_s": [round(raw_before, 3), round(raw_after, 3)], "status_jobs": status_jobs,
              "status_calls": status_calls, "status_registered": status_registered,
              "load_1min": round(os.getloadavg()[0], 1)}
    print(f"juno-submit completed {n_jobs} finished jobs in {complete_s:.2f} s: {registered} outputs verified on "
          f"storage and registered ({files_per_s:.0f} files/s; {in_rucio} in the dataset); the raw bulk call "
          f"alone: {ceiling:.0f} files/s; ratio {files_per_s / ceiling:.2f} (target >= 0.8)")
    print(f"status: slowest command {status_s:.2f} s over {status_calls} commands while {status_jobs} ended jobs "
          f"were completed ({status_registered} outputs registered; target < 1 s)")
    print(json.dumps(result))
    return 0


def _analyst_client(cfg: Any) -> Any:
    """Rucio as analyst1 (outputs go to user.analyst1); the status commands run with its client config."""
    from juno_grid.accounts import local_password
    from rucio.client import Client

    path = cfg.state_dir / "rucio" / "analyst1.cfg"
    if not path.exists():
        subprocess.run([str(Path(sys.executable).with_name("juno-policy")), "sites", "client-config"], check=True,
                       stdout=subprocess.DEVNULL)
    os.environ["RUCIO_CONFIG"] = str(path)
    return Client(account="analyst1", auth_type="userpass",
                  creds={"username": "analyst1", "password": local_password("analyst1")})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000, help="finished jobs to complete")
    parser.add_argument("--status-jobs", type=int, default=1_000, help="jobs of the status-under-load part")
    parser.add_argument("--keep", action="store_true", help="keep the task databases and directories")
    parser.add_argument("--status-only", action="store_true", help="only the status part (no ratio)")
    args = parser.parse_args()
    cfg = load()
    with grid.session(cfg, daemons=False, condor_pool=False, log=log):
        if args.status_only:
            return status_only(args.status_jobs)
        return run(args.jobs, args.status_jobs, args.keep)


if __name__ == "__main__":
    sys.exit(main())
