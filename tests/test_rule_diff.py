"""What the engine would change on one DID (rucio_policy.rule_diff): pure, no Rucio."""

from __future__ import annotations

from datetime import datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from rucio_policy.placement import Tally, decide, meta_key
from rucio_policy.replication import load_policy
from rucio_policy.rule_diff import ADD, DECIDE, DELETE, UPDATE, ExistingRule, diff_did
from rucio_policy.rules import Did, plan_rules, rule_comment

REPO = Path(__file__).resolve().parents[1]
POLICY = load_policy(REPO / "etc" / "replication.yaml", None)
NOW = datetime(2025, 10, 20, 12, 0, 0)
BLOCK = "block.JUNODAQ.global_trigger.20251009"
OWNER = "juno_ingest"
IN2P3_KEY = meta_key("raw", "in2p3_third")


def block(is_open: bool | None = True, meta: dict[str, Any] | None = None, size: int = 10**12) -> Did:
    return Did("raw", BLOCK, "DATASET", bytes=size, is_open=is_open, meta=meta or {})


def wanted(did: Did) -> dict[str, Any]:
    return {r.rule_id: r for r in plan_rules(POLICY, did).rules}


def rule(rule_id: str, *, did: Did | None = None, created: datetime = NOW - timedelta(days=1), **changes: Any
         ) -> ExistingRule:
    """The Rucio rule the engine would have made for `rule_id`, with `changes`."""
    desired = wanted(did or block())[rule_id]
    lifetime = None if desired.lifetime is None else timedelta(seconds=desired.lifetime)
    fields: dict[str, Any] = dict(
        id=f"id-{rule_id}", account=OWNER, scope="raw", name=BLOCK, did_type="DATASET",
        rse_expression=desired.rse_expression, copies=desired.copies, grouping=desired.grouping,
        activity=desired.activity, priority=desired.priority, locked=desired.locked, comment=desired.comment,
        created_at=created, expires_at=None if lifetime is None else created + lifetime, state="OK")
    fields.update(changes)
    return ExistingRule(**fields)


def all_rules(did: Did | None = None) -> list[ExistingRule]:
    return [rule(rule_id, did=did) for rule_id in wanted(did or block())]


def kinds(diff: Any) -> list[tuple[str, str | None]]:
    return [(a.kind, a.rule_id) for a in diff.actions]


def test_new_block_gets_every_unconditional_rule_owned_by_the_service_account() -> None:
    diff = diff_did(POLICY, block(), [], owner=OWNER, now=NOW)
    assert kinds(diff) == [(ADD, r) for r in ("ihep_tape", "ihep_disk", "cnaf_disk", "jinr_disk", "cnaf_tape")]
    tape = diff.actions[0].add_kwargs
    assert tape is not None
    assert tape["account"] == OWNER and tape["rse_expression"] == "IHEP-TAPE" and tape["locked"] is True
    assert tape["dids"] == [{"scope": "raw", "name": BLOCK}]
    assert tape["comment"].startswith("juno-policy raw/ihep_tape")
    assert diff.in_sync == 0


def test_a_block_with_its_rules_is_in_sync() -> None:
    diff = diff_did(POLICY, block(), all_rules(), owner=OWNER, now=NOW)
    assert diff.actions == () and diff.in_sync == 5


def test_rules_of_others_are_left_alone() -> None:
    theirs = rule("cnaf_disk", id="theirs", account="analyst1", comment="my copy")
    diff = diff_did(POLICY, block(), [*all_rules(), theirs], owner=OWNER, now=NOW)
    assert diff.actions == () and [r.id for r in diff.others] == ["theirs"]


def test_an_untagged_rule_rucio_would_call_a_duplicate_is_adopted() -> None:
    untagged = rule("cnaf_disk", comment="added by hand")
    rules = [r for r in all_rules() if r.id != "id-cnaf_disk"] + [untagged]
    diff = diff_did(POLICY, block(), rules, owner=OWNER, now=NOW)
    [action] = diff.actions
    assert action.kind == UPDATE and action.rucio_rule == "id-cnaf_disk"
    assert action.options == {"comment": rule_comment("raw", "cnaf_disk")}


