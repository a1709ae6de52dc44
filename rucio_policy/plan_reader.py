"""plan: every difference between the policy and Rucio over the blocks and containers it covers, read
in bulk (rules per scope, metadata in chunks; a narrow name filter reads DID by DID)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

from juno_common.clock import utc_now
from rucio_policy import naming
from rucio_policy.ensure import _diff
from rucio_policy.policy_cache import Progress, rule_owner
from rucio_policy.replication import Policy
from rucio_policy.rucio_reads import _META_CHUNK, _class_scopes, _placement_keys, fetch_did
from rucio_policy.rule_diff import (
    ACTION_ORDER,
    ADD,
    DECIDE,
    DELETE,
    UPDATE,
    Action,
    ExistingRule,
    diff_did,
)
from rucio_policy.rules import Did

# With a name filter matching at most this many collections, plan reads their rules one DID at a time
# instead of listing every rule of the scope (a test's blocks, one stream's month).
_PER_DID_LIMIT = 200


@dataclass
class Plan:
    """The difference between the policy and Rucio's rules, over every block and container it covers."""

    policy_source: str
    scopes: list[str]
    name_filter: str | None = None
    actions: list[Action] = field(default_factory=list)
    dids: int = 0  # collections examined (plus DIDs that only appear through a rule)
    classified: int = 0  # of them, in a data class of the policy
    rules_listed: int = 0  # Rucio rules read
    in_sync: int = 0  # the policy's rules Rucio has as the policy wants them
    others: int = 0  # rules on those DIDs the policy does not manage (no juno-policy tag)
    pending: int = 0  # open blocks whose fraction placement is decided when they close
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # where the seconds went: read, diff

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)

    @property
    def changes(self) -> list[Action]:
        """What `apply` does without --prune."""
        return [a for a in self.actions if a.kind != DELETE]

    @property
    def deletions(self) -> list[Action]:
        return [a for a in self.actions if a.kind == DELETE]

    def summary(self) -> str:
        return (f"{self.dids} DIDs ({self.classified} in a policy class), {self.rules_listed} rules read: "
                f"{self.in_sync} in sync, {self.count(ADD)} to add, {self.count(UPDATE)} to update, "
                f"{self.count(DECIDE)} placements to decide, {self.count(DELETE)} not wanted (deleted only with "
                f"--prune); {self.pending} open blocks await their placement; {self.others} rules of others")

    def as_dict(self) -> dict[str, Any]:
        return {"policy": self.policy_source, "scopes": self.scopes, "name_filter": self.name_filter,
                "dids": self.dids,
                "classified": self.classified, "rules_listed": self.rules_listed, "in_sync": self.in_sync,
                "others": self.others, "pending": self.pending, "seconds": round(self.seconds, 3),
                "timings": self.timings,
                "counts": {k: self.count(k) for k in (ADD, UPDATE, DECIDE, DELETE)},
                "actions": [a.as_dict() for a in self.actions], "problems": self.problems}


def _scopes(client: Any, policy: Policy, scope_filter: str | Iterable[str] | None) -> list[str]:
    wanted: set[str] = set()
    for data_class in policy.classes:
        wanted.update(_class_scopes(client, data_class))
    if scope_filter is not None:
        patterns = [scope_filter] if isinstance(scope_filter, str) else list(scope_filter)
        wanted = {s for s in wanted if any(fnmatchcase(s, p) for p in patterns)}
    return sorted(wanted)


def _policy_meta(client: Any, policy: Policy, scope: str, name_filter: str | None
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, bool]]]:
    """What the policy reads from the metadata of every DID of `scope`, with a few searches instead of a
    call per DID: the values of the keys classes match on, and the verdict of each placement record
    (Rucio returns names, not values, so one search per value and per verdict; reading every record
    in bulk costs the server a query per DID)."""
    meta: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, dict[str, bool]] = {}
    classes = [c for c in policy.classes
               if not c.match.scopes or any(fnmatchcase(scope, p) for p in c.match.scopes)]
    for data_class in classes:
        for key, values in data_class.match.meta:
            for value in values:
                for name in client.list_dids(scope, [{key: value, **_name_search(name_filter)}], did_type="all"):
                    meta.setdefault(name, {})[key] = value
        for key in _placement_keys(data_class):
            for verdict, placed in (("placed", True), ("skipped", False)):
                search = [{key: f"v*;{verdict};*", **_name_search(name_filter)}]
                for name in client.list_dids(scope, search, did_type="all"):
                    verdicts.setdefault(name, {})[key] = placed
    return meta, verdicts


@dataclass
class _ScopeView:
    """What plan reads of one scope: its collections, what the policy reads of them, their rules."""

    dids: dict[str, Did]  # name → the DID as the policy sees it (type, class metadata, open state if needed)
    verdicts: dict[str, dict[str, bool]]  # name → placement key → placed?
    rules: dict[str, list[ExistingRule]]  # name → its rules
    rules_listed: int = 0


def _read_scope(client: Any, policy: Policy, scope: str, name_filter: str | None) -> _ScopeView:
    if name_filter:
        view = _collections(client, policy, scope, name_filter)
        if len(view.dids) <= _PER_DID_LIMIT:
            # A few DIDs (one stream, one block): their own rules, not the whole scope's.
            for name in view.dids:
                view.rules[name] = [ExistingRule.from_rucio(r) for r in client.list_did_rules(scope, name)]
            view.rules_listed = sum(len(r) for r in view.rules.values())
            return view
        rules = _scope_rules(client, scope, name_filter)
    else:
        # The collections, their metadata and open states are read while the rules stream in: the
        # server answers both at once (the client's HTTP session pools its connections, so one client
        # serves both threads), and the rule listing is what takes the time.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_collections, client, policy, scope, None)
            rules = _scope_rules(client, scope, None)
            view = pending.result()
    view.rules = rules
    view.rules_listed = sum(len(r) for r in rules.values())
    for name, found in rules.items():  # DIDs that only appear through a rule (files, say)
        if name not in view.dids:
            view.dids[name] = Did(scope, name, naming.normalize_did_type(found[0].did_type) or "FILE")
    return view


