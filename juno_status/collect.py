"""Collect the status: where raw data is vs where the replication policy wants it, and what moves.

    from juno_status.collect import Selection, collect
    status = collect(Selection(blocks="block.JUNODAQ.global_trigger.*"))   # a plain dict, JSON-ready

One read-only transaction on Rucio's database (see db.py for why SQL and not REST), a handful of
aggregate queries whatever the number of files:

  blocks      dids + contents (files and bytes per block) + did_meta (placement records)
  replicas    contents ⋈ replicas, grouped by block, RSE and state; "verified" per replica by an
              EXISTS on requests_history (a DONE transfer into that RSE)
  rules       rules on the selected blocks
  transfers   requests not finished, grouped by link and state; failed attempts (requests and
              requests_history) since --failed-since, grouped by reason
  history     DONE transfers bucketed by transferred_at, cumulative per destination site

then the ingest lag from Kafka (ingest_lag.py). The policy's expectation per block comes from the
policy engine's own planner (expected.py), so this status and `juno-policy plan` cannot disagree on
what a block should have.

Meanings (also in the output, key "definitions"):
  expected  files of the selected raw blocks at each RSE the policy wants them at now
  present   of those, the files with an AVAILABLE replica at that RSE
  verified  of those, the replicas whose adler32 was checked: a transfer into that RSE reached DONE
            (the transfer service compares the destination's adler32 with Rucio's before it reports
            success), or, at the landing RSE (IHEP-EOS), the replica carries the adler32 SPADE
            computed, registered by the ingester (not re-read from storage by this status)
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from juno_common.clock import utc_now
from juno_common.errors import InvalidFile
from juno_common.exit_codes import Exit
from juno_status import expected as expected_mod
from juno_status import history as history_mod
from juno_status import reasons
from juno_status.db import database_url, read_only

SCHEMA_VERSION = 1
IN_FLIGHT = ("QUEUED", "PREPARING", "WAITING", "SUBMITTING", "SUBMITTED", "SUSPEND")
FAILED = ("FAILED", "LOST", "NO_SOURCES", "ONLY_TAPE_SOURCES", "SUBMISSION_FAILED", "MISMATCH_SCHEME")
RULE_STATES = ("OK", "REPLICATING", "STUCK", "SUSPENDED", "WAITING_APPROVAL", "INJECT")
FAILED_ROWS_MAX = 20_000  # newest failed attempts read per status; more are counted as "not read"
STUCK_RULES_SHOWN = 20
_NONE: Counter[str] = Counter()  # "no replica here"; shared, never written

DEFINITIONS = {
    "expected": "files of the selected raw blocks at each RSE the replication policy wants them at now: every "
                "full-copy rule; IN2P3's fraction rule only for blocks whose recorded placement says placed "
                "(undecided blocks are 'pending'); rules with a lifetime only while the block is younger",
    "present": "of the expected files, those with an AVAILABLE replica at that RSE",
    "verified": "of the present files, those whose adler32 was checked: a transfer into that RSE reached DONE "
                "(the transfer service compares the destination's adler32 with Rucio's before reporting "
                "success), or, at the landing RSE, the replica carries SPADE's adler32 as registered by the "
                "ingester (not re-read from storage by this status)",
}


@dataclass(frozen=True)
class Selection:
    """What the status looks at."""

    blocks: str = "block.*"  # glob (* and ?) over raw block names
    scope: str = "raw"
    transfers: str = "all"  # all: every transfer in Rucio; blocks: only the selected blocks' files
    failed_since: timedelta = timedelta(hours=24)
    history: timedelta = timedelta(days=7)
    block_rows: int = 200  # per-block completeness rows in the output (incomplete first)
    ingest: bool = True  # probe Kafka for the ingest lag
    require_verified: bool = False  # count present-but-unverified files as incomplete
    landing_rse: str | None = None  # default: the ingester's rucio.rse (IHEP-EOS)
    policy: Path | None = None  # default: $JUNO_REPLICATION_POLICY or etc/replication.yaml (sites.yaml beside it)

    def __post_init__(self) -> None:
        if self.transfers not in ("all", "blocks"):
            raise ValueError(f"transfers={self.transfers!r}: use 'all' or 'blocks'")
        like_pattern(self.blocks)  # raises on what LIKE cannot express


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


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.replace(microsecond=0).isoformat() + "Z"


def _landing_rse() -> str:
    """The RSE the ingester registers SPADE's files at (its rucio.rse setting)."""
    try:
        from juno_status.ingest_lag import _settings

        return str(_settings().rucio.rse)
    except Exception:  # noqa: BLE001 - an unreadable ingest config is reported by the ingest probe
        from juno_ingest.config import RucioSettings

        return RucioSettings().rse


