"""Transfer failure reasons grouped by what went wrong, not by which file it happened to (pure).

Rucio stores the transfer service's text per attempt, e.g.
  RequestErrMsg.TRANSFER_FAILED:TRANSFER [5] SOURCE CHECKSUM MISMATCH User defined checksum and source
  checksum do not match d1786df6 != 8b2237ac
Paths, URLs, checksums and ids differ from file to file; replacing them with placeholders leaves one
line per cause, which is what an operator needs to see first.
"""

from __future__ import annotations

import re

_PREFIX = re.compile(r"^RequestErrMsg\.")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_UUID = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.IGNORECASE)
_CHECKSUM = re.compile(r"\b[0-9a-f]{8}\b", re.IGNORECASE)
_PATH = re.compile(r"(?<![\w<])/[\w.\-/]{3,}")
_SPACE = re.compile(r"\s+")
MAX_REASON = 240


def normalize(err_msg: str | None, state: str = "FAILED") -> str:
    """One line per cause: URLs → <url>, paths → <path>, adler32 values → <adler32>, ids → <id>."""
    if not err_msg:
        return f"{state} (no reason recorded)"
    text = _PREFIX.sub("", err_msg.strip())
    text = _URL.sub("<url>", text)
    text = _UUID.sub("<id>", text)
    text = _PATH.sub("<path>", text)
    # Only hex words with a digit: "deadbeef"-like English words are rare, "checksum" has no digit.
    text = _CHECKSUM.sub(lambda m: "<adler32>" if any(c.isdigit() for c in m.group()) else m.group(), text)
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def is_checksum(reason: str) -> bool:
    return "checksum" in reason.lower()
