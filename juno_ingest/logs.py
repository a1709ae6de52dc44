"""The ingester's logs: JSON lines on stderr with juno_common.logs's key set (ts, level, logger, msg, fields).

    log.info("batch committed", extra=fields(messages=1000, registered=998))
"""

from __future__ import annotations

from typing import Any

from juno_common import logs as common
from juno_common.logs import JsonFormatter, fields

__all__ = ["JsonFormatter", "RUCIO_CLIENT_LOGGER", "fields", "setup"]
RUCIO_CLIENT_LOGGER = "juno_ingest.rucio_client"  # given to every Rucio client the ingester makes


def setup(level: str = "INFO", stream: Any = None) -> None:
    """JSON lines on stderr for juno_ingest's loggers; the Rucio client's retry chatter muted (the ingester
    logs each failed attempt itself, with what happens next)."""
    common.setup("juno_ingest", level, stream, quiet=(RUCIO_CLIENT_LOGGER,))
