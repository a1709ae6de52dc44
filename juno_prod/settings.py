"""Where juno-prod keeps its state (environment, then defaults).

  JUNO_PROD_DIR     work directory on the production submit node: transformation copies, juno_jobs' task
                    directories and database (jobs/). Default: $JUNO_GRID_DIR/prod on the local grid,
                    else ~/.local/share/juno-prod.
  JUNO_PROD_DB      the bookkeeping database URL. Default: sqlite:///$JUNO_PROD_DIR/prod.sqlite. Production:
                    postgresql+psycopg://juno_prod@dbhost/juno_prod (psycopg 3 comes with rucio[postgresql]).
  JUNO_PROD_KAFKA   Kafka bootstrap servers for juno-ingest's events (keep-up); unset = no consumer, keep-up
                    relies on the periodic look at Rucio. JUNO_PROD_KAFKA_TOPIC (default juno.ingest.events).
  RUCIO_CONFIG      the production account's client configuration (account juno_prod).
  JUNO_SUBMIT_BACKEND, JUNO_SUBMIT_SCHEDD, ...: juno_jobs' own settings (juno_jobs/settings.py).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from juno_jobs import settings as jsettings


@dataclass(frozen=True)
class ProdSettings:
    work_dir: Path
    db_url: str
    kafka: str | None
    topic: str
    jobs: jsettings.Settings


def locate(env: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """(work directory, database URL) from the environment, creating nothing (readers such as the status
    page use this; from_env() also makes the directories)."""
    env = os.environ if env is None else env
    if env.get("JUNO_PROD_DIR"):
        work = Path(env["JUNO_PROD_DIR"])
    elif env.get("JUNO_GRID_DIR"):
        work = Path(env["JUNO_GRID_DIR"]) / "prod"
    else:
        work = Path.home() / ".local" / "share" / "juno-prod"
    work = work.resolve()
    return work, env.get("JUNO_PROD_DB") or f"sqlite:///{work / 'prod.sqlite'}"


def from_env() -> ProdSettings:
    env = os.environ
    work, db_url = locate(env)
    work.mkdir(parents=True, exist_ok=True)
    jobs = jsettings.from_env(work_dir=work / "jobs")
    jsettings.make_dir(jobs.work_dir, jobs)
    jobs.tasks_dir.mkdir(parents=True, exist_ok=True)
    from juno_ingest.events import DEFAULT_TOPIC

    return ProdSettings(work_dir=work, db_url=db_url,
                        kafka=env.get("JUNO_PROD_KAFKA") or None,
                        topic=env.get("JUNO_PROD_KAFKA_TOPIC") or DEFAULT_TOPIC, jobs=jobs)