@dataclass
class _Rse:
    name: str
    site: str
    type: str
    counts: Counter[str] = field(default_factory=Counter)

    def as_dict(self, landing: str, require_verified: bool) -> dict[str, Any]:
        c = self.counts
        complete = c["present_files"] >= c["expected_files"] and (
            not require_verified or c["verified_files"] >= c["expected_files"])
        return {
            "rse": self.name, "site": self.site, "type": self.type,
            "expected": {"files": c["expected_files"], "bytes": c["expected_bytes"], "blocks": c["expected_blocks"]},
            "present": {"files": c["present_files"], "bytes": c["present_bytes"]},
            "verified": {"files": c["verified_files"], "bytes": c["verified_bytes"],
                         "by_transfer": c["transferred_files"]},
            "verified_by": ("SPADE adler32 (registration) or transfer" if self.name == landing
                            else "adler32 at the destination (transfer DONE)"),
            "missing": {"files": c["expected_files"] - c["present_files"],
                        "bytes": c["expected_bytes"] - c["present_bytes"]},
            "blocks_without_rule": c["missing_rule_blocks"], "pending_blocks": c["pending_blocks"],
            "skipped_blocks": c["skipped_blocks"],
            "other": {"files": c["other_files"], "bytes": c["other_bytes"]},
            "not_available": {state: c[f"state_{state}"] for state in
                              ("COPYING", "UNAVAILABLE", "BAD", "TEMPORARY_UNAVAILABLE", "BEING_DELETED")
                              if c[f"state_{state}"]},
            "complete": complete,
        }


