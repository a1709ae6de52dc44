"""The registrar (`juno-submit sync --follow`) registers outputs; `status` only reads (live grid).

Jobs run with the local backend (processes here, the same wrapper as on the pool: they stage their
outputs out to the grid's XRootD storages themselves); the commands run as separate processes, as a
person runs them, with analyst1's Rucio configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from juno_grid import condor

from juno_jobs import control, outputs, registrar, taskfile
from juno_jobs import plan as plan_mod
from juno_jobs.settings import Settings
from juno_jobs.store import Store

pytestmark = pytest.mark.grid

TIMEOUT = 240.0
JOBS = 6


@pytest.fixture
def work(grid: Any) -> Iterator[Path]:
    path = condor.job_dir(grid.cfg, f"test-submit-registrar-{uuid.uuid4().hex[:10]}")
    yield path
    deadline = time.monotonic() + 30
    while registrar.running(path) and time.monotonic() < deadline:
        time.sleep(0.5)  # it stops once every task is finished; a failed test must not leave it running
    shutil.rmtree(path, ignore_errors=True)


def _env(grid: Any, **extra: str) -> dict[str, str]:
    cfg = grid.cfg.state_dir / "rucio" / "analyst1.cfg"
    if not cfg.exists():
        subprocess.run([str(Path(sys.executable).with_name("juno-policy")), "sites", "client-config"], check=True,
                       stdout=subprocess.DEVNULL)
    return {**os.environ, "RUCIO_CONFIG": str(cfg), "JUNO_SUBMIT_BACKEND": "local", **extra}


def _cmd(work: Path, env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "juno_jobs.cli", "--dir", str(work), *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


def _task_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(f"""name: {name}
script: 'echo "job $JUNO_JOB of {name}" > out.txt'
splitting:
  jobvars:
    n: {{type: range, first: 0, count: {JOBS}}}
output:
  dataset: {name}
  files: out.txt
  rse: site
