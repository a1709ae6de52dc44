"""Where juno-submit keeps its state and which batch system it talks to (environment, then defaults).

  JUNO_SUBMIT_DIR        task database and task directories. Default: $JUNO_GRID_DIR/jobs/juno-submit on
                         the local grid (the pool sees only the grid's state directory), else
                         ~/.local/share/juno-submit. With the condor backend and no file transfer, it must be
                         on a file system the execute nodes share (see README, production).
  JUNO_SUBMIT_BACKEND    condor (default) or local
  JUNO_SUBMIT_SCHEDD     a remote schedd's name (default: the local one, or the one CONDOR_CONFIG names)
  JUNO_SUBMIT_MAX_IDLE   late materialization: at most this many idle jobs per cluster (default 2000)
  JUNO_SUBMIT_JOB_OWNER  uid:gid that jobs run as, when juno-submit itself runs as root: directories the
                         jobs write to are given to that user. On the local grid: the pool's job user.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("condor", "local")


@dataclass(frozen=True)
class Settings:
    work_dir: Path
    backend: str = "condor"
    schedd: str | None = None
    max_idle: int = 2000
    job_owner: tuple[int, int] | None = None

    @property
    def db_path(self) -> Path:
        return self.work_dir / "tasks.sqlite"

    @property
    def tasks_dir(self) -> Path:
        return self.work_dir / "tasks"


def _local_grid_owner() -> tuple[int, int] | None:
    """The local grid's pool refuses root's jobs and runs them as its job user (juno_grid.condor)."""
    try:
        from juno_grid import condor
    except ImportError:
        return None
    return condor.JOB_UID, condor.JOB_GID


def _owner(text: str) -> tuple[int, int]:
    uid, _, gid = text.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise ValueError(f"JUNO_SUBMIT_JOB_OWNER={text!r}: write uid:gid, e.g. 6401:6401") from None


def from_env(*, work_dir: Path | None = None, backend: str | None = None) -> Settings:
    env = os.environ
    grid_dir = env.get("JUNO_GRID_DIR")
    if work_dir is None:
        if env.get("JUNO_SUBMIT_DIR"):
            work_dir = Path(env["JUNO_SUBMIT_DIR"])
        elif grid_dir:
            work_dir = Path(grid_dir).resolve() / "jobs" / "juno-submit"
        else:
            work_dir = Path.home() / ".local" / "share" / "juno-submit"
    backend = backend or env.get("JUNO_SUBMIT_BACKEND", "condor")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose {' or '.join(BACKENDS)}")
    owner = None
    if env.get("JUNO_SUBMIT_JOB_OWNER"):
        owner = _owner(env["JUNO_SUBMIT_JOB_OWNER"])
    elif os.geteuid() == 0 and grid_dir:
        owner = _local_grid_owner()
    return Settings(work_dir=work_dir.resolve(), backend=backend, schedd=env.get("JUNO_SUBMIT_SCHEDD") or None,
                    max_idle=int(env.get("JUNO_SUBMIT_MAX_IDLE", "2000")), job_owner=owner)


def give(path: Path, settings: Settings) -> None:
    """Hand a file or directory the jobs write to over to the job owner (no-op unless configured)."""
    if settings.job_owner is not None and os.geteuid() == 0:
        os.chown(path, *settings.job_owner)


def make_dir(path: Path, settings: Settings) -> Path:
    """mkdir -p, each new directory given to the job owner."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        give(d, settings)
    return path
