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

then the ingest lag from Kafka (ingest_lag.py) and production's figures from juno-prod's bookkeeping
(juno_prod.report.overview: the same computation as `juno-prod status`). The policy's expectation per
block comes from the policy engine's own planner (expected.py), so this status and `juno-policy plan`
cannot disagree on what a block should have.

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
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from juno_common.clock import utc_now
from juno_common.errors import InvalidFile
from juno_common.exit_codes import Exit
from juno_status import expected as expected_mod
from juno_status.compare import RseTally, compare_blocks, failed_by_reason, rule_summary, site_rows, what_is_missing
from juno_status.db import database_url, read_only
from juno_status.queries import Queries, iso, like_pattern

SCHEMA_VERSION = 1

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
    production: bool = True  # juno-prod's figures from its bookkeeping (juno_prod.report.overview)
    require_verified: bool = False  # count present-but-unverified files as incomplete
    landing_rse: str | None = None  # default: the ingester's rucio.rse (IHEP-EOS)
    policy: Path | None = None  # default: $JUNO_REPLICATION_POLICY or etc/replication.yaml (sites.yaml beside it)

    def __post_init__(self) -> None:
        if self.transfers not in ("all", "blocks"):
            raise ValueError(f"transfers={self.transfers!r}: use 'all' or 'blocks'")
        like_pattern(self.blocks)  # raises on what LIKE cannot express


def _landing_rse() -> str:
    """The RSE the ingester registers SPADE's files at (its rucio.rse setting)."""
    try:
        from juno_status.ingest_lag import _settings

        return str(_settings().rucio.rse)
    except Exception:  # noqa: BLE001 - an unreadable ingest config is reported by the ingest probe
        from juno_ingest.config import RucioSettings

        return RucioSettings().rse


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
        q = Queries(session, selection, now, timings)
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
    production = None
    if selection.production:
        from juno_prod.report import overview

        tick = time.perf_counter()
        production = overview()
        timings["production"] = time.perf_counter() - tick

    attributes = catalog.attribute_table()
    by_rse: dict[str, RseTally] = {}
    for name, (site, kind) in rses.items():
        by_rse[name] = RseTally(name, site, kind)
    expector = expected_mod.Expector(policy, attributes)
    expectations = [expector.expect(b, now) for b in blocks]
    rules_by_block: dict[str, set[str]] = defaultdict(set)
    for name, expression in rules["expressions"]:
        rules_by_block[name].add(expression)
    rows, summary, problems = compare_blocks(expectations, replicas, rules_by_block, by_rse, selection.require_verified)

    order = list(catalog.rses)
    rse_dicts = [by_rse[n].as_dict(landing, selection.require_verified) for n in
                 sorted(by_rse, key=lambda n: (order.index(n) if n in order else len(order), n))]
    sites = site_rows(rse_dicts, catalog)
    rules_out = rule_summary(rules, rses)
    failed = failed_by_reason(failed_rows)
    incomplete = what_is_missing(rse_dicts, rules_out, problems, selection.require_verified)
    totals = {key: {"files": sum(r[key]["files"] for r in rse_dicts), "bytes": sum(r[key]["bytes"] for r in rse_dicts)}
              for key in ("expected", "present", "verified")}
    status = {
        "schema": SCHEMA_VERSION,
        "generated_at": iso(now),
        "seconds": 0.0,
        "source": {"rucio_database": database_url(), "policy": str(path), "sites": str(catalog.source),
                   "landing_rse": landing},
        "selection": {"scope": selection.scope, "blocks": selection.blocks, "transfers": selection.transfers,
                      "failed_since": iso(now - selection.failed_since),
                      "history_since": iso(now - selection.history),
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
        "production": production,
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


