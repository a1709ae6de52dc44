"""The local backend: the same wrapper as local processes, for a laptop without HTCondor.

Like an HTCondor job, each attempt runs in a scratch directory of its own that holds only what file
transfer would give it (task.json, its JOB.json, the payload); its result.json is moved back to
results/JOB.ATTEMPT.json when it ends, and the scratch directory goes.

Each round is run by a detached runner process (`python -m juno_jobs.backends.local`), so the command
that submitted can exit and any later command can follow the jobs. The runner starts at most one wrapper
per CPU, pretends to be at one of each job's sites (round-robin over them: the wrapper then reads that
site's storage, as a grid job would), and appends events to local-events.jsonl with the same meaning as
an HTCondor user log. Removal is a line in the task's `local-cancel` file, which runners watch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from juno_jobs import submit as subdesc
from juno_jobs.monitor import Event, LocalLog, local_job_lines
from juno_jobs.settings import Settings
from juno_jobs.submit import Item
from juno_jobs.taskdir import TaskDir

if TYPE_CHECKING:  # a type only: `status` never loads the task model (start-up time)
    from juno_jobs.model import Resources

CANCEL_FILE = "local-cancel"
POLL_S = 0.2


class LocalBackend:
    name = "local"
    keyed_by_round = True

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg

    def describe(self, td: TaskDir, *, uuid: str, name: str, task_id: int, resources: Resources, rnd: int,
                 hold: bool = False) -> str:
        return (f"# local backend: {sys.executable} -m juno_jobs.backends.local {td.root} {rnd}\n"
                f"# runs, for each line 'job attempt memory sites' of {td.items(rnd)}, at most {os.cpu_count()} "
                "at a time:\n"
                f"#   in scratch/<job>.<attempt>/ with {', '.join(td.transfer_inputs('<job>'))}:\n"
                f"#   JUNO_SITE=<one of sites> {td.wrapper} <job> <attempt> <memory>\n")

    def submit(self, td: TaskDir, items: Sequence[Item], *, uuid: str, name: str, task_id: int,
               resources: Resources, rnd: int, hold: bool = False) -> int:
        td.items(rnd).write_text(subdesc.items_text(items))
        td.submit_file(rnd).write_text(self.describe(td, uuid=uuid, name=name, task_id=task_id, resources=resources,
                                                     rnd=rnd))
        if hold:
            return rnd  # nothing runs until released; the local backend has no release: used by no one
        log = open(td.root / f"local-runner.{rnd:03d}.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            # The launcher forks the runner and exits at once: the runner is nobody's child to reap.
            subprocess.run([sys.executable, "-m", "juno_jobs.backends.local", str(td.root), str(rnd)],
                           stdout=log, stderr=log, stdin=subprocess.DEVNULL, check=True, timeout=30)
        finally:
            log.close()
        return rnd

    def find_round(self, td: TaskDir, uuid: str, rnd: int) -> int | None:
        return rnd if (td.root / f"local-runner.{rnd:03d}.log").exists() else None

    def job_events(self, td: TaskDir, key: int, proc: int) -> list[str]:
        return local_job_lines(td.local_events, key, proc)

    def largest_slots(self) -> dict[str, int]:
        return {}  # local processes: no slots, no limit to warn about

    def events(self, td: TaskDir) -> list[Event]:
        _reap_dead_runners(td)
        return LocalLog(td.local_events, td.root / ".local-events.pos").read()

    def remove(self, td: TaskDir, uuid: str, procs: Sequence[tuple[int, int]] | None = None) -> int:
        lines = ["*"] if procs is None else [f"{r}.{p}" for r, p in procs]
        with open(td.root / CANCEL_FILE, "a") as fh:
            fh.write("".join(line + "\n" for line in lines))
        return len(lines)


# --------------------------------------------------------------------------- the runner


def _pidfile(td: TaskDir, rnd: int) -> Path:
    return td.root / f"local-runner.{rnd:03d}.pid"


def _donefile(td: TaskDir, rnd: int) -> Path:
    return td.root / f"local-runner.{rnd:03d}.done"


def _runner_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"juno_jobs.backends.local" in cmdline and state != "Z"


def _reap_dead_runners(td: TaskDir) -> None:
    """A runner that died before its round ended (a reboot, a kill) leaves jobs that will never report:
    write 'lost' events for them, once, so that they are retried like any lost job."""
    for pidfile in td.root.glob("local-runner.*.pid"):
        rnd = int(pidfile.name.split(".")[1])
        if _donefile(td, rnd).exists():
            continue
        try:
            pid = int(pidfile.read_text())
        except (OSError, ValueError):
            continue
        if _runner_alive(pid):
            continue
        ended = set()
        if td.local_events.exists():
            for line in td.local_events.read_text().splitlines():
                d = json.loads(line)
                if d["round"] == rnd and d["kind"] in ("terminated", "removed", "lost"):
                    ended.add(d["proc"])
        n_items = len(td.items(rnd).read_text().splitlines())
        with open(td.local_events, "a", encoding="utf-8") as events:
            for proc in range(n_items):
                if proc not in ended:
                    _event(events, rnd, proc, "lost")
        _donefile(td, rnd).touch()


def _event(fh: IO[str], rnd: int, proc: int, kind: str, **extra: object) -> None:
    fh.write(json.dumps({"round": rnd, "proc": proc, "kind": kind, "time": time.time(), **extra}) + "\n")
    fh.flush()


def _cancelled(path: Path, rnd: int) -> set[int] | None:
    """Procs of this round to cancel; None = everything."""
    try:
        lines = path.read_text().split()
    except OSError:
        return set()
    if "*" in lines:
        return None
    out = set()
    for line in lines:
        r, _, p = line.partition(".")
        if r == str(rnd) and p.isdigit():
            out.add(int(p))
    return out


# A job never carries the submitter's credentials (Rucio, grid proxies, tokens), as with HTCondor,
# where a job's environment is only what its submit description sets.
_CREDENTIAL_PREFIXES = ("RUCIO_", "X509_", "BEARER_TOKEN", "SCITOKEN", "CONDOR_", "_CONDOR_")


def _job_environment(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(_CREDENTIAL_PREFIXES)}


def _scratch(td: TaskDir, job: int, attempt: int) -> Path:
    """A fresh scratch directory with what HTCondor's file transfer would bring the job."""
    scratch = td.root / "scratch" / f"{job}.{attempt}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for rel in td.transfer_inputs(job):
        shutil.copy2(td.root / rel, scratch / Path(rel).name)
    return scratch


