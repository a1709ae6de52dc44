"""Expected vs present vs verified, and the JSON the status is made of: pure functions over the
queries' rows and the policy's expectations (no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from juno_status import expected as expected_mod
from juno_status import reasons

RULE_STATES = ("OK", "REPLICATING", "STUCK", "SUSPENDED", "WAITING_APPROVAL", "INJECT")
_NONE: Counter[str] = Counter()  # "no replica here"; shared, never written


@dataclass
class RseTally:
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


def compare_blocks(expectations: list[expected_mod.BlockExpectation],
                   replicas: Mapping[str, Mapping[str, Counter[str]]], rules_by_block: Mapping[str, set[str]],
                   by_rse: dict[str, RseTally], require_verified: bool
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
            rse = by_rse.setdefault(want.rse, RseTally(want.rse, "?", "?"))
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
            by_rse.setdefault(rse_name, RseTally(rse_name, "?", "?")).counts["pending_blocks"] += 1
            cells.setdefault(rse_name, {"state": "pending", "expected": 0,
                                        "present": present_here.get(rse_name, _NONE)["files"], "verified": 0})
        for rse_name in exp.skipped:
            by_rse.setdefault(rse_name, RseTally(rse_name, "?", "?")).counts["skipped_blocks"] += 1
            got = present_here.get(rse_name, _NONE)
            cells.setdefault(rse_name, {"state": "skipped", "expected": 0, "present": got["files"],
                                        "verified": got["verified_files"]})
        wanted = set(exp.rses)
        for rse_name, got in present_here.items():
            rse = by_rse.setdefault(rse_name, RseTally(rse_name, "?", "?"))
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


def site_rows(rse_dicts: list[dict[str, Any]], catalog: Any) -> list[dict[str, Any]]:
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


def rule_summary(rules: Mapping[str, Any], rses: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
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


def failed_by_reason(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def what_is_missing(rse_dicts: list[dict[str, Any]], rules: dict[str, Any], problems: list[str],
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