def _scope_rules(client: Any, scope: str, name_filter: str | None) -> dict[str, list[ExistingRule]]:
    rules: dict[str, list[ExistingRule]] = {}
    for row in client.list_replication_rules({"scope": scope}):
        if name_filter and not fnmatchcase(str(row["name"]), name_filter):
            continue
        rule = ExistingRule.from_rucio(row)
        rules.setdefault(rule.name, []).append(rule)
    return rules


def _collections(client: Any, policy: Policy, scope: str, name_filter: str | None) -> _ScopeView:
    """The scope's collections with what the policy reads of them: the metadata its classes match on,
    placement verdicts, and, for the DIDs whose placement is undecided, whether they are still open
    (decided when they close) and their size (Rucio's DID listings say neither)."""
    meta, verdicts = _policy_meta(client, policy, scope, name_filter)
    dids: dict[str, Did] = {}
    for did_type in ("dataset", "container"):
        for name in client.list_dids(scope, [_name_search(name_filter)], did_type=did_type):
            dids[str(name)] = Did(scope, str(name), did_type.upper(), meta=meta.get(str(name), {}))
    undecided = [did for did in dids.values() if _undecided(policy, did, verdicts.get(did.name, {}))]
    for start in range(0, len(undecided), _META_CHUNK):
        chunk = [{"scope": scope, "name": d.name} for d in undecided[start:start + _META_CHUNK]]
        for row in client.get_metadata_bulk(chunk, plugin="DID_COLUMN"):
            name = str(row["name"])
            dids[name] = replace(dids[name], is_open=bool(row.get("is_open")), bytes=row.get("bytes"))
    return _ScopeView(dids, verdicts, {})


def _undecided(policy: Policy, did: Did, verdicts: Mapping[str, bool]) -> bool:
    """The DID is in a class with a fraction rule whose decision it does not carry."""
    data_class = policy.class_for(did.scope, did.name, did.did_type, did.meta)
    return data_class is not None and any(key not in verdicts for key in _placement_keys(data_class))


def _name_search(name_filter: str | None) -> dict[str, str]:
    return {"name": name_filter} if name_filter else {}


def plan(client: Any, policy: Policy, *, scope_filter: str | Iterable[str] | None = None,
         name_filter: str | None = None, progress: Progress | None = None) -> Plan:
    """Compare Rucio with the policy: per scope, one listing of its rules, one of its collections and a
    few metadata searches, then the same per-DID diff the ingester uses.

    scope_filter: scope name(s) or glob(s); name_filter: a DID name glob (e.g. one stream's blocks,
    "block.JUNODAQ.global_trigger.*"). Without them: every DID of every scope the policy covers.
    With a name filter that matches few collections, only their own rules are read (rules on files
    that match it are then not seen).
    """
    started = time.perf_counter()
    scopes = _scopes(client, policy, scope_filter)
    result = Plan(policy_source=policy.source, scopes=scopes, name_filter=name_filter)
    now = utc_now()
    timings = dict.fromkeys(("read", "diff"), 0.0)
    for index, scope in enumerate(scopes):
        mark = time.perf_counter()
        view = _read_scope(client, policy, scope, name_filter)
        timings["read"] += time.perf_counter() - mark
        mark = time.perf_counter()
        result.rules_listed += view.rules_listed
        owner = rule_owner(scope)
        for name, did in view.dids.items():
            rules = view.rules.get(name, ())
            if not rules and policy.class_for(scope, name, did.did_type, did.meta) is None:
                continue  # no class, no rules: nothing to say (most user data)
            diff = diff_did(policy, did, rules, owner=owner, now=now, verdicts=view.verdicts.get(name))
            result.dids += 1
            result.classified += diff.plan.class_name is not None
            result.in_sync += diff.in_sync
            result.others += len(diff.others)
            result.pending += bool(diff.plan.pending) and did.is_open is not False
            result.actions.extend(diff.actions)
            result.problems.extend(f"{scope}:{name}: {p}" for p in diff.plan.problems)
        timings["diff"] += time.perf_counter() - mark
        if progress:
            progress(index + 1, len(scopes))
    _drop_sealed_decisions(client, policy, result)
    result.actions.sort(key=lambda a: (a.scope, a.name, ACTION_ORDER[a.kind]))
    result.seconds = time.perf_counter() - started
    result.timings = {key: round(value, 3) for key, value in timings.items()}
    return result


def _drop_sealed_decisions(client: Any, policy: Policy, result: Plan) -> None:
    """A closed block without its record may have lost it (anyone can delete JSON metadata in Rucio 41):
    read the few such blocks whole; a sealed one is reported, never decided again."""
    for did in sorted({(a.scope, a.name) for a in result.actions if a.kind == DECIDE}):
        diff = _diff(policy, fetch_did(client, *did))
        if diff.plan.pending:
            continue
        result.actions = [a for a in result.actions if (a.scope, a.name) != did] + list(diff.actions)
        result.problems.extend(f"{did[0]}:{did[1]}: {p}" for p in diff.plan.problems)
