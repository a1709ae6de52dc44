"""What must change on one DID so that its Rucio rules match the replication policy (pure, no Rucio calls).

    diff = diff_did(policy, did, rules, owner="juno_ingest", now=...)
    diff.actions   → Action: add | update | delete | decide, each with what it sends to Rucio and why
    diff.in_sync   → the policy's rules the DID already has, as the policy wants them
    diff.others    → rules the policy does not manage (anybody's rule without the juno-policy tag)

The engine (`engine.py`) computes the same diff for one block (the ingester) and for every block
(`juno-policy plan|apply`), so the ingester and the coordinators' tool can never disagree.

Matching an existing rule to a rule the policy wants:
  - by the tag in its comment (`juno-policy <class>/<rule id>`), whoever owns it;
  - or, untagged, owned by the policy's account with the same RSE expression and copies: Rucio
    refuses a second such rule (DuplicateRule), so the engine adopts it (re-tags it) instead.
Deviations Rucio can change in place (lifetime, activity, priority, locked, comment, owner) become
an `update`; the others (copies, grouping, RSE expression) need a new rule: `add`, and the old one
becomes a rule the policy does not want (`delete`, applied only with --prune).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from juno_common.units import format_duration
from rucio_policy.placement import PLACEMENT_META_PREFIX, SEAL_COLUMN, parse_seal
from rucio_policy.replication import DataClass, Policy
from rucio_policy.rules import DesiredRule, Did, RulePlan, parse_rule_comment, plan_rules, recover_from_rules

# Rucio stores a rule's lifetime as expires_at, set from the server's clock when the rule is made or
# its lifetime changed: compare lifetimes with this much slack (policy lifetimes are hours to weeks).
LIFETIME_SLACK = timedelta(hours=1)
# Rucio deletes a rule softly: delete_replication_rule sets it to expire within the hour and the
# judge-cleaner removes it then. Until that, it is still listed, and a rule with the same owner,
# expression and copies cannot be added again (DuplicateRule).
DELETION_GRACE = timedelta(hours=1, minutes=5)


def leaving(rule: ExistingRule, now: datetime) -> bool:
    """The rule expires within Rucio's deletion grace: deleted, or about to expire anyway."""
    return rule.expires_at is not None and rule.expires_at <= now + DELETION_GRACE

ADD, UPDATE, DELETE, DECIDE = "add", "update", "delete", "decide"
ACTION_ORDER = {DECIDE: 0, ADD: 1, UPDATE: 2, DELETE: 3}


@dataclass(eq=False)  # identity semantics; not frozen: plan builds tens of thousands, frozen init is slower
class ExistingRule:
    """The part of a Rucio rule (list_replication_rules, list_did_rules) the engine compares. Read-only."""

    id: str
    account: str
    scope: str
    name: str
    did_type: str
    rse_expression: str
    copies: int
    grouping: str
    activity: str
    priority: int
    locked: bool
    comment: str
    created_at: datetime | None
    expires_at: datetime | None
    state: str
    tag: tuple[str, str] | None = field(init=False)  # (class, rule id) of a policy rule, from its comment

    def __post_init__(self) -> None:
        # Parsed once: plan compares every rule's tag several times, over tens of thousands of rules.
        self.tag = parse_rule_comment(self.comment)

    @classmethod
    def from_rucio(cls, row: Mapping[str, Any]) -> ExistingRule:
        get = row.get
        created, expires = get("created_at"), get("expires_at")
        return cls(str(row["id"]), str(row["account"]), str(row["scope"]), str(row["name"]),
                   enum_text(get("did_type")), str(row["rse_expression"]), int(get("copies") or 1),
                   enum_text(get("grouping")), str(get("activity") or ""), int(get("priority") or 3),
                   bool(get("locked")), str(get("comments") or get("comment") or ""),
                   created if created is None or isinstance(created, datetime) else _when(created),
                   expires if expires is None or isinstance(expires, datetime) else _when(expires),
                   enum_text(get("state")))

    def lifetime(self) -> timedelta | None:
        if self.expires_at is None:
            return None
        return self.expires_at - (self.created_at or self.expires_at)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "account": self.account, "rse_expression": self.rse_expression, "copies": self.copies,
                "grouping": self.grouping, "activity": self.activity, "priority": self.priority, "locked": self.locked,
                "comment": self.comment, "state": self.state,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None}


def enum_text(value: Any) -> str:
    if type(value) is str:  # noqa: E721 - the common case, checked first: plan calls this 150,000 times
        return value
    return str(getattr(value, "name", value) or "")


def _when(value: Any) -> datetime | None:
    """Rucio's clients decode dates to naive UTC datetimes; the REST text form is accepted too."""
    if value is None or isinstance(value, datetime):
        return value
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%a, %d %b %Y %H:%M:%S UTC", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(str(value), fmt)
        except ValueError:
            continue
    raise ValueError(f"unreadable date from Rucio: {value!r}")


