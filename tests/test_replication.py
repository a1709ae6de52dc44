"""Replication paths and recovery on the live grid, through Rucio's daemons and the transfer service.

Multihop to JINR through CNAF, tape write and staged read-back, a destination storage that goes down
(rule STUCK, then repaired to OK), the transfer service killed in the middle of copies, and a source
whose bytes are corrupted (declared bad and re-copied from another site). Each over root and over davs
(HTTP third-party copy; `transfers_over` in conftest.py, juno_grid.tpc), except the transfer service's kill,
which is about the service and not the protocol.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from juno_grid import daemons, procs, storage, xrootd
from juno_grid import grid as grid_mod

pytestmark = pytest.mark.grid
SCOPE = "user.jcoord"


def _put(grid, tmp_path: Path, tag: str, size: int = 2_000_000) -> tuple[str, Path]:
    name = f"test.{tag}.{uuid.uuid4().hex[:12]}.bin"
    local = storage.make_file(tmp_path / name, size)
    storage.put_replica(grid.client(), "IHEP-EOS", SCOPE, name, local)
    return name, local


def _history(name: str, scope: str = SCOPE) -> list[dict]:
    """Every finished transfer of scope:name (Rucio's request history), oldest first."""
    from rucio.common.types import InternalScope
    from rucio.core.rse import get_rse_name
    from rucio.db.sqla import models
    from rucio.db.sqla.session import get_session
    from sqlalchemy import select

    session = get_session()
    try:
        rows = [r.to_dict() for r in session.execute(
            select(models.RequestHistory).where(models.RequestHistory.scope == InternalScope(scope),
                                                models.RequestHistory.name == name)
            .order_by(models.RequestHistory.created_at)).scalars()]
        for r in rows:
            r["src"] = get_rse_name(r["source_rse_id"]) if r["source_rse_id"] else None
            r["dst"] = get_rse_name(r["dest_rse_id"])
        return rows
    finally:
        session.close()


def _describe(client, rule_id: str, name: str) -> str:  # noqa: ANN001
    rule = client.get_replication_rule(rule_id)
    hist = [(h["src"], h["dst"], str(h["state"]), (h["err_msg"] or "")[:80]) for h in _history(name)]
    return f"rule {rule['state']} error={rule.get('error')!r}; attempts {hist}"


def _age_locks(rule_id: str, minutes: int) -> None:
    from datetime import timedelta

    from rucio.db.sqla import models
    from rucio.db.sqla.session import get_session
    from sqlalchemy import update

    session = get_session()
    try:
        session.execute(update(models.ReplicaLock).where(models.ReplicaLock.rule_id == rule_id)
                        .values(updated_at=models.ReplicaLock.updated_at - timedelta(minutes=minutes)))
        session.commit()
    finally:
        session.close()


def _rule_ok(client, rule_id: str) -> bool:  # noqa: ANN001
    return client.get_replication_rule(rule_id)["state"] == "OK"


def _schemes(name: str, scope: str = SCOPE) -> dict[tuple[str, str], str]:
    """(source RSE, destination RSE) -> the scheme of each transfer of scope:name that was DONE."""
    return {(h["src"], h["dst"]): h["dest_url"].split("://", 1)[0] for h in _history(name, scope)
            if str(h["state"]).endswith("DONE")}


BOTH = pytest.mark.parametrize("transfers_over", ["root", "davs"], indirect=True)


@BOTH
def test_jinr_copy_goes_multihop_through_cnaf(grid, transfers_over: str, tmp_path: Path) -> None:
    client = grid.client()
    name, local = _put(grid, tmp_path, "multihop")
    [rule_id] = client.add_replication_rule([{"scope": SCOPE, "name": name}], 1, "JINR-DISK")
    daemons.drive_until(lambda: _rule_ok(client, rule_id), timeout=480)

    hops = [(h["src"], h["dst"]) for h in _history(name) if str(h["state"]).endswith("DONE")]
    # The direct IHEP->JINR link is unavailable in etc/sites.yaml: the bytes went through CNAF.
    assert ("IHEP-EOS", "CNAF-DISK") in hops, hops
    assert ("CNAF-DISK", "JINR-DISK") in hops, hops
    assert ("IHEP-EOS", "JINR-DISK") not in hops
    assert set(_schemes(name).values()) == {transfers_over}, _schemes(name)
    reps = next(iter(client.list_replicas([{"scope": SCOPE, "name": name}], schemes=["root"])))
    assert storage.remote_adler32(reps["rses"]["JINR-DISK"][0]) == storage.adler32_file(local)


@BOTH
def test_tape_write_then_read_back_stages_first(grid, transfers_over: str, tmp_path: Path) -> None:
    client = grid.client()
    name, local = _put(grid, tmp_path, "tape")
    did = [{"scope": SCOPE, "name": name}]
    assert client.get_rse("IHEP-TAPE")["rse_type"] == "TAPE"
    [to_tape] = client.add_replication_rule(did, 1, "IHEP-TAPE")
    daemons.drive_until(lambda: _rule_ok(client, to_tape), timeout=480)

    # Read back with the tape copy as the only allowed source.
    [back] = client.add_replication_rule(did, 1, "CNAF-DISK", source_replica_expression="IHEP-TAPE")
    daemons.drive_until(lambda: _rule_ok(client, back), timeout=480)

    from_tape = [h for h in _history(name) if h["src"] == "IHEP-TAPE" and h["dst"] == "CNAF-DISK"]
    assert from_tape and str(from_tape[-1]["state"]).endswith("DONE")
    job_id = from_tape[-1]["external_id"]
    with urllib.request.urlopen(f"{grid.cfg.fts_url}/jobs/{job_id}?files=staging_start,staging_finished",
                                timeout=10) as resp:
        job = json.load(resp)
    f = job["files"][0]
    assert f["staging_start"] and f["staging_finished"], f"no bring-online before the copy: {f}"
    assert f["staging_finished"] >= f["staging_start"]
    cnaf = next(iter(client.list_replicas(did, schemes=["root"])))["rses"]["CNAF-DISK"][0]
    assert storage.remote_adler32(cnaf) == storage.adler32_file(local)
    # Written to tape over the chosen protocol; recalled over root either way (no tape REST API on these
    # storages' HTTP: juno_grid.tpc).
    assert _schemes(name) == {("IHEP-EOS", "IHEP-TAPE"): transfers_over, ("IHEP-TAPE", "CNAF-DISK"): "root"}


@BOTH
def test_destination_down_rule_stuck_then_repaired(grid, transfers_over: str, tmp_path: Path) -> None:
    client = grid.client()
    name, local = _put(grid, tmp_path, "outage")
    dst = grid.topo.rse("IN2P3-DISK")
    procs.stop(grid.cfg.run_dir, xrootd.proc_name(dst.name))
    try:
        [rule_id] = client.add_replication_rule([{"scope": SCOPE, "name": name}], 1, dst.name)
        daemons.drive_until(lambda: client.get_replication_rule(rule_id)["state"] == "STUCK", timeout=480,
                            describe=lambda: _describe(client, rule_id, name))
        failures = [h for h in _history(name) if h["dst"] == dst.name]
        assert failures and all(str(h["state"]).endswith("FAILED") for h in failures)
        assert all(h["err_msg"] for h in failures), "a failed transfer without its reason"
    finally:
        xrootd.start_one(grid.cfg, dst)
        procs.wait_for(lambda: procs.port_open(dst.protocols["local"].port), "IN2P3-DISK back", timeout=30)
    # Rucio's judge-repairer retries a STUCK lock on the same RSE once its last attempt is 2 hours
    # old (first day; rule_grouping.__is_retry_required): move that clock instead of waiting.
    _age_locks(rule_id, minutes=121)
    # The judge-repairer picks the STUCK rule up and new transfers complete.
    daemons.drive_until(lambda: _rule_ok(client, rule_id), timeout=480,
                        describe=lambda: _describe(client, rule_id, name))
    rep = next(iter(client.list_replicas([{"scope": SCOPE, "name": name}], schemes=["root"])))
    assert storage.remote_adler32(rep["rses"][dst.name][0]) == storage.adler32_file(local)
    assert _schemes(name) == {("IHEP-EOS", dst.name): transfers_over}


def test_transfer_service_killed_mid_copy_loses_nothing(grid, tmp_path: Path) -> None:
    import signal

    client = grid.client()
    names = [_put(grid, tmp_path, f"ftskill{i}", size=30_000_000)[0] for i in range(6)]
    rule_ids = client.add_replication_rule([{"scope": SCOPE, "name": n} for n in names], 1, "CNAF-DISK",
                                           grouping="NONE")
    # Run the daemons until the transfer service has the copies, then kill it hard.
    daemons.drive_until(lambda: any(client.get_replication_rule(r)["locks_replicating_cnt"] for r in rule_ids)
                        and _fts_busy(grid), timeout=120, names=daemons.ORDER[:3], pause=0.05)
    rec = procs.read(grid.cfg.run_dir, grid_mod.FTS)
    assert rec is not None
    os.kill(rec.pid, signal.SIGKILL)
    time.sleep(0.5)
    assert not procs.alive(rec)
    grid_mod.start_fts(grid.cfg)
    daemons.drive_until(lambda: all(_rule_ok(client, r) for r in rule_ids), timeout=400)
    for rep in client.list_replicas([{"scope": SCOPE, "name": n} for n in names], schemes=["root"]):
        assert storage.remote_adler32(rep["rses"]["CNAF-DISK"][0]) == rep["adler32"]


def _fts_busy(grid) -> bool:  # noqa: ANN001
    """The transfer service has at least one copy submitted or running."""
    try:
        with urllib.request.urlopen(f"{grid.cfg.fts_url}/jobs?state_in=SUBMITTED,ACTIVE,STAGING",
                                    timeout=5) as resp:
            return bool(json.load(resp))
    except OSError:
        return False


def _bad_replicas(scope: str, name: str) -> list[dict]:
    """Rucio's bad_replicas rows of scope:name (each declaration, SUSPICIOUS or BAD/RECOVERED), oldest first."""
    from rucio.common.types import InternalScope
    from rucio.core.rse import get_rse_name
    from rucio.db.sqla import models
    from rucio.db.sqla.session import get_session
    from sqlalchemy import select

    session = get_session()
    try:
        rows = session.execute(select(models.BadReplica).where(models.BadReplica.scope == InternalScope(scope),
                                                               models.BadReplica.name == name)
                               .order_by(models.BadReplica.created_at)).scalars()
        return [{"rse": get_rse_name(r.rse_id), "state": r.state.name, "reason": r.reason} for r in rows]
    finally:
        session.close()


def _replica_states(client, scope: str, name: str) -> dict[str, str]:  # noqa: ANN001
    return {rse: state for rep in client.list_replicas([{"scope": scope, "name": name}], all_states=True)
            for rse, state in rep["states"].items()}


def _corrupt(path: Path) -> None:
    """Flip bytes in the middle of a file on disk, keeping its size. The new mtime makes XRootD
    recompute the checksum it caches with the file."""
    before = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(before.st_size // 2)
        chunk = fh.read(4096)
        fh.seek(before.st_size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    os.utime(path, (before.st_atime, max(time.time(), before.st_mtime + 2)))
    assert path.stat().st_size == before.st_size


@BOTH
def test_corrupted_source_is_declared_bad_and_recovered_from_another_site(grid, transfers_over: str,
                                                                          tmp_path: Path) -> None:
    from juno_status.collect import Selection, collect

    client = grid.client()
    scope = "raw"
    name = (f"RUN.{random.randint(10_000_000, 99_999_999)}.JUNODAQ.Physics.ds-2.global_trigger."
            f"{datetime.now(UTC):%Y%m%d%H%M%S}.{random.randint(0, 999):03d}.dat")
    did = [{"scope": scope, "name": name}]
    local = storage.make_file(tmp_path / name, 2_000_000)
    good = storage.adler32_file(local)
    ihep_pfn = storage.put_replica(client, "IHEP-EOS", scope, name, local)["pfn"]
    # As the replication policy does for raw data: a rule keeps the landing copy at IHEP, another
    # makes the CNAF copy.
    [at_ihep] = client.add_replication_rule(did, 1, "IHEP-EOS")
    [at_cnaf] = client.add_replication_rule(did, 1, "CNAF-DISK")
    daemons.drive_until(lambda: _rule_ok(client, at_ihep) and _rule_ok(client, at_cnaf), timeout=300)

    # The bytes at IHEP go bad behind Rucio's back; the storage now computes another adler32.
    _corrupt(grid.storage_path("IHEP-EOS") / storage.split_url(ihep_pfn)[1].lstrip("/"))
    bad = storage.remote_adler32(ihep_pfn)
    assert bad and bad != good

    def describe() -> str:
        hist = [(h["src"], h["dst"], str(h["state"]), (h["err_msg"] or "")[:90]) for h in _history(name, scope)]
        rules = {r: client.get_replication_rule(r)["state"] for r in (at_ihep, at_cnaf, at_in2p3)}
        return (f"rules {rules}; replicas {_replica_states(client, scope, name)}; "
                f"bad_replicas {_bad_replicas(scope, name)}; attempts {hist}")

    # A copy to IN2P3 that may only read from IHEP: the transfer service finds the source's checksum
    # wrong, the finisher declares the source SUSPICIOUS, the replica-recoverer declares it BAD
    # (CNAF has a good copy), the necromancer re-queues the IHEP rule's lock: CNAF -> IHEP.
    [at_in2p3] = client.add_replication_rule(did, 1, "IN2P3-DISK", source_replica_expression="IHEP-EOS")
    daemons.drive_until(lambda: any(b["rse"] == "IHEP-EOS" and b["state"] in ("BAD", "RECOVERED")
                                    for b in _bad_replicas(scope, name)), timeout=300, describe=describe)

    # The failure names the checksum: the catalogue's value and the one the source storage computed.
    failed = [h for h in _history(name, scope) if h["dst"] == "IN2P3-DISK" and str(h["state"]).endswith("FAILED")]
    assert failed, describe()
    err = failed[0]["err_msg"]
    # The service names catalogue != source first; over davs gfal2's own words follow in parentheses.
    match = re.search(r"SOURCE CHECKSUM MISMATCH .*?\b([0-9a-f]{1,8}) != ([0-9a-f]{1,8})\b", err)
    assert match, err
    assert (int(match[1], 16), int(match[2], 16)) == (int(good, 16), int(bad, 16)), err
    assert failed[0]["src"] == "IHEP-EOS"
    # Rucio's bad-replica records at IHEP: SUSPICIOUS with that reason, then declared BAD.
    bad_rows = _bad_replicas(scope, name)
    ihep_bad = [b for b in bad_rows if b["rse"] == "IHEP-EOS"]
    suspicious = [b for b in ihep_bad if b["state"] == "SUSPICIOUS"]
    assert suspicious and all("SOURCE CHECKSUM MISMATCH" in b["reason"] for b in suspicious), ihep_bad
    assert [b["state"] for b in ihep_bad if b["state"] != "SUSPICIOUS"] in (["BAD"], ["RECOVERED"]), ihep_bad
    assert not [b for b in bad_rows if b["rse"] != "IHEP-EOS"]

    # The status tool groups the failure under its checksum reason, on the IHEP -> IN2P3 link.
    status = collect(Selection(blocks=f"block.NONE.{uuid.uuid4().hex}", transfers="all", ingest=False))
    groups = [g for g in status["transfers"]["failed"]
              if any(link["link"] == "IHEP-EOS → IN2P3-DISK" for link in g["links"])]
    assert any(g["checksum"] and "SOURCE CHECKSUM MISMATCH" in g["reason"] for g in groups), groups

    # Recovered: IHEP's replica re-copied from CNAF, AVAILABLE, the bad record closed as RECOVERED.
    def recovered() -> bool:
        return (_replica_states(client, scope, name).get("IHEP-EOS") == "AVAILABLE"
                and any(b["rse"] == "IHEP-EOS" and b["state"] == "RECOVERED" for b in _bad_replicas(scope, name))
                and _rule_ok(client, at_ihep))

    daemons.drive_until(recovered, timeout=300, describe=describe)
    recovery = [h for h in _history(name, scope) if h["dst"] == "IHEP-EOS" and str(h["state"]).endswith("DONE")]
    assert [(h["src"], h["activity"]) for h in recovery] == [("CNAF-DISK", "Recovery")], describe()
    assert storage.remote_adler32(ihep_pfn) == good
    back = tmp_path / "read-back.dat"
    storage.copy(ihep_pfn, str(back))
    assert storage.adler32_file(back) == good and back.read_bytes() == local.read_bytes()

    # The IN2P3 rule's lock went STUCK while its only allowed source was bad. Rucio's judge-repairer
    # retries a STUCK lock once its last attempt is 2 hours old (first day): move that clock.
    daemons.drive_until(lambda: client.get_replication_rule(at_in2p3)["state"] in ("STUCK", "OK"), timeout=300,
                        describe=describe)
    if client.get_replication_rule(at_in2p3)["state"] == "STUCK":
        _age_locks(at_in2p3, minutes=121)
    daemons.drive_until(lambda: all(_rule_ok(client, r) for r in (at_ihep, at_cnaf, at_in2p3)), timeout=300,
                        describe=describe)
    done = [h for h in _history(name, scope) if h["dst"] == "IN2P3-DISK" and str(h["state"]).endswith("DONE")]
    assert [h["src"] for h in done] == ["IHEP-EOS"], describe()
    reps = next(iter(client.list_replicas(did, schemes=["root"])))
    assert reps["adler32"] == good
    for rse in ("IHEP-EOS", "CNAF-DISK", "IN2P3-DISK"):
        assert storage.remote_adler32(reps["rses"][rse][0]) == good, rse
    assert set(_schemes(name, scope).values()) == {transfers_over}, _schemes(name, scope)