@pytest.mark.parametrize(("changes", "options"), [
    ({"priority": 1}, {"priority": 3}),
    ({"activity": "Debug"}, {"activity": "T0 Export"}),
    ({"locked": False}, None),  # ihep_tape only: see below
    ({"account": "jcoord"}, {"account": OWNER}),
])
def test_deviations_fixed_in_place(changes: dict[str, Any], options: dict[str, Any] | None) -> None:
    rule_id = "ihep_tape" if "locked" in changes else "cnaf_disk"
    options = options or {"locked": True}
    rules = [r for r in all_rules() if r.id != f"id-{rule_id}"] + [rule(rule_id, **changes)]
    diff = diff_did(POLICY, block(), rules, owner=OWNER, now=NOW)
    [action] = diff.actions
    assert (action.kind, action.rule_id, action.options) == (UPDATE, rule_id, options)
    assert "deviates" in action.reason


def test_copies_or_expression_need_a_new_rule_and_the_old_one_is_not_wanted() -> None:
    rules = [r for r in all_rules() if r.id != "id-jinr_disk"] + [rule("jinr_disk", copies=2)]
    diff = diff_did(POLICY, block(), rules, owner=OWNER, now=NOW)
    assert kinds(diff) == [(ADD, "jinr_disk"), (DELETE, "jinr_disk")]
    assert "replaces rule id-jinr_disk (copies 2 (policy: 1))" in diff.actions[0].reason
    assert "a second rule for raw/jinr_disk" in diff.actions[1].reason


def test_lifetime_set_relative_to_the_rules_creation() -> None:
    created = NOW - timedelta(days=10)
    forever = rule("ihep_disk", created=created, expires_at=None)
    rules = [r for r in all_rules() if r.id != "id-ihep_disk"] + [forever]
    [action] = diff_did(POLICY, block(), rules, owner=OWNER, now=NOW).actions
    assert action.kind == UPDATE and action.options == {"lifetime": 20 * 86400}


def test_lifetime_already_over_is_a_deletion() -> None:
    old = rule("ihep_disk", created=NOW - timedelta(days=40), expires_at=None)
    rules = [r for r in all_rules() if r.id != "id-ihep_disk"] + [old]
    [action] = diff_did(POLICY, block(), rules, owner=OWNER, now=NOW).actions
    assert action.kind == DELETE and "expired under the policy's lifetime 30d" in action.reason


def test_lifetime_within_the_slack_is_in_sync() -> None:
    close = rule("ihep_disk", expires_at=NOW - timedelta(days=1) + timedelta(days=30, minutes=20))
    rules = [r for r in all_rules() if r.id != "id-ihep_disk"] + [close]
    assert diff_did(POLICY, block(), rules, owner=OWNER, now=NOW).actions == ()


def test_rules_the_policy_does_not_want() -> None:
    gone = rule("cnaf_disk", id="old", comment=rule_comment("raw", "old_rule"), locked=True)
    diff = diff_did(POLICY, block(), [*all_rules(), gone], owner=OWNER, now=NOW)
    [action] = diff.actions
    assert action.kind == DELETE and action.rucio_rule == "old" and action.unlock_first
    assert "class raw has no rule old_rule any more" in action.reason
    other_class = rule("cnaf_disk", id="x", comment=rule_comment("esd", "t1_disks"))
    [action] = diff_did(POLICY, block(), [*all_rules(), other_class], owner=OWNER, now=NOW).actions
    assert "made for class esd, but the DID now is class raw" in action.reason


