"""Sizes and durations: one grammar to read them, one way to write them. Pure functions.

Sizes: a number with an optional unit k/K, M, G, T, P, then B or iB: `512MB`, `1.5 GB`, `2GiB`, `1k`.
`iB` is always binary (1024). Plain `B` units are decimal (10**3, as storage, Rucio and FTS count data
volumes), except where HTCondor's convention rules, memory and disk requests: `binary=True` reads
`2GB` as 2 GiB, the number `request_memory = 2GB` gives in a submit file.

Durations: one or more number-unit pairs, w d h m s, largest first: `90s`, `30m`, `1h30m`, `7d`, `2w`;
a bare number is seconds. `format_duration` writes what `parse_duration` reads.
"""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE)
_SECONDS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_BYTE_UNITS = (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))


class UnitError(ValueError):
    """A size or duration that cannot be read; the message shows what is accepted."""


def parse_size(text: str | int | float, *, binary: bool = False, bare: int = 1) -> int:
    """'10MB' → 10_000_000 (binary=True: 10_485_760); '2GiB' → 2_147_483_648. A bare number counts
    `bare` bytes per unit (1 = bytes; HTCondor's memory: 2**20, megabytes)."""
    if isinstance(text, bool):
        raise UnitError(f"{text!r} is not a size: write e.g. 512MB, 2GB, 1.5GiB")
    if isinstance(text, int | float):
        return int(text * bare)
    m = _SIZE.match(str(text))
    if not m:
        raise UnitError(f"{text!r} is not a size: write e.g. 1024, 1k, 512MB, 2GB, 1.5GiB")
    number, prefix, suffix = float(m[1]), m[2].lower(), m[3].lower()
    if not prefix and not suffix:
        return int(number * bare)
    if not prefix and suffix == "ib":
        raise UnitError(f"{text!r} is not a size: iB needs a prefix (KiB, MiB, GiB)")
    base = 1024 if (suffix == "ib" or binary) else 1000
    return int(number * base ** _POWER[prefix])


def human_bytes(n: int | float | None) -> str:
    """1234567 → '1.23 MB': decimal units, three significant digits."""
    if n is None:
        return "-"
    value = float(n)
    for unit, scale in _BYTE_UNITS:
        if abs(value) >= scale:
            scaled = value / scale
            # Three significant digits without exponent: 999.96 MB → "1000 MB" (as the status page's JS does).
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


def parse_duration(text: str | int | float) -> float:
    """'1h30m' → 5400.0, '7d', '2w', '90' (seconds); UnitError says what is accepted."""
    if isinstance(text, bool):
        raise UnitError(f"{text!r} is not a duration: write e.g. 90s, 30m, 1h30m, 7d")
    if isinstance(text, int | float):
        return float(text)
    raw = str(text).strip().lower()
    try:
        return float(raw)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(raw)
    if not parts or _DURATION_PART.sub("", raw).strip() or [u for _, u in parts] != sorted(
            (u for _, u in parts), key=lambda u: -_SECONDS[u]) or len({u for _, u in parts}) != len(parts):
        raise UnitError(f"{text!r} is not a duration: write e.g. 90s, 30m, 1h30m, 7d, 2w or a number of seconds")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """5400 → '1h30m', 3725 → '1h2m', 86400 * 30 → '30d': the two largest units, as parse_duration reads."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    for big, small in (("d", "h"), ("h", "m"), ("m", "s")):
        if s >= _SECONDS[big]:
            rest = (s % _SECONDS[big]) // _SECONDS[small]
            return f"{s // _SECONDS[big]}{big}" + (f"{rest}{small}" if rest else "")
    raise AssertionError("unreachable")
