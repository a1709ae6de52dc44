"""`juno_status.collect` against the live grid: a small known state, then its numbers against Rucio's own.

The grid is shared: every test makes its own stream (`JUNODAQ.status_<uuid8>`) and looks only at its
blocks (`--blocks block.JUNODAQ.<stream>.*`), so whatever else the grid holds does not matter.
The helpers at the top are imported by the other test_status_* modules.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from juno_grid import daemons, storage

from juno_status.collect import Selection, collect

SCOPE = "raw"
LANDING = "IHEP-EOS"
# Our rules go ahead of whatever else the shared grid is moving (the transfer service serves the
# highest priority first); they are a few small files.
TEST_PRIORITY = 5


@dataclass
class MadeBlock:
    name: str
    files: list[dict[str, Any]] = field(default_factory=list)  # scope, name, bytes, adler32

    @property
    def bytes(self) -> int:
        return sum(f["bytes"] for f in self.files)


def new_stream() -> str:
    return f"status_{uuid.uuid4().hex[:8]}"


def block_glob(stream: str) -> str:
    return f"block.JUNODAQ.{stream}.*"


def make_blocks(client: Any, workdir: Path, stream: str, days: list[date], files_per_block: int = 3, *,
                wrong_adler32: bool = False) -> list[MadeBlock]:
    """Raw blocks as SPADE + the ingester leave them: files on IHEP-EOS storage, registered there with
    their adler32 (or a wrong one), attached to their day's block."""
    run = random.randint(100_000, 9_999_999)
    out = []
    for day in days:
        block = MadeBlock(f"block.JUNODAQ.{stream}.{day:%Y%m%d}")
        client.add_dataset(SCOPE, block.name)
        for seq in range(1, files_per_block + 1):
            name = f"RUN.{run}.JUNODAQ.Physics.ds-2.{stream}.{day:%Y%m%d}120000.{seq:03d}.dat"
            local = storage.make_file(workdir / name, random.randint(100_000, 400_000))
            real = storage.adler32_file(local)
            adler32 = f"{int(real, 16) ^ 0x5A5A5A5A:08x}" if wrong_adler32 else real
            storage.put_replica(client, LANDING, SCOPE, name, local, register=False)
            block.files.append({"scope": SCOPE, "name": name, "bytes": local.stat().st_size, "adler32": adler32})
        client.attach_dids(SCOPE, block.name, block.files, rse=LANDING)
        out.append(block)
    return out


def add_rules(client: Any, blocks: list[MadeBlock], rse: str) -> list[str]:
    return [client.add_replication_rule([{"scope": SCOPE, "name": b.name}], 1, rse, grouping="DATASET",
                                        priority=TEST_PRIORITY, comment="juno-dci status test")[0] for b in blocks]


def rules_ok(client: Any, rule_ids: list[str]) -> bool:
    return all(client.get_replication_rule(r)["state"] == "OK" for r in rule_ids)


def available_per_rse(client: Any, blocks: list[MadeBlock]) -> tuple[Counter[str], Counter[str]]:
    """Rucio's own answer (REST): AVAILABLE files and bytes per RSE over the blocks' files."""
    files: Counter[str] = Counter()
    nbytes: Counter[str] = Counter()
    dids = [{"scope": f["scope"], "name": f["name"]} for b in blocks for f in b.files]
    for rep in client.list_replicas(dids, all_states=True):
        for rse, state in rep["states"].items():
            if state == "AVAILABLE":
                files[rse] += 1
                nbytes[rse] += rep["bytes"]
    return files, nbytes


def rule_states(client: Any, blocks: list[MadeBlock]) -> Counter[tuple[str, str]]:
    """(RSE expression, state) → rules, from Rucio's REST API."""
    out: Counter[tuple[str, str]] = Counter()
    for b in blocks:
        for rule in client.list_did_rules(SCOPE, b.name):
            out[(rule["rse_expression"], str(rule["state"]))] += 1
    return out


def policy_full_copy_rses() -> set[str]:
    """RSEs the real policy gives every raw block (its rules without a fraction), from etc/replication.yaml."""
    from rucio_policy.engine import load_default_policy

    raw = next(c for c in load_default_policy().classes if c.name == "raw")
    return {r.rse_expression for r in raw.rules if r.fraction is None}


# -- a replicated stream and a failing one ----------------------------------------------------------


@pytest.fixture(scope="module")
def replicated(grid, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[MadeBlock]]:
    """2 blocks × 3 files at IHEP, one rule each to CNAF-DISK, replicated by Rucio's daemons for real."""
    client = grid.client()
    stream = new_stream()
    blocks = make_blocks(client, tmp_path_factory.mktemp("status"), stream, [date(2025, 10, 9), date(2025, 10, 10)])
    rule_ids = add_rules(client, blocks, "CNAF-DISK")
    daemons.drive_until(lambda: rules_ok(client, rule_ids), timeout=900)
    return stream, blocks


def _rse(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in status["rses"] if r["rse"] == name)