def test_fraction_rules_follow_the_recorded_placement() -> None:
    yes = decide(Tally(6 * 10**12, 10**12), 10**12, Fraction(1, 3))
    no = decide(Tally(3 * 10**12, 2 * 10**12), 10**12, Fraction(1, 3))
    assert yes.placed and not no.placed
    closed_yes = block(False, {IN2P3_KEY: yes.to_meta()})
    diff = diff_did(POLICY, closed_yes, all_rules(), owner=OWNER, now=NOW)
    assert kinds(diff) == [(ADD, "in2p3_third")] and "placed: block of 1.00 TB" in diff.actions[0].reason
    closed_no = block(False, {IN2P3_KEY: no.to_meta()})
    stray = rule("in2p3_third", did=closed_yes, id="stray")
    [action] = diff_did(POLICY, closed_no, [*all_rules(), stray], owner=OWNER, now=NOW).actions
    assert action.kind == DELETE and "the recorded placement says no" in action.reason


def test_undecided_fraction_waits_while_open_and_is_decided_once_closed() -> None:
    placed = decide(Tally(6 * 10**12, 10**12), 10**12, Fraction(1, 3)).to_meta()
    early = rule("in2p3_third", did=block(False, {IN2P3_KEY: placed}), id="early")  # added by hand, too early
    diff = diff_did(POLICY, block(True), [*all_rules(), early], owner=OWNER, now=NOW)
    assert diff.actions == () and [r.id for r in diff.kept] == ["early"]
    diff = diff_did(POLICY, block(False), all_rules(), owner=OWNER, now=NOW)
    assert kinds(diff) == [(DECIDE, "in2p3_third")]


def test_existing_rule_from_rucio_rows() -> None:
    row = {"id": "abc", "account": "juno_ingest", "scope": "raw", "name": BLOCK, "did_type": "DATASET",
           "rse_expression": "CNAF-DISK", "copies": 1, "grouping": "DATASET", "activity": "T0 Export",
           "priority": 3, "locked": False, "comments": "juno-policy raw/cnaf_disk", "state": "OK",
           "created_at": "2025-10-09T10:00:00", "expires_at": None}
    parsed = ExistingRule.from_rucio(row)
    assert parsed.tag == ("raw", "cnaf_disk") and parsed.created_at == datetime(2025, 10, 9, 10)
    assert parsed.lifetime() is None


def test_a_deleted_rule_is_restored_and_a_deleted_unwanted_one_left_alone() -> None:
    # Rucio deletes softly: the rule expires within the hour and stays listed until then.
    deleted = rule("cnaf_disk", expires_at=NOW + timedelta(minutes=50))
    rules = [r for r in all_rules() if r.id != "id-cnaf_disk"] + [deleted]
    [action] = diff_did(POLICY, block(), rules, owner=OWNER, now=NOW).actions
    assert action.kind == UPDATE and action.options == {"lifetime": None}
    assert "deleted (Rucio removes it at" in action.reason and "restore it" in action.reason
    gone = rule("cnaf_disk", id="old", comment=rule_comment("raw", "old_rule"), expires_at=NOW + timedelta(minutes=5))
    assert diff_did(POLICY, block(), [*all_rules(), gone], owner=OWNER, now=NOW).actions == ()


@pytest.mark.parametrize("changes", [
    {}, {"priority": 1}, {"activity": "Debug"}, {"locked": True}, {"comment": "x"}, {"account": "jcoord"},
    {"copies": 2}, {"grouping": "ALL"}, {"rse_expression": "IN2P3-DISK"}, {"expires_at": None},
    {"expires_at": NOW + timedelta(days=29, hours=23, minutes=30)}, {"expires_at": NOW + timedelta(days=40)},
])
def test_fast_in_sync_check_agrees_with_the_full_comparison(changes: dict[str, Any]) -> None:
    from rucio_policy.rule_diff import _identical, deviations

    desired = wanted(block())["ihep_disk"]
    existing = rule("ihep_disk", created=NOW - timedelta(days=1), **changes)
    words, _, replace = deviations(desired, existing, OWNER, NOW)
    assert _identical(desired, existing, OWNER) is (not words and not replace)
