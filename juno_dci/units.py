"""Numbers as people read them: decimal byte units (as storage sites and FTS report), counts, ages."""

from __future__ import annotations

from datetime import timedelta

_BYTE_UNITS = (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def human_bytes(n: int | float | None) -> str:
    """1234567 → '1.23 MB'; three significant digits, decimal units."""
    if n is None:
        return "-"
    value = float(n)
    for unit, scale in _BYTE_UNITS:
        if abs(value) >= scale:
            scaled = value / scale
            # Three significant digits without exponent: 999.96 MB → "1000 MB" (as the page's JS does).
            return f"{float(f'{scaled:.3g}'):g} {unit}" if scaled < 1000 else f"{scaled:.0f} {unit}"
    return f"{int(value)} B"


def human_count(n: int | None) -> str:
    """154115 → '154,115'."""
    return "-" if n is None else f"{n:,}"


def percent(part: int, whole: int) -> str:
    """Share as text; never rounds an incomplete share up to 100 %."""
    if whole <= 0:
        return "-"
    share = 100.0 * part / whole
    if part < whole and share > 99.9:
        return ">99.9 %"
    return f"{share:.1f} %" if share < 100 else "100 %"


def parse_duration(text: str) -> timedelta:
    """'90m', '24h', '7d', '2w' or seconds → timedelta; ValueError says what is accepted."""
    raw = str(text).strip().lower()
    try:
        if raw and raw[-1] in _DURATION_UNITS:
            value = float(raw[:-1]) * _DURATION_UNITS[raw[-1]]
        else:
            value = float(raw)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration: write e.g. 90m, 24h, 7d or a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{text!r}: a duration must be positive")
    return timedelta(seconds=value)


def human_duration(seconds: float) -> str:
    """3725 → '1h 2m'; for ages and bucket widths."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m" + (f" {seconds % 60}s" if seconds % 60 else "")
    if seconds < 86400:
        return f"{seconds // 3600}h" + (f" {seconds % 3600 // 60}m" if seconds % 3600 // 60 else "")
    return f"{seconds // 86400}d" + (f" {seconds % 86400 // 3600}h" if seconds % 86400 // 3600 else "")