def collect(selection: Selection = Selection()) -> dict[str, Any]:
    """The status as one JSON-ready dict (the object `juno-dci status --json` prints and /api/status serves)."""
    from rucio_policy import engine
    from rucio_policy.rse_catalog import load_catalog

    started = time.perf_counter()
    now = utc_now()
    path = Path(selection.policy or engine.policy_path())
    try:
        policy = engine.load_default_policy(path)
        catalog = load_catalog(path.parent / "sites.yaml", str(path.parent / "sites.yaml"))
    except Exception as err:  # noqa: BLE001 - every policy/sites problem stops the status the same way
        raise InvalidFile(f"cannot load the replication policy {path}: {err}. Check it with: "
                          f"juno-policy validate {path}") from None
    landing = selection.landing_rse or _landing_rse()
    timings: dict[str, float] = {}
    with read_only() as session:
        q = _Queries(session, selection, now, timings)
        rses = q.rses(catalog)
        blocks = q.blocks()
        replicas = q.replicas(rses, landing)
        rules = q.rules()
        in_flight = q.in_flight()
        failed_rows, failed_truncated = q.failed()
        series = q.history(rses)
    ingest = None
    if selection.ingest:
        from juno_status import ingest_lag

        tick = time.perf_counter()
        ingest = ingest_lag.probe().as_dict()
        timings["ingest"] = time.perf_counter() - tick

    attributes = catalog.attribute_table()
    by_rse: dict[str, _Rse] = {}
    for name, (site, kind) in rses.items():
        by_rse[name] = _Rse(name, site, kind)
    expector = expected_mod.Expector(policy, attributes)
    expectations = [expector.expect(b, now) for b in blocks]
    rules_by_block: dict[str, set[str]] = defaultdict(set)
    for name, expression in rules["expressions"]:
        rules_by_block[name].add(expression)
    rows, summary, problems = _compare(expectations, replicas, rules_by_block, by_rse, selection.require_verified)

    order = list(catalog.rses)
    rse_dicts = [by_rse[n].as_dict(landing, selection.require_verified) for n in
                 sorted(by_rse, key=lambda n: (order.index(n) if n in order else len(order), n))]
    sites = _sites(rse_dicts, catalog)
    rules_out = _rules(rules, rses)
    failed = _failed(failed_rows)
    incomplete = _incomplete(rse_dicts, rules_out, problems, selection.require_verified)
    totals = {key: {"files": sum(r[key]["files"] for r in rse_dicts), "bytes": sum(r[key]["bytes"] for r in rse_dicts)}
              for key in ("expected", "present", "verified")}
    status = {
        "schema": SCHEMA_VERSION,
        "generated_at": _iso(now),
        "seconds": 0.0,
        "source": {"rucio_database": database_url(), "policy": str(path), "sites": str(catalog.source),
                   "landing_rse": landing},
        "selection": {"scope": selection.scope, "blocks": selection.blocks, "transfers": selection.transfers,
                      "failed_since": _iso(now - selection.failed_since),
                      "history_since": _iso(now - selection.history),
                      "require_verified": selection.require_verified},
        "definitions": DEFINITIONS,
        "complete": not incomplete,
        "incomplete": incomplete,
        "exit_code": int(Exit.DIFFERS if incomplete else Exit.OK),
        "totals": totals,
        "sites": sites,
        "rses": rse_dicts,
        "rules": rules_out,
        "transfers": {"in_flight": in_flight, "in_flight_files": sum(t["files"] for t in in_flight),
                      "in_flight_bytes": sum(t["bytes"] for t in in_flight),
                      "failed": failed, "failed_attempts": sum(f["attempts"] for f in failed),
                      "failed_files": len({d for f in failed for d in f["_dids"]}),
                      "failed_rows_truncated": failed_truncated},
        "ingest": ingest,
        "blocks": {**{k: summary[k] for k in ("blocks", "complete", "incomplete", "empty", "pending_placement",
                                              "unclassified")},
                   "rses": [r["rse"] for r in rse_dicts], "rows": rows[: selection.block_rows],
                   "rows_total": len(rows), "truncated": len(rows) > selection.block_rows},
        "history": series,
        "problems": problems[:50],
        "problems_total": len(problems),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    for f in failed:
        del f["_dids"]
    status["seconds"] = round(time.perf_counter() - started, 3)
    return status


def _compare(expectations: list[expected_mod.BlockExpectation], replicas: Mapping[str, Mapping[str, Counter[str]]],
             rules_by_block: Mapping[str, set[str]], by_rse: dict[str, _Rse], require_verified: bool
             ) -> tuple[list[dict[str, Any]], Counter[str], list[str]]:
    """Each block's expectation against its replicas: adds to the per-RSE counts in `by_rse` and returns the
    per-block rows (incomplete first, worst first, then newest), the block summary and policy problems."""
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    summary: Counter[str] = Counter()
    for exp in expectations:
        block = exp.block
        summary["blocks"] += 1
        if exp.class_name is None:
            summary["unclassified"] += 1
            continue
        problems += [f"{block.scope}:{block.name}: {p}" for p in exp.problems]
        problems += [f"{block.scope}:{block.name}: the policy lets Rucio choose the RSEs of {u}; not counted"
                     for u in exp.unattributed]
        present_here = replicas.get(block.name, {})
        cells: dict[str, dict[str, Any]] = {}
        complete = True
        for want in exp.wanted:
            rse = by_rse.setdefault(want.rse, _Rse(want.rse, "?", "?"))
            got = present_here.get(want.rse, _NONE)
            c = rse.counts
            c["expected_files"] += block.files
            c["expected_bytes"] += block.bytes
            c["expected_blocks"] += 1
            c["present_files"] += got["files"]
            c["present_bytes"] += got["bytes"]
            c["verified_files"] += got["verified_files"]
            c["verified_bytes"] += got["verified_bytes"]
            c["transferred_files"] += got["transferred_files"]
            has_rule = want.rse_expression in rules_by_block.get(block.name, set())
            if not has_rule:
                c["missing_rule_blocks"] += 1
            done = got["files"] >= block.files and (not require_verified
                                                    or got["verified_files"] >= block.files)
            complete &= done
            cells[want.rse] = {"state": "complete" if done else ("no rule" if not has_rule else "incomplete"),
                               "expected": block.files, "present": got["files"], "verified": got["verified_files"]}
        for rse_name in exp.pending:
            by_rse.setdefault(rse_name, _Rse(rse_name, "?", "?")).counts["pending_blocks"] += 1
            cells.setdefault(rse_name, {"state": "pending", "expected": 0,
                                        "present": present_here.get(rse_name, _NONE)["files"], "verified": 0})
        for rse_name in exp.skipped:
            by_rse.setdefault(rse_name, _Rse(rse_name, "?", "?")).counts["skipped_blocks"] += 1
            got = present_here.get(rse_name, _NONE)
            cells.setdefault(rse_name, {"state": "skipped", "expected": 0, "present": got["files"],
                                        "verified": got["verified_files"]})
        wanted = set(exp.rses)
        for rse_name, got in present_here.items():
            rse = by_rse.setdefault(rse_name, _Rse(rse_name, "?", "?"))
            for state, n in got.items():
                if state.startswith("state_"):
                    rse.counts[state] += n
            if rse_name not in wanted:
                rse.counts["other_files"] += got["files"]
                rse.counts["other_bytes"] += got["bytes"]
                if got["files"] and rse_name not in cells:
                    cells[rse_name] = {"state": "not wanted", "expected": 0, "present": got["files"],
                                       "verified": got["verified_files"]}
        if exp.pending:
            summary["pending_placement"] += 1
        if block.files == 0:
            summary["empty"] += 1
            continue
        summary["complete" if complete else "incomplete"] += 1
        rows.append({"block": block.name, "files": block.files, "bytes": block.bytes, "open": block.is_open,
                     "complete": complete, "cells": cells,
                     "fraction": min((c["present"] / c["expected"] for c in cells.values() if c["expected"]),
                                     default=1.0)})
    rows.sort(key=lambda r: r["block"], reverse=True)  # newest day first (names end in YYYYMMDD)
    rows.sort(key=lambda r: (r["complete"], r["fraction"]))  # stable: incomplete first, worst first

    return rows, summary, problems


def _sites(rse_dicts: list[dict[str, Any]], catalog: Any) -> list[dict[str, Any]]:
    order = []
    for entry in catalog.rses.values():
        if entry.site not in order:
            order.append(entry.site)
    out: dict[str, dict[str, Any]] = {}
    for r in rse_dicts:
        site = out.setdefault(r["site"], {"site": r["site"], "rses": [],
                                          **{k: {"files": 0, "bytes": 0} for k in ("expected", "present", "verified")}})
        site["rses"].append(r["rse"])
        for key in ("expected", "present", "verified"):
            site[key]["files"] += r[key]["files"]
            site[key]["bytes"] += r[key]["bytes"]
    for site in out.values():
        site["complete"] = all(r["complete"] for r in rse_dicts if r["site"] == site["site"])
    return sorted(out.values(), key=lambda s: (order.index(s["site"]) if s["site"] in order else len(order), s["site"]))


def _rules(rules: Mapping[str, Any], rses: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    by_expr: dict[str, dict[str, Any]] = {}
    states: Counter[str] = Counter()
    for expr, state, n, ok, rep, stuck in rules["counts"]:
        row = by_expr.setdefault(expr, {"rse_expression": expr, "site": rses.get(expr, ("", ""))[0],
                                        "states": dict.fromkeys(RULE_STATES, 0),
                                        "locks": {"ok": 0, "replicating": 0, "stuck": 0}})
        row["states"][state] = row["states"].get(state, 0) + n
        row["locks"]["ok"] += ok
        row["locks"]["replicating"] += rep
        row["locks"]["stuck"] += stuck
        states[state] += n
    return {"total": sum(states.values()), "states": {s: states.get(s, 0) for s in RULE_STATES},
            "by_rse_expression": sorted(by_expr.values(), key=lambda r: r["rse_expression"]),
            "stuck": rules["stuck"]}


def _failed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        reason = reasons.normalize(row["err_msg"], row["state"])
        g = groups.setdefault(reason, {"reason": reason, "checksum": reasons.is_checksum(reason), "attempts": 0,
                                       "files": 0, "links": Counter(), "last_at": None, "example": row["err_msg"],
                                       "example_did": f"{row['scope']}:{row['name']}", "_dids": set()})
        g["attempts"] += 1
        g["_dids"].add((row["scope"], row["name"], row["destination"]))
        g["links"][f"{row['source'] or '?'} → {row['destination']}"] += 1
        if g["last_at"] is None or (row["updated_at"] or "") > g["last_at"]:
            g["last_at"] = row["updated_at"]
    out = []
    for g in groups.values():
        g["files"] = len(g["_dids"])
        g["links"] = [{"link": link, "attempts": n} for link, n in g["links"].most_common()]
        out.append(g)
    return sorted(out, key=lambda g: (-g["attempts"], g["reason"]))


def _incomplete(rse_dicts: list[dict[str, Any]], rules: dict[str, Any], problems: list[str],
                require_verified: bool) -> list[str]:
    out = []
    for r in rse_dicts:
        missing = r["missing"]["files"]
        if missing > 0:
            why = f"; {r['blocks_without_rule']} block(s) have no policy rule there" if r["blocks_without_rule"] else ""
            out.append(f"{r['rse']}: {missing:,} of {r['expected']['files']:,} expected files not present{why}")
        elif require_verified and r["verified"]["files"] < r["expected"]["files"]:
            out.append(f"{r['rse']}: {r['expected']['files'] - r['verified']['files']:,} present files not verified")
    for state in ("STUCK", "SUSPENDED", "REPLICATING", "WAITING_APPROVAL", "INJECT"):
        n = rules["states"].get(state, 0)
        if n:
            out.append(f"{n:,} rule(s) on the selected blocks {state}")
    if problems:
        out.append(f"{len(problems)} policy problem(s) on the selected blocks (see problems)")
    return out


class _Queries:
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
                  "error": error, "stuck_at": _iso(stuck_at), "account": str(account)}
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
                "files": int(n), "bytes": int(b or 0), "oldest": _iso(oldest),
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
                 "destination": self._name(dst), "state": state.name, "err_msg": err, "updated_at": _iso(when)}
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
            return {"start": None, "end": _iso(self.now), "bucket_s": 0, "points": {}, "totals": {},
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
        return {"start": _iso(start), "end": _iso(self.now), "bucket_s": width,
                "points": history_mod.as_points(series), "totals": series.totals, "transfers": transfers}
