"""Replication through Rucio's real conveyor and the grid's FTS3-API transfer service."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from juno_grid import daemons, storage

pytestmark = pytest.mark.grid
SCOPE = "user.jcoord"


def _name(tag: str) -> str:
    return f"test.{tag}.{uuid.uuid4().hex[:12]}.bin"


def test_rule_to_cnaf_reaches_ok_and_bytes_match(grid, tmp_path: Path) -> None:
    client = grid.client()
    local = storage.make_file(tmp_path / "a.bin", 3_000_000)
    name = _name("ok")
    storage.put_replica(client, "IHEP-EOS", SCOPE, name, local)
    [rule_id] = client.add_replication_rule([{"scope": SCOPE, "name": name}], 1, "CNAF-DISK")

    daemons.drive_until(lambda: client.get_replication_rule(rule_id)["state"] == "OK", timeout=180)

    replicas = list(client.list_replicas([{"scope": SCOPE, "name": name}], schemes=["root"], all_states=True))
    states = replicas[0]["states"]
    assert states == {"IHEP-EOS": "AVAILABLE", "CNAF-DISK": "AVAILABLE"}
    cnaf_pfn = replicas[0]["rses"]["CNAF-DISK"][0]
    assert storage.remote_adler32(cnaf_pfn) == storage.adler32_file(local)
    back = tmp_path / "back.bin"
    storage.copy(cnaf_pfn, str(back))
    assert back.read_bytes() == local.read_bytes()


def test_wrong_adler32_fails_with_checksum_reason_and_is_retried(grid, tmp_path: Path) -> None:
    from rucio.core.request import get_request_by_did
    from rucio.core.rse import get_rse_id

    client = grid.client()
    local = storage.make_file(tmp_path / "b.bin", 1_000_000)
    real = storage.adler32_file(local)
    wrong = f"{(int(real, 16) ^ 0x5A5A5A5A):08x}"
    name = _name("badsum")
    storage.put_replica(client, "IHEP-EOS", SCOPE, name, local, adler32=wrong)
    [rule_id] = client.add_replication_rule([{"scope": SCOPE, "name": name}], 1, "CNAF-DISK")
    cnaf = get_rse_id("CNAF-DISK")

    def failed_once() -> bool:
        try:
            req = get_request_by_did(SCOPE, name, cnaf)
        except Exception:  # noqa: BLE001 - RequestNotFound between a failure and its retry
            return False
        return req["retry_count"] >= 1

    daemons.drive_until(failed_once, timeout=180)
    req = get_request_by_did(SCOPE, name, cnaf)
    rule = client.get_replication_rule(rule_id)
    assert rule["state"] != "OK"
    reason = (req.get("err_msg") or "") + " " + (rule.get("error") or "")
    assert "checksum" in reason.lower(), reason
    # Requeued for another attempt, not marked done; no replica became AVAILABLE at CNAF.
    assert req["state"] != "DONE"
    reps = list(client.list_replicas([{"scope": SCOPE, "name": name}], all_states=True))
    assert reps[0]["states"].get("CNAF-DISK") != "AVAILABLE"
