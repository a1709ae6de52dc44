"""Structured logs: one JSON object per line on stderr, with the event's fields at the top level.

    log.info("batch committed", extra=fields(messages=1000, registered=998))
    → {"ts": "2025-10-09T14:05:11.250Z", "level": "INFO", "logger": "juno_ingest.consumer",
       "msg": "batch committed", "messages": 1000, "registered": 998}

JSON because the service runs under systemd/Kubernetes and its logs go to a collector; stdout stays
free for the CLI's own output.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_FIELDS = "juno_fields"
RUCIO_CLIENT_LOGGER = "juno_ingest.rucio_client"  # given to every Rucio client the ingester makes


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: these keys appear in the JSON object."""
    return {_FIELDS: values}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(getattr(record, _FIELDS, {}) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str = "INFO", stream: Any = None) -> None:
    """JSON lines on stderr for juno_ingest's loggers; Rucio's and librdkafka's chatter only from WARNING."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("juno_ingest").setLevel(level.upper())
    # The Rucio client logs every connection retry at ERROR (in colour, on its own handler) while the
    # server restarts; the ingester logs each failed attempt itself, with what happens next.
    for name in ("rucio", "baseclient", RUCIO_CLIENT_LOGGER):
        logging.getLogger(name).setLevel(logging.CRITICAL)
