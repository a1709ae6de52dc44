"""Where jobs run: `condor` (a real schedd, one cluster per round) or `local` (processes on this machine).

Both run the same wrapper with the same arguments and write the same files in the task directory; they
differ only in how jobs are started, stopped and observed (see base.Backend).
"""

from __future__ import annotations

from juno_jobs.backends.base import Backend
from juno_jobs.settings import Settings


def get(name: str, cfg: Settings) -> Backend:
    if name == "condor":
        from juno_jobs.backends.condor import CondorBackend

        return CondorBackend(cfg)
    if name == "local":
        from juno_jobs.backends.local import LocalBackend

        return LocalBackend(cfg)
    raise ValueError(f"unknown backend {name!r}: condor or local")
