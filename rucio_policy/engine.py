"""The replication engine: the policy's rules in Rucio, for one block (the ingester) or for all (the CLI).

    from rucio_policy import engine
    engine.ensure_block_rules(client, "raw", block)    # right after creating a block
    engine.ensure_blocks_rules(client, "raw", blocks)  # the same for many, each rule sent once for all
    engine.finalize_block(client, "raw", block)        # right after closing it
    p = engine.plan(client, policy)                    # every difference, over all blocks and containers
    engine.apply(client, p, prune=False)               # make them go away (deletions only with prune)
    engine.explain(client, "raw:block....", policy)    # why a DID has (or lacks) its rules

All of them go through `rule_diff.diff_did` (what must change) and `_execute` (how a change is sent),
so the ingester and `juno-policy apply` make exactly the same rules.

Rules the policy makes belong to the account that owns the data's scope (sites_sync.SCOPE_OWNERS:
raw → juno_ingest, rtraw/esd/mc → juno_prod), whoever runs the engine: Rucio refuses a second rule
with the same owner, DID, RSE expression and copies (DuplicateRule), which makes adding idempotent
across the ingester and coordinators. The server lets the ingest account add exactly the policy's
rules on raw, and coordinators (and admins) add them on behalf of the service accounts.

Placement decisions (IN2P3's third) and concurrency, see finalize_block.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from rucio.common.exception import AccessDenied, DatabaseException, DataIdentifierNotFound, DuplicateRule

from rucio_policy import naming
from rucio_policy.placement import SEAL_COLUMN, PlacementRecord, Tally, meta_key
from rucio_policy.replication import DataClass, Policy, load_policy
from rucio_policy.rse_catalog import load_catalog
from rucio_policy.rule_diff import (
    ACTION_ORDER,
    ADD,
    DECIDE,
    DELETE,
    UPDATE,
    Action,
    DidDiff,
    ExistingRule,
    diff_did,
    enum_text,
    placement_evidence,
)
from rucio_policy.rules import Did, RulePlan, plan_rules, recover_from_rules, resolve_pending, tallies_from_metas
from rucio_policy.sites_sync import SCOPE_OWNERS

POLICY_ENV = "JUNO_REPLICATION_POLICY"
DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "etc" / "replication.yaml"
_META_CHUNK = 500  # DIDs per get_metadata_bulk call (Rucio caps bulk calls at 1000 items)
# With a name filter matching at most this many collections, plan reads their rules one DID at a time
# instead of listing every rule of the scope (a test's blocks, one stream's month).
_PER_DID_LIMIT = 200

Progress = Callable[[int, int], None]  # (done, total)
# map_calls(fn, items) -> [fn(client, item) for each item], in order: how a caller lends its clients (threads)
CallMap = Callable[[Callable[[Any, Any], Any], list[Any]], list[Any]]


class EngineError(Exception):
    """The engine cannot do what was asked; the message says what, where and what to do."""


class DidNotFound(EngineError):
    """The DID the engine was asked about is not in Rucio."""


# -- the policy -----------------------------------------------------------------------------------


def policy_path() -> Path:
    return Path(os.environ.get(POLICY_ENV) or DEFAULT_POLICY)


_POLICY_CACHE: dict[tuple[str, int, int], Policy] = {}


def load_default_policy(path: Path | None = None) -> Policy:
    """The replication policy (JUNO_REPLICATION_POLICY or etc/replication.yaml), checked against the
    sites.yaml next to it; raises replication.PolicyInvalid. Reloaded when either file changes."""
    path = Path(path or policy_path())
    sites = path.parent / "sites.yaml"
    try:
        key = (str(path), path.stat().st_mtime_ns, sites.stat().st_mtime_ns if sites.is_file() else 0)
    except OSError as err:
        raise EngineError(f"cannot read the replication policy {path}: {err.strerror}; "
                          f"set {POLICY_ENV} to its path") from None
    if key not in _POLICY_CACHE:
        catalog = load_catalog(sites, str(sites)) if sites.is_file() else None
        _POLICY_CACHE.clear()  # one policy file per process in practice: keep only the newest
        _POLICY_CACHE[key] = load_policy(path, catalog, str(path))
    return _POLICY_CACHE[key]


def rule_owner(scope: str) -> str | None:
    """The account the policy's rules on `scope` belong to (None: whoever runs the engine)."""
    return SCOPE_OWNERS.get(scope)


