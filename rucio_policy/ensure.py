"""The policy's rules for blocks as the ingester makes and closes them: ensure_block_rules (one),
ensure_blocks_rules (many, each rule sent once for all), finalize_block (decide placements when closed),
and _execute, how one change is sent (also used by apply)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from rucio.common.exception import AccessDenied, DatabaseException, DuplicateRule

from juno_common.clock import utc_now
from rucio_policy.placement import SEAL_COLUMN, Tally
from rucio_policy.policy_cache import CallMap, EngineError, load_default_policy, rule_owner
from rucio_policy.replication import Policy
from rucio_policy.rucio_reads import (
    DidState,
    fetch_did,
    new_block_state,
    placement_tallies,
)
from rucio_policy.rule_diff import (
    ADD,
    DELETE,
    UPDATE,
    Action,
    DidDiff,
    diff_did,
    placement_evidence,
)
from rucio_policy.rules import RulePlan, plan_rules, recover_from_rules, resolve_pending, tallies_from_metas

_ADD_BATCH = 200  # DIDs per add_replication_rule call (one rule per DID, one transaction)


@dataclass
class EnsureResult:
    """What ensure_block_rules / finalize_block did to one block."""

    scope: str
    name: str
    class_name: str | None
    added: list[str] = field(default_factory=list)  # ids of the rules added now
    existing: int = 0  # rules the policy wants that the block already had
    decided: dict[str, str] = field(default_factory=dict)  # placement metadata recorded now
    pending: list[str] = field(default_factory=list)  # fraction rules still to decide (block open)
    skipped: list[str] = field(default_factory=list)  # fraction rules decided "not this block"
    plan: RulePlan | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"did": f"{self.scope}:{self.name}", "class": self.class_name, "added": self.added,
                "existing": self.existing, "decided": self.decided, "pending": self.pending, "skipped": self.skipped}


def _diff(policy: Policy, state: DidState) -> DidDiff:
    return diff_did(policy, state.did, state.rules, owner=rule_owner(state.did.scope), now=utc_now())


def ensure_block_rules(client: Any, scope: str, name: str, *, policy: Policy | None = None) -> EnsureResult:
    """Give a block the rules the policy wants for it now; add only what is missing.

    Idempotent: a rule Rucio already has (DuplicateRule) counts as existing. Deviating rules and rules
    the policy does not want are left alone here: that is `juno-policy plan|apply`'s business.
    Fraction rules (IN2P3's third) wait for finalize_block, when the block's size is final.
    """
    policy = policy or load_default_policy()
    state = fetch_did(client, scope, name)
    return _ensure(client, policy, state, {})


def ensure_blocks_rules(client: Any, scope: str, names: Iterable[str], *, new: Mapping[str, Mapping[str, Any]]
                        | None = None, policy: Policy | None = None, map_calls: CallMap | None = None
                        ) -> list[EnsureResult]:
    """ensure_block_rules for many blocks, in as few calls as it takes: a rule wanted by several blocks
    (the same RSE expression, copies, options) goes to Rucio once for all of them.

    new: blocks the caller created a moment ago, with the metadata it gave them; they have no rules and
    their state is not read back (new_block_state). The others are read with fetch_did.
    map_calls(fn, items) runs fn(client, item) for each item (the reads, then one call per rule): e.g. a
    thread pool, each thread with its own client. Without it, one after another with `client`.
    Results are in the order of `names`.
    """
    policy = policy or load_default_policy()
    new = new or {}
    names = list(names)
    run = map_calls or _one_by_one(client)
    old = [n for n in names if n not in new]
    fetched = dict(zip(old, run(lambda c, n: fetch_did(c, scope, n), old), strict=True)) if old else {}
    states = [new_block_state(scope, n, new[n]) if n in new else fetched[n] for n in names]
    return _ensure_many(client, policy, states, [{} for _ in states], run)


def _one_by_one(client: Any) -> CallMap:
    """The CallMap without threads: fn(client, item) for each item, in turn."""
    return lambda fn, items: [fn(client, item) for item in items]


def _ensure(client: Any, policy: Policy, state: DidState, decided: dict[str, str]) -> EnsureResult:
    [result] = _ensure_many(client, policy, [state], [decided])
    return result


def _ensure_many(client: Any, policy: Policy, states: list[DidState], decided: list[dict[str, str]],
                 map_calls: CallMap | None = None) -> list[EnsureResult]:
    results: list[EnsureResult] = []
    adds: list[tuple[EnsureResult, Action]] = []
    for state, decisions in zip(states, decided, strict=True):
        diff = _diff(policy, state)
        result = EnsureResult(scope=state.did.scope, name=state.did.name, class_name=diff.plan.class_name,
                              decided=decisions, plan=diff.plan,
                              pending=[p.rule_id for p in diff.plan.pending],
                              skipped=[s.rule_id for s in diff.plan.skipped])
        result.existing = sum(1 for m in diff.matches if m.rule is not None)
        results.append(result)
        adds += [(result, action) for action in diff.actions if action.kind == ADD]
    groups = _same_rule(adds)
    run = map_calls or _one_by_one(client)
    for group, ids in zip(groups, run(_add_group, groups), strict=True):
        for (result, _), rule_id in zip(group, ids, strict=True):
            if rule_id is None:
                result.existing += 1
            else:
                result.added.append(rule_id)
    return results


def _add_group(client: Any, group: list[tuple[Any, Action]]) -> list[str | None]:
    """One add_replication_rule call for a group of adds with the same options: the new rules' ids, in
    order (None: Rucio already had it). The call is one transaction: if one of the rules exists, nothing
    was added, and they go one by one."""
    if len(group) > 1:
        kwargs = dict(group[0][1].add_kwargs or {})
        kwargs["dids"] = [d for _, a in group for d in (a.add_kwargs or {})["dids"]]
        try:
            return [str(i) for i in client.add_replication_rule(**kwargs)]
        except DuplicateRule:
            pass
    return [_execute(client, action) for _, action in group]


def _same_rule(adds: list[tuple[Any, Action]]) -> list[list[tuple[Any, Action]]]:
    """Adds grouped by their rule options (all but the DIDs), at most _ADD_BATCH per group."""
    groups: dict[tuple[Any, ...], list[tuple[Any, Action]]] = {}
    for item in adds:
        kwargs = item[1].add_kwargs
        assert kwargs is not None
        groups.setdefault(tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "dids")), []).append(item)
    return [g[i:i + _ADD_BATCH] for g in groups.values() for i in range(0, len(g), _ADD_BATCH)]


def finalize_block(client: Any, scope: str, name: str, *, policy: Policy | None = None,
                   tallies: dict[str, dict[str, Tally]] | None = None) -> EnsureResult:
    """At close time: decide the block's pending fraction placements, record them, add the rules.

    The decision (placement.decide) compares the block with the tally of every decision recorded on
    the blocks of its class so far, is written on the block as metadata *before* any rule is added
    (a crash in between re-adds the same rules next time instead of deciding again), and is never
    changed: a recorded key is read, not decided again (the server refuses to change one, too).

    Concurrency (two ingesters, or an ingester and `juno-policy apply`, at once):
      - the same block: the decision is a pure function of the block's size and the tally, so both
        compute the same record and both writes succeed. If the tally changed in between and the two
        differ, the server refuses the second write ("placement decisions are final") or, in a
        narrower window, the last write wins; either way each finalizer re-reads the block after
        writing and adds the rules of the *stored* decision, so rules always follow the record.
      - different blocks: each decision misses the other's bytes in its tally. Tallies are sums of
        the records, not a chain, so the next decision counts both: the held share still converges to
        the fraction, the bound on its error grows by half the bytes decided concurrently. Records
        keep the tally each decision saw, so `explain` shows exactly what it was based on.
      No lock is taken: Rucio offers none to clients, and a lock held by a crashed ingester would
      stop every later decision.

    `tallies` (class → placement key → Tally), shared by the calls of one round of closing: read from
    Rucio once per class, then each decision is added to it, so the next block sees exactly the tally
    it would have read (reading every decided block of the class is most of a finalize's time, and it
    grows with the number of blocks; finalize_blocks does this).
    """
    policy = policy or load_default_policy()
    state = fetch_did(client, scope, name)
    if state.did.is_open:
        raise EngineError(f"{scope}:{name} is still open: close it (client.close) before finalize_block, "
                          "its size decides its placement")
    plan = recover_from_rules(plan_rules(policy, state.did),
                              placement_evidence(state.rules, rule_owner(scope), utc_now()))
    decided: dict[str, str] = {}
    if plan.pending:
        cached = tallies.get(plan.class_name or "") if tallies is not None else None
        seen = cached if cached is not None else placement_tallies(client, policy, plan.class_name,
                                                                    exclude=(scope, name))
        decided = _decide(client, policy, state, plan, seen)
        state = fetch_did(client, scope, name)  # the stored decision, whoever wrote it
        if tallies is not None:
            # What this block now holds, for the next block of the round (it was not in `seen`: its keys
            # were pending, so it had no record of them).
            merged = dict(seen)
            for key, tally in tallies_from_metas([{p.meta_key: state.did.meta.get(p.meta_key)
                                                   for p in plan.pending}]).items():
                merged[key] = _sum(merged.get(key), tally)
            tallies[plan.class_name or ""] = merged
    return _ensure(client, policy, state, decided)


def finalize_blocks(client: Any, scope: str, names: Iterable[str], *, policy: Policy | None = None
                    ) -> list[EnsureResult]:
    """finalize_block for several closed blocks (a round of closing), reading the tallies once."""
    policy = policy or load_default_policy()
    tallies: dict[str, dict[str, Tally]] = {}
    return [finalize_block(client, scope, name, policy=policy, tallies=tallies) for name in names]


def _sum(a: Tally | None, b: Tally) -> Tally:
    return Tally(b.total_bytes + (a.total_bytes if a else 0), b.placed_bytes + (a.placed_bytes if a else 0))


def _decide(client: Any, policy: Policy, state: DidState, plan: RulePlan, tallies: Mapping[str, Tally]
            ) -> dict[str, str]:
    """Record the pending decisions of one closed block; return what this call wrote."""
    did = state.did
    if did.bytes is None:
        did = replace(did, bytes=0)  # an empty dataset: Rucio reports no size
        plan = replace(plan, did=did)
    _, to_record = resolve_pending(plan, policy, tallies)
    if not to_record:
        return {}
    try:
        client.set_metadata_bulk(did.scope, did.name, to_record)
    except (AccessDenied, DatabaseException):
        # A concurrent finalizer may have recorded it first: the server then refuses ours ("placement
        # decisions are final") or the database its duplicate row. Theirs stands if it is there.
        stored = client.get_metadata(did.scope, did.name, plugin="ALL")
        if all(stored.get(key) is not None for key in to_record):
            return {}
        raise
    return {key: value for key, value in to_record.items() if key != SEAL_COLUMN}  # the records; the seal is theirs


def _execute(client: Any, action: Action) -> str | None:
    """Send one action to Rucio. For `add`: the new rule's id, or None when Rucio already has it."""
    if action.kind == ADD:
        assert action.add_kwargs is not None
        try:
            [rule_id] = client.add_replication_rule(**action.add_kwargs)
        except DuplicateRule:
            return None
        return str(rule_id)
    if action.kind == UPDATE:
        assert action.rucio_rule and action.options is not None
        client.update_replication_rule(action.rucio_rule, dict(action.options))
        return action.rucio_rule
    if action.kind == DELETE:
        assert action.rucio_rule
        if action.unlock_first:
            client.update_replication_rule(action.rucio_rule, {"locked": False})
        client.delete_replication_rule(action.rucio_rule, purge_replicas=None)
        return action.rucio_rule
    raise ValueError(f"_execute cannot run a {action.kind!r} action")