@dataclass(frozen=True)
class Action:
    """One change to Rucio, with everything needed to make it and the reason a person reads."""

    kind: str  # add | update | delete | decide
    scope: str
    name: str
    class_name: str | None
    rule_id: str | None  # the policy's rule id
    rse_expression: str
    reason: str
    rucio_rule: str | None = None  # existing rule (update, delete)
    add_kwargs: Mapping[str, Any] | None = None  # add: Client.add_replication_rule(**add_kwargs)
    options: Mapping[str, Any] | None = None  # update: Client.update_replication_rule(rule, options)
    unlock_first: bool = False  # delete: the rule is locked, Rucio deletes it only once unlocked

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind, "did": self.did, "class": self.class_name, "rule": self.rule_id,
                               "rse_expression": self.rse_expression, "reason": self.reason}
        if self.rucio_rule:
            out["rucio_rule"] = self.rucio_rule
        if self.add_kwargs is not None:
            out["send"] = {k: v for k, v in self.add_kwargs.items() if k != "dids"}
        if self.options is not None:
            out["send"] = dict(self.options)
        return out

    def __str__(self) -> str:
        sign = {ADD: "+", UPDATE: "~", DELETE: "-", DECIDE: "?"}[self.kind]
        what = f"{self.class_name}/{self.rule_id}" if self.rule_id else "rule"
        target = f" {self.rucio_rule}" if self.rucio_rule else ""
        return f"{sign} {self.kind:<6} {self.did}  {what} on {self.rse_expression}{target}: {self.reason}"


@dataclass(frozen=True)
class Match:
    """A rule the policy wants and the Rucio rule that provides it (None: missing)."""

    desired: DesiredRule
    rule: ExistingRule | None
    deviations: tuple[str, ...] = ()


@dataclass(frozen=True)
class DidDiff:
    did: Did
    plan: RulePlan
    actions: tuple[Action, ...]
    matches: tuple[Match, ...]
    others: tuple[ExistingRule, ...] = ()
    kept: tuple[ExistingRule, ...] = field(default=())  # tagged rules of undecided fraction rules

    @property
    def in_sync(self) -> int:
        return sum(1 for m in self.matches if m.rule is not None and not m.deviations)


def _desired_lifetime(desired: DesiredRule) -> timedelta | None:
    return None if desired.lifetime is None else timedelta(seconds=desired.lifetime)


def deviations(desired: DesiredRule, rule: ExistingRule, owner: str | None, now: datetime
               ) -> tuple[list[str], dict[str, Any], list[str]]:
    """(what differs in words, update options that fix it in place, what only a new rule can fix)."""
    words: list[str] = []
    options: dict[str, Any] = {}
    replace: list[str] = []
    if rule.rse_expression != desired.rse_expression:
        replace.append(f"RSE expression {rule.rse_expression} (policy: {desired.rse_expression})")
    if rule.copies != desired.copies:
        replace.append(f"copies {rule.copies} (policy: {desired.copies})")
    if rule.grouping.upper() != desired.grouping.upper():
        replace.append(f"grouping {rule.grouping} (policy: {desired.grouping})")
    if owner is not None and rule.account != owner:
        words.append(f"owner {rule.account} (policy rules belong to {owner})")
        options["account"] = owner
    if rule.activity != desired.activity:
        words.append(f"activity {rule.activity!r} (policy: {desired.activity!r})")
        options["activity"] = desired.activity
    if rule.priority != desired.priority:
        words.append(f"priority {rule.priority} (policy: {desired.priority})")
        options["priority"] = desired.priority
    if rule.locked != desired.locked:
        words.append(f"locked {str(rule.locked).lower()} (policy: {str(desired.locked).lower()})")
        options["locked"] = desired.locked
    if rule.comment != desired.comment:
        words.append(f"comment {rule.comment!r} (policy: {desired.comment!r})")
        options["comment"] = desired.comment
    want, have = _desired_lifetime(desired), rule.lifetime()
    if (want is None) != (have is None) or (want is not None and have is not None
                                            and abs(want - have) > LIFETIME_SLACK):
        if leaving(rule, now) and rule.expires_at is not None:
            words.append(f"deleted (Rucio removes it at {rule.expires_at:%Y-%m-%d %H:%M} UTC; the policy keeps it "
                         f"{_duration(want) if want else 'forever'}): restore it")
        else:
            words.append(f"lifetime {_duration(have)} (policy: {_duration(want)})")
        options["lifetime"] = None if want is None else want  # resolved against the clock in lifetime_option()
    return words, options, replace


