"""The replication engine: the policy's rules in Rucio, for one block (the ingester) or for all (the CLI).

    from rucio_policy import engine
    engine.ensure_block_rules(client, "raw", block)    # right after creating a block
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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from rucio.common.exception import AccessDenied, DataIdentifierNotFound, DuplicateRule

from rucio_policy import naming
from rucio_policy.placement import PLACEMENT_META_PREFIX, PlacementRecord, Tally
from rucio_policy.replication import DataClass, Policy, load_policy
from rucio_policy.rse_catalog import load_catalog
from rucio_policy.rule_diff import ADD, DECIDE, DELETE, UPDATE, Action, DidDiff, ExistingRule, diff_did
from rucio_policy.rules import Did, RulePlan, plan_rules, resolve_pending, tallies_from_metas
from rucio_policy.sites_sync import SCOPE_OWNERS

POLICY_ENV = "JUNO_REPLICATION_POLICY"
DEFAULT_POLICY = Path(__file__).resolve().parents[1] / "etc" / "replication.yaml"
_META_CHUNK = 500  # DIDs per get_metadata_bulk call (Rucio caps bulk calls at 1000 items)

Progress = Callable[[int, int], None]  # (done, total)


class EngineError(Exception):
    """The engine cannot do what was asked; the message says what, where and what to do."""


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
    return datetime.now(timezone.utc).replace(tzinfo=None)


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
        raise EngineError(f"{scope}:{name} does not exist in Rucio: check the name, or create it first") from None
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


def _ensure(client: Any, policy: Policy, state: DidState, decided: dict[str, str]) -> EnsureResult:
    diff = _diff(policy, state)
    result = EnsureResult(scope=state.did.scope, name=state.did.name, class_name=diff.plan.class_name,
                          decided=decided, plan=diff.plan,
                          pending=[p.rule_id for p in diff.plan.pending],
                          skipped=[s.rule_id for s in diff.plan.skipped])
    result.existing = sum(1 for m in diff.matches if m.rule is not None)
    for action in diff.actions:
        if action.kind != ADD:
            continue
        rule_id = _execute(client, action)
        if rule_id is None:
            result.existing += 1
        else:
            result.added.append(rule_id)
    return result


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
    plan = plan_rules(policy, state.did)
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
    except AccessDenied as err:
        if "placement decisions are final" not in str(err):
            raise
        return {}  # somebody recorded it first: theirs stands (the caller re-reads it)
    return to_record


def placement_tallies(client: Any, policy: Policy, class_name: str | None,
                      exclude: tuple[str, str] | None = None) -> dict[str, Tally]:
    """Per placement key of the class, the tally of every decision recorded in Rucio."""
    data_class = _class(policy, class_name)
    if data_class is None:
        return {}
    metas: list[Mapping[str, Any]] = []
    for scope in _class_scopes(client, data_class):
        for key in _placement_keys(data_class):
            names = [n for n in client.list_dids(scope, [{key: "v*"}], did_type="all")
                     if (scope, n) != exclude]
            for meta in _metadata_bulk(client, scope, names):
                metas.append({k: v for k, v in meta.items() if k == key})
    return tallies_from_metas(metas)


def _class(policy: Policy, class_name: str | None) -> DataClass | None:
    return next((c for c in policy.classes if c.name == class_name), None)


def _placement_keys(data_class: DataClass) -> list[str]:
    from rucio_policy.placement import meta_key

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