resources: {{memory: 64MB, wall_time: 2m}}
""")
    return path


def _status(work: Path, env: dict[str, str]) -> dict[str, Any]:
    out = _cmd(work, env, "-q", "status", "1", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_registrar_started_by_submit_registers_every_output_once(grid: Any, work: Path, tmp_path: Path) -> None:
    name = f"registrar-{uuid.uuid4().hex[:8]}"
    env = _env(grid, JUNO_SUBMIT_REGISTRAR="on")
    out = _cmd(work, env, "submit", str(_task_file(tmp_path, name)))
    assert out.returncode == 0, out.stderr
    assert "registrar started" in out.stderr
    deadline = time.monotonic() + TIMEOUT
    doc = _status(work, env)
    while not doc["dataset_closed"]:
        assert time.monotonic() < deadline, (doc, registrar.log_path(work).read_text()[-2000:])
        time.sleep(1.0)
        doc = _status(work, env)
    assert (doc["state"], doc["counts"]["done"], doc["outputs_registered"]) == ("completed", JOBS, JOBS)
    files = list(grid.client("analyst1").list_files(doc["output_dataset"].split(":")[0],
                                                     doc["output_dataset"].split(":")[1]))
    assert sorted(f["name"] for f in files) == [f"user.analyst1.{name}.{j:05d}.out.txt" for j in range(JOBS)]
    deadline = time.monotonic() + 30
    while registrar.running(work):
        assert time.monotonic() < deadline, "the registrar did not stop after its last task was finished"
        time.sleep(0.5)
    assert "every task is finished: stopping" in registrar.log_path(work).read_text()


@pytest.fixture
def finishing(grid: Any, work: Path, tmp_path: Path) -> tuple[control.Session, Any]:
    """A task whose jobs all ended (outputs on storage), nothing registered: the state a registrar finds."""
    client = grid.client("analyst1")
    cfg = Settings(work_dir=work, backend="local")
    sess = control.Session(cfg=cfg, store=Store(cfg.db_path), rucio=lambda: client, log=print)
    name = f"registrar-{uuid.uuid4().hex[:8]}"
    p = plan_mod.make_plan(taskfile.load(_task_file(tmp_path, name)), client)
    task = control.submit(sess, p, backend="local")
    deadline = time.monotonic() + TIMEOUT
    while sess.store.counts(task.id).get("finishing", 0) != JOBS:
        assert time.monotonic() < deadline, [dict(j) for j in sess.store.jobs(task.id)]
        control.sync(sess, task, register=False)
        time.sleep(0.5)
    return sess, sess.store.task(task.id)


def test_status_needs_neither_rucio_nor_storage(grid: Any, work: Path, finishing: tuple[control.Session, Any]
                                                ) -> None:
    """No Rucio configuration at all, and no registrar: status still answers, from the store."""
    env = _env(grid, JUNO_SUBMIT_REGISTRAR="off", RUCIO_CONFIG="/nonexistent/rucio.cfg")
    doc = _status(work, env)
    assert (doc["counts"]["finishing"], doc["outputs_registered"]) == (JOBS, 0)
    out = _cmd(work, env, "status")
    assert out.returncode == 0 and f"finishing {JOBS}" in out.stdout, out.stdout + out.stderr
    assert out.stderr == "", out.stderr  # not even a warning that Rucio could not be reached: it was not asked
    assert not registrar.running(work)


def test_a_registrar_killed_mid_task_and_started_again_registers_nothing_twice(
        grid: Any, work: Path, finishing: tuple[control.Session, Any]) -> None:
    sess, task = finishing
    target = task.output
    assert target is not None
    # A registrar killed between its bulk call and recording it: Rucio has the first half, the store none.
    td = control.task_dir(task)
    wanted = [e for job in range(JOBS // 2) for e in outputs.expected(
        td.read_result(job, 1)["outputs"], job=job, attempt=1, target=target, bases=task.policy["output_bases"])]
    done, errors = outputs.verify_and_register(sess.client, (target.scope, target.name), wanted,
                                               outputs.StorageChecker())
    assert len(done) == JOBS // 2 and not errors
    assert not sess.store.outputs(task.id)

    env = _env(grid)
    # The test holds the task's lock, so the first registrar cannot finish the task (and stop) before the
    # second one has been turned away: on a quiet machine it would, in well under a second.
    with control.locked(td):
        first = subprocess.Popen([sys.executable, "-m", "juno_jobs.cli", "--dir", str(work), "sync", "--follow"],
                                 env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not registrar.running(work):
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = _cmd(work, env, "sync", "--follow", timeout=30)  # one registrar per work directory
        assert second.returncode == 0 and "another registrar follows this work directory" in second.stderr
        first.send_signal(signal.SIGKILL)  # waiting for the task's lock, mid-pass
        first.communicate()

    again = _cmd(work, env, "sync", "--follow", "--interval", "1", timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr
    assert "every task is finished: stopping" in again.stderr
    rows = sess.store.jobs(task.id)
    assert [r["state"] for r in rows] == ["done"] * JOBS, [dict(r) for r in rows]
    names = [o["name"] for o in sess.store.outputs(task.id)]
    assert sorted(names) == sorted(set(names)) and len(names) == JOBS
    files = list(grid.client("analyst1").list_files(target.scope, target.name))
    assert sorted(f["name"] for f in files) == sorted(names)
    replicas = list(grid.client("analyst1").list_replicas([{"scope": target.scope, "name": n} for n in names]))
    assert all(len(r["rses"]) == 1 for r in replicas)
    assert sess.store.task(task.id).dataset_closed


def test_a_registrar_that_cannot_reach_rucio_says_so_in_status(grid: Any, work: Path,
                                                              finishing: tuple[control.Session, Any]) -> None:
    """Jobs waiting in `finishing` because the registrar cannot log in must not look like a quiet task."""
    bad = _env(grid, RUCIO_CONFIG="/nonexistent/rucio.cfg")
    out = _cmd(work, bad, "sync", "--follow", "--interval", "0.5", "--idle-exit", "1", timeout=120)
    assert out.returncode == 0 and "nothing changed for 1 s: stopping" in out.stderr, out.stderr
    status = _cmd(work, _env(grid, JUNO_SUBMIT_REGISTRAR="off"), "status", "1")
    assert status.returncode == 0, status.stderr
    assert "warning: registrar: task 1: " in status.stderr and "/nonexistent/rucio.cfg" in status.stderr, status.stderr
    assert f"finishing {JOBS}" in status.stdout


def test_an_rse_without_a_site_attribute_never_hosts_jobs(grid: Any, tmp_path: Path) -> None:
    """Jobs without input run at JUNO's sites: an RSE in Rucio that the topology did not give a `site`
    (another experiment's, a test's probe) is not a site, and would have no disk RSE for outputs."""
    root = grid.client()
    name = f"NOSITE{uuid.uuid4().hex[:6].upper()}"
    root.add_rse(name)
    try:
        p = plan_mod.make_plan(taskfile.load(_task_file(tmp_path, f"nosite-{uuid.uuid4().hex[:6]}")),
                               grid.client("analyst1"))
        sites = {s for job in p.jobs for s in job.sites}
        assert sites and name not in sites and sites <= {"IHEP", "CNAF", "JINR", "IN2P3"}, sites
    finally:
        root.delete_rse(name)