def _now() -> datetime:
    # Rucio's dates are naive UTC.
    return datetime.now(UTC).replace(tzinfo=None)


# -- one DID --------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class DidState:
    """What Rucio knows about one DID that the policy cares about."""

    did: Did
    rules: tuple[ExistingRule, ...]


def _did_from_rucio(info: Mapping[str, Any], meta: Mapping[str, Any]) -> Did:
    return Did(scope=str(info["scope"]), name=str(info["name"]),
               did_type=naming.normalize_did_type(info.get("type") or info.get("did_type")) or "FILE",
               bytes=info.get("bytes"), is_open=info.get("open"), meta=dict(meta))


def fetch_did(client: Any, scope: str, name: str) -> DidState:
    """The DID, its metadata (all plugins) and its rules: three calls."""
    try:
        info = client.get_did(scope, name)
    except DataIdentifierNotFound:
        raise DidNotFound(f"{scope}:{name} does not exist in Rucio: check the name, or create it first") from None
    meta = client.get_metadata(scope, name, plugin="ALL")
    rules = tuple(ExistingRule.from_rucio(r) for r in client.list_did_rules(scope, name))
    return DidState(_did_from_rucio(info, meta), rules)


def _diff(policy: Policy, state: DidState) -> DidDiff:
    return diff_did(policy, state.did, state.rules, owner=rule_owner(state.did.scope), now=_now())


def ensure_block_rules(client: Any, scope: str, name: str, *, policy: Policy | None = None) -> EnsureResult:
    """Give a block the rules the policy wants for it now; add only what is missing.

    Idempotent: a rule Rucio already has (DuplicateRule) counts as existing. Deviating rules and rules
    the policy does not want are left alone here: that is `juno-policy plan|apply`'s business.
    Fraction rules (IN2P3's third) wait for finalize_block, when the block's size is final.
    """
    policy = policy or load_default_policy()
    state = fetch_did(client, scope, name)
    return _ensure(client, policy, state, {})


def new_block_state(scope: str, name: str, meta: Mapping[str, Any]) -> DidState:
    """The state of a dataset created a moment ago with `meta` (empty, open, no rules), without asking
    Rucio: what fetch_did would read back, as far as the policy looks (scope, name, type, size, open,
    metadata keys)."""
    return DidState(Did(scope=scope, name=name, did_type="DATASET", bytes=0, is_open=True, meta=dict(meta)), ())


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


