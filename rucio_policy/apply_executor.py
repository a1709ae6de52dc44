"""apply: send a plan's changes: pending placements decided block by block in order, rules added in
batches, updates and (with prune) deletions; every failure recorded with its action."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from juno_common.clock import utc_now
from rucio_policy import naming
from rucio_policy.ensure import _decide, _diff, _execute, _same_rule
from rucio_policy.placement import PlacementRecord, Tally
from rucio_policy.plan_reader import Plan
from rucio_policy.policy_cache import Progress, load_default_policy, rule_owner
from rucio_policy.replication import Policy
from rucio_policy.rucio_reads import fetch_did, placement_tallies
from rucio_policy.rule_diff import (
    ADD,
    DECIDE,
    DELETE,
    UPDATE,
    Action,
    placement_evidence,
)
from rucio_policy.rules import plan_rules, recover_from_rules


@dataclass
class ApplyResult:
    dry_run: bool = False
    added: list[str] = field(default_factory=list)  # new rule ids (dry run: nothing)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    decided: dict[str, dict[str, str]] = field(default_factory=dict)  # DID → placement metadata recorded
    existing: int = 0  # adds Rucio already had (DuplicateRule)
    kept: list[Action] = field(default_factory=list)  # rules not wanted, kept (no --prune)
    failed: list[tuple[Action, str]] = field(default_factory=list)
    would: list[Action] = field(default_factory=list)  # dry run: what would be sent

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.deleted or self.decided)

    def summary(self) -> str:
        if self.dry_run:
            return (f"dry run: would send {len(self.would)} change(s); nothing sent"
                    + (f"; {len(self.kept)} rule(s) not wanted kept (--prune deletes them)" if self.kept else ""))
        if not self.changed and not self.failed:
            text = "no change: Rucio already matches the policy"
        else:
            text = (f"added {len(self.added)}, updated {len(self.updated)}, deleted {len(self.deleted)} rule(s), "
                    f"decided {len(self.decided)} placement(s)")
        if self.existing:
            text += f"; {self.existing} already existed"
        if self.kept:
            text += f"; kept {len(self.kept)} rule(s) the policy does not want (delete them with --prune)"
        if self.failed:
            text += f"; {len(self.failed)} FAILED"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "changed": self.changed, "added": self.added, "updated": self.updated,
                "deleted": self.deleted, "decided": self.decided, "existing": self.existing,
                "kept": [a.as_dict() for a in self.kept],
                "failed": [{**a.as_dict(), "error": e} for a, e in self.failed],
                "would": [a.as_dict() for a in self.would]}




def apply(client: Any, plan: Plan, *, prune: bool = False, dry_run: bool = False,
          progress: Progress | None = None, policy: Policy | None = None) -> ApplyResult:
    """Make Rucio match the plan: decide pending placements, add missing rules, fix deviating ones;
    delete rules the policy does not want only with `prune`. Each failure is recorded and the rest
    goes on (a cron run fixes what it can). `dry_run` sends nothing and lists what would be sent."""
    result = ApplyResult(dry_run=dry_run)
    deletions = [a for a in plan.actions if a.kind == DELETE]
    if not prune:
        result.kept = deletions
        deletions = []
    decides = [a for a in plan.actions if a.kind == DECIDE]
    adds = [a for a in plan.actions if a.kind == ADD]
    updates = [a for a in plan.actions if a.kind == UPDATE]
    total = len(decides) + len(adds) + len(updates) + len(deletions)
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    if dry_run:
        result.would = decides + adds + updates + deletions
        return result
    if decides:
        policy = policy or load_default_policy(Path(plan.policy_source))
        brought = _decide_all(client, policy, decides, result, tick)
        adds += brought
        total += len(brought)
    _add_all(client, adds, result, tick)
    for action in updates + deletions:
        try:
            _execute(client, action)
        except Exception as err:  # noqa: BLE001 - recorded per action and reported; the others go on
            result.failed.append((action, _error_text(err)))
        else:
            (result.updated if action.kind == UPDATE else result.deleted).append(action.rucio_rule or "")
        tick()
    return result


def _error_text(err: Exception) -> str:
    text = str(err).replace("Details: ", "").replace("\n", " ").strip()
    return f"{type(err).__name__}: {text}"


def _add_all(client: Any, adds: list[Action], result: ApplyResult, tick: Callable[[int], None]) -> None:
    """Adds with the same rule options go out together (one rule per DID, up to _ADD_BATCH per call)."""
    for group in _same_rule([(None, a) for a in adds]):
        batch = [a for _, a in group]
        kwargs = dict(batch[0].add_kwargs or {})
        kwargs["dids"] = [d for a in batch for d in (a.add_kwargs or {})["dids"]]
        try:
            ids = client.add_replication_rule(**kwargs)
        except Exception:  # noqa: BLE001 - the batch is one transaction: retry one by one to find the culprit
            for action in batch:
                try:
                    rule_id = _execute(client, action)
                except Exception as err:  # noqa: BLE001 - recorded per action
                    result.failed.append((action, _error_text(err)))
                else:
                    if rule_id is None:
                        result.existing += 1
                    else:
                        result.added.append(rule_id)
        else:
            result.added.extend(str(i) for i in ids)
        tick(len(batch))


def _block_order(action: Action) -> tuple[str, str]:
    """Decisions are taken in the blocks' order (receiving day, then name), as placement.replay assumes."""
    try:
        day = naming.parse_block(action.name).day.isoformat()
    except naming.NamingError:
        day = ""
    return day, action.name


def _decide_all(client: Any, policy: Policy, decides: list[Action], result: ApplyResult,
                tick: Callable[[int], None]) -> list[Action]:
    """Decide the pending placements of closed blocks (the finalize_block path); return the adds they bring."""
    new_adds: list[Action] = []
    tallies: dict[str | None, dict[str, Tally]] = {}
    seen: set[tuple[str, str]] = set()
    for action in sorted(decides, key=_block_order):
        tick()
        if (action.scope, action.name) in seen:
            continue  # one block with several fraction rules: decided together
        seen.add((action.scope, action.name))
        try:
            state = fetch_did(client, action.scope, action.name)
            block_plan = recover_from_rules(plan_rules(policy, state.did),
                                            placement_evidence(state.rules, rule_owner(action.scope), utc_now()))
            if not block_plan.pending or state.did.is_open:
                continue
            if block_plan.class_name not in tallies:
                tallies[block_plan.class_name] = placement_tallies(client, policy, block_plan.class_name)
            class_tallies = tallies[block_plan.class_name]
            recorded = _decide(client, policy, state, block_plan, class_tallies)
            state = fetch_did(client, action.scope, action.name)
        except Exception as err:  # noqa: BLE001 - recorded per block
            result.failed.append((action, _error_text(err)))
            continue
        if recorded:
            result.decided[action.did] = recorded
        for item in block_plan.pending:  # count the stored decision (ours or a concurrent one) from now on
            stored = state.did.meta.get(item.meta_key)
            if stored is not None:
                record = PlacementRecord.from_meta(str(stored))
                class_tallies[item.meta_key] = class_tallies.get(item.meta_key, Tally()).add(record.block_bytes,
                                                                                             record.placed)
        new_adds += [a for a in _diff(policy, state).actions if a.kind == ADD]
    return new_adds
