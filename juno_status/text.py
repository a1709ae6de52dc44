"""The status as a terminal report, drawn from the same dict `--json` prints (so they cannot differ)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from juno_common.exit_codes import Exit
from juno_common.units import format_duration as human_duration
from juno_common.units import human_bytes, human_count, percent

BLOCKS_SHOWN = 8
FAILED_SHOWN = 8


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Aligned columns; `right` lists the column indexes aligned right (numbers)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *[line(r) for r in rows]]


def _files_bytes(d: Mapping[str, Any]) -> tuple[str, str]:
    return human_count(d["files"]), human_bytes(d["bytes"])


def render(status: Mapping[str, Any]) -> str:
    out: list[str] = []
    sel = status["selection"]
    blocks = status["blocks"]
    out.append(f"juno-dci status  {status['generated_at']}  ({status['seconds']:.2f} s)")
    out.append(f"raw blocks {sel['scope']}:{sel['blocks']}: {human_count(blocks['blocks'])} blocks, "
               f"{human_count(blocks['complete'])} complete, {human_count(blocks['incomplete'])} incomplete, "
               f"{human_count(blocks['empty'])} empty"
               + (f", {human_count(blocks['pending_placement'])} awaiting their IN2P3 placement"
                  if blocks["pending_placement"] else ""))
    out.append("")
    out += _sites(status)
    out.append("")
    out += _rules(status["rules"])
    out.append("")
    out += _transfers(status["transfers"], sel)
    out.append("")
    out.append(_ingest(status.get("ingest")))
    out += _production(status.get("production"))
    out += _blocks(blocks)
    if status.get("problems"):
        out.append("")
        out.append(f"Policy problems ({status['problems_total']}):")
        out += [f"  {p}" for p in status["problems"][:10]]
    out.append("")
    if status["complete"]:
        out.append("COMPLETE: every expected file is present where the policy wants it (exit 0)")
    else:
        out.append(f"INCOMPLETE (exit {int(Exit.DIFFERS)}):")
        out += [f"  - {reason}" for reason in status["incomplete"]]
    return "\n".join(out)


def _sites(status: Mapping[str, Any]) -> list[str]:
    rows = []
    for r in status["rses"]:
        exp_f, exp_b = _files_bytes(r["expected"])
        pre_f, pre_b = _files_bytes(r["present"])
        ver_f, ver_b = _files_bytes(r["verified"])
        notes = []
        if r["blocks_without_rule"]:
            notes.append(f"{r['blocks_without_rule']} blocks without rule")
        if r["pending_blocks"]:
            notes.append(f"{r['pending_blocks']} blocks pending placement")
        if r["not_available"]:
            notes.append(", ".join(f"{n} {state.lower()}" for state, n in r["not_available"].items()))
        if r["other"]["files"]:
            notes.append(f"+{human_count(r['other']['files'])} not wanted")
        marker = "†" if r["verified_by"].startswith("SPADE") else ""
        rows.append([r["site"], r["rse"], exp_f, exp_b, pre_f, pre_b, percent(r["present"]["files"],
                     r["expected"]["files"]), ver_f + marker, ver_b, "yes" if r["complete"] else "NO",
                     "; ".join(notes)])
    t = status["totals"]
    rows.append(["all", "", *_files_bytes(t["expected"]), *_files_bytes(t["present"]),
                 percent(t["present"]["files"], t["expected"]["files"]), *_files_bytes(t["verified"]),
                 "yes" if status["complete"] else "NO", ""])
    lines = ["Per site: files expected by the policy, present (AVAILABLE), verified (adler32)"]
    lines += _table(["site", "RSE", "expected", "bytes", "present", "bytes", "%", "verified", "bytes", "complete",
                     "notes"], rows, right=(2, 3, 4, 5, 6, 7, 8))
    landing = status["source"]["landing_rse"]
    lines.append(f"verified = adler32 compared at the destination by the transfer service (Rucio request DONE); "
                 f"† at {landing}: SPADE's adler32 as registered by the ingester")
    return lines


def _rules(rules: Mapping[str, Any]) -> list[str]:
    states = [s for s in ("OK", "REPLICATING", "STUCK", "SUSPENDED", "WAITING_APPROVAL", "INJECT")
              if rules["states"].get(s) or s in ("OK", "REPLICATING", "STUCK", "SUSPENDED")]
    rows = [[r["rse_expression"], *(human_count(r["states"].get(s, 0)) for s in states)]
            for r in rules["by_rse_expression"]]
    rows.append(["all", *(human_count(rules["states"].get(s, 0)) for s in states)])
    lines = [f"Rules on the selected blocks, by state ({human_count(rules['total'])})"]
    lines += _table(["RSE expression", *states], rows, right=tuple(range(1, len(states) + 1)))
    for r in rules["stuck"][:5]:
        lines.append(f"  {r['state']} {r['id']} {r['did']} → {r['rse_expression']}: {r['error'] or 'no error text'}")
    return lines


def _transfers(transfers: Mapping[str, Any], sel: Mapping[str, Any]) -> list[str]:
    which = "every scope" if sel["transfers"] == "all" else "files of the selected blocks"
    lines = []
    if transfers["in_flight"]:
        lines.append(f"Transfers in flight ({which}): {human_count(transfers['in_flight_files'])} files, "
                     f"{human_bytes(transfers['in_flight_bytes'])}")
        rows = [[t["source"] or "(not chosen yet)", t["destination"], t["state"], human_count(t["files"]),
                 human_bytes(t["bytes"]), human_duration(t["age_s"]) if t["age_s"] is not None else "-"]
                for t in transfers["in_flight"]]
        lines += _table(["from", "to", "state", "files", "bytes", "oldest"], rows, right=(3, 4, 5))
    else:
        lines.append(f"Transfers in flight ({which}): none")
    lines.append("")
    since = sel["failed_since"]
    if not transfers["failed"]:
        lines.append(f"Failed transfers since {since}: none")
        return lines
    lines.append(f"Failed transfers since {since}: {human_count(transfers['failed_attempts'])} attempts, "
                 f"{human_count(transfers['failed_files'])} files, by reason")
    for f in transfers["failed"][:FAILED_SHOWN]:
        links = ", ".join(f"{link['link']} ×{link['attempts']}" for link in f["links"][:3])
        lines.append(f"  {f['attempts']:>5} attempts {f['files']:>4} files  {f['reason']}")
        lines.append(f"  {'':>25}{links}; last {f['last_at']}; e.g. {f['example_did']}")
    if len(transfers["failed"]) > FAILED_SHOWN:
        lines.append(f"  ... {len(transfers['failed']) - FAILED_SHOWN} more reasons (--json lists all)")
    return lines


def _ingest(ingest: Mapping[str, Any] | None) -> str:
    if ingest is None:
        return "Ingest: not checked (--no-ingest)"
    where = f"topic {ingest['topic']}, group {ingest['group']} on {ingest['bootstrap']}"
    if ingest["state"] == "running":
        extra = ""
        if ingest.get("metrics"):
            extra = "; " + ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in sorted(ingest["metrics"].items()))
        return f"Ingest: running, lag {human_count(ingest['lag'])} messages ({where}){extra}"
    if ingest["state"] in ("not running", "stopped"):
        lag = f", {human_count(ingest['lag'])} messages waiting" if ingest.get("lag") else ""
        return f"Ingest: {ingest['state']}{lag} ({ingest['detail']})"
    return f"Ingest: {ingest['state']}: {ingest['detail']}"


def _production(production: Mapping[str, Any] | None) -> list[str]:
    """juno-prod's figures, as `juno-prod status` prints them (the same function makes them)."""
    if production is None:
        return ["Production: not checked (--no-production)"]
    if not production["available"]:
        return [f"Production: {production['detail']}"]
    from juno_prod.report import status_text

    rows = production["transformations"]
    return [f"Production ({production['database']}): " + (f"{len(rows)} transformation(s)" if rows else "none yet")] \
        + [f"  {line}" for d in rows for line in status_text(d).splitlines()]


def _blocks(blocks: Mapping[str, Any]) -> list[str]:
    bad = [r for r in blocks["rows"] if not r["complete"]]
    if not bad:
        return []
    lines = ["", f"Incomplete blocks ({human_count(blocks['incomplete'])}; present/expected files per RSE):"]
    for r in bad[:BLOCKS_SHOWN]:
        cells = ", ".join(f"{rse} {c['present']}/{c['expected']}" + ("" if c["state"] != "no rule" else " (no rule)")
                          for rse, c in r["cells"].items() if c["expected"] and c["present"] < c["expected"])
        lines.append(f"  {r['block']}: {cells}")
    if blocks["incomplete"] > BLOCKS_SHOWN:
        lines.append(f"  ... {blocks['incomplete'] - BLOCKS_SHOWN} more (--json, or the page: juno-dci serve)")
    return lines
