"""What the engine reads from Rucio about DIDs: one DID with its metadata and rules, metadata in bulk,
the placement tallies of a class, replica states (thin adapters over the Rucio client)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from rucio.common.exception import DataIdentifierNotFound

from rucio_policy import naming
from rucio_policy.placement import Tally, meta_key
from rucio_policy.policy_cache import DidNotFound
from rucio_policy.replication import DataClass, Policy
from rucio_policy.rule_diff import (
    ExistingRule,
    enum_text,
)
from rucio_policy.rules import Did, tallies_from_metas

_META_CHUNK = 500  # DIDs per get_metadata_bulk call (Rucio caps bulk calls at 1000 items)


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


def new_block_state(scope: str, name: str, meta: Mapping[str, Any]) -> DidState:
    """The state of a dataset created a moment ago with `meta` (empty, open, no rules), without asking
    Rucio: what fetch_did would read back, as far as the policy looks (scope, name, type, size, open,
    metadata keys)."""
    return DidState(Did(scope=scope, name=name, did_type="DATASET", bytes=0, is_open=True, meta=dict(meta)), ())


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
