"""Sizes and durations as task files write them ("2GB", "1h30m"), as HTCondor counts them: the grammar
of juno_common.units with HTCondor's convention for memory and disk, binary units in MB (MiB), so `2GB`
is 2048 MB, the number `request_memory = 2GB` gives in a submit file; a bare number is MB.
"""

from __future__ import annotations

from juno_common.units import UnitError, format_duration, parse_duration, parse_size
from juno_common.units import human_bytes as format_bytes

__all__ = ["UnitError", "duration_s", "format_bytes", "format_duration", "format_mb", "size_kb", "size_mb"]
_MB = 2**20


def size_kb(text: str | int) -> int:
    """'512MB' → 524288 (KiB). A bare number is MB, as in HTCondor's request_memory."""
    return parse_size(text, binary=True, bare=_MB) // 1024


def size_mb(text: str | int) -> int:
    """'2GB' → 2048. Rounded up: a request is never smaller than what was written."""
    return -(-parse_size(text, binary=True, bare=_MB) // _MB)


def format_mb(mb: int) -> str:
    """2048 → '2GB', 1536 → '1536MB': the shortest exact spelling."""
    if mb >= 1024 and mb % 1024 == 0:
        return f"{mb // 1024}GB"
    return f"{mb}MB"


def duration_s(text: str | int) -> int:
    """'1h30m' → 5400; a bare number is seconds."""
    return int(parse_duration(text))
