"""Which Rucio rules a DID should have under the replication policy, and why (pure, no Rucio calls).

    plan = plan_rules(policy, did)             # did: scope, name, type, bytes, open?, metadata
    plan.rules     → DesiredRule: everything add_replication_rule needs, plus a reason
    plan.skipped   → fraction rules decided "not this block" (with the recorded decision)
    plan.pending   → fraction rules not decided yet (decided once the block is closed, when its
                     size is final: resolve_pending() does it and returns the metadata to record)

The comment of every rule the engine creates starts with `juno-policy <class>/<rule id>`, so plan
and apply can tell the policy's rules from anybody else's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rucio_policy.placement import (
    PLACEMENT_META_PREFIX,
    SEAL_COLUMN,
    PlacementRecord,
    Tally,
    decide,
    meta_key,
    parse_seal,
    seal_text,
)
from rucio_policy.replication import DataClass, Policy, RuleSpec

RULE_COMMENT_PREFIX = "juno-policy"
_COMMENT_MAX = 250  # Rucio's COMMENT schema


@dataclass(frozen=True)
class Did:
    """A DID with what the policy needs to know of it (naming.DidRef is its bare identity)."""

    scope: str
    name: str
    did_type: str  # FILE, DATASET or CONTAINER
    bytes: int | None = None
    is_open: bool | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DesiredRule:
    class_name: str
    rule_id: str
    rse_expression: str
    copies: int
    lifetime: int | None
    activity: str
    grouping: str
    priority: int
    locked: bool
    comment: str
    reason: str

    def add_rule_kwargs(self, did: Did, account: str | None = None) -> dict[str, Any]:
        """Keyword arguments for rucio Client.add_replication_rule."""
        kwargs: dict[str, Any] = {
            "dids": [{"scope": did.scope, "name": did.name}], "copies": self.copies,
            "rse_expression": self.rse_expression, "lifetime": self.lifetime, "activity": self.activity,
            "grouping": self.grouping, "priority": self.priority, "locked": self.locked, "comment": self.comment,
        }
        if account is not None:
            kwargs["account"] = account
        return kwargs


@dataclass(frozen=True)
class NotApplied:
    """A fraction rule this DID does not get (skipped) or does not get yet (pending)."""

    class_name: str
    rule_id: str
    rse_expression: str
    meta_key: str
    reason: str
    desired: DesiredRule | None = None  # pending: the rule it becomes if placed


@dataclass(frozen=True)
class RulePlan:
    did: Did
    class_name: str | None
    reason: str
    rules: tuple[DesiredRule, ...] = ()
    skipped: tuple[NotApplied, ...] = ()
    pending: tuple[NotApplied, ...] = ()
    problems: tuple[str, ...] = ()

    def explain(self) -> str:
        lines = [f"{self.did.scope}:{self.did.name}: {self.reason}"]
        lines += [f"  + {r.rse_expression} x{r.copies}: {r.reason}" for r in self.rules]
        lines += [f"  - {s.rse_expression}: {s.reason}" for s in self.skipped]
        lines += [f"  ? {p.rse_expression}: {p.reason}" for p in self.pending]
        lines += [f"  ! {problem}" for problem in self.problems]
        return "\n".join(lines)


def rule_comment(class_name: str, rule_id: str, text: str = "") -> str:
    comment = f"{RULE_COMMENT_PREFIX} {class_name}/{rule_id}" + (f": {text}" if text else "")
    return comment[:_COMMENT_MAX]


def parse_rule_comment(comment: str | None) -> tuple[str, str] | None:
    """(class, rule id) of a rule the engine made, from its comment; None for anybody else's rule."""
    if not comment or not comment.startswith(RULE_COMMENT_PREFIX + " "):
        return None
    tag = comment[len(RULE_COMMENT_PREFIX) + 1:].split(":", 1)[0].strip()
    class_name, _, rule_id = tag.partition("/")
    return (class_name, rule_id) if class_name and rule_id else None


