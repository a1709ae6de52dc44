"""The Rucio 41 server of the local grid: config, database bootstrap, gunicorn."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from . import procs, rucio_config
from .config import REPO_ROOT, VENV_BIN, GridConfig

NAME = "rucio-server"
ROOT_USER = "ddmlab"
ROOT_PWD = "secret"


def site_packages() -> Path:
    import rucio  # noqa: PLC0415 - only to find where it is installed

    return Path(rucio.__file__).resolve().parents[1]


def env(cfg: GridConfig) -> dict[str, str]:
    """What every Rucio process of the grid (and a client using it) needs in its environment."""
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"RUCIO_CONFIG": str(cfg.rucio_cfg), "PYTHONPATH": pythonpath}


def render_config(cfg: GridConfig) -> None:
    (cfg.state_dir / "rucio").mkdir(parents=True, exist_ok=True)
    (cfg.log_dir / "rucio" / "trace").mkdir(parents=True, exist_ok=True)
    values = {
        "state": str(cfg.state_dir),
        "repo": str(REPO_ROOT),
        "venv_rucio": str(VENV_BIN.parent / "rucio"),
        "rucio_url": cfg.rucio_url,
        "root_user": ROOT_USER,
        "root_pwd": ROOT_PWD,
        "pg_port": str(cfg.ports.postgres),
        "fts_url": cfg.fts_url,
    }
    header = (f"Rucio configuration of the local JUNO grid, rendered by `juno-grid up` from "
              f"{rucio_config.DESCRIPTION.relative_to(REPO_ROOT)}.\n"
              "The server, the daemons, the `rucio` CLI and our tools all read it through RUCIO_CONFIG.")
    cfg.rucio_cfg.write_text(rucio_config.render_ini(rucio_config.view("local"), values, header=header))
    alembic = (VENV_BIN.parent / "rucio" / "etc" / "alembic.ini.template").read_text()
    url = f"postgresql+psycopg://rucio:rucio@127.0.0.1:{cfg.ports.postgres}/rucio"
    lines = []
    for line in alembic.splitlines():
        if line.startswith(("sqlalchemy.url", "default =", "version_table_schema")):
            continue
        if line.startswith("script_location"):
            line = f"script_location = {site_packages() / 'rucio' / 'db' / 'sqla' / 'migrate_repo'}"
        lines.append(line)
        if line.strip() == "[alembic]":
            lines.append(f"sqlalchemy.url = {url}")
    (cfg.state_dir / "rucio" / "alembic.ini").write_text("\n".join(lines) + "\n")


BOOTSTRAP = """
from rucio.db.sqla.util import build_database, create_base_vo, create_root_account
from rucio.db.sqla.session import get_session
from sqlalchemy import text
s = get_session()
exists = s.execute(text("SELECT to_regclass('accounts') IS NOT NULL")).scalar()
s.close()
if not exists:
    build_database(); create_base_vo(); create_root_account()
    print("built")
else:
    print("exists")
"""


def bootstrap_db(cfg: GridConfig) -> str:
    out = subprocess.run([sys.executable, "-c", BOOTSTRAP], env={**os.environ, **env(cfg)},
                         text=True, capture_output=True)
    if out.returncode != 0:
        raise procs.GridError(f"Rucio database bootstrap failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def start(cfg: GridConfig) -> None:
    render_config(cfg)
    bootstrap_db(cfg)
    procs.spawn(
        cfg.run_dir, cfg.log_dir, NAME,
        [str(VENV_BIN / "gunicorn"), "rucio.web.rest.flaskapi.v1.main:application",
         "--bind", f"127.0.0.1:{cfg.ports.rucio}", "--workers", "3", "--threads", "4",
         "--timeout", "300", "--graceful-timeout", "10", "--access-logfile", "-"],
        env=env(cfg),
    )
    procs.wait_for(lambda: health(cfg)[0], "Rucio server", timeout=90, log=cfg.log_dir / f"{NAME}.log")


def health(cfg: GridConfig) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{cfg.rucio_url}/ping", timeout=3) as resp:
            version = json.load(resp).get("version", "?")
        return True, f"{cfg.rucio_url} (Rucio {version})"
    except (OSError, ValueError):
        return False, f"{cfg.rucio_url} (no answer to /ping)"


def stop(cfg: GridConfig) -> None:
    procs.stop(cfg.run_dir, NAME)