@pytest.mark.grid
def test_numbers_match_rucio(grid, replicated: tuple[str, list[MadeBlock]]) -> None:
    stream, blocks = replicated
    client = grid.client()
    status = collect(Selection(blocks=block_glob(stream), transfers="blocks", ingest=False))

    total_files = sum(len(b.files) for b in blocks)
    total_bytes = sum(b.bytes for b in blocks)
    assert status["blocks"]["blocks"] == 2 and status["blocks"]["rows_total"] == 2
    # Expected: the policy's full copies everywhere; IN2P3's third waits for the (open) blocks to close.
    wanted = policy_full_copy_rses()
    assert wanted >= {"IHEP-EOS", "IHEP-TAPE", "CNAF-DISK", "JINR-DISK", "CNAF-TAPE"}
    for rse in wanted:
        r = _rse(status, rse)
        assert r["expected"] == {"files": total_files, "bytes": total_bytes, "blocks": 2}, rse
    in2p3 = _rse(status, "IN2P3-DISK")
    assert in2p3["expected"]["files"] == 0 and in2p3["pending_blocks"] == 2

    # Present: exactly Rucio's AVAILABLE replicas (REST list_replicas), per RSE.
    files, nbytes = available_per_rse(client, blocks)
    assert files == Counter({"IHEP-EOS": total_files, "CNAF-DISK": total_files})
    for r in status["rses"]:
        assert r["present"] == {"files": files.get(r["rse"], 0), "bytes": nbytes.get(r["rse"], 0)}, r["rse"]

    # Verified: CNAF's copies came through the transfer service (adler32 checked at CNAF); IHEP's are SPADE's.
    cnaf, ihep = _rse(status, "CNAF-DISK"), _rse(status, "IHEP-EOS")
    assert cnaf["verified"] == {"files": total_files, "bytes": total_bytes, "by_transfer": total_files}
    assert ihep["verified"]["files"] == total_files and ihep["verified"]["by_transfer"] == 0
    assert ihep["verified_by"].startswith("SPADE")
    for rse in ("CNAF-DISK", "IHEP-EOS"):
        pfns = [storage.pfn(client, rse, SCOPE, f["name"]) for f in blocks[0].files]
        assert [storage.remote_adler32(p) for p in pfns] == [f["adler32"] for f in blocks[0].files]

    # Rules: as Rucio lists them; the policy's other RSEs have none, which the status says.
    assert rule_states(client, blocks) == Counter({("CNAF-DISK", "OK"): 2})
    by_expr = {r["rse_expression"]: r for r in status["rules"]["by_rse_expression"]}
    assert set(by_expr) == {"CNAF-DISK"} and by_expr["CNAF-DISK"]["states"]["OK"] == 2
    assert status["rules"]["total"] == 2 and status["rules"]["states"]["OK"] == 2
    assert _rse(status, "IHEP-TAPE")["blocks_without_rule"] == 2
    assert _rse(status, "CNAF-DISK")["blocks_without_rule"] == 0 and cnaf["complete"]
    assert not status["complete"] and status["exit_code"] == 8
    assert any(line.startswith("JINR-DISK: 6 of 6 expected files not present") for line in status["incomplete"])

    # Per block: CNAF complete, tape missing without a rule, IN2P3 pending.
    for row in status["blocks"]["rows"]:
        assert row["cells"]["CNAF-DISK"] == {"state": "complete", "expected": 3, "present": 3, "verified": 3}
        assert row["cells"]["IHEP-TAPE"]["state"] == "no rule" and row["cells"]["IHEP-TAPE"]["present"] == 0
        assert row["cells"]["IN2P3-DISK"]["state"] == "pending"

    # History: these blocks' bytes moved into CNAF, once each.
    assert status["history"]["totals"]["CNAF"] == total_bytes
    assert status["history"]["transfers"] == total_files
    assert status["transfers"]["in_flight"] == [] and status["transfers"]["failed"] == []


@pytest.mark.grid
def test_wrong_adler32_shows_as_failed_with_checksum_reason(grid, tmp_path: Path) -> None:
    client = grid.client()
    stream = new_stream()
    [block] = make_blocks(client, tmp_path, stream, [date(2025, 10, 11)], files_per_block=1, wrong_adler32=True)
    [rule_id] = add_rules(client, [block], "CNAF-DISK")
    name = block.files[0]["name"]
    selection = Selection(blocks=block_glob(stream), transfers="blocks", ingest=False)
    try:
        daemons.drive_until(lambda: collect(selection)["transfers"]["failed_attempts"] >= 1, timeout=240)
        status = collect(selection)
        # Rucio's own record of the latest attempt (REST): failed, because of the checksum.
        latest = client.list_request_history_by_did(name, "CNAF-DISK", scope=SCOPE)
    finally:
        client.delete_replication_rule(rule_id, purge_replicas=None)  # stop the retries on the shared grid
    assert str(latest["state"]).endswith("FAILED") and "checksum" in latest["err_msg"].lower()

    [failed] = status["transfers"]["failed"]
    assert failed["checksum"] is True
    assert "CHECKSUM MISMATCH" in failed["reason"] and "<adler32>" in failed["reason"]
    assert failed["example_did"] == f"{SCOPE}:{name}" and failed["files"] == 1
    assert failed["links"][0]["link"] == "IHEP-EOS → CNAF-DISK"
    assert failed["attempts"] == status["transfers"]["failed_attempts"] >= 1
    cnaf = _rse(status, "CNAF-DISK")
    assert cnaf["present"]["files"] == 0 and cnaf["verified"]["files"] == 0 and not cnaf["complete"]