def _desired(data_class: DataClass, rule: RuleSpec, source: str, reason: str) -> DesiredRule:
    return DesiredRule(class_name=data_class.name, rule_id=rule.id, rse_expression=rule.rse_expression,
                       copies=rule.copies, lifetime=rule.lifetime, activity=rule.activity, grouping=rule.grouping,
                       priority=rule.priority, locked=rule.locked,
                       comment=rule_comment(data_class.name, rule.id, rule.comment),
                       reason=f"rule {rule.id} ({source}:{rule.line}): {reason}")


def _lifetime_text(seconds: int | None) -> str:
    if seconds is None:
        return "kept until deleted"
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"lifetime {seconds // size}{unit}"
    return f"lifetime {seconds}s"


def plan_rules(policy: Policy, did: Did, verdicts: Mapping[str, bool] | None = None) -> RulePlan:
    """The rules `did` should have, those it does not get, and those still to decide.

    `verdicts`: placement key → placed?, for decisions known only by their verdict (the engine's bulk
    plan finds them with one metadata search per verdict instead of reading every record); a record
    in `did.meta` takes precedence and gives the full explanation.
    """
    data_class = policy.class_for(did.scope, did.name, did.did_type, did.meta)
    if data_class is None:
        return RulePlan(did, None, f"no data class of {policy.source} matches it: the policy gives it no rules")
    reason = f"class {data_class.name} ({data_class.match.describe()}; {policy.source}:{data_class.line})"
    rules: list[DesiredRule] = []
    skipped: list[NotApplied] = []
    pending: list[NotApplied] = []
    problems: list[str] = []
    for rule in data_class.rules:
        copies = "full copy" if rule.copies == 1 else f"{rule.copies} copies"
        what = f"{copies} on {rule.rse_expression}, {rule.activity}, {_lifetime_text(rule.lifetime)}"
        if rule.fraction is None or rule.fraction >= 1:
            rules.append(_desired(data_class, rule, policy.source, what))
            continue
        key = meta_key(data_class.name, rule.id)
        recorded = did.meta.get(key)
        if recorded is None and verdicts is not None and key in verdicts:
            text = "placed" if verdicts[key] else "not placed"
            why = (f"share {rule.fraction} of the bytes on {rule.rse_expression}, {text} (decision recorded on the "
                   f"block in {key}; `juno-policy explain` shows what it was based on)")
            if verdicts[key]:
                rules.append(_desired(data_class, rule, policy.source, why))
            else:
                skipped.append(NotApplied(data_class.name, rule.id, rule.rse_expression, key, f"rule {rule.id}: {why}"))
            continue
        sealed = parse_seal(did.meta.get(SEAL_COLUMN))
        if recorded is None and key in sealed:
            # The record was deleted (Rucio lets anyone delete JSON metadata): the seal keeps the verdict,
            # and the block is never decided again.
            text = "placed" if sealed[key] else "not placed"
            why = (f"share {rule.fraction} of the bytes on {rule.rse_expression}, {text}: decision record {key} is "
                   f"missing (deleted?); verdict recovered from the seal in {SEAL_COLUMN}, not decided again")
            problems.append(f"rule {rule.id}: placement record {key} is missing; {text} per the seal in {SEAL_COLUMN}")
            if sealed[key]:
                rules.append(_desired(data_class, rule, policy.source, why))
            else:
                skipped.append(NotApplied(data_class.name, rule.id, rule.rse_expression, key, f"rule {rule.id}: {why}"))
            continue
        if recorded is None:
            when = "when the block is closed (its size is final)" if did.is_open is not False else "now"
            pending.append(NotApplied(data_class.name, rule.id, rule.rse_expression, key,
                                      f"rule {rule.id}: share {rule.fraction} of the bytes, decided {when}",
                                      _desired(data_class, rule, policy.source,
                                               f"share {rule.fraction} of the bytes on {rule.rse_expression}")))
            continue
        try:
            record = PlacementRecord.from_meta(str(recorded))
        except ValueError as err:
            problems.append(f"rule {rule.id}: metadata {key}: {err}")
            continue
        if key in sealed and sealed[key] != record.placed:
            # Only an admin can change a record (the server refuses others): the seal is what was decided.
            problems.append(f"rule {rule.id}: placement record {key} says {'placed' if record.placed else 'skipped'} "
                            f"but its seal in {SEAL_COLUMN} says {'placed' if sealed[key] else 'skipped'}: "
                            "tampered; the seal is followed")
            record = replace(record, placed=sealed[key])
        if record.placed:
            rules.append(_desired(data_class, rule, policy.source,
                                  f"share {rule.fraction} of the bytes on {rule.rse_expression}, {record.explain()}"))
        else:
            skipped.append(NotApplied(data_class.name, rule.id, rule.rse_expression, key,
                                      f"rule {rule.id}: share {rule.fraction} of the bytes, {record.explain()}"))
    return RulePlan(did, data_class.name, reason, tuple(rules), tuple(skipped), tuple(pending), tuple(problems))


