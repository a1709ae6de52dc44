"""What a run of the ingester did (the CLI prints it; tests and benchmarks read it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunSummary:
    messages: int = 0
    registered: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    blocks_created: int = 0
    blocks_closed: list[str] = field(default_factory=list)
    events_published: int = 0
    retries: int = 0
    stopped: str = ""
    dead_codes: Counter[str] = field(default_factory=Counter)
    first_read_at: float | None = None  # wall clock (time.time) when the first batch's first message was read
    last_commit_at: float | None = None  # wall clock of the last commit

    @property
    def busy_seconds(self) -> float:
        """From the first message read to the last commit: the time the work took, without start-up or idling."""
        if self.first_read_at is None or self.last_commit_at is None:
            return 0.0
        return self.last_commit_at - self.first_read_at

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "registered": self.registered, "duplicates": self.duplicates,
                "dead_lettered": self.dead_lettered, "dead_codes": dict(self.dead_codes), "batches": self.batches,
                "blocks_created": self.blocks_created, "blocks_closed": self.blocks_closed, "retries": self.retries,
                "events_published": self.events_published,
                "busy_seconds": round(self.busy_seconds, 3), "stopped": self.stopped}
