"""The registrar: one background process per work directory that moves its tasks forward.

Registering the outputs of jobs that end together (checksum queries to the storages, Rucio asked, bulk
`attach_dids`) takes seconds per thousand jobs, and a Rucio login alone can take one. `status` must answer
at once, so it does none of it: it reads new events and the store, and makes sure the registrar runs.
The registrar is `juno-submit sync --follow`: full `control.sync` passes over every task of the work
directory that is not finished (events, retries, verification and registration, closing datasets),
every few seconds, until none is left or nothing has changed for an hour. `submit` and `status` start it
when it is not running; `JUNO_SUBMIT_REGISTRAR=off` stops them from doing so (then run
`juno-submit sync` from a timer, or `sync --follow` as a service: README).

At most one follows a work directory (a lock file held for its lifetime). It survives restarts because
it keeps no state of its own: what is left to register is the store's `finishing` jobs, and each pass is
idempotent (outputs.py), so a registrar killed mid-batch and started again registers nothing twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from juno_jobs.backends.base import BackendError

if TYPE_CHECKING:
    from juno_jobs.control import Session

INTERVAL_S = 5.0  # between passes while something is going on
IDLE_EXIT_S = 3600.0  # exit when nothing changed this long (a `status` starts it again)
START_WAIT_S = 3.0  # a registrar that is just exiting frees the lock within this
LOG_LIMIT = 8 << 20  # registrar.log is started afresh above this size


def lock_path(work_dir: Path) -> Path:
    return work_dir / "registrar.lock"


def report_path(work_dir: Path) -> Path:
    """What the last pass ran into (JSON), for `status` to show: a registrar that cannot reach Rucio
    must not look like one with nothing to do."""
    return work_dir / "registrar.json"


def problems(work_dir: Path) -> list[str]:
    """The last pass's warnings and errors (none if it went well, or there was none)."""
    try:
        doc = json.loads(report_path(work_dir).read_text())
    except (OSError, ValueError):
        return []
    return [str(p) for p in doc.get("problems", [])]


def _report(work_dir: Path, found: list[str]) -> None:
    path = report_path(work_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), "problems": found}))
    tmp.replace(path)


def log_path(work_dir: Path) -> Path:
    return work_dir / "registrar.log"


@contextmanager
def _hold(path: Path, wait_s: float) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def running(work_dir: Path) -> bool:
    """Does a registrar follow this work directory? (One non-blocking lock attempt: microseconds.)"""
    if not lock_path(work_dir).exists():
        return False
    with _hold(lock_path(work_dir), 0.0) as got:
        return not got


def enabled() -> bool:
    return os.environ.get("JUNO_SUBMIT_REGISTRAR", "on").lower() not in ("off", "0", "no", "false")


def start(work_dir: Path) -> int | None:
    """Start `juno-submit sync --follow` for the work directory in the background unless one runs (or
    JUNO_SUBMIT_REGISTRAR=off); its pid, or None. It inherits the environment (Rucio and HTCondor
    configuration) and outlives this process."""
    if not enabled() or running(work_dir):
        return None
    log = log_path(work_dir)
    if log.exists() and log.stat().st_size > LOG_LIMIT:
        log.replace(log.with_suffix(".log.1"))
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "juno_jobs.cli", "--dir", str(work_dir), "sync", "--follow"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                close_fds=True)
    return proc.pid


def follow(sess: Session, *, interval_s: float = INTERVAL_S, idle_exit_s: float = IDLE_EXIT_S,
           log: Callable[[str], None] = lambda m: None, stop: threading.Event | None = None) -> int:
    """Full sync passes over the unfinished tasks until none is left (or idle, or stopped). Returns how
    many passes ran; 0 if another registrar follows this work directory."""
    from requests import RequestException
    from rucio.common.exception import RucioException

    from juno_jobs import control

    stop = stop or _stop_on_signals()
    transient = (RucioException, RequestException, OSError, BackendError, sqlite3.OperationalError,
                 subprocess.TimeoutExpired)
    work = sess.cfg.work_dir
    with _hold(lock_path(work), START_WAIT_S) as got:
        if not got:
            log("another registrar follows this work directory: nothing to do")
            return 0
        log(f"registrar {os.getpid()} follows {work}")
        passes = 0
        last_change = time.monotonic()
        while not stop.is_set():
            if not sess.cfg.db_path.exists():
                log("the task database is gone: stopping")
                break
            tasks = [t for t in sess.store.tasks() if control.needs_registrar(sess, t)]
            if not tasks:
                log("every task is finished: stopping")
                break
            changed = False
            found: list[str] = []
            for task in tasks:
                try:
                    report = control.sync(sess, task)
                except transient as err:
                    found.append(f"task {task.id}: {type(err).__name__}: {err} (tried again in the next pass)")
                    log(found[-1])
                    continue
                except Exception as err:
                    _report(work, [f"the registrar stopped: {type(err).__name__}: {err} (see {log_path(work)})"])
                    raise
                for w in report.warnings:
                    found.append(f"task {task.id}: {w}")
                    log(found[-1])
                if report.events or report.finalized or report.retried or report.gave_up or report.closed:
                    changed = True
                    log(f"task {task.id}: {report.events} event(s), {report.finalized} job(s) done, "
                        f"{report.retried} retried, {report.gave_up} given up" + (", closed" if report.closed else ""))
            _report(work, found)
            passes += 1
            now = time.monotonic()
            if changed:
                last_change = now
            elif now - last_change > idle_exit_s:
                log(f"nothing changed for {idle_exit_s:.0f} s: stopping (the next status starts a registrar)")
                break
            stop.wait(min(1.0, interval_s) if changed else interval_s)  # more may have ended meanwhile
        return passes


def _stop_on_signals() -> threading.Event:
    """SIGTERM and SIGINT only set a flag: the pass under way finishes (its batch is registered and
    recorded) before the registrar exits."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    return stop


__all__ = ["enabled", "follow", "lock_path", "log_path", "problems", "report_path", "running", "start"]
