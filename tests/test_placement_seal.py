"""Placement decisions survive a deleted record (pure: rules.plan_rules, recover_from_rules, the seal)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rucio_policy.placement import SEAL_COLUMN, parse_seal, seal_text
from rucio_policy.replication import load_policy
from rucio_policy.rules import Did, plan_rules, recover_from_rules

REPO = Path(__file__).resolve().parents[1]
KEY = "juno_place_raw_in2p3_third"
BLOCK = "block.JUNODAQ.global_trigger.20251009"
PLACED = "v1;placed;bytes=10;total_before=0;placed_before=0;fraction=1/3"


@pytest.fixture(scope="module")
def policy():  # noqa: ANN201
    return load_policy(REPO / "etc" / "replication.yaml", None)


def test_seal_round_trip() -> None:
    text = seal_text({KEY: True})
    assert text == "juno_place:raw_in2p3_third=placed" and len(text) <= 50
    assert parse_seal(text) == {KEY: True}
    assert parse_seal(seal_text({KEY: False})) == {KEY: False}
    assert parse_seal(None) == {} and parse_seal("reco-step-2") == {}  # the column's other uses
    with pytest.raises(ValueError, match="longer than"):
        seal_text({f"juno_place_{'x' * 40}": True})


@pytest.mark.parametrize("placed", [True, False])
def test_a_sealed_block_without_its_record_is_never_pending(policy, placed: bool) -> None:  # noqa: ANN001
    did = Did("raw", BLOCK, "DATASET", bytes=10, is_open=False, meta={SEAL_COLUMN: seal_text({KEY: placed})})
    plan = plan_rules(policy, did)
    assert not plan.pending
    assert ("IN2P3-DISK" in [r.rse_expression for r in plan.rules]) is placed
    assert any("is missing" in p for p in plan.problems)


def test_a_record_that_disagrees_with_its_seal_is_reported_and_the_seal_wins(policy) -> None:  # noqa: ANN001
    did = Did("raw", BLOCK, "DATASET", bytes=10, is_open=False,
              meta={KEY: PLACED, SEAL_COLUMN: seal_text({KEY: False})})
    plan = plan_rules(policy, did)
    assert "IN2P3-DISK" not in [r.rse_expression for r in plan.rules]
    assert any("tampered" in p for p in plan.problems)


def test_the_policy_rule_is_evidence_when_there_is_no_seal(policy) -> None:  # noqa: ANN001
    plan = plan_rules(policy, Did("raw", BLOCK, "DATASET", bytes=10, is_open=False))
    assert [p.rule_id for p in plan.pending] == ["in2p3_third"]
    recovered = recover_from_rules(plan, {("raw", "in2p3_third"): "rule-1"})
    assert not recovered.pending
    assert recovered.rules[-1].rse_expression == "IN2P3-DISK" and "rule-1" in recovered.rules[-1].reason
    assert any("placed per the policy's rule rule-1" in p for p in recovered.problems)
    assert recover_from_rules(plan, {("raw", "ihep_tape"): "rule-2"}) is plan  # other rules prove nothing
