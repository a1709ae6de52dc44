"""Read-only access to Rucio's database through Rucio's own engine, session and models.

Why SQL and not the REST API: the status needs aggregates over every raw file (replicas per block and
RSE, checksum-verified transfers, rule states). Rucio's REST API has no aggregate calls: it would mean
listing every replica of every file (hundreds of thousands of rows streamed as JSON, minutes) where
one GROUP BY over the same tables takes well under a second. `juno-dci status` therefore runs next
to the Rucio server, with the server's rucio.cfg ([database] default), and only reads:

  - each transaction is declared READ ONLY (PostgreSQL refuses any write in it) and rolled back;
  - a statement timeout keeps a slow query from holding anything for long;
  - only Rucio's tables are read, through `rucio.db.sqla.models`, so a Rucio schema change shows up
    as an import or column error here rather than as silently wrong numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from juno_common.errors import Unavailable


class StatusError(Unavailable):
    """The status cannot be collected from Rucio's database; the message says what, where and what to do."""


def _config_path() -> str:
    return os.environ.get("RUCIO_CONFIG") or "/opt/rucio/etc/rucio.cfg"


def database_url() -> str:
    """Rucio's database URL from its configuration, password hidden (for messages and the report)."""
    try:
        from rucio.common.config import config_get
        from sqlalchemy.engine import make_url

        return make_url(config_get("database", "default", check_config_table=False)).render_as_string(
            hide_password=True)
    except Exception as err:  # noqa: BLE001 - any failure here means the same thing to the user
        raise StatusError(
            f"no Rucio database configured ([database] default in {_config_path()}: {_first_line(err)}). "
            "juno-dci reads Rucio's database directly (read-only): run it where the Rucio server's rucio.cfg "
            "is, e.g. on the local grid: .venv/bin/juno-grid exec -- juno-dci status") from None


@contextmanager
def read_only(statement_timeout_s: float = 60.0) -> Iterator[Any]:
    """A Rucio database session that cannot write; rolled back at the end."""
    url = database_url()
    try:
        from rucio.db.sqla.session import get_session
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError
    except Exception as err:  # noqa: BLE001 - Rucio's import reads its configuration
        raise StatusError(f"cannot load Rucio's database layer ({type(err).__name__}: {err}); "
                          f"check {_config_path()}") from None
    scoped = get_session()
    session = scoped()
    try:
        try:
            if session.bind.dialect.name == "postgresql":
                session.execute(text("SET TRANSACTION READ ONLY"))
                session.execute(text(f"SET LOCAL statement_timeout = {int(statement_timeout_s * 1000)}"))
                # These are a few large aggregates: JIT compilation costs more than it saves (0.3 s here).
                session.execute(text("SET LOCAL jit = off"))
        except SQLAlchemyError as err:
            raise StatusError(f"cannot open a session on Rucio's database {url}: {_first_line(err)}. "
                              "Is it running? (.venv/bin/juno-grid status)") from None
        yield session
    except SQLAlchemyError as err:
        raise StatusError(f"reading Rucio's database {url} failed: {_first_line(err)}") from None
    finally:
        session.rollback()
        scoped.remove()


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__