def lifetime_option(rule: ExistingRule, want: timedelta, now: datetime) -> int | None:
    """Seconds from now that make the rule expire `want` after it was created; None if that is past."""
    created = rule.created_at or now
    left = created + want - now
    return int(left.total_seconds()) if left.total_seconds() > 0 else None


def _duration(value: timedelta | None) -> str:
    return "forever" if value is None else format_duration(value.total_seconds())


_PLANS: dict[int, tuple[Policy, dict[tuple[Any, ...], RulePlan], dict[str, list[DataClass]]]] = {}


def _plan(policy: Policy, did: Did, verdicts: Mapping[str, bool] | None) -> RulePlan:
    """rules.plan_rules, memoised for DIDs whose plan depends only on their class, verdicts and open state
    (no placement record in their metadata): a bulk plan then builds each class's rules once, not per DID."""
    if any(str(key).startswith(PLACEMENT_META_PREFIX) for key in did.meta) or parse_seal(did.meta.get(SEAL_COLUMN)):
        return plan_rules(policy, did, verdicts)
    entry = _PLANS.get(id(policy))
    if entry is None or entry[0] is not policy:
        _PLANS.clear()
        entry = _PLANS[id(policy)] = (policy, {}, {})
    _, templates, by_scope = entry
    classes = by_scope.get(did.scope)
    if classes is None:  # the classes a DID of this scope can be in: the scope test is done once per scope
        classes = by_scope[did.scope] = [c for c in policy.classes if not c.match.scopes
                                         or any(fnmatchcase(did.scope, p) for p in c.match.scopes)]
    found = [c for c in classes if c.match.matches(did.scope, did.name, did.did_type, did.meta)]
    if len(found) > 1:
        policy.class_for(did.scope, did.name, did.did_type, did.meta)  # raises AmbiguousClass, with the details
    key = (found[0].name if found else None, tuple(sorted((verdicts or {}).items())), did.is_open)
    template = templates.get(key)
    if template is None:
        template = templates[key] = plan_rules(policy, did, verdicts)
    return RulePlan(did, template.class_name, template.reason, template.rules, template.skipped, template.pending,
                    template.problems)


def placement_evidence(rules: Iterable[ExistingRule], owner: str | None, now: datetime
                       ) -> dict[tuple[str, str], str]:
    """(class, rule id) → rule id of a DID's live policy rules owned by `owner` (the service account):
    evidence of a placement decided before, whatever happened to its record (rules.recover_from_rules)."""
    return {r.tag: r.id for r in rules
            if r.tag is not None and (owner is None or r.account == owner) and not leaving(r, now)}


def diff_did(policy: Policy, did: Did, rules: Iterable[ExistingRule], *, owner: str | None,
             now: datetime, verdicts: Mapping[str, bool] | None = None) -> DidDiff:
    """The actions that make `did`'s rules match the policy. `owner`: the account policy rules belong to;
    `verdicts`: placement decisions known by their verdict only (see rules.plan_rules)."""
    plan = _plan(policy, did, verdicts)
    rules = [r for r in rules if r.scope == did.scope and r.name == did.name]
    if plan.pending and did.is_open is False:  # an open block's rule may be early: it is decided at close
        plan = recover_from_rules(plan, placement_evidence(rules, owner, now))
    if not (plan.pending and did.is_open is False):
        in_sync = _all_in_sync(plan, rules, owner)
        if in_sync is not None:
            return DidDiff(did, plan, (), in_sync)
    tagged = [r for r in rules if r.tag is not None]
    untagged = [r for r in rules if r.tag is None]
    used: set[str] = set()
    actions: list[Action] = []
    matches: list[Match] = []
    for desired in plan.rules:
        candidates = [r for r in tagged if r.tag == (desired.class_name, desired.rule_id) and r.id not in used]
        # Rucio refuses a second rule with the same owner, expression and copies: adopt such a rule.
        candidates += [r for r in untagged if r.id not in used and r.account == owner
                       and r.rse_expression == desired.rse_expression and r.copies == desired.copies]
        scored = []
        for rule in candidates:
            words, options, replace = deviations(desired, rule, owner, now)
            scored.append((bool(replace), len(words), rule, words, options, replace))
        scored.sort(key=lambda item: (item[0], item[1]))
        fixable = [s for s in scored if not s[0]]
        if fixable:
            _, _, rule, words, options, _ = fixable[0]
            used.add(rule.id)
            matches.append(Match(desired, rule, tuple(words)))
            if options:
                action = _update_action(did, desired, rule, words, options, now)
                if action is not None:
                    actions.append(action)
            continue
        replaced = scored[0] if scored else None
        why = desired.reason
        if replaced is not None:
            why = f"replaces rule {replaced[2].id} ({'; '.join(replaced[5])}); {desired.reason}"
        matches.append(Match(desired, None))
        actions.append(Action(ADD, did.scope, did.name, desired.class_name, desired.rule_id, desired.rse_expression,
                              f"missing: {why}", add_kwargs=desired.add_rule_kwargs(did, owner)))
    pending_ids = {(p.class_name, p.rule_id) for p in plan.pending}
    kept = [r for r in tagged if r.id not in used and r.tag in pending_ids]
    for rule in tagged:
        if rule.id in used or any(rule is k for k in kept) or leaving(rule, now):
            continue  # a rule already on its way out needs no deleting
        actions.append(Action(DELETE, did.scope, did.name, rule.tag[0] if rule.tag else None,
                              rule.tag[1] if rule.tag else None, rule.rse_expression,
                              f"not wanted: {_unwanted_reason(plan, rule)}", rucio_rule=rule.id,
                              unlock_first=rule.locked))
    if plan.pending and did.is_open is False:
        for item in plan.pending:
            actions.append(Action(DECIDE, did.scope, did.name, item.class_name, item.rule_id, item.rse_expression,
                                  f"closed block, placement not decided yet: {item.reason}"))
    others = tuple(r for r in untagged if r.id not in used)
    actions.sort(key=lambda a: ACTION_ORDER[a.kind])
    return DidDiff(did, plan, tuple(actions), tuple(matches), others, tuple(kept))


