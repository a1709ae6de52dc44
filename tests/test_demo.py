"""`make demo`'s JUNO flow, small: SPADE -> Kafka -> juno-ingest -> Rucio -> every site, checked against Rucio."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from juno_grid import demo

pytestmark = pytest.mark.grid

FILES = 20  # 5 per block: 2 streams x 2 days


def test_demo_ingests_replicates_and_verifies(grid, capsys: pytest.CaptureFixture[str]) -> None:
    out = demo.run(["--files", str(FILES), "--mb", "1", "--timeout", "300"])
    text = capsys.readouterr().out
    assert out.code == 0, text[-3000:]
    assert "DEMO FAILED" not in text

    client = grid.client()
    # 1-2. Every file SPADE sent is in Rucio, in four daily blocks; yesterday's are closed, with their
    # IN2P3 decision recorded; today's are open and undecided.
    assert len(out.blocks) == 4 and len(out.closed) == 2
    assert len(set(out.files)) == FILES
    for block in out.blocks:
        did = client.get_did("raw", block)
        meta = client.get_metadata("raw", block, plugin="JSON")
        assert did["open"] == (block not in out.closed)
        assert (demo.PLACEMENT_KEY in meta) == (block in out.closed)

    # 3. Every rule on the blocks is OK, and the policy's rules are all there.
    rules = [r for b in out.blocks for r in client.list_did_rules("raw", b)]
    assert rules and all(r["state"] == "OK" for r in rules), [(r["rse_expression"], r["state"]) for r in rules]
    per_block = Counter(r["name"] for r in rules)
    assert all(per_block[b] >= 5 for b in out.blocks), per_block
    assert "] rules OK " in text

    # 4. The per-site table is Rucio's: expected = files of blocks with a rule at the RSE, present =
    # AVAILABLE replicas there, all verified; and XRootD's adler32 agrees for every copy Rucio lists.
    expected: Counter[str] = Counter()
    for r in rules:
        expected[r["rse_expression"]] += r["locks_ok_cnt"]
    available: Counter[str] = Counter()
    for rep in client.list_replicas([{"scope": "raw", "name": n} for n in out.files], all_states=True):
        for rse, state in rep["states"].items():
            available[rse] += state == "AVAILABLE"
    table = {r["rse"]: r for r in out.status["rses"] if r["expected"]["files"]}
    assert set(table) == set(expected)
    for rse, row in table.items():
        assert row["expected"]["files"] == expected[rse] == available[rse], rse
        assert row["present"]["files"] == row["verified"]["files"] == available[rse], rse
        assert row["present"]["bytes"] == available[rse] * 1_000_000, rse
    assert out.status["complete"] and out.status["rules"]["total"] == len(rules)
    assert out.readback == {rse: (n, n) for rse, n in available.items() if n}
    # The printed table says the same: every file at each full-copy RSE, 20 MB, present and verified.
    for rse in ("IHEP-TAPE", "CNAF-DISK", "CNAF-TAPE", "JINR-DISK"):
        row = rf"^ +\w+ +{rse} +{FILES} +20 MB +{FILES} +20 MB +100 % +{FILES} +20 MB +yes"
        assert re.search(row, text, re.MULTILINE), rse
    assert "COMPLETE: every expected file is present" in text
    assert out.report is not None and out.report.is_file() and "block.JUNODAQ.demo" in out.report.read_text()
    assert str(out.report) in text

    # 5. The analysis task ran over a block on HTCondor and its jobs finished.
    assert "== 5. analyst1 runs a task" in text
    assert ": completed; " in text
