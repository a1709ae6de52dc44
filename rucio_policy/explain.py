"""explain: why one DID has (or lacks) its rules, as data and as text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rucio_policy import naming
from rucio_policy.ensure import _diff
from rucio_policy.placement import PlacementRecord, meta_key
from rucio_policy.policy_cache import EngineError
from rucio_policy.replication import Policy
from rucio_policy.rucio_reads import fetch_did, replica_states
from rucio_policy.rule_diff import (
    DELETE,
    Action,
)


@dataclass
class Explanation:
    did: str
    did_type: str
    bytes: int | None
    is_open: bool | None
    class_name: str | None
    reason: str
    rules: list[dict[str, Any]]  # the policy's rules for it: wanted, and whether Rucio has them
    placement: list[dict[str, Any]]  # fraction rules: placed / not placed / pending, and why
    not_wanted: list[dict[str, Any]]  # the policy's tagged rules it should not have
    others: list[dict[str, Any]]  # rules the policy does not manage
    replicas: dict[str, dict[str, int]]  # RSE → replica state → files
    actions: list[Action]

    def as_dict(self) -> dict[str, Any]:
        return {"did": self.did, "did_type": self.did_type, "bytes": self.bytes, "open": self.is_open,
                "class": self.class_name, "reason": self.reason, "rules": self.rules, "placement": self.placement,
                "not_wanted": self.not_wanted, "others": self.others, "replicas": self.replicas,
                "actions": [a.as_dict() for a in self.actions]}

    def text(self) -> str:
        size = "no files yet" if self.bytes is None else f"{self.bytes} bytes"
        state = "" if self.is_open is None else (", open" if self.is_open else ", closed")
        lines = [f"{self.did} ({self.did_type}, {size}{state})", f"  {self.reason}"]
        if self.rules:
            lines.append("rules the policy wants:")
            for r in self.rules:
                have = f"rule {r['rucio_rule']} {r['state']}" if r["rucio_rule"] else "MISSING"
                dev = f"; deviates: {'; '.join(r['deviations'])}" if r["deviations"] else ""
                lines.append(f"  {r['rule']:<14} {r['rse_expression']} x{r['copies']}: {have}{dev}")
                lines.append(f"  {'':<14} {r['reason']}")
        if self.placement:
            lines.append("placement (fraction rules):")
            lines += [f"  {p['rule']:<14} {p['status']}: {p['why']}" for p in self.placement]
        if self.not_wanted:
            lines.append("rules the policy does not want (juno-policy apply --prune deletes them):")
            lines += [f"  {r['rucio_rule']} {r['rse_expression']}: {r['reason']}" for r in self.not_wanted]
        if self.others:
            lines.append("other rules (not managed by the policy):")
            lines += [f"  {r['id']} {r['account']} {r['rse_expression']} x{r['copies']} {r['state']}"
                      for r in self.others]
        lines.append("replicas per RSE (files by state):" if self.replicas else "replicas: none")
        for rse, states in sorted(self.replicas.items()):
            lines.append(f"  {rse:<12} " + ", ".join(f"{state} {n}" for state, n in sorted(states.items())))
        if self.actions:
            lines.append("to do (juno-policy apply):")
            lines += [f"  {a}" for a in self.actions]
        return "\n".join(lines)


def parse_did(text: str) -> tuple[str, str]:
    """scope:name, or a bare JUNO name (its scope follows from the name, as in the rucio CLI)."""
    scope, name = naming.extract_scope_juno(text)
    if not scope or not name:
        raise EngineError(f"{text!r} is not a DID: write it as <scope>:<name>")
    return scope, name


def explain(client: Any, did: str, policy: Policy) -> Explanation:
    """Why a DID has the rules it has: its class, the rules it should have and has, its placement
    decisions, and where its files are (replica states per RSE)."""
    scope, name = parse_did(did)
    state = fetch_did(client, scope, name)
    diff = _diff(policy, state)
    rules = []
    for match in diff.matches:
        d = match.desired
        rules.append({"rule": d.rule_id, "rse_expression": d.rse_expression, "copies": d.copies,
                      "reason": d.reason, "rucio_rule": match.rule.id if match.rule else None,
                      "state": match.rule.state if match.rule else None, "deviations": list(match.deviations)})
    placement = []
    for item in diff.plan.rules:
        key = meta_key(item.class_name, item.rule_id)
        if key in state.did.meta:  # a fraction rule the recorded decision placed here
            placement.append({"rule": item.rule_id, "key": key, "status": "placed", "record": state.did.meta[key],
                              "why": PlacementRecord.from_meta(str(state.did.meta[key])).explain()})
        elif "is missing (deleted?)" in item.reason:  # placed per the seal; the record itself was deleted
            placement.append({"rule": item.rule_id, "key": key, "status": "placed", "record": None,
                              "why": f"record missing: {item.reason}"})
    for item in diff.plan.skipped:
        placement.append({"rule": item.rule_id, "key": item.meta_key, "status": "not placed",
                          "record": state.did.meta.get(item.meta_key), "why": item.reason})
    for item in diff.plan.pending:
        placement.append({"rule": item.rule_id, "key": item.meta_key, "status": "pending", "record": None,
                          "why": item.reason})
    not_wanted = [a.as_dict() for a in diff.actions if a.kind == DELETE]
    return Explanation(did=f"{scope}:{name}", did_type=state.did.did_type, bytes=state.did.bytes,
                       is_open=state.did.is_open, class_name=diff.plan.class_name, reason=diff.plan.reason,
                       rules=rules, placement=placement, not_wanted=not_wanted,
                       others=[r.as_dict() for r in diff.others], replicas=replica_states(client, state.did),
                       actions=list(diff.actions))