def _bring_back(td: TaskDir, job: int, attempt: int) -> None:
    """The output sandbox: result.json back to the task directory; everything else stays behind."""
    scratch = td.root / "scratch" / f"{job}.{attempt}"
    try:
        (scratch / "result.json").replace(td.result(job, attempt))
    except OSError:
        pass  # no result: judged as lost, as with HTCondor
    shutil.rmtree(scratch, ignore_errors=True)


def run_round(root: Path, rnd: int) -> None:
    td = TaskDir(root)
    _pidfile(td, rnd).write_text(str(os.getpid()))
    items: list[tuple[int, int, int, list[str]]] = []
    for line in td.items(rnd).read_text().splitlines():
        fields = (line.split(maxsplit=3) + [""])[:4]
        items.append((int(fields[0]), int(fields[1]), int(fields[2]), [s for s in fields[3].split(",") if s]))
    slots = max(1, os.cpu_count() or 1)
    running: dict[int, subprocess.Popen[bytes]] = {}
    waiting = list(range(len(items)))
    with open(td.local_events, "a", encoding="utf-8") as events:
        for proc in waiting:
            _event(events, rnd, proc, "submit")
        while waiting or running:
            cancel = _cancelled(root / CANCEL_FILE, rnd)
            for proc in list(waiting):
                if cancel is None or proc in cancel:
                    waiting.remove(proc)
                    _event(events, rnd, proc, "removed")
            for proc, p in list(running.items()):
                job, attempt = items[proc][0], items[proc][1]
                if cancel is None or proc in cancel:
                    p.send_signal(signal.SIGTERM)  # the wrapper stops its payload
                    p.wait()
                    del running[proc]
                    shutil.rmtree(root / "scratch" / f"{job}.{attempt}", ignore_errors=True)
                    _event(events, rnd, proc, "removed")
                elif p.poll() is not None:
                    del running[proc]
                    _bring_back(td, job, attempt)
                    code = p.returncode
                    _event(events, rnd, proc, "terminated", exit_code=code if code >= 0 else None,
                           signal=-code if code < 0 else None)
            while waiting and len(running) < slots:
                proc = waiting.pop(0)
                job, attempt, memory, sites = items[proc]
                site = sites[job % len(sites)] if sites else "local"
                env = dict(_job_environment(os.environ), JUNO_SITE=site)
                out = open(td.stdout(job, attempt), "ab")  # noqa: SIM115 - the child owns them
                err = open(td.stderr(job, attempt), "ab")  # noqa: SIM115
                running[proc] = subprocess.Popen(
                    [sys.executable, str(td.wrapper), str(job), str(attempt), str(memory)],
                    stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=_scratch(td, job, attempt))
                out.close()
                err.close()
                _event(events, rnd, proc, "execute", site=site)
            time.sleep(POLL_S)
    _donefile(td, rnd).touch()


def main(argv: list[str]) -> int:
    root, rnd = Path(argv[1]), int(argv[2])
    if os.fork() != 0:
        return 0  # the launcher returns at once
    os.setsid()
    try:
        run_round(root, rnd)
    finally:
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
