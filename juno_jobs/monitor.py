"""Job events → attempt state (pure folding), and the readers that produce events.

HTCondor writes one user log per task (all rounds). Two readers, both incremental:

* `TextLog` (used): reads the log's text from the byte offset where the last pass stopped and parses
  the few events and fields juno-submit uses. Right after a 10,000-job submission the log holds 20,000
  events (a submit and an ad-information event per job); htcondor2's JobEventLog takes 0.65 s to
  iterate them on the loaded 2-CPU test machine, this parser 0.18 s, and `status` must stay under 1 s.
  The text format is HTCondor's documented user-log format (stable for decades); the live tests parse
  the same logs with both readers and require the same events.
* `CondorLog`: htcondor2's JobEventLog, pickled between passes (the reference; JUNO_SUBMIT_EVENT_READER=
  jobeventlog selects it).

The local backend writes JSON lines with the same meaning (`LocalLog`). `fold` turns a batch of events
into the changes of each attempt; control.py applies them to the store and reads the wrapper's
result.json for attempts that ended.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# HoldReasonCode 15: submitted on hold at the user's request (bench/submit.py): not a failure.
HOLD_SUBMITTED_ON_HOLD = 15
# HoldReasonCode 34: the job went over a memory limit (cgroups); 26 with subcode for some versions.
HOLD_MEMORY = 34


@dataclass(slots=True)  # not frozen: frozen dataclasses are 3x slower to make, and there are 10,000s
class Event:
    cluster: int  # HTCondor cluster, or the round number for the local backend
    proc: int
    kind: str  # submit | execute | terminated | held | released | removed | evicted | info | image | lost
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


def condor_reader(log: Path, state_dir: Path) -> TextLog | CondorLog:
    if os.environ.get("JUNO_SUBMIT_EVENT_READER", "text") == "jobeventlog":
        return CondorLog(log, state_dir / ".events.pickle")
    return TextLog(log, state_dir / ".events.pos")


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


class _PositionedLog:
    """A log read incrementally; where the last pass stopped is kept in `state` (written atomically)."""

    def __init__(self, log: Path, state: Path) -> None:
        self.log = log
        self.state = state

    def _save(self, position: bytes) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_bytes(position)
        tmp.replace(self.state)


class CondorLog(_PositionedLog):
    """Incremental reader of a task's HTCondor user log; its position survives in `state`."""

    def read(self) -> list[Event]:
        import pickle

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
        self._save(pickle.dumps(jel))
        return out


_NORMAL = re.compile(r"Normal termination \(return value (-?\d+)\)")
_SIGNAL = re.compile(r"Abnormal termination \(signal (\d+)\)")
_HOLD_CODE = re.compile(r"Code (-?\d+) Subcode (-?\d+)")
_SITE = re.compile(r'^MachineAttrJUNO_Site0 = "([^"]*)"', re.M)
_MEMORY = re.compile(r"(\d+)\s+-\s+MemoryUsage of job \(MB\)")
_MEMORY_USED = re.compile(r"^\s*Memory \(MB\)\s*:\s*(\d+)\s", re.M)  # the resources table of a terminated event
_END = "\n...\n"  # every event ends with a line of three dots


def _text_time(stamp: str, cache: dict[str, float]) -> float:
    """Seconds since the epoch; events of one second share a stamp, and strptime is slow."""
    when = cache.get(stamp)
    if when is None:
        try:
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp()
        except ValueError:
            when = 0.0  # an older, year-less date format: times are informative only
        cache[stamp] = when
    return when