def finalize_block(client: Any, scope: str, name: str, *, policy: Policy | None = None) -> EnsureResult:
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
    """
    policy = policy or load_default_policy()
    state = fetch_did(client, scope, name)
    if state.did.is_open:
        raise EngineError(f"{scope}:{name} is still open: close it (client.close) before finalize_block, "
                          "its size decides its placement")
    plan = recover_from_rules(plan_rules(policy, state.did), placement_evidence(state.rules, rule_owner(scope), _now()))
    decided: dict[str, str] = {}
    if plan.pending:
        tallies = placement_tallies(client, policy, plan.class_name, exclude=(scope, name))
        decided = _decide(client, policy, state, plan, tallies)
        state = fetch_did(client, scope, name)  # the stored decision, whoever wrote it
    return _ensure(client, policy, state, decided)


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


def placement_tallies(client: Any, policy: Policy, class_name: str | None,
                      exclude: tuple[str, str] | None = None) -> dict[str, Tally]:
    """Per placement key of the class, the tally of every decision recorded in Rucio."""
    data_class = _class(policy, class_name)
    if data_class is None:
        return {}
    metas: list[Mapping[str, Any]] = []
    for scope in _class_scopes(client, data_class):
        for key in _placement_keys(data_class):
            # Empty blocks are never placed and weigh nothing: leave their records out of the tally.
            search = [{key: "v*", f"{key}.ne": "*;bytes=0;*"}]
            names = [n for n in client.list_dids(scope, search, did_type="all") if (scope, n) != exclude]
            for meta in _metadata_bulk(client, scope, names):
                metas.append({k: v for k, v in meta.items() if k == key})
    return tallies_from_metas(metas)


def _class(policy: Policy, class_name: str | None) -> DataClass | None:
    return next((c for c in policy.classes if c.name == class_name), None)


def _placement_keys(data_class: DataClass) -> list[str]:
    return [meta_key(data_class.name, r.id) for r in data_class.rules if r.fraction is not None and r.fraction < 1]


def _class_scopes(client: Any, data_class: DataClass) -> list[str]:
    patterns = data_class.match.scopes
    if patterns and not any(c in p for p in patterns for c in "*?["):
        return list(patterns)
    existing = list(client.list_scopes())
    return [s for s in existing if not patterns or any(fnmatchcase(s, p) for p in patterns)]


def _metadata_bulk(client: Any, scope: str, names: list[str]) -> Iterator[dict[str, Any]]:
    for start in range(0, len(names), _META_CHUNK):
        chunk = [{"scope": scope, "name": n} for n in names[start:start + _META_CHUNK]]
        yield from client.get_metadata_bulk(chunk, plugin="JSON")


# -- executing actions ----------------------------------------------------------------------------


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


# -- plan: every difference, in bulk --------------------------------------------------------------


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
    now = _now()
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
        state = fetch_did(client, *did)
        diff = _diff(policy, state)
        if diff.plan.pending:
            continue
        result.actions = [a for a in result.actions if (a.scope, a.name) != did] + list(diff.actions)
        result.problems.extend(f"{did[0]}:{did[1]}: {p}" for p in diff.plan.problems)


# -- apply ----------------------------------------------------------------------------------------


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


_ADD_BATCH = 200  # DIDs per add_replication_rule call (one rule per DID, one transaction)


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
                                            placement_evidence(state.rules, rule_owner(action.scope), _now()))
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


# -- explain --------------------------------------------------------------------------------------


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


def replica_states(client: Any, did: Did) -> dict[str, dict[str, int]]:
    """RSE → replica state → number of files. Datasets and files: from their file replicas; containers:
    per dataset summaries (Rucio's dataset replica table), so a stream container stays cheap."""
    counts: dict[str, dict[str, int]] = {}
    if did.did_type == "CONTAINER":
        for child in client.list_content(did.scope, did.name):
            if naming.normalize_did_type(child.get("type")) == "CONTAINER":
                sub = replica_states(client, Did(str(child["scope"]), str(child["name"]), "CONTAINER"))
                for rse, states in sub.items():
                    for replica_state, n in states.items():
                        counts.setdefault(rse, {})[replica_state] = counts.get(rse, {}).get(replica_state, 0) + n
                continue
            for row in client.list_dataset_replicas(str(child["scope"]), str(child["name"])):
                states = counts.setdefault(str(row["rse"]), {})
                available = int(row.get("available_length") or 0)
                states["AVAILABLE"] = states.get("AVAILABLE", 0) + available
                missing = int(row.get("length") or 0) - available
                if missing > 0:
                    states["NOT AVAILABLE"] = states.get("NOT AVAILABLE", 0) + missing
        return counts
    for replica in client.list_replicas([{"scope": did.scope, "name": did.name}], all_states=True):
        for rse, replica_state in (replica.get("states") or {}).items():
            text = enum_text(replica_state)
            counts.setdefault(str(rse), {})[text] = counts.setdefault(str(rse), {}).get(text, 0) + 1
    return counts
