"""Start and stop the grid's processes by the PIDs recorded when they were started.

`down` must stop exactly what `up` started and nothing else: each service records its PID in
`<state>/run/<name>.pid` together with the process start time, so a PID reused by an unrelated
process after a reboot is never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from juno_common.errors import Unavailable


class GridError(Unavailable, RuntimeError):
    """A grid component failed to start or stop; the message says which and where its log is (exit 5)."""


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    started: str  # /proc/<pid>/stat field 22, so a reused PID is not mistaken for ours


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def pidfile(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def read(run_dir: Path, name: str) -> Recorded | None:
    path = pidfile(run_dir, name)
    try:
        pid_s, started = path.read_text().split()
    except (OSError, ValueError):
        return None
    return Recorded(name, int(pid_s), started)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def alive(rec: Recorded | None) -> bool:
    """The recorded process still runs (a zombie waiting to be reaped does not count)."""
    return rec is not None and _start_time(rec.pid) == rec.started and not _zombie(rec.pid)


def record(run_dir: Path, name: str, pid: int) -> Recorded:
    run_dir.mkdir(parents=True, exist_ok=True)
    started = _start_time(pid)
    if started is None:
        raise GridError(f"{name}: process {pid} exited right after start")
    pidfile(run_dir, name).write_text(f"{pid} {started}\n")
    return Recorded(name, pid, started)


def spawn(
    run_dir: Path,
    log_dir: Path,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> Recorded:
    """Start `argv` detached in its own session, output to `<log_dir>/<name>.log`, PID recorded."""
    existing = read(run_dir, name)
    if alive(existing):
        assert existing is not None
        return existing
    log_dir.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    cmd = list(argv)
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    with open(log_dir / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    time.sleep(0.05)
    if proc.poll() is not None:
        raise GridError(f"{name} exited at once (code {proc.returncode}); see {log_dir / (name + '.log')}")
    return record(run_dir, name, proc.pid)


def stop(run_dir: Path, name: str, *, timeout: float = 15.0) -> bool:
    """SIGTERM the recorded process group, SIGKILL after `timeout`. True if something was stopped."""
    rec = read(run_dir, name)
    path = pidfile(run_dir, name)
    if not alive(rec):
        path.unlink(missing_ok=True)
        return False
    assert rec is not None
    # Each service was started in its own session: its PID is also its process-group id, so
    # the group signal reaches the children it forked (gunicorn workers, condor daemons, ...).
    try:
        os.killpg(rec.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(rec):
        time.sleep(0.1)
    if alive(rec):
        try:
            os.killpg(rec.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
    _reap(rec.pid)
    path.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], bool], what: str, *, timeout: float = 60.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    where = f"; see {log}" if log else ""
    raise GridError(f"{what} not ready after {timeout:.0f} s{where}")
