"""The holes found from outside (issue 10), each tried as the attacker would: REST, stock Rucio client,
the attacker's own account, against the live grid's server. Nothing is mocked.

Each test asserts the attack is refused *and* that Rucio's state shows no trace of it.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rucio.common.exception import AccessDenied, InvalidObject, RucioException

from rucio_policy import engine
from rucio_policy.placement import meta_key

pytestmark = pytest.mark.grid

RUN = uuid.uuid4().hex[:8]
DAY = "20251009"
ADLER = "0badc0de"
_n = iter(range(10_000))


def _u() -> str:
    return f"{RUN}x{next(_n)}"


def raw_file() -> str:
    return f"RUN.10554.JUNODAQ.Physics.ds-2.hole{_u()}.{DAY}140223.001.dat"


def raw_block(root: Any) -> str:
    name = f"block.JUNODAQ.hole{_u()}.{DAY}"
    root.add_dataset("raw", name)
    return name


def _exists(client: Any, scope: str, name: str) -> bool:
    return bool(list(client.list_dids(scope, {"name": name}, did_type="all")))


def _replica_rses(client: Any, scope: str, name: str) -> set[str]:
    rows = list(client.list_replicas([{"scope": scope, "name": name}], all_states=True))
    return set(rows[0]["states"]) if rows else set()


def _denied_text(err: pytest.ExceptionInfo[BaseException]) -> str:
    return " ".join(str(err.value).split())


# 1. add_did with content: Rucio checks add_did without its dids/rse, then registers the content.
@pytest.mark.parametrize(("rse", "reason"), [
    ("IHEP-TAPE", "IHEP-TAPE is a tape RSE"),
    ("CNAF-DISK", "scope raw is written only by the ingest service"),
])
def test_hole1_add_did_with_raw_content_is_refused(analyst: Any, root: Any, rse: str, reason: str) -> None:
    raw = raw_file()
    dataset = f"hole1.{_u()}"
    with pytest.raises(AccessDenied) as err:
        analyst.add_did("user.analyst1", dataset, "DATASET",
                        dids=[{"scope": "raw", "name": raw, "bytes": 1, "adler32": ADLER}], rse=rse)
    assert reason in _denied_text(err)
    assert not _exists(root, "raw", raw), "the raw file was registered through add_did's content"
    assert not _exists(root, "user.analyst1", dataset)


# 2. Replicas of files that exist: Rucio asks only about the RSE, and about the scope of new files.
def test_hole2_replica_of_existing_raw_file_is_refused(analyst: Any, root: Any) -> None:
    raw = raw_file()
    root.add_replicas(rse="IHEP-EOS", files=[{"scope": "raw", "name": raw, "bytes": 1, "adler32": ADLER}])
    with pytest.raises(AccessDenied) as err:
        analyst.add_replicas(rse="CNAF-DISK", files=[{"scope": "raw", "name": raw, "bytes": 1, "adler32": ADLER}])
    assert "scope raw is written only by the ingest service" in _denied_text(err)
    assert _replica_rses(root, "raw", raw) == {"IHEP-EOS"}


# 3. declare_suspicious_file_replicas: Rucio's generic rule allows everyone.
def test_hole3_declaring_another_accounts_replica_suspicious_is_refused(analyst: Any, root: Any) -> None:
    name = f"hole3.{_u()}.dat"
    root.add_replicas(rse="CNAF-DISK", files=[{"scope": "user.analyst2", "name": name, "bytes": 1,
                                               "adler32": ADLER}])
    [replica] = list(root.list_replicas([{"scope": "user.analyst2", "name": name}], all_states=True))
    pfn = next(iter(replica["rses"]["CNAF-DISK"]))
    with pytest.raises(AccessDenied) as err:
        analyst.declare_suspicious_file_replicas([pfn], "auditor: corrupted")
    assert "suspicious" in _denied_text(err)
    [after] = list(root.list_replicas([{"scope": "user.analyst2", "name": name}], all_states=True))
    assert after["states"] == {"CNAF-DISK": "AVAILABLE"}


# 4. Placement records: Rucio 41 lets anyone delete DID metadata; the decision must survive it.
def test_hole4_deleted_placement_record_is_never_decided_again(analyst: Any, root: Any, ingest: Any) -> None:
    policy = engine.load_default_policy()
    block = raw_block(root)
    root.attach_dids("raw", block, [{"scope": "raw", "name": raw_file(), "bytes": 1000, "adler32": ADLER}],
                     rse="IHEP-EOS")
    root.set_status("raw", block, open=False)
    engine.finalize_block(ingest, "raw", block, policy=policy)
    key = meta_key("raw", "in2p3_third")
    record = root.get_metadata("raw", block, plugin="JSON")[key]
    analyst.delete_metadata("raw", block, key)  # Rucio 41 asks nobody: the attack itself succeeds
    assert key not in root.get_metadata("raw", block, plugin="JSON")

    plan = engine.plan(root, policy, scope_filter="raw", name_filter=block)
    assert plan.count(engine.DECIDE) == 0, f"a deleted record makes the block decided again: {plan.actions}"
    assert any("missing" in p and block in p for p in plan.problems), plan.problems
    explained = engine.explain(root, f"raw:{block}", policy)
    [placement] = explained.placement
    assert placement["status"] != "pending", placement
    assert "missing" in placement["why"], placement
    assert (record.split(";")[1] == "placed") == (placement["status"] == "placed")
    again = engine.finalize_block(ingest, "raw", block, policy=policy)
    assert not again.decided, "finalize_block decided the block again"
    assert key not in root.get_metadata("raw", block, plugin="JSON"), "a new record was written"


# 5. Analyst rules: source replicas on tape, a higher priority, a production activity.
@pytest.mark.parametrize(("option", "value", "expected"), [
    ("source_replica_expression", "IHEP-TAPE", "source"),
    ("priority", 5, "priority"),
    ("activity", "T0 Export", "activity"),
])
def test_hole5_analyst_rule_options_are_checked(analyst: Any, root: Any, option: str, value: Any,
                                                expected: str) -> None:
    name = f"hole5.{_u()}"
    analyst.add_dataset("user.analyst1", name)
    with pytest.raises(AccessDenied) as err:
        analyst.add_replication_rule([{"scope": "user.analyst1", "name": name}], 1, "CNAF-DISK", **{option: value})
    assert expected in _denied_text(err)
    assert not list(root.list_did_rules("user.analyst1", name))


# 6. Paths: '/' and '..' in names of any scope would map outside the scope's tree.
@pytest.mark.parametrize("template", [
    "a/../../../../../raw/2025/1009/RUN.10554.JUNODAQ.Physics.ds-2.hole6{u}.20251009140223.001.dat",
    "/etc/passwd.hole6{u}",
    "x/y.hole6{u}",
])
def test_hole6_names_with_slashes_are_refused_by_the_schema(analyst: Any, root: Any, template: str) -> None:
    name = template.format(u=_u())
    with pytest.raises((InvalidObject, AccessDenied)):
        analyst.add_replicas(rse="CNAF-DISK", files=[{"scope": "user.analyst1", "name": name, "bytes": 1,
                                                      "adler32": ADLER}])
    with pytest.raises((InvalidObject, AccessDenied)):
        root.add_replicas(rse="CNAF-DISK", files=[{"scope": "user.analyst1", "name": name, "bytes": 1,
                                                   "adler32": ADLER}])
    with pytest.raises((InvalidObject, AccessDenied, RucioException)):
        analyst.add_dataset("user.analyst1", name)
    assert not _exists(root, "user.analyst1", name)


# 7. A closed raw block stays closed: its placement was decided on its final content.
def test_hole7_ingest_cannot_reopen_a_closed_raw_block(ingest: Any, root: Any) -> None:
    block = raw_block(root)
    root.set_status("raw", block, open=False)
    with pytest.raises(AccessDenied) as err:
        ingest.set_status("raw", block, open=True)
    assert "closed" in _denied_text(err)
    assert root.get_did("raw", block)["open"] is False


def test_hole4_without_a_seal_the_policy_rule_is_the_evidence(analyst: Any, root: Any, ingest: Any) -> None:
    """A block decided before seals existed: its record deleted, the policy's rule on it still says placed."""
    policy = engine.load_default_policy()
    block = raw_block(root)
    root.attach_dids("raw", block, [{"scope": "raw", "name": raw_file(), "bytes": 1000, "adler32": ADLER}],
                     rse="IHEP-EOS")
    root.set_status("raw", block, open=False)
    key = meta_key("raw", "in2p3_third")
    root.set_metadata("raw", block, key, "v1;placed;bytes=1000;total_before=0;placed_before=0;fraction=1/3")
    engine.finalize_block(ingest, "raw", block, policy=policy)  # adds the rules of the recorded decision
    assert any(r["rse_expression"] == "IN2P3-DISK" for r in root.list_did_rules("raw", block))
    analyst.delete_metadata("raw", block, key)

    plan = engine.plan(root, policy, scope_filter="raw", name_filter=block)
    assert plan.count(engine.DECIDE) == 0, plan.actions
    assert any("placed per the policy's rule" in p for p in plan.problems), plan.problems
    [placement] = engine.explain(root, f"raw:{block}", policy).placement
    assert placement["status"] == "placed" and "missing" in placement["why"], placement
    assert not engine.finalize_block(ingest, "raw", block, policy=policy).decided
