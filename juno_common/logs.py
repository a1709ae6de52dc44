"""Structured logs: one JSON object per line on stderr, the same keys for every juno-dci tool.

    log.info("batch committed", extra=fields(messages=1000, registered=998))
    → {"ts": "2025-10-09T14:05:11.250Z", "level": "INFO", "logger": "juno_ingest.consumer",
       "msg": "batch committed", "messages": 1000, "registered": 998}

JSON because services run under systemd/Kubernetes and their logs go to a collector; stdout stays free
for the command's own output.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_FIELDS = "juno_fields"
QUIET_LOGGERS = ("rucio", "baseclient")  # the Rucio client logs every connection retry at ERROR, in colour


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


def setup(package: str, level: str = "INFO", stream: Any = None, quiet: tuple[str, ...] = ()) -> None:
    """JSON lines on stderr for `package`'s loggers; everything else (Rucio, librdkafka) from WARNING,
    the Rucio client's own chatter and the loggers in `quiet` not at all (the caller logs what failed)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger(package).setLevel(level.upper())
    for name in (*QUIET_LOGGERS, *quiet):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def mute_rucio_client() -> None:
    """The Rucio client logs each failed connection at ERROR, in colour, and resets its logger's level when
    imported: disable it; the command's error handler says once what failed."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).disabled = True
