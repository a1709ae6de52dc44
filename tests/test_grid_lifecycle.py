"""`juno-grid up` / `down` on a second, throw-away grid: down leaves no process and no namespace.

The second grid has its own state directory and network namespace, so it runs beside the session's
grid on the same port numbers without touching it (the HTCondor pools share the read-only chroot,
each with its own private mounts).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from juno_grid import grid, netns, procs
from juno_grid.config import GridConfig

pytestmark = pytest.mark.grid


def _pids_of_tree(cfg: GridConfig) -> set[int]:
    return {procs.read(cfg.run_dir, p.stem).pid for p in cfg.run_dir.glob("*.pid")}  # type: ignore[union-attr]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: that is private (0700) and the grid's unprivileged users must reach it.
    base = Path("/var/lib/juno-dci")
    base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="lifecycle-", dir=base))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_up_status_down_leaves_nothing(state_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root")
    cfg = GridConfig(state_dir=state_dir, netns=f"juno-life-{os.getpid()}")
    # grid.up moves this thread into the new grid's namespace and points RUCIO_CONFIG & co. at it:
    # come back, and restore the environment, for the tests that follow.
    saved_env = dict(os.environ)
    with netns.returning(), _restored_environ(saved_env):
        try:
            grid.up(cfg, daemons=True, condor_pool=True, log=lambda m: None)
            rows = grid.status(cfg)
            assert rows and all(r.ok for r in rows), [r for r in rows if not r.ok]
            pids = _pids_of_tree(cfg)
            assert len(pids) >= 21  # postgres, rucio, 6 xrootd, fts, kafka, 11 daemons, condor
            ns_inode = os.stat(netns.path(cfg.netns)).st_ino
            inside = _processes_in(ns_inode)
            assert any(_root_of(pid) == str(cfg.chroot) for pid in inside), "no HTCondor daemon in the chroot?"
            # A client still connected to PostgreSQL (as a test session's or benchmark's pool is when it
            # takes the grid down) must not keep the database running past down, nor block the next up.
            held = psycopg.connect(f"host=127.0.0.1 port={cfg.ports.postgres} user=rucio password=rucio dbname=rucio")
            held.execute("SELECT 1")
            grid.down(cfg, log=lambda m: None)
            held.close()
            for pid in pids:
                assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"process {pid} survived down"
            assert not netns.exists(cfg.netns)
            assert not _processes_in(ns_inode), "processes still in the grid's namespace after down"
            assert not list(cfg.run_dir.glob("*.pid"))

            # Up again at once (`make demo` right after `make test`), then down.
            grid.up(cfg, daemons=False, condor_pool=False, log=lambda m: None)
            assert all(r.ok for r in grid.status(cfg))
            grid.down(cfg, log=lambda m: None)
            assert not netns.exists(cfg.netns)
        finally:
            if netns.exists(cfg.netns):
                grid.down(cfg, log=lambda m: None)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@contextmanager
def _restored_environ(saved: dict[str, str]) -> Iterator[None]:
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _root_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return ""


def _processes_in(ns_inode: int) -> set[int]:
    """Every process (but this one) whose network namespace is the given one."""
    out = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid() and not _is_zombie(int(proc.name)):
            try:
                if os.stat(proc / "ns" / "net").st_ino == ns_inode:
                    out.add(int(proc.name))
            except OSError:
                continue
    return out