def parse_text(text: str) -> tuple[list[Event], int]:
    """Events in a chunk of user-log text, and how many characters of it were complete events.

    An event: 'CCC (CLUSTER.PROC.SUBPROC) YYYY-MM-DD HH:MM:SS text' then body lines, then '...'.
    Split with str methods (the regex over 5 MB took 5x longer); bodies are searched only for the
    events whose details matter.
    """
    out: list[Event] = []
    stamps: dict[str, float] = {}
    start = 0
    used = 0
    while True:
        end = text.find(_END, start)
        if end < 0:
            break
        block = text[start:end]
        used = start = end + len(_END)
        if block.startswith("\n"):
            block = block.lstrip("\n")
        kind = _KINDS.get(int(block[:3])) if block[:3].isdigit() else None
        if kind is None:
            continue
        close = block.find(")", 5)
        ids = block[5:close].split(".")
        if len(ids) < 2 or ids[1].startswith("-"):
            continue  # cluster-level events (proc -1)
        cluster, proc = int(ids[0]), int(ids[1])
        if kind == "submit":
            out.append(Event(cluster, proc, kind, 0.0))  # the time of submission is in the store already
            continue
        when = _text_time(block[close + 2:close + 21], stamps)
        body = block[block.find("\n") + 1:] if "\n" in block else ""
        if kind == "info":
            site = _SITE.search(body)
            if site:
                out.append(Event(cluster, proc, "info", when, site=site.group(1)))
        elif kind == "terminated":
            normal, signal = _NORMAL.search(body), _SIGNAL.search(body)
            usage = _MEMORY_USED.search(body)
            out.append(Event(cluster, proc, kind, when, exit_code=int(normal.group(1)) if normal else None,
                             signal=int(signal.group(1)) if signal and not normal else None,
                             memory_mb=int(usage.group(1)) if usage else None))
        elif kind == "held":
            lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
            code_m = _HOLD_CODE.search(body)
            reason = next((ln for ln in lines if not _HOLD_CODE.fullmatch(ln)), "")
            out.append(Event(cluster, proc, kind, when, hold_reason=reason,
                             hold_code=int(code_m.group(1)) if code_m else None))
        elif kind == "image":
            mem = _MEMORY.search(body)
            if mem:
                out.append(Event(cluster, proc, kind, when, memory_mb=int(mem.group(1))))
        else:
            out.append(Event(cluster, proc, kind, when))
    return out, used


def job_blocks(log: Path, cluster: int, proc: int) -> list[str]:
    """The user log's events of one job as text (for `logs`), without the ad-information events (their
    only news, the site, is in the attempt's header line). Same event framing as `parse_text`."""
    if not log.exists():
        return []
    tag = f"({cluster:03d}.{proc:03d}.000)"
    out = []
    for block in log.read_text(errors="replace").split(_END):
        block = block.strip("\n")
        if block and tag in block.split("\n", 1)[0] and not block.startswith("028 "):
            out.append(block)
    return out


def local_job_lines(path: Path, rnd: int, proc: int) -> list[str]:
    """The local backend's events of one job as text (for `logs`)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        if d["round"] == rnd and d["proc"] == proc:
            when = datetime.fromtimestamp(d["time"]).strftime("%Y-%m-%d %H:%M:%S")
            out.append(f"{when} {d['kind']}"
                       + "".join(f" {k}={d[k]}" for k in ("site", "exit_code", "signal") if d.get(k) is not None))
    return out


class TextLog(_PositionedLog):
    """Incremental reader of a task's HTCondor user log (text format) from a remembered byte offset."""

    def read(self) -> list[Event]:
        if not self.log.exists():
            return []
        offset = 0
        if self.state.exists():
            try:
                offset = int(json.loads(self.state.read_text()).get("offset", 0))
            except (ValueError, AttributeError):
                offset = 0  # unreadable position: read again from the start (events fold idempotently)
        with open(self.log, "rb") as fh:
            fh.seek(offset)
            raw = fh.read()
        # Only whole events count: the writer may be in the middle of one.
        text = raw.decode("utf-8", errors="replace")
        events, used = parse_text(text)
        consumed = len(text[:used].encode("utf-8", errors="replace"))
        self._save(json.dumps({"offset": offset + consumed}).encode())
        return events


class LocalLog(_PositionedLog):
    """The local backend's event lines (JSON), read from a remembered byte offset."""

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
        self._save(str(offset).encode())
        return out


@dataclass
class Change:
    """What the events say about one attempt (None = no news about that field)."""

    state: str | None = None  # idle | running | held | ended | removed | lost
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
        elif e.kind == "lost":
            c.state, c.finished = "lost", e.time
        elif e.kind == "info":
            c.site = e.site or c.site
        elif e.kind == "image" and e.memory_mb is not None:
            c.memory_mb = max(c.memory_mb or 0, e.memory_mb)
    return out


def is_memory_hold(code: int | None, reason: str | None) -> bool:
    return code == HOLD_MEMORY or "memory" in (reason or "").lower()