@pytest.mark.grid
def test_an_unmatched_pattern_is_empty_and_complete(grid) -> None:
    status = collect(Selection(blocks=f"block.JUNODAQ.{new_stream()}.*", transfers="blocks", ingest=False))
    assert status["blocks"]["blocks"] == 0 and status["totals"]["expected"]["files"] == 0
    assert status["complete"] and status["exit_code"] == 0


def test_like_pattern_escapes_underscores() -> None:
    from juno_status.collect import like_pattern

    assert like_pattern("block.JUNODAQ.global_trigger.*") == "block.JUNODAQ.global\\_trigger.%"
    assert like_pattern("block.?.100%") == "block._.100\\%"
    with pytest.raises(ValueError, match="only \\* and \\?"):
        like_pattern("block.[ab]")


def test_reasons_fold_urls_and_checksums() -> None:
    from juno_status.reasons import normalize

    a = normalize("RequestErrMsg.TRANSFER_FAILED:TRANSFER [5] SOURCE CHECKSUM MISMATCH User defined checksum and "
                  "source checksum do not match d1786df6 != 8b2237ac")
    b = normalize("RequestErrMsg.TRANSFER_FAILED:TRANSFER [5] SOURCE CHECKSUM MISMATCH User defined checksum and "
                  "source checksum do not match 0a1b2c3d != 11223344")
    assert a == b == ("TRANSFER_FAILED:TRANSFER [5] SOURCE CHECKSUM MISMATCH User defined checksum and source "
                      "checksum do not match <adler32> != <adler32>")
    c = normalize("TRANSFER_FAILED:DESTINATION [111] Failed to stat destination "
                  "root://127.0.0.1:11099//pnfs/in2p3.fr/data/juno/x/y.bin: Connection error")
    assert c == "TRANSFER_FAILED:DESTINATION [111] Failed to stat destination <url> Connection error"
    assert normalize(None, "LOST") == "LOST (no reason recorded)"


def test_history_buckets_are_cumulative() -> None:
    from datetime import timedelta

    from juno_status import history

    assert history.bucket_width(timedelta(minutes=5)) == 10
    assert history.bucket_width(timedelta(hours=5)) == 300
    assert history.bucket_width(timedelta(days=7)) == 3 * 3600
    start = datetime(2025, 10, 9, 12, 0)
    series = history.cumulative([("CNAF", 0, 5), ("CNAF", 2, 7), ("JINR", 1, 3), ("CNAF", 9, 100)], start, 60, 3,
                                sites=["CNAF", "JINR", "IN2P3"])
    assert series.cumulative == {"CNAF": [5, 5, 12], "JINR": [0, 3, 3], "IN2P3": [0, 0, 0]}
    assert series.totals == {"CNAF": 12, "JINR": 3, "IN2P3": 0}
    assert history.floor_time(datetime(2025, 10, 9, 12, 7, 31), 300) == datetime(2025, 10, 9, 12, 5)


def test_expectation_follows_placement_and_lifetime() -> None:
    from datetime import timedelta

    from juno_status.expected import Block, Expector
    from rucio_policy.engine import load_default_policy
    from rucio_policy.rse_catalog import load_catalog

    policy = load_default_policy()
    catalog = load_catalog(Path(policy.source).parent / "sites.yaml")
    expector = Expector(policy, catalog.attribute_table())
    now = datetime(2025, 12, 1)
    placed = "v1;placed;bytes=10;total_before=0;placed_before=0;fraction=1/3"
    skipped = "v1;skipped;bytes=10;total_before=30;placed_before=10;fraction=1/3"
    young = Block("raw", "block.JUNODAQ.global_trigger.20251130", 3, 10, is_open=False, created_at=now,
                  meta={"juno_place_raw_in2p3_third": placed})
    exp = expector.expect(young, now)
    assert set(exp.rses) == policy_full_copy_rses() | {"IN2P3-DISK"}
    old = Block("raw", "block.JUNODAQ.global_trigger.20251001", 3, 10, is_open=False,
                created_at=now - timedelta(days=60), meta={"juno_place_raw_in2p3_third": skipped})
    exp = expector.expect(old, now)
    assert "IHEP-EOS" in exp.expired and "IHEP-EOS" not in exp.rses  # 30-day landing copy has lapsed
    assert exp.skipped == ("IN2P3-DISK",) and "IN2P3-DISK" not in exp.rses
    opened = Block("raw", "block.JUNODAQ.global_trigger.20251201", 3, 10, is_open=True, created_at=now)
    assert expector.expect(opened, now).pending == ("IN2P3-DISK",)
    assert expector.expect(Block("user.x", "whatever", 1, 1), now).class_name is None
