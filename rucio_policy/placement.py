"""Fractional placement: which blocks a "fraction" rule (e.g. IN2P3 holds one third) applies to.

Rucio's own tools do not fit: a rule's `weight` picks RSEs at random, and subscriptions cannot
express "a third of the bytes". So the engine decides per block, explicitly:

  Greedy deficit. With T bytes decided so far, P of them placed, and a new block of s bytes,
  place it iff placing brings the placed volume closer to the target f·(T+s):

        |P + s − f·(T+s)|  <  |P − f·(T+s)|      ⇔      2·(f·(T+s) − P)  >  s

  (ties are not placed). The error e = P − f·T then stays within ±max(s)/2 for ever, whatever the
  block sizes: one big block can push it off by at most half its size and the next blocks pull it
  back. With 5–8 TB of raw data a day that is a fraction of a percent after a few weeks.

Deterministic (exact rational arithmetic, no randomness, no clock) and stable: the decision and
the running totals it saw are recorded on the block as metadata (`PlacementRecord`); a decided
block is never re-decided. Replaying the blocks in their order (receiving date, then name) from
zero reproduces every recorded decision, which `replay()` and the tests check.

Changing the fraction in the policy changes only future decisions; the deficit rule then moves
the held volume towards the new target.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

# DID metadata key prefix of recorded decisions: <prefix><class>_<rule id>. Rucio's JSON metadata
# plugin forbids "." in keys, hence underscores.
PLACEMENT_META_PREFIX = "juno_place_"
_FORMAT_VERSION = "1"
# Rucio 41 lets anyone delete JSON metadata (DELETE /dids/<scope>/<name>/meta asks no permission), so
# each decision's verdict is also sealed in a DID column: column metadata cannot be deleted through
# Rucio, and the permission package lets only the ingest service and coordinators set it, once.
# Value: "juno_place:<class>_<rule>=placed|skipped[,...]" (the column holds 50 characters).
SEAL_COLUMN = "prod_step"
SEAL_PREFIX = "juno_place:"
SEAL_MAX = 50


def meta_key(class_name: str, rule_id: str) -> str:
    return f"{PLACEMENT_META_PREFIX}{class_name}_{rule_id}"


def seal_text(verdicts: dict[str, bool]) -> str:
    """The seal of a block's decisions (placement key → placed?)."""
    parts = [f"{key[len(PLACEMENT_META_PREFIX):]}={'placed' if placed else 'skipped'}"
             for key, placed in sorted(verdicts.items())]
    text = SEAL_PREFIX + ",".join(parts)
    if len(text) > SEAL_MAX:
        raise ValueError(f"placement seal {text!r} is longer than the {SEAL_COLUMN} column ({SEAL_MAX})")
    return text


def parse_seal(value: object) -> dict[str, bool]:
    """Placement key → placed?, from a seal; {} for anything else (the column may hold other data)."""
    text = "" if value is None else str(value)
    if not text.startswith(SEAL_PREFIX):
        return {}
    out: dict[str, bool] = {}
    for part in text[len(SEAL_PREFIX):].split(","):
        key, _, verdict = part.partition("=")
        if key and verdict in ("placed", "skipped"):
            out[PLACEMENT_META_PREFIX + key] = verdict == "placed"
    return out


