"""Where juno-submit keeps its state and which batch system it talks to (environment, then defaults).

  JUNO_SUBMIT_DIR        task database and task directories, on the submit node only (jobs get what they
                         need by HTCondor's file transfer). Default: $JUNO_GRID_DIR/jobs/juno-submit on the
                         local grid (the schedd's node sees the grid's state directory), else
                         ~/.local/share/juno-submit.
  JUNO_SUBMIT_BACKEND    condor (default) or local
  JUNO_SUBMIT_SCHEDD     a remote schedd's name (default: the local one, or the one CONDOR_CONFIG names)
  JUNO_SUBMIT_MAX_IDLE   late materialization: at most this many idle jobs per cluster (default 2000)
  JUNO_SUBMIT_JOB_OWNER  uid:gid that jobs run as, when juno-submit itself runs as root: directories the
                         batch system writes to (logs/, results/) are given to that user. `juno-grid exec`
                         sets it to the local pool's job user.
  JUNO_SUBMIT_LOG_LIMIT  bytes of a payload's stdout and of its stderr that come back with the job
                         (head and tail; default 1 MiB each)
  JUNO_SUBMIT_REGISTRAR  on (default): submit and status start the registrar (`sync --follow`) when
                         none runs; off: run `juno-submit sync` yourself (registrar.py)
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
    log_limit: int = 1 << 20

    @property
    def db_path(self) -> Path:
        return self.work_dir / "tasks.sqlite"

    @property
    def tasks_dir(self) -> Path:
        return self.work_dir / "tasks"


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
    return Settings(work_dir=work_dir.resolve(), backend=backend, schedd=env.get("JUNO_SUBMIT_SCHEDD") or None,
                    max_idle=int(env.get("JUNO_SUBMIT_MAX_IDLE", "2000")), job_owner=owner,
                    log_limit=int(env.get("JUNO_SUBMIT_LOG_LIMIT", str(1 << 20))))


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
