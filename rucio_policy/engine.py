"""The replication engine: the policy's rules in Rucio, for one block (the ingester) or for all (the CLI).

    from rucio_policy import engine
    engine.ensure_block_rules(client, "raw", block)    # right after creating a block
    engine.ensure_blocks_rules(client, "raw", blocks)  # the same for many, each rule sent once for all
    engine.finalize_block(client, "raw", block)        # right after closing it
    p = engine.plan(client, policy)                    # every difference, over all blocks and containers
    engine.apply(client, p, prune=False)               # make them go away (deletions only with prune)
    engine.explain(client, "raw:block....", policy)    # why a DID has (or lacks) its rules

All of them go through `rule_diff.diff_did` (what must change) and `ensure._execute` (how a change is
sent), so the ingester and `juno-policy apply` make exactly the same rules.

This module is the entry point; the work is in one module per responsibility:
    policy_cache    which policy file, loaded once per change; the engine's errors
    rucio_reads     what the engine reads from Rucio (a DID with metadata and rules, tallies, replicas)
    ensure          ensure_block_rules, ensure_blocks_rules, finalize_block(s); how a change is sent
    plan_reader     plan: every difference, read in bulk
    apply_executor  apply: send a plan's changes
    explain         why a DID has (or lacks) its rules

Rules the policy makes belong to the account that owns the data's scope (sites_sync.SCOPE_OWNERS:
raw → juno_ingest, rtraw/esd/mc → juno_prod), whoever runs the engine: Rucio refuses a second rule
with the same owner, DID, RSE expression and copies (DuplicateRule), which makes adding idempotent
across the ingester and coordinators. The server lets the ingest account add exactly the policy's
rules on raw, and coordinators (and admins) add them on behalf of the service accounts.

Placement decisions (IN2P3's third) and concurrency, see finalize_block.
"""

from __future__ import annotations

from rucio_policy.apply_executor import ApplyResult, apply
from rucio_policy.ensure import EnsureResult, ensure_block_rules, ensure_blocks_rules, finalize_block, finalize_blocks
from rucio_policy.explain import Explanation, explain, parse_did
from rucio_policy.plan_reader import Plan, plan
from rucio_policy.policy_cache import (
    DEFAULT_POLICY,
    POLICY_ENV,
    CallMap,
    DidNotFound,
    EngineError,
    Progress,
    load_default_policy,
    policy_path,
    rule_owner,
)
from rucio_policy.rucio_reads import DidState, fetch_did, new_block_state, placement_tallies, replica_states
from rucio_policy.rule_diff import ADD, DECIDE, DELETE, UPDATE

__all__ = [
    "ADD", "DECIDE", "DELETE", "UPDATE",
    "DEFAULT_POLICY", "POLICY_ENV", "ApplyResult", "CallMap", "DidNotFound", "DidState", "EngineError", "EnsureResult",
    "Explanation", "Plan", "Progress", "apply", "ensure_block_rules", "ensure_blocks_rules", "explain", "fetch_did",
    "finalize_block", "finalize_blocks", "load_default_policy", "new_block_state", "parse_did", "placement_tallies",
    "plan", "policy_path", "replica_states", "rule_owner",
]