def _all_in_sync(plan: RulePlan, rules: list[ExistingRule], owner: str | None) -> tuple[Match, ...] | None:
    """The matches when the DID has exactly the plan's rules, tagged and as the policy wants them, and
    nothing else; None otherwise. The common case of a bulk plan, decided without composing the
    deviation texts of the general comparison."""
    if len(rules) != len(plan.rules):
        return None
    by_tag: dict[tuple[str, str], ExistingRule] = {}
    for rule in rules:
        tag = rule.tag
        if tag is None or tag in by_tag:
            return None
        by_tag[tag] = rule
    matches = []
    for desired in plan.rules:
        rule = by_tag.get((desired.class_name, desired.rule_id))
        if rule is None or not _identical(desired, rule, owner):
            return None
        matches.append(Match(desired, rule))
    return tuple(matches)


def _identical(desired: DesiredRule, rule: ExistingRule, owner: str | None) -> bool:
    """deviations() finds nothing (kept in step with it: tests/test_rule_diff.py compares both)."""
    if (rule.rse_expression != desired.rse_expression or rule.copies != desired.copies
            or rule.grouping.upper() != desired.grouping.upper() or (owner is not None and rule.account != owner)
            or rule.activity != desired.activity or rule.priority != desired.priority
            or rule.locked != desired.locked or rule.comment != desired.comment):
        return False
    have = rule.lifetime()
    if desired.lifetime is None or have is None:
        return desired.lifetime is None and have is None
    return abs(timedelta(seconds=desired.lifetime) - have) <= LIFETIME_SLACK


def _update_action(did: Did, desired: DesiredRule, rule: ExistingRule, words: list[str], options: dict[str, Any],
                   now: datetime) -> Action | None:
    options = dict(options)
    if "lifetime" in options and options["lifetime"] is not None:
        seconds = lifetime_option(rule, options["lifetime"], now)
        if seconds is None and leaving(rule, now):
            return None  # past the policy's lifetime and already on its way out: as the policy wants
        if seconds is None:
            # The policy's lifetime is already over for this rule: setting it would make Rucio delete
            # the rule at once, which is a deletion, so it waits for --prune like every other one.
            return Action(DELETE, did.scope, did.name, desired.class_name, desired.rule_id, desired.rse_expression,
                          f"expired under the policy's lifetime {_duration(options['lifetime'])} "
                          f"(rule created {rule.created_at:%Y-%m-%d})", rucio_rule=rule.id,
                          unlock_first=rule.locked)
        options["lifetime"] = seconds
    return Action(UPDATE, did.scope, did.name, desired.class_name, desired.rule_id, desired.rse_expression,
                  f"deviates: {'; '.join(words)}", rucio_rule=rule.id, options=options)


def _unwanted_reason(plan: RulePlan, rule: ExistingRule) -> str:
    assert rule.tag is not None
    class_name, rule_id = rule.tag
    if plan.class_name is None:
        return f"made for class {class_name}, but {plan.reason}"
    if class_name != plan.class_name:
        return f"made for class {class_name}, but the DID now is class {plan.class_name}"
    for skipped in plan.skipped:
        if skipped.rule_id == rule_id:
            return f"the recorded placement says no: {skipped.reason}"
    if any(d.rule_id == rule_id for d in plan.rules):
        return f"a second rule for {class_name}/{rule_id} (another rule provides it)"
    return f"class {class_name} has no rule {rule_id} any more"