def recover_from_rules(plan: RulePlan, evidence: Mapping[tuple[str, str], str]) -> RulePlan:
    """Pending fraction rules that already have their rule on the DID were decided "placed" before:
    their record is missing (deleted: Rucio 41 lets anyone) and, for blocks decided before the seal
    existed, the policy's rule (owned by the service account, which only the ingest service, coordinators
    and admins can create) is the evidence left. Never decide them again.

    evidence: (class, rule id) → Rucio rule id, of the DID's policy rules owned by the service account."""
    found = [p for p in plan.pending if (p.class_name, p.rule_id) in evidence]
    if not found:
        return plan
    rules = list(plan.rules)
    problems = list(plan.problems)
    for item in found:
        rule_id = evidence[(item.class_name, item.rule_id)]
        problems.append(f"rule {item.rule_id}: placement record {item.meta_key} is missing; placed per the "
                        f"policy's rule {rule_id} on the block, not decided again")
        if item.desired is not None:
            rules.append(replace(item.desired, reason=f"{item.desired.reason}: decision record {item.meta_key} is "
                                                      f"missing (deleted?); placed per rule {rule_id}, not decided "
                                                      "again"))
    pending = tuple(p for p in plan.pending if p not in found)
    return replace(plan, rules=tuple(rules), pending=pending, problems=tuple(problems))


def tallies_from_metas(metas: Iterable[Mapping[str, Any]]) -> dict[str, Tally]:
    """Per placement key, the tally of every recorded decision in the given DIDs' metadata.

    Sums, so the listing order does not matter. Unreadable records raise ValueError: a tally built
    while skipping some decisions would silently unbalance every later one.
    """
    totals: dict[str, list[int]] = {}
    for meta in metas:
        for key, value in meta.items():
            if not str(key).startswith(PLACEMENT_META_PREFIX) or value is None:
                continue
            record = PlacementRecord.from_meta(str(value))
            total = totals.setdefault(str(key), [0, 0])
            total[0] += record.block_bytes
            total[1] += record.block_bytes if record.placed else 0
    return {key: Tally(total, placed) for key, (total, placed) in totals.items()}


def resolve_pending(plan: RulePlan, policy: Policy, tallies: Mapping[str, Tally]
                    ) -> tuple[RulePlan, dict[str, str]]:
    """Decide the plan's pending fraction rules (the DID's size must be known).

    Returns the completed plan and the metadata to record on the DID (key → PlacementRecord text, and
    the seal of the verdicts in placement.SEAL_COLUMN).
    Record the metadata before adding the rules: a crash in between then re-adds the same rules
    (Rucio's DuplicateRule) instead of deciding again.
    """
    if not plan.pending:
        return plan, {}
    if plan.did.bytes is None:
        raise ValueError(f"{plan.did.scope}:{plan.did.name}: size unknown, cannot decide its placement yet")
    meta = dict(plan.did.meta)
    to_record: dict[str, str] = {}
    data_class = next(c for c in policy.classes if c.name == plan.class_name)
    for item in plan.pending:
        rule = next(r for r in data_class.rules if r.id == item.rule_id)
        assert rule.fraction is not None
        record = decide(tallies.get(item.meta_key, Tally()), plan.did.bytes, rule.fraction)
        to_record[item.meta_key] = meta[item.meta_key] = record.to_meta()
    verdicts = {**parse_seal(meta.get(SEAL_COLUMN)),
                **{k: PlacementRecord.from_meta(v).placed for k, v in to_record.items()}}
    to_record[SEAL_COLUMN] = meta[SEAL_COLUMN] = seal_text(verdicts)
    decided = plan_rules(policy, replace(plan.did, meta=meta))
    return decided, to_record