def parse_fraction(value: object) -> Fraction:
    """A fraction from YAML: 0.25, 1, "1/3" or "33.3%". Raises ValueError with what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a fraction")
    if isinstance(value, int | float | Fraction):
        result = Fraction(value).limit_denominator(1_000_000)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("%"):
                result = Fraction(text[:-1].strip()) / 100
            else:
                result = Fraction(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{value!r} is not a fraction (write 0.5, 1/3 or 25%)") from None
    else:
        raise ValueError(f"{value!r} is not a fraction (write 0.5, 1/3 or 25%)")
    return result


@dataclass(frozen=True)
class Tally:
    """Bytes decided so far for one fraction rule, and how many of them were placed."""

    total_bytes: int = 0
    placed_bytes: int = 0

    @property
    def share(self) -> Fraction:
        return Fraction(self.placed_bytes, self.total_bytes) if self.total_bytes else Fraction(0)

    def add(self, block_bytes: int, placed: bool) -> Tally:
        return Tally(self.total_bytes + block_bytes, self.placed_bytes + (block_bytes if placed else 0))


def should_place(tally: Tally, block_bytes: int, fraction: Fraction) -> bool:
    """The greedy-deficit decision for a new block (see the module docstring)."""
    if block_bytes <= 0:
        return False  # an empty block needs no copy and must not skew the tally
    if fraction >= 1:
        return True
    target = fraction * (tally.total_bytes + block_bytes)
    return 2 * (target - tally.placed_bytes) > block_bytes


@dataclass(frozen=True)
class PlacementRecord:
    """One decision as stored on the block, with what it was based on (for `explain`)."""

    placed: bool
    block_bytes: int
    before: Tally
    fraction: Fraction

    @property
    def after(self) -> Tally:
        return self.before.add(self.block_bytes, self.placed)

    def to_meta(self) -> str:
        # One flat string: every Rucio metadata plugin stores it, and people can read it.
        return (f"v{_FORMAT_VERSION};{'placed' if self.placed else 'skipped'};bytes={self.block_bytes};"
                f"total_before={self.before.total_bytes};placed_before={self.before.placed_bytes};"
                f"fraction={self.fraction}")

    @classmethod
    def from_meta(cls, text: str) -> PlacementRecord:
        try:
            version, verdict, *pairs = str(text).split(";")
            fields = dict(pair.split("=", 1) for pair in pairs)
            if version != f"v{_FORMAT_VERSION}" or verdict not in ("placed", "skipped"):
                raise ValueError
            return cls(placed=verdict == "placed", block_bytes=int(fields["bytes"]),
                       before=Tally(int(fields["total_before"]), int(fields["placed_before"])),
                       fraction=Fraction(fields["fraction"]))
        except (ValueError, KeyError):
            raise ValueError(f"not a placement record: {text!r} (expected e.g. "
                             f"'v1;placed;bytes=1;total_before=0;placed_before=0;fraction=1/3')") from None

    def explain(self) -> str:
        after = self.after
        verdict = "placed" if self.placed else "not placed"
        return (f"{verdict}: block of {_size(self.block_bytes)}; before it {_size(self.before.placed_bytes)} of "
                f"{_size(self.before.total_bytes)} placed ({_pct(self.before.share)}), target {self.fraction} "
                f"({_pct(self.fraction)}); after it {_pct(after.share)}")


def decide(tally: Tally, block_bytes: int, fraction: Fraction) -> PlacementRecord:
    """Decide a new block against the tally of every earlier decision of the same rule."""
    if block_bytes < 0:
        raise ValueError(f"block size must be >= 0 bytes, not {block_bytes}")
    return PlacementRecord(placed=should_place(tally, block_bytes, fraction), block_bytes=block_bytes,
                           before=tally, fraction=fraction)


def tally_of(records: Iterable[PlacementRecord]) -> Tally:
    """The tally after a set of decisions: sums, so the order they are listed in does not matter."""
    total = placed = 0
    for record in records:
        total += record.block_bytes
        placed += record.block_bytes if record.placed else 0
    return Tally(total, placed)


def replay(block_bytes: Iterable[int], fraction: Fraction | Iterable[Fraction], start: Tally = Tally()
           ) -> list[PlacementRecord]:
    """Decide blocks one after the other (in the order given) from `start`.

    `fraction` may be one value or one per block (a policy whose fraction changed over time).
    """
    sizes = list(block_bytes)
    fractions = [fraction] * len(sizes) if isinstance(fraction, Fraction) else list(fraction)
    if len(fractions) != len(sizes):
        raise ValueError(f"{len(sizes)} blocks but {len(fractions)} fractions")
    records = []
    tally = start
    for size, frac in zip(sizes, fractions, strict=True):
        record = decide(tally, size, frac)
        records.append(record)
        tally = record.after
    return records


def _size(n: int) -> str:
    for unit, scale in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def _pct(value: Fraction) -> str:
    return f"{float(value) * 100:.2f} %"
