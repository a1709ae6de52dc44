"""PostgreSQL 15 for the local grid: a private cluster in the state directory, run as `postgres`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import procs
from .config import GridConfig

PG_BIN = Path("/usr/lib/postgresql/15/bin")
NAME = "postgres"


def data_dir(cfg: GridConfig) -> Path:
    return cfg.state_dir / "postgres" / "data"


def _as_postgres(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *argv], text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def _initdb(cfg: GridConfig) -> None:
    data = data_dir(cfg)
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    shutil.chown(data.parent, "postgres", "postgres")
    shutil.chown(data, "postgres", "postgres")
    data.chmod(0o700)
    out = _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    if out.returncode != 0:
        raise procs.GridError(f"initdb failed in {data}:\n{out.stdout}{out.stderr}")


def _psql(cfg: GridConfig, sql: str, db: str = "postgres") -> str:
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(cfg.ports.postgres), "-U", "postgres", "-d", db,
         "-v", "ON_ERROR_STOP=1", "-tAc", sql],
        text=True, capture_output=True,
    )
    if out.returncode != 0:
        raise procs.GridError(f"psql failed: {sql}\n{out.stderr}")
    return out.stdout.strip()


def start(cfg: GridConfig) -> None:
    _initdb(cfg)
    if not procs.alive(procs.read(cfg.run_dir, NAME)):
        _fast_shutdown(cfg)  # a postmaster of an earlier run still shutting down (or its pid file) blocks a start
    sock = cfg.state_dir / "postgres" / "sock"
    sock.mkdir(parents=True, exist_ok=True)
    shutil.chown(sock, "postgres", "postgres")
    procs.spawn(
        cfg.run_dir, cfg.log_dir, NAME,
        [str(PG_BIN / "postgres"), "-D", str(data_dir(cfg)), "-p", str(cfg.ports.postgres),
         "-k", str(sock), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
         "-c", "shared_buffers=512MB", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off"],
        user="postgres",
    )
    procs.wait_for(lambda: procs.port_open(cfg.ports.postgres), "PostgreSQL", timeout=30,
                   log=cfg.log_dir / f"{NAME}.log")
    procs.wait_for(lambda: _ready(cfg), "PostgreSQL accepting queries", timeout=30)
    if _psql(cfg, "SELECT 1 FROM pg_roles WHERE rolname='rucio'") != "1":
        _psql(cfg, "CREATE ROLE rucio LOGIN PASSWORD 'rucio'")
    if _psql(cfg, "SELECT 1 FROM pg_database WHERE datname='rucio'") != "1":
        _psql(cfg, "CREATE DATABASE rucio OWNER rucio")


def _ready(cfg: GridConfig) -> bool:
    try:
        return _psql(cfg, "SELECT 1") == "1"
    except procs.GridError:
        return False


def health(cfg: GridConfig) -> tuple[bool, str]:
    ok = _ready(cfg)
    return ok, f"127.0.0.1:{cfg.ports.postgres}" + ("" if ok else " (not answering)")


def stop(cfg: GridConfig) -> None:
    """Fast shutdown, then make sure the recorded process is gone.

    A plain SIGTERM is PostgreSQL's *smart* shutdown: it waits for every client to disconnect, and a
    test session or benchmark still holds pooled connections while it takes the grid down. The group
    SIGKILL that followed after 15 s left backends behind, still attached to the shared memory, and
    the next `juno-grid up` (e.g. `make demo` right after `make test`) failed with "lock file
    postmaster.pid already exists". `pg_ctl stop -m fast` disconnects clients and shuts down cleanly."""
    _fast_shutdown(cfg)
    procs.stop(cfg.run_dir, NAME)


def _fast_shutdown(cfg: GridConfig) -> None:
    """pg_ctl stop -m fast, waiting up to 60 s; nothing to do when no postmaster.pid is there."""
    data = data_dir(cfg)
    if not (data / "postmaster.pid").exists():
        return
    _as_postgres([str(PG_BIN / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w", "-t", "60"],
                 timeout=90, cwd="/")
