"""Sizes and durations as people write them in task files ("2GB", "1h30m"), as HTCondor counts them.

Sizes use HTCondor's convention: binary units, and memory in MB (MiB), so `2GB` is 2048 MB, the same
number `request_memory = 2GB` gives in a submit file. Pure functions, no I/O.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_FACTOR_KB = {"": 1024, "K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}  # bare numbers mean MB
_DURATION = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s?)?\s*$", re.IGNORECASE)


class UnitError(ValueError):
    """A size or duration that cannot be read; the message shows what is accepted."""


def size_kb(text: str | int) -> int:
    """'512MB' → 524288 (KiB). A bare number is MB, as in HTCondor's request_memory."""
    if isinstance(text, bool):
        raise UnitError(f"{text!r} is not a size: write e.g. 512MB, 2GB")
    if isinstance(text, int | float):
        return int(text * 1024)
    m = _SIZE.match(str(text))
    if not m:
        raise UnitError(f"{text!r} is not a size: write e.g. 512MB, 2GB, 1.5GB (binary units, as HTCondor)")
    return int(float(m[1]) * _FACTOR_KB[m[2].upper()])


def size_mb(text: str | int) -> int:
    """'2GB' → 2048. Rounded up: a request is never smaller than what was written."""
    kb = size_kb(text)
    return -(-kb // 1024)


def format_mb(mb: int) -> str:
    """2048 → '2GB', 1536 → '1536MB': the shortest exact spelling."""
    if mb >= 1024 and mb % 1024 == 0:
        return f"{mb // 1024}GB"
    return f"{mb}MB"


def format_bytes(n: int | float) -> str:
    """Decimal units for data volumes, as Rucio and storage report them."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(value) < 1000 or unit == "PB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def duration_s(text: str | int) -> int:
    """'1h30m' → 5400; a bare number is seconds."""
    if isinstance(text, bool):
        raise UnitError(f"{text!r} is not a duration: write e.g. 30m, 2h, 1h30m, 90s")
    if isinstance(text, int):
        return text
    m = _DURATION.match(str(text))
    if not m or not any(m.groups()):
        raise UnitError(f"{text!r} is not a duration: write e.g. 30m, 2h, 1h30m, 90s, 1d")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
