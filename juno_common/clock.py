"""Time as Rucio keeps it: naive datetimes in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, naive UTC (Rucio's dates carry no time zone)."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(when: datetime) -> datetime:
    """An aware datetime as naive UTC; a naive one is taken to be UTC already."""
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
