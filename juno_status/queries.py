"""The SQL adapter: the status's aggregate queries on Rucio's database, each timed (read-only session:
db.py). Returns plain rows and counters; collect.py and compare.py decide what they mean."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from juno_status import expected as expected_mod
from juno_status import history as history_mod

if TYPE_CHECKING:
    from juno_status.collect import Selection

IN_FLIGHT = ("QUEUED", "PREPARING", "WAITING", "SUBMITTING", "SUBMITTED", "SUSPEND")
FAILED = ("FAILED", "LOST", "NO_SOURCES", "ONLY_TAPE_SOURCES", "SUBMISSION_FAILED", "MISMATCH_SCHEME")
FAILED_ROWS_MAX = 20_000  # newest failed attempts read per status; more are counted as "not read"
STUCK_RULES_SHOWN = 20


def iso(when: datetime | None) -> str | None:
    return None if when is None else when.replace(microsecond=0).isoformat() + "Z"




def like_pattern(glob: str) -> str:
    """A shell glob (* and ?) as an SQL LIKE pattern with backslash escapes (names contain '_')."""
    if any(c in glob for c in "[]"):
        raise ValueError(f"block pattern {glob!r}: only * and ? are supported, not [...]")
    out = []
    for char in glob:
        if char in "\\%_":
            out.append("\\" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


class Queries:
    """The aggregate queries, each timed (the output's `timings` shows where a slow status spends)."""

    def __init__(self, session: Any, selection: Selection, now: datetime, timings: dict[str, float]) -> None:
        from rucio.common.types import InternalScope

        self.s = session
        self.sel = selection
        self.now = now
        self.timings = timings
        self.scope = InternalScope(selection.scope)
        self.like = like_pattern(selection.blocks)
        self.rse_names: dict[str, str] = {}  # id → name

    def _timed(self, name: str, started: float) -> None:
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started

    def rses(self, catalog: Any) -> dict[str, tuple[str, str]]:
        """RSE name → (site, DISK|TAPE); the site from Rucio's `site` attribute, else etc/sites.yaml."""
        from rucio.db.sqla import models
        from sqlalchemy import false, select

        tick = time.perf_counter()
        rows = self.s.execute(select(models.RSE.id, models.RSE.rse, models.RSE.rse_type)
                              .where(models.RSE.deleted == false())).all()
        attrs = dict(self.s.execute(select(models.RSEAttrAssociation.rse_id, models.RSEAttrAssociation.value)
                                    .where(models.RSEAttrAssociation.key == "site")).all())
        out: dict[str, tuple[str, str]] = {}
        for rse_id, name, rse_type in rows:
            self.rse_names[str(rse_id)] = name
            site = attrs.get(rse_id) or (catalog.rses[name].site if name in catalog.rses else "?")
            out[name] = (str(site), getattr(rse_type, "name", str(rse_type)))
        self._timed("rses", tick)
        return out

    def _name(self, rse_id: Any) -> str:
        return self.rse_names.get(str(rse_id), "?") if rse_id is not None else "?"

    def _in_blocks(self, column_scope: Any, column_name: Any) -> Any:
        """A condition: (scope, name) is a file of a selected block."""
        from rucio.db.sqla import models
        from sqlalchemy import and_, exists

        c = models.DataIdentifierAssociation
        return exists().where(and_(c.child_scope == column_scope, c.child_name == column_name, c.scope == self.scope,
                                   c.name.like(self.like, escape="\\")))

    def blocks(self) -> list[expected_mod.Block]:
        from rucio.db.sqla import models
        from rucio.db.sqla.constants import DIDType
        from sqlalchemy import func, select

        tick = time.perf_counter()
        d, c, m = models.DataIdentifier, models.DataIdentifierAssociation, models.DidMeta
        dids = self.s.execute(select(d.name, d.is_open, d.created_at).where(
            d.scope == self.scope, d.did_type == DIDType.DATASET, d.name.like(self.like, escape="\\"))).all()
        sizes = {name: (int(n), int(b or 0)) for name, n, b in self.s.execute(
            select(c.name, func.count(), func.sum(c.bytes)).where(c.scope == self.scope, c.name.like(
                self.like, escape="\\")).group_by(c.name)).all()}
        metas: dict[str, dict[str, Any]] = {}
        for name, meta in self.s.execute(select(m.name, m.meta).where(m.scope == self.scope,
                                                                      m.name.like(self.like, escape="\\"))).all():
            if isinstance(meta, str):
                import json

                try:
                    meta = json.loads(meta)
                except ValueError:
                    meta = {}
            metas[name] = dict(meta or {})
        self._timed("blocks", tick)
        return [expected_mod.Block(self.sel.scope, name, *sizes.get(name, (0, 0)), is_open=is_open,
                                   created_at=created_at, meta=metas.get(name, {}))
                for name, is_open, created_at in dids]

    def replicas(self, rses: Mapping[str, tuple[str, str]], landing: str) -> dict[str, dict[str, Counter[str]]]:
        """block → RSE → counts: files/bytes AVAILABLE, verified ones, and files per other replica state."""
        from rucio.db.sqla import models
        from rucio.db.sqla.constants import ReplicaState, RequestState
        from sqlalchemy import and_, case, exists, func, or_, select

        tick = time.perf_counter()
        c, r, h = models.DataIdentifierAssociation, models.RSEFileAssociation, models.RequestHistory
        landing_id = next((rid for rid, name in self.rse_names.items() if name == landing), None)
        transferred = exists().where(and_(h.scope == r.scope, h.name == r.name, h.dest_rse_id == r.rse_id,
                                          h.state == RequestState.DONE))
        from_spade = and_(r.rse_id == landing_id, r.adler32.isnot(None)) if landing_id else None
        verified = or_(transferred, from_spade) if from_spade is not None else transferred
        query = (select(c.name, r.rse_id, r.state, func.count(), func.sum(r.bytes),
                        func.sum(case((verified, 1), else_=0)), func.sum(case((verified, r.bytes), else_=0)),
                        func.sum(case((transferred, 1), else_=0)))
                 .join(r, and_(r.scope == c.child_scope, r.name == c.child_name))
                 .where(c.scope == self.scope, c.name.like(self.like, escape="\\"))
                 .group_by(c.name, r.rse_id, r.state))
        out: dict[str, dict[str, Counter[str]]] = defaultdict(dict)
        for block, rse_id, state, files, nbytes, vfiles, vbytes, tfiles in self.s.execute(query).all():
            counts = out[block].setdefault(self._name(rse_id), Counter())
            if state == ReplicaState.AVAILABLE:
                counts.update(files=int(files), bytes=int(nbytes or 0), verified_files=int(vfiles or 0),
                              verified_bytes=int(vbytes or 0), transferred_files=int(tfiles or 0))
            else:
                counts[f"state_{state.name}"] += int(files)
        self._timed("replicas", tick)
        return out

    def rules(self) -> dict[str, Any]:
        """Rules on the selected blocks: counts per RSE expression and state (in SQL), which expressions
        each block has (plain strings: cheap even for every block), and the newest STUCK/SUSPENDED ones."""
        from rucio.db.sqla import models
        from rucio.db.sqla.constants import RuleState
        from sqlalchemy import func, select

        tick = time.perf_counter()
        rr = models.ReplicationRule
        where = (rr.scope == self.scope, rr.name.like(self.like, escape="\\"))
        counts = [(expr, state.name, int(n), int(ok or 0), int(rep or 0), int(stuck or 0))
                  for expr, state, n, ok, rep, stuck in self.s.execute(
                      select(rr.rse_expression, rr.state, func.count(), func.sum(rr.locks_ok_cnt),
                             func.sum(rr.locks_replicating_cnt), func.sum(rr.locks_stuck_cnt))
                      .where(*where).group_by(rr.rse_expression, rr.state)).all()]
        expressions = [tuple(row) for row in self.s.execute(select(rr.name, rr.rse_expression).where(*where)).all()]
        stuck_rows = self.s.execute(
            select(rr.id, rr.scope, rr.name, rr.rse_expression, rr.state, rr.error, rr.stuck_at, rr.account)
            .where(*where, rr.state.in_([RuleState.STUCK, RuleState.SUSPENDED]))
            .order_by(rr.stuck_at.desc().nullslast()).limit(STUCK_RULES_SHOWN)).all()
        self._timed("rules", tick)
        stuck = [{"id": str(rid), "did": f"{scope}:{name}", "rse_expression": expr, "state": state.name,
                  "error": error, "stuck_at": iso(stuck_at), "account": str(account)}
                 for rid, scope, name, expr, state, error, stuck_at, account in stuck_rows]
        return {"counts": counts, "expressions": expressions, "stuck": stuck}

    def in_flight(self) -> list[dict[str, Any]]:
        from rucio.db.sqla import models
        from rucio.db.sqla.constants import RequestState, RequestType
        from sqlalchemy import func, select

        tick = time.perf_counter()
        q = models.Request
        query = (select(q.source_rse_id, q.dest_rse_id, q.state, func.count(), func.sum(q.bytes),
                        func.min(q.created_at))
                 .where(q.request_type == RequestType.TRANSFER,
                        q.state.in_([RequestState[s] for s in IN_FLIGHT]))
                 .group_by(q.source_rse_id, q.dest_rse_id, q.state))
        if self.sel.transfers == "blocks":
            query = query.where(self._in_blocks(q.scope, q.name))
        out = [{"source": self._name(src) if src else None, "destination": self._name(dst), "state": state.name,
                "files": int(n), "bytes": int(b or 0), "oldest": iso(oldest),
                "age_s": round((self.now - oldest).total_seconds()) if oldest else None}
               for src, dst, state, n, b, oldest in self.s.execute(query).all()]
        self._timed("in_flight", tick)
        return sorted(out, key=lambda t: (t["destination"], t["source"] or "", t["state"]))

    def failed(self) -> tuple[list[dict[str, Any]], bool]:
        """Failed attempts since failed_since, newest first: archived ones and those still in `requests`."""
        from rucio.db.sqla import models
        from rucio.db.sqla.constants import RequestState, RequestType
        from sqlalchemy import select

        tick = time.perf_counter()
        states = [RequestState[s] for s in FAILED]
        since = self.now - self.sel.failed_since
        rows: list[tuple[Any, ...]] = []
        for table in (models.Request, models.RequestHistory):
            query = (select(table.scope, table.name, table.source_rse_id, table.dest_rse_id, table.state,
                            table.err_msg, table.updated_at)
                     .where(table.request_type == RequestType.TRANSFER, table.state.in_(states),
                            table.updated_at >= since)
                     .order_by(table.updated_at.desc()).limit(FAILED_ROWS_MAX + 1))
            if self.sel.transfers == "blocks":
                query = query.where(self._in_blocks(table.scope, table.name))
            rows += self.s.execute(query).all()
        rows.sort(key=lambda row: row[6], reverse=True)
        truncated = len(rows) > FAILED_ROWS_MAX
        self._timed("failed", tick)
        return [{"scope": str(scope), "name": name, "source": self._name(src) if src else None,
                 "destination": self._name(dst), "state": state.name, "err_msg": err, "updated_at": iso(when)}
                for scope, name, src, dst, state, err, when in rows[:FAILED_ROWS_MAX]], truncated

    def history(self, rses: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
        """Bytes moved into each site by DONE transfers, cumulative over the history window."""
        from rucio.db.sqla import models
        from rucio.db.sqla.constants import RequestState, RequestType
        from sqlalchemy import extract, func, select

        tick = time.perf_counter()
        h = models.RequestHistory
        since = self.now - self.sel.history
        where = [h.request_type == RequestType.TRANSFER, h.state == RequestState.DONE, h.transferred_at >= since,
                 h.transferred_at <= self.now]
        if self.sel.transfers == "blocks":
            where.append(self._in_blocks(h.scope, h.name))
        first = self.s.execute(select(func.min(h.transferred_at)).where(*where)).scalar()
        sites = sorted({site for site, _ in rses.values()})
        if first is None:
            self._timed("history", tick)
            return {"start": None, "end": iso(self.now), "bucket_s": 0, "points": {}, "totals": {},
                    "transfers": 0}
        width = history_mod.bucket_width(self.now - first)
        start = history_mod.floor_time(first, width)
        buckets = history_mod.index_of(self.now, start, width) + 1
        per_bucket: list[tuple[str, int, int]] = []
        transfers = 0
        if self.s.bind.dialect.name == "postgresql":
            # Bucket in the database: one row per site and bucket instead of one per transfer.
            bucket = func.floor(extract("epoch", h.transferred_at) / width)
            query = select(h.dest_rse_id, bucket, func.count(), func.sum(h.bytes)).where(*where).group_by(
                h.dest_rse_id, bucket)
            epoch_start = int((start - datetime(1970, 1, 1)).total_seconds()) // width
            for rse_id, index, n, nbytes in self.s.execute(query).all():
                per_bucket.append((rses.get(self._name(rse_id), ("?", ""))[0], int(index) - epoch_start,
                                   int(nbytes or 0)))
                transfers += int(n)
        else:
            for rse_id, when, nbytes in self.s.execute(select(h.dest_rse_id, h.transferred_at, h.bytes)
                                                       .where(*where)).all():
                per_bucket.append((rses.get(self._name(rse_id), ("?", ""))[0],
                                   history_mod.index_of(when, start, width), int(nbytes or 0)))
                transfers += 1
        series = history_mod.cumulative(per_bucket, start, width, buckets, sites)
        self._timed("history", tick)
        return {"start": iso(start), "end": iso(self.now), "bucket_s": width,
                "points": history_mod.as_points(series), "totals": series.totals, "transfers": transfers}
