"""Job events → attempt state (pure folding), and the readers that produce events.

HTCondor writes one user log per task (all rounds); `CondorLog` reads it incrementally with htcondor2's
JobEventLog and pickles the reader after each pass, so the next `status` reads only what is new. The
local backend writes JSON lines with the same meaning (`LocalLog`). `fold` turns a batch of events into
the changes of each attempt; control.py applies them to the store and reads the wrapper's result.json
for attempts that ended.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# HoldReasonCode 15: submitted on hold at the user's request (bench/submit.py): not a failure.
HOLD_SUBMITTED_ON_HOLD = 15
# HoldReasonCode 34: the job went over a memory limit (cgroups); 26 with subcode for some versions.
HOLD_MEMORY = 34


@dataclass(frozen=True)
class Event:
    cluster: int  # HTCondor cluster, or the round number for the local backend
    proc: int
    kind: str  # submit | execute | terminated | held | released | removed | evicted | info | image
    time: float
    site: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    hold_reason: str | None = None
    hold_code: int | None = None
    memory_mb: int | None = None


def _when(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return 0.0


# htcondor2.JobEventType values (stable numbers of the user log format)
_KINDS = {0: "submit", 1: "execute", 4: "evicted", 5: "terminated", 6: "image", 7: "evicted", 9: "removed",
          12: "held", 13: "released", 28: "info"}


def from_condor(ev: Any) -> Event | None:
    kind = _KINDS.get(int(ev.type))
    if kind is None or ev.proc < 0:
        return None
    get = ev.get
    t = _when(get("EventTime"))
    if kind == "terminated":
        normal = bool(get("TerminatedNormally", True))
        return Event(ev.cluster, ev.proc, kind, t, exit_code=int(get("ReturnValue", -1)) if normal else None,
                     signal=None if normal else int(get("TerminatedBySignal", 0)),
                     memory_mb=_int(get("MemoryUsage")))
    if kind == "held":
        return Event(ev.cluster, ev.proc, kind, t, hold_reason=str(get("HoldReason", "")),
                     hold_code=_int(get("HoldReasonCode")))
    if kind == "info":
        site = get("MachineAttrJUNO_Site0")
        return Event(ev.cluster, ev.proc, kind, t, site=str(site)) if site else None
    if kind == "image":
        return Event(ev.cluster, ev.proc, kind, t, memory_mb=_int(get("MemoryUsage")))
    return Event(ev.cluster, ev.proc, kind, t)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class CondorLog:
    """Incremental reader of a task's HTCondor user log; its position survives in `state`."""

    def __init__(self, log: Path, state: Path) -> None:
        self.log = log
        self.state = state

    def read(self) -> list[Event]:
        import htcondor2

        if not self.log.exists():
            return []
        jel = None
        if self.state.exists():
            try:
                jel = pickle.loads(self.state.read_bytes())
            except (pickle.UnpicklingError, EOFError, AttributeError, ValueError):
                jel = None  # unreadable position: read the log again from the start (events fold idempotently)
        if jel is None:
            jel = htcondor2.JobEventLog(str(self.log))
        out = []
        for ev in jel.events(stop_after=0):
            e = from_condor(ev)
            if e is not None:
                out.append(e)
        tmp = self.state.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(jel))
        tmp.replace(self.state)
        return out


class LocalLog:
    """The local backend's event lines (JSON), read from a remembered byte offset."""

    def __init__(self, log: Path, state: Path) -> None:
        self.log = log
        self.state = state

    def read(self) -> list[Event]:
        if not self.log.exists():
            return []
        offset = int(self.state.read_text() or 0) if self.state.exists() else 0
        out = []
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a line still being written: next time
                offset += len(raw)
                d = json.loads(raw)
                out.append(Event(cluster=int(d["round"]), proc=int(d["proc"]), kind=d["kind"], time=float(d["time"]),
                                 site=d.get("site"), exit_code=d.get("exit_code"), signal=d.get("signal")))
        self.state.write_text(str(offset))
        return out


@dataclass
class Change:
    """What the events say about one attempt (None = no news about that field)."""

    state: str | None = None  # idle | running | held | ended | removed
    site: str | None = None
    started: float | None = None
    finished: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    hold_reason: str | None = None
    hold_code: int | None = None
    memory_mb: int | None = None


def fold(events: Iterable[Event]) -> dict[tuple[int, int], Change]:
    """(cluster, proc) → the net change, events applied in log order."""
    out: dict[tuple[int, int], Change] = {}
    for e in events:
        c = out.setdefault((e.cluster, e.proc), Change())
        if e.kind in ("submit", "released", "evicted"):
            c.state = "idle"
        elif e.kind == "execute":
            c.state, c.started = "running", e.time
            c.site = e.site or c.site
        elif e.kind == "terminated":
            c.state, c.finished, c.exit_code, c.signal = "ended", e.time, e.exit_code, e.signal
            c.memory_mb = e.memory_mb if e.memory_mb is not None else c.memory_mb
        elif e.kind == "held":
            c.state, c.hold_reason, c.hold_code = "held", e.hold_reason, e.hold_code
        elif e.kind == "removed":
            c.state, c.finished = "removed", e.time
        elif e.kind == "info":
            c.site = e.site or c.site
        elif e.kind == "image" and e.memory_mb is not None:
            c.memory_mb = max(c.memory_mb or 0, e.memory_mb)
    return out


def is_memory_hold(code: int | None, reason: str | None) -> bool:
    return code == HOLD_MEMORY or "memory" in (reason or "").lower()
