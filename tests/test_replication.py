"""Replication paths and recovery on the live grid, through Rucio's daemons and the transfer service.

Multihop to JINR through CNAF, tape write and staged read-back, a destination storage that goes down
(rule STUCK, then repaired to OK), and the transfer service killed in the middle of copies.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
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


def _history(name: str) -> list[dict]:
    """Every finished transfer of `name` (Rucio's request history), oldest first."""
    from rucio.common.types import InternalScope
    from rucio.core.rse import get_rse_name
    from rucio.db.sqla import models
    from rucio.db.sqla.session import get_session
    from sqlalchemy import select

    session = get_session()
    try:
        rows = [r.to_dict() for r in session.execute(
            select(models.RequestHistory).where(models.RequestHistory.scope == InternalScope(SCOPE),
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


def test_jinr_copy_goes_multihop_through_cnaf(grid, tmp_path: Path) -> None:
    client = grid.client()
    name, local = _put(grid, tmp_path, "multihop")
    [rule_id] = client.add_replication_rule([{"scope": SCOPE, "name": name}], 1, "JINR-DISK")
    daemons.drive_until(lambda: _rule_ok(client, rule_id), timeout=480)

    hops = [(h["src"], h["dst"]) for h in _history(name) if str(h["state"]).endswith("DONE")]
    # The direct IHEP->JINR link is unavailable in etc/sites.yaml: the bytes went through CNAF.
    assert ("IHEP-EOS", "CNAF-DISK") in hops, hops
    assert ("CNAF-DISK", "JINR-DISK") in hops, hops
    assert ("IHEP-EOS", "JINR-DISK") not in hops
    reps = next(iter(client.list_replicas([{"scope": SCOPE, "name": name}], schemes=["root"])))
    assert storage.remote_adler32(reps["rses"]["JINR-DISK"][0]) == storage.adler32_file(local)


def test_tape_write_then_read_back_stages_first(grid, tmp_path: Path) -> None:
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


def test_destination_down_rule_stuck_then_repaired(grid, tmp_path: Path) -> None:
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


def test_transfer_service_killed_mid_copy_loses_nothing(grid, tmp_path: Path) -> None:
    import os
    import signal
    import time

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
