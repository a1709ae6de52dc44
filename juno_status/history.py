"""Bytes replicated per site over time: bucket widths and cumulative series (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

# Widths people read at a glance; the chart gets at most about TARGET_BUCKETS points per line.
NICE_WIDTHS_S = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400,
                 2 * 86400, 7 * 86400)
TARGET_BUCKETS = 60


def bucket_width(span: timedelta, target: int = TARGET_BUCKETS) -> int:
    """The smallest nice width (seconds) that covers `span` in at most `target` buckets."""
    seconds = max(span.total_seconds(), 1.0)
    for width in NICE_WIDTHS_S:
        if seconds / width <= target:
            return width
    return int(-(-seconds // target))


def floor_time(when: datetime, width: int) -> datetime:
    """`when` rounded down to a multiple of `width` seconds since the epoch (naive UTC in and out)."""
    epoch = datetime(1970, 1, 1)
    seconds = int((when - epoch).total_seconds())
    return epoch + timedelta(seconds=seconds - seconds % width)


@dataclass(frozen=True)
class Series:
    start: datetime  # first bucket's start
    width: int  # seconds
    buckets: int
    cumulative: dict[str, list[int]]  # site → bytes replicated up to the end of each bucket
    totals: dict[str, int]

    def times(self) -> list[datetime]:
        """End of each bucket (a cumulative value holds at the end of its bucket)."""
        return [self.start + timedelta(seconds=self.width * (i + 1)) for i in range(self.buckets)]


def cumulative(per_bucket: Iterable[tuple[str, int, int]], start: datetime, width: int, buckets: int,
               sites: Iterable[str] = ()) -> Series:
    """From (site, bucket index, bytes) rows to running totals per site; every listed site gets a line."""
    steps: dict[str, list[int]] = {site: [0] * buckets for site in sites}
    for site, index, nbytes in per_bucket:
        if 0 <= index < buckets:
            steps.setdefault(site, [0] * buckets)[index] += int(nbytes or 0)
    out: dict[str, list[int]] = {}
    for site, values in steps.items():
        running, line = 0, []
        for value in values:
            running += value
            line.append(running)
        out[site] = line
    return Series(start, width, buckets, out, {site: line[-1] if line else 0 for site, line in out.items()})


def index_of(when: datetime, start: datetime, width: int) -> int:
    return int((when - start).total_seconds() // width)


def as_points(series: Series) -> Mapping[str, list[list[float]]]:
    """site → [[epoch seconds at bucket end, cumulative bytes], ...] for JSON and the chart."""
    epoch = datetime(1970, 1, 1)
    ends = [(t - epoch).total_seconds() for t in series.times()]
    return {site: [[t, v] for t, v in zip(ends, line, strict=True)] for site, line in series.cumulative.items()}
