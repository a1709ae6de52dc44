"""The consumer's decisions, as pure functions and small state machines (tested without a broker).

- when a batch is full or old enough to go (`BatchPolicy`);
- which offsets to commit once Rucio holds a batch (`commit_offsets`: the highest offset + 1 per partition);
- which files are new, duplicates or conflicts (`classify`), given what Rucio already has;
- when the dead-letter topic is taking too much (`DlqLimit`);
- which blocks are due to be closed (`blocks_due`);
- how long to wait before retrying an unreachable service (`Backoff`).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import TypeVar

# -- batches --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchPolicy:
    """A batch goes when full, max_wait_s after its first message, or as soon as no message came for
    linger_s: in a backlog messages arrive at once and batches fill up; at JUNO's nominal rate (a file a
    minute) a lone message is not held back for max_wait_s."""

    max_messages: int
    max_wait_s: float
    linger_s: float = 0.05

    def full(self, count: int) -> bool:
        return count >= self.max_messages

    def due(self, count: int, first_at: float | None, now: float) -> bool:
        """A batch goes when it is full, or when its first message has waited max_wait_s."""
        if count == 0 or first_at is None:
            return False
        return self.full(count) or now - first_at >= self.max_wait_s

    def wait_left(self, first_at: float | None, now: float) -> float:
        """How long the next consume call may block without delaying a due batch."""
        if first_at is None:
            return self.max_wait_s
        return max(0.0, min(self.linger_s, self.max_wait_s - (now - first_at)))


@dataclass(frozen=True)
class Position:
    """Where a message came from (its identity for offsets and dead letters)."""

    topic: str
    partition: int
    offset: int


T = TypeVar("T")


def even_chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """At most `size` items each, as even as possible: 520 by 500 → 260 + 260, not 500 + 20, so that
    parallel Rucio calls finish together."""
    if not items:
        return []
    count = -(-len(items) // size)
    base, extra = divmod(len(items), count)
    chunks, start = [], 0
    for i in range(count):
        end = start + base + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


def commit_offsets(positions: Iterable[Position]) -> dict[tuple[str, int], int]:
    """(topic, partition) → the offset to commit: Kafka's "next message to read" = highest + 1.

    A batch is handled as a whole (every message in it is registered, a duplicate or dead-lettered),
    so committing past its highest offset per partition never skips an unhandled message.
    """
    out: dict[tuple[str, int], int] = {}
    for pos in positions:
        key = (pos.topic, pos.partition)
        out[key] = max(out.get(key, -1), pos.offset + 1)
    return out


# -- new, duplicate or conflict -------------------------------------------------------------------


class Kind(Enum):
    NEW = "new"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Known:
    """What Rucio holds for a name (size, adler32), or what an earlier message of the batch said."""

    size: int | None
    adler32: str | None


@dataclass(frozen=True)
class Decision:
    kind: Kind
    reason: str = ""


def _differs(size: int, adler32: str, known: Known) -> str:
    parts = []
    if known.size is not None and known.size != size:
        parts.append(f"size {size} != {known.size}")
    if known.adler32 is not None and known.adler32.lower() != adler32.lower():
        parts.append(f"adler32 {adler32} != {known.adler32}")
    return ", ".join(parts)


def classify(files: Sequence[tuple[str, int, str]], existing: Mapping[str, Known]) -> list[Decision]:
    """Per (name, size, adler32) in offset order: new, duplicate or conflict.

    A name Rucio has is a duplicate if size and adler32 agree, else a conflict (Rucio's copy stands:
    `add_replicas` would silently keep it, so the check has to be ours). Within the batch the first
    message of a name wins the same way: later ones are duplicates of it or conflicts with it.
    """
    first: dict[str, Known] = {}
    out: list[Decision] = []
    for name, size, adler32 in files:
        if name in existing:
            diff = _differs(size, adler32, existing[name])
            out.append(Decision(Kind.CONFLICT, f"raw:{name} is already registered with different content "
                                               f"({diff}); the registered file is kept")
                       if diff else Decision(Kind.DUPLICATE))
        elif name in first:
            diff = _differs(size, adler32, first[name])
            out.append(Decision(Kind.CONFLICT, f"raw:{name} arrived twice in one batch with different content "
                                               f"({diff}); the first message is registered")
                       if diff else Decision(Kind.DUPLICATE))
        else:
            first[name] = Known(size, adler32)
            out.append(Decision(Kind.NEW))
    return out


# -- dead-letter limit ----------------------------------------------------------------------------


@dataclass
class DlqLimit:
    """Stops the ingester when dead letters are no longer the exception (arroyo's DlqLimit).

    Over the last `window` messages at most `max_ratio` may be dead-lettered (checked once at least
    `min_messages` were seen), and never more than `max_consecutive` in a row. A wrong RSE, a
    changed message format or a broken SPADE would otherwise drain the whole topic into the DLQ.
    """

    max_ratio: float
    window: int
    min_messages: int
    max_consecutive: int

    def __post_init__(self) -> None:
        self._recent: deque[bool] = deque(maxlen=self.window)
        self._dead_in_window = 0
        self._consecutive = 0

    def check(self, dead: Sequence[bool]) -> str | None:
        """Why adding these outcomes (True = dead-lettered, in offset order) would break the limit, or None.

        Nothing is recorded: call `record` once the batch is committed.
        """
        recent = deque(self._recent, maxlen=self.window)
        in_window = self._dead_in_window
        consecutive = self._consecutive
        for is_dead in dead:
            if len(recent) == recent.maxlen and recent[0]:
                in_window -= 1
            recent.append(is_dead)
            in_window += is_dead
            consecutive = consecutive + 1 if is_dead else 0
            if consecutive > self.max_consecutive:
                return f"{consecutive} messages in a row would be dead-lettered (limit {self.max_consecutive})"
            if len(recent) >= self.min_messages and in_window > self.max_ratio * len(recent):
                return (f"{in_window} of the last {len(recent)} messages would be dead-lettered "
                        f"(ratio {in_window / len(recent):.2f} > limit {self.max_ratio})")
        return None

    def record(self, dead: Sequence[bool]) -> None:
        for is_dead in dead:
            if len(self._recent) == self._recent.maxlen and self._recent[0]:
                self._dead_in_window -= 1
            self._recent.append(is_dead)
            self._dead_in_window += is_dead
            self._consecutive = self._consecutive + 1 if is_dead else 0


# -- closing blocks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenBlock:
    name: str
    day_end: datetime  # UTC, aware


def blocks_due(open_blocks: Iterable[OpenBlock], now: datetime, grace: timedelta, caught_up: bool) -> list[str]:
    """Blocks to close now: their receiving day ended more than `grace` ago, and the consumer has read
    everything published so far (no assigned partition has unread messages).

    Without the second condition a backlog (after an outage, or a replay) would close day D while
    messages of day D still wait in the topic: they would then arrive for a closed block.
    """
    if not caught_up:
        return []
    return sorted(b.name for b in open_blocks if now >= b.day_end + grace)


# -- retries --------------------------------------------------------------------------------------


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped: 1, 2, 4, ... max_s (each scaled by 0.5–1)."""

    initial_s: float
    max_s: float
    rng: random.Random | None = None
    attempt: int = 0

    def next(self) -> float:
        base = min(self.max_s, self.initial_s * (2 ** self.attempt))
        self.attempt += 1
        rng = self.rng or random
        # Jitter keeps several ingesters (or their restarts) from hammering a recovering server in step.
        return base * (0.5 + rng.random() / 2)

    def reset(self) -> None:
        self.attempt = 0
