"""Which open blocks this ingester knows, and when each is due to close (blocks_due decides, pure)."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime, timedelta

from juno_common.clock import naive_utc, utc_now
from juno_ingest.batching import OpenBlock, blocks_due
from juno_ingest.mapping import BlockPlan
from rucio_policy import naming


def naive(when: datetime | str) -> datetime:
    """A Rucio date (datetime, ISO text or the REST layer's RFC 1123 text) as naive UTC; now if unreadable."""
    if isinstance(when, str):
        text = when
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                return utc_now()
    return naive_utc(when)


class Closer:
    """Open blocks this ingester knows, and which of them are due to close."""

    def __init__(self, grace: timedelta, check_every_s: float) -> None:
        self.grace = grace
        self.check_every_s = check_every_s
        self.open: dict[str, OpenBlock] = {}
        self._last = float("-inf")

    def observe(self, blocks: dict[str, BlockPlan]) -> None:
        for name, plan in blocks.items():
            self.open.setdefault(name, OpenBlock(name, plan.day_end))

    def add(self, name: str) -> None:
        day = naming.parse_block(name).day
        self.open.setdefault(name, OpenBlock(name, datetime.combine(day + timedelta(days=1), datetime.min.time(),
                                                                    tzinfo=UTC)))

    def due(self, now: datetime, caught_up: bool, *, force: bool = False) -> list[str]:
        mono = time.monotonic()
        if not force and mono - self._last < self.check_every_s:
            return []
        self._last = mono
        return blocks_due(self.open.values(), now, self.grace, caught_up)
