"""Replication through Rucio's real conveyor and the grid's FTS3-API transfer service, over root and over davs
(HTTP third-party copy: Rucio chooses by the RSEs' protocol priorities, juno_grid.tpc)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from juno_grid import daemons, storage
from juno_grid.config import FTS_COPY_MODE
from juno_grid.fts.links import set_link

pytestmark = pytest.mark.grid
SCOPE = "user.jcoord"


def _name(tag: str) -> str:
    return f"test.{tag}.{uuid.uuid4().hex[:12]}.bin"


@pytest.mark.parametrize("transfers_over", ["root", "davs"], indirect=True)
def test_rule_to_cnaf_reaches_ok_and_bytes_match(grid, transfers_over: str, tmp_path: Path) -> None:
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
    # The copy went over the chosen protocol, both ends.
    [done] = [a for a in _attempts(name, "CNAF-DISK") if str(a["state"]).endswith("DONE")]
    assert done["dest_url"].startswith(f"{transfers_over}://"), done["dest_url"]


def _attempts(name: str, rse: str) -> list[dict]:
    """Every finished transfer attempt Rucio recorded for name at rse (its request history)."""
    from rucio.common.types import InternalScope
    from rucio.core.rse import get_rse_id
    from rucio.db.sqla import models
    from rucio.db.sqla.session import get_session
    from sqlalchemy import select

    session = get_session()
    try:
        rows = session.execute(select(models.RequestHistory).where(
            models.RequestHistory.scope == InternalScope(SCOPE),
            models.RequestHistory.name == name,
            models.RequestHistory.dest_rse_id == get_rse_id("CNAF-DISK"))).scalars()
        return [r.to_dict() for r in rows]
    finally:
        session.close()


@pytest.mark.parametrize("transfers_over", ["root", "davs"], indirect=True)
def test_wrong_adler32_fails_with_checksum_reason_and_is_retried(grid, transfers_over: str, tmp_path: Path) -> None:
    client = grid.client()
    local = storage.make_file(tmp_path / "b.bin", 1_000_000)
    real = storage.adler32_file(local)
    wrong = f"{(int(real, 16) ^ 0x5A5A5A5A):08x}"
    name = _name("badsum")
    storage.put_replica(client, "IHEP-EOS", SCOPE, name, local, adler32=wrong)
    [rule_id] = client.add_replication_rule([{"scope": SCOPE, "name": name}], 1, "CNAF-DISK")

    # Two failed attempts: the first failure was retried by Rucio, not taken as done.
    daemons.drive_until(lambda: len(_attempts(name, "CNAF-DISK")) >= 2, timeout=240)
    attempts = _attempts(name, "CNAF-DISK")
    for attempt in attempts:
        assert str(attempt["state"]).endswith("FAILED"), attempt["state"]
        assert "checksum" in (attempt["err_msg"] or "").lower(), attempt["err_msg"]
        assert attempt["dest_url"].startswith(f"{transfers_over}://"), attempt["dest_url"]
    assert client.get_replication_rule(rule_id)["state"] != "OK"
    reps = list(client.list_replicas([{"scope": SCOPE, "name": name}], all_states=True))
    assert reps[0]["states"].get("CNAF-DISK") != "AVAILABLE"
    cnaf_pfn = storage.pfn(client, "CNAF-DISK", SCOPE, name)
    assert storage.remote_adler32(cnaf_pfn) is None, "the bad copy was left at the destination"


def test_a_link_mode_that_fails_says_why_in_rucios_request_history(grid, tmp_path: Path) -> None:
    # The operator sets IHEP -> CNAF's root:// link to HTTP-TPC push, which XRootD's third-party copy cannot do:
    # the transfer service fails the copy in that mode (no silent change of mode, as FTS3), Rucio records why.
    client = grid.client()
    links = grid.cfg.state_dir / "fts" / "links.json"
    link = f"{grid.topo.rse('IHEP-EOS').protocols['local'].url.split('://')[1]}>" \
           f"{grid.topo.rse('CNAF-DISK').protocols['local'].url.split('://')[1]}"
    local = storage.make_file(tmp_path / "m.bin", 500_000)
    name = _name("badmode")
    storage.put_replica(client, "IHEP-EOS", SCOPE, name, local)
    set_link(links, link, "push", FTS_COPY_MODE)
    try:
        [rule_id] = client.add_replication_rule([{"scope": SCOPE, "name": name}], 1, "CNAF-DISK")
        daemons.drive_until(lambda: bool(_attempts(name, "CNAF-DISK")), timeout=240)
    finally:
        set_link(links, link, None, FTS_COPY_MODE)
    failed = _attempts(name, "CNAF-DISK")[0]
    assert str(failed["state"]).endswith("FAILED")
    # Rucio keeps the service's reason verbatim behind its own category.
    assert failed["err_msg"].startswith("RequestErrMsg.TRANSFER_FAILED:TRANSFER [95] Copy mode not supported: "
                                        "'push' is HTTP-TPC only"), failed["err_msg"]
    # With the link's mode put back, Rucio's next attempt copies the file.
    daemons.drive_until(lambda: client.get_replication_rule(rule_id)["state"] == "OK", timeout=240)
    assert storage.remote_adler32(storage.pfn(client, "CNAF-DISK", SCOPE, name)) == storage.adler32_file(local)
