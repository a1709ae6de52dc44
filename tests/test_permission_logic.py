"""JUNO's permission decisions (rucio_policy.access) for every role, without a Rucio server.

The kwargs are shaped the way rucio.gateway.permission hands them to the policy (InternalScope,
InternalAccount, rse_id, ...); the facts a server would read from its database come from a fake.
The same matrix against the live server is a grid test.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
from rucio.common.types import InternalAccount, InternalScope

from rucio_policy import access
from rucio_policy.access import Role, RseFacts, RuleFacts, decide, role_of
from rucio_policy.replication import load_policy
from rucio_policy.rse_expr import evaluate

REPO = Path(__file__).resolve().parents[1]
RAW_FILE = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"
BLOCK = "block.JUNODAQ.global_trigger.20251009"
MONTH = "stream.JUNODAQ.global_trigger.202510"
RAW_IN_BLOCK = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.001.dat"  # already in BLOCK
OTHER_BLOCK = "block.JUNODAQ.global_trigger.20251010"
RAW = {"scope": "raw", "name": RAW_FILE, "bytes": 1, "adler32": "0000000a"}
ESD = {"scope": "esd", "name": "x.esd", "bytes": 1, "adler32": "0000000a"}
OWN = {"scope": "user.analyst1", "name": "out.root", "bytes": 1, "adler32": "0000000a"}

ACCOUNTS: dict[str, dict[str, Any]] = {
    "root": {},
    "ops": {"admin": True},
    "juno_ingest": {"role": "ingest"},
    "juno_prod": {"role": "production"},
    "jcoord": {"role": "coordinator"},
    "analyst1": {"role": "analyst"},
    "analyst2": {"role": "analyst"},
    "physgroup": {"role": "analyst"},
    "newcomer": {},
}
RSES = {  # rse_id -> facts
    "id-ihep-eos": RseFacts("IHEP-EOS", "DISK", "IHEP"),
    "id-ihep-tape": RseFacts("IHEP-TAPE", "TAPE", "IHEP"),
    "id-cnaf-disk": RseFacts("CNAF-DISK", "DISK", "CNAF"),
    "id-cnaf-tape": RseFacts("CNAF-TAPE", "TAPE", "CNAF"),
    "id-in2p3-disk": RseFacts("IN2P3-DISK", "DISK", "IN2P3"),
}
RULES = {
    "r-raw-cnaf": RuleFacts("r-raw-cnaf", "juno_ingest", "raw", BLOCK, "CNAF-DISK", False),
    "r-raw-prod": RuleFacts("r-raw-prod", "juno_prod", "raw", BLOCK, "IN2P3-DISK", False),
    "r-esd-prod": RuleFacts("r-esd-prod", "juno_prod", "esd", "esd.set", "CNAF-DISK", False),
    "r-a1": RuleFacts("r-a1", "analyst1", "user.analyst1", "mine", "CNAF-DISK", False),
}


class FakeFacts:
    def __init__(self, policy_configured: bool = True, meta: Mapping[tuple[str, str, str], str] | None = None):
        self.shapes = load_policy(REPO / "etc" / "replication.yaml", None).rule_shapes("raw") \
            if policy_configured else None
        self.meta = dict(meta or {})

    def attributes(self, account: str) -> Mapping[str, Any]:
        return ACCOUNTS.get(account, {})

    def rse(self, rse_id: str) -> RseFacts | None:
        return RSES.get(rse_id)

    def resolve(self, expression: str) -> list[RseFacts]:
        table = {r.name: {r.name: True, "rse_type": r.rse_type, "site": r.site} for r in RSES.values()}
        names = evaluate(expression, table)
        return [r for r in RSES.values() if r.name in names]

    def rule(self, rule_id: str) -> RuleFacts | None:
        return RULES.get(rule_id)

    def owns_scope(self, account: str, scope: str) -> bool:
        return (account, scope) == ("physgroup", "group.physics")

    def did_meta(self, scope: str, name: str, key: str) -> str | None:
        return self.meta.get((scope, name, key))

    def policy_rule_shapes(self, scope: str) -> frozenset[tuple[str, int]] | None:
        return self.shapes

    def raw_blocks(self, files: list[str]) -> dict[str, str]:
        return {f: BLOCK for f in files if f == RAW_IN_BLOCK}


def as_server(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Convert like rucio.gateway.permission.has_permission does before calling the policy."""
    kwargs = deepcopy(kwargs)
    if "scope" in kwargs:
        kwargs["scope"] = InternalScope(kwargs["scope"])
    for attachment in kwargs.get("attachments", []):
        attachment["scope"] = InternalScope(attachment["scope"])
    if "account" in kwargs and kwargs["account"] is not None:
        kwargs["account"] = InternalAccount(kwargs["account"])
    for rule in kwargs.get("rules", []):
        rule["account"] = InternalAccount(rule["account"])
    for did in kwargs.get("dids", []):
        did["scope"] = InternalScope(did["scope"])
        for rule in did.get("rules", []):
            rule["account"] = InternalAccount(rule["account"])
    return kwargs


def check(issuer: str, action: str, kwargs: dict[str, Any], facts: FakeFacts | None = None) -> access.Decision:
    return decide(InternalAccount(issuer), action, as_server(kwargs), facts or FakeFacts())


def add_did(scope: str, name: str, did_type: str = "DATASET", **extra: Any) -> dict[str, Any]:
    return {"scope": scope, "name": name, "type": did_type, "issuer": "x", "account": None, "statuses": {},
            "meta": {}, "rules": [], "lifetime": None, **extra}


def add_rule(dids: list[tuple[str, str]], expression: str, account: str, copies: int = 1,
             locked: bool = False, **options: Any) -> dict[str, Any]:
    return {"dids": [{"scope": s, "name": n} for s, n in dids], "copies": copies, "rse_expression": expression,
            "weight": None, "lifetime": None, "grouping": "DATASET", "account": account, "locked": locked,
            "subscription_id": None, "source_replica_expression": None, "notify": None, "activity": None,
            "purge_replicas": False, "ignore_availability": False, "comment": None, "ask_approval": False,
            "asynchronous": False, "delay_injection": None, "priority": 3, "split_container": False, "meta": None,
            **options}


def attach(scope: str, name: str, children: list[tuple[str, str]], rse_id: str | None = None) -> dict[str, Any]:
    attachment: dict[str, Any] = {"dids": [{"scope": s, "name": n, "bytes": 1, "adler32": "0000000a"}
                                           for s, n in children]}
    if rse_id:
        attachment["rse"], attachment["rse_id"] = "X", rse_id
    return {"scope": scope, "name": name, "attachment": attachment}


def test_roles_from_account_attributes() -> None:
    assert role_of("root", {}) is Role.ROOT
    assert role_of("ops", {"admin": "0"}) is Role.ADMIN  # presence counts, as in Rucio's generic policy
    assert role_of("juno_ingest", {"role": "ingest"}) is Role.INGEST
    assert role_of("juno_prod", {"role": "Production "}) is Role.PRODUCTION
    assert role_of("jcoord", {"role": "coordinator"}) is Role.COORDINATOR
    assert role_of("analyst1", {"role": "analyst"}) is Role.ANALYST
    assert role_of("juno_ingest", {}) is Role.NONE  # the name alone grants nothing
    assert role_of("x", {"role": "superuser"}) is Role.NONE  # an unknown role neither


# Each row: issuer, action, kwargs, expected (True/False/None), part of the denial message.
MATRIX = [
    # -- ingest: raw only, IHEP only, policy rules only
    ("juno_ingest", "add_did", add_did("raw", BLOCK), True, ""),
    ("juno_ingest", "add_did", add_did("raw", MONTH, "CONTAINER"), True, ""),
    ("juno_ingest", "add_did", add_did("raw", "block.today"), False, "not a raw block name: expected block.<detector>"),
    ("juno_ingest", "add_did", add_did("esd", "x"), False, "writes only in scope raw"),
    ("juno_ingest", "add_did", add_did("raw", BLOCK, lifetime=86400), False, "never expire"),
    ("juno_ingest", "add_replicas", {"rse": "IHEP-EOS", "rse_id": "id-ihep-eos", "files": [RAW]}, True, ""),
    ("juno_ingest", "add_replicas", {"rse": "CNAF-DISK", "rse_id": "id-cnaf-disk", "files": [RAW]}, False,
     "site=IHEP"),
    ("juno_ingest", "add_replicas", {"rse": "IHEP-EOS", "rse_id": "id-ihep-eos", "files": [ESD]}, False,
     "writes only in scope raw"),
    ("juno_ingest", "add_dids", {"rse": "IHEP-EOS", "rse_id": "id-ihep-eos",
                                 "dids": [{"scope": "raw", "name": RAW_FILE, "type": "FILE"}]}, True, ""),
    ("juno_ingest", "add_dids", {"rse": "IHEP-EOS", "rse_id": "id-ihep-eos",
                                 "dids": [{"scope": "raw", "name": "junk.dat"}]}, False, "not a raw file name"),
    ("juno_ingest", "attach_dids", attach("raw", BLOCK, [("raw", RAW_FILE)], "id-ihep-eos"), True, ""),
    ("juno_ingest", "attach_dids", attach("raw", BLOCK, [("raw", RAW_FILE)], "id-cnaf-disk"), False, "site=IHEP"),
    ("juno_ingest", "attach_dids", attach("raw", BLOCK, [("esd", "x")]), False, "attaches only raw DIDs"),
    ("juno_ingest", "attach_dids", attach("raw", RAW_FILE, [("raw", RAW_FILE)]), False, "not a block or container"),
    ("juno_ingest", "attach_dids", attach("raw", BLOCK, [("raw", MONTH)]), False, "holds raw files only"),
    # A raw file in exactly one block, for everyone; the same block again is Rucio's to refuse.
    ("juno_ingest", "attach_dids", attach("raw", OTHER_BLOCK, [("raw", RAW_FILE), ("raw", RAW_IN_BLOCK)],
                                          "id-ihep-eos"), False,
     f"a raw file belongs to exactly one block: raw:{RAW_IN_BLOCK} is in raw:{BLOCK}, not raw:{OTHER_BLOCK}"),
    ("root", "attach_dids", attach("raw", OTHER_BLOCK, [("raw", RAW_IN_BLOCK)]), False, "exactly one block"),
    ("juno_ingest", "attach_dids", attach("raw", BLOCK, [("raw", RAW_IN_BLOCK)], "id-ihep-eos"), True, ""),
    ("analyst1", "attach_dids", attach("user.analyst1", "my.inputs", [("raw", RAW_IN_BLOCK)]), True, ""),
    ("juno_ingest", "attach_dids_to_dids", {"attachments": [
        {"scope": "raw", "name": MONTH, "dids": [{"scope": "raw", "name": BLOCK}]},
        {"scope": "raw", "name": "stream.JUNODAQ.global_trigger.2025", "dids": [{"scope": "raw", "name": MONTH}]}]},
     True, ""),
    ("juno_ingest", "attach_dids_to_dids", {"attachments": [
        {"scope": "raw", "name": MONTH, "dids": [{"scope": "raw", "name": RAW_FILE}]}]},
     False, "blocks and containers"),
    ("juno_ingest", "set_status", {"scope": "raw", "name": BLOCK, "issuer": "juno_ingest"}, True, ""),
    ("juno_ingest", "set_status", {"scope": "esd", "name": "x", "issuer": "juno_ingest"}, False, "only in scope raw"),
    ("juno_ingest", "detach_dids", {"scope": "raw", "name": BLOCK, "dids": []}, False, "never rearranged"),
    ("juno_ingest", "add_rule", add_rule([("raw", BLOCK)], "CNAF-DISK", "juno_ingest"), True, ""),
    ("juno_ingest", "add_rule", add_rule([("raw", BLOCK)], "IHEP-TAPE", "juno_ingest", locked=True), True, ""),
    ("juno_ingest", "add_rule", add_rule([("raw", BLOCK)], "CNAF-DISK|JINR-DISK", "juno_ingest"), False,
     "only the replication policy's rules"),
    ("juno_ingest", "add_rule", add_rule([("raw", BLOCK)], "CNAF-DISK", "juno_ingest", copies=2), False,
     "CNAF-DISK x2 is not one of them"),
    ("juno_ingest", "add_rule", add_rule([("esd", "x")], "CNAF-DISK", "juno_ingest"), False, "only on raw"),
    ("juno_ingest", "add_rule", add_rule([("raw", BLOCK)], "CNAF-DISK", "juno_prod"), False, "belong to the account"),
    ("juno_ingest", "del_rule", {"rule_id": "r-raw-cnaf", "purge_replicas": None}, False, "never deletes"),
    ("juno_ingest", "update_rule", {"rule_id": "r-raw-cnaf", "options": {"lifetime": 1}}, False, "never changes"),
    ("juno_ingest", "set_metadata", {"scope": "raw", "name": BLOCK, "key": "juno_place_raw_in2p3_third",
                                     "value": "v1;placed;..."}, True, ""),
    ("juno_ingest", "set_metadata", {"scope": "raw", "name": BLOCK, "key": "lifetime", "value": 10}, False,
     "never expire"),
    ("juno_ingest", "add_scope", {"account": "juno_ingest", "scope": "raw"}, False, "for admins only"),
    ("root", "add_scope", {"account": "juno_ingest", "scope": "raw"}, None, ""),  # Rucio decides for admins
    # A closed raw block stays closed (hole 7); the adapter supplies `open` from the gateway's call.
    ("juno_ingest", "set_status", {"scope": "raw", "name": BLOCK, "open": True}, False, "never reopened"),
    ("jcoord", "set_status", {"scope": "user.jcoord", "name": "x", "open": True}, False, "admins only"),
    ("ops", "set_status", {"scope": "raw", "name": BLOCK, "open": True}, True, ""),
    # -- production: rtraw/esd/mc, rules anywhere, never deletes raw
    ("juno_prod", "add_did", add_did("esd", "esd.J25.5.0.2025"), True, ""),
    ("juno_prod", "add_did", add_did("raw", BLOCK), False, "written only by the ingest service"),
    ("juno_prod", "add_did", add_did("user.juno_prod", "x"), False, "only in rtraw, esd and mc"),
    ("juno_prod", "add_replicas", {"rse": "CNAF-TAPE", "rse_id": "id-cnaf-tape", "files": [ESD]}, True, ""),
    ("juno_prod", "add_replicas", {"rse": "CNAF-TAPE", "rse_id": "id-cnaf-tape", "files": [RAW]}, False,
     "scope raw is written only by the ingest service"),
    ("juno_prod", "add_rule", add_rule([("raw", BLOCK)], "IN2P3-DISK", "juno_prod"), True, ""),
    ("juno_prod", "add_rule", add_rule([("user.analyst1", "mine")], "CNAF-TAPE", "juno_prod", locked=True), True, ""),
    ("juno_prod", "del_rule", {"rule_id": "r-esd-prod", "purge_replicas": None}, True, ""),
    ("juno_prod", "del_rule", {"rule_id": "r-raw-prod", "purge_replicas": None}, False,
     "deleted only by coordinators"),
    ("juno_prod", "reduce_rule", {"rule_id": "r-raw-prod", "copies": 0, "exclude_expression": None}, False,
     "reduced only by coordinators"),
    ("juno_prod", "move_rule", {"rule_id": "r-raw-prod", "rse_expression": "CNAF-DISK", "override": {}}, False,
     "moved only by coordinators"),
    ("juno_prod", "update_rule", {"rule_id": "r-raw-prod", "options": {"priority": 5}}, True, ""),
    ("juno_prod", "update_rule", {"rule_id": "r-raw-prod", "options": {"lifetime": 10}}, False, "not lifetime"),
    ("juno_prod", "update_rule", {"rule_id": "r-esd-prod", "options": {"account": "analyst1"}}, False,
     "another account"),
    ("juno_prod", "del_rule", {"rule_id": "r-a1", "purge_replicas": None}, False, "only the rule's owner"),
    ("juno_prod", "del_rule", {"rule_id": "no-such-rule", "purge_replicas": None}, None, ""),
    ("juno_prod", "set_metadata", {"scope": "raw", "name": BLOCK, "key": "run_type", "value": "x"}, False,
     "written only by the ingest service"),
    # -- coordinators: rules on any scope, for themselves or the service accounts
    ("jcoord", "add_rule", add_rule([("raw", BLOCK)], "CNAF-TAPE", "jcoord"), True, ""),
    ("jcoord", "add_rule", add_rule([("raw", BLOCK)], "IN2P3-DISK", "juno_ingest"), True, ""),
    ("jcoord", "add_rule", add_rule([("raw", BLOCK)], "IN2P3-DISK", "analyst1"), False, "belong to the account"),
    ("jcoord", "del_rule", {"rule_id": "r-raw-cnaf", "purge_replicas": None}, True, ""),
    ("jcoord", "update_rule", {"rule_id": "r-a1", "options": {"locked": True}}, True, ""),
    ("jcoord", "approve_rule", {"rule_id": "r-a1", "options": {"approve": True}}, True, ""),
    ("jcoord", "set_metadata_bulk", {"scope": "raw", "name": BLOCK,
                                     "meta": {"juno_place_raw_in2p3_third": "v1;skipped;..."}}, True, ""),
    ("jcoord", "add_did", add_did("raw", BLOCK), False, "written only by the ingest service"),
    ("jcoord", "add_did", add_did("user.jcoord", "notes"), True, ""),
    # -- analysts: own scope, own rules, disk only
    ("analyst1", "add_did", add_did("user.analyst1", "user.analyst1.ibd.v1"), True, ""),
    ("analyst1", "add_did", add_did("user.analyst2", "x"), False, "writes only in scope user.analyst1"),
    ("analyst1", "add_did", add_did("raw", BLOCK), False, "written only by the ingest service"),
    ("analyst1", "add_did", add_did("esd", "x"), False, "written only by production"),
    ("analyst1", "add_did", add_did("user.analyst1", "x", account="analyst2"), False, "owned by another account"),
    ("analyst1", "add_did", add_did("user.analyst1", "x", rules=[{"account": "analyst1", "copies": 1,
                                                                  "rse_expression": "CNAF-TAPE"}]), False,
     "disk RSEs only"),
    ("physgroup", "add_did", add_did("group.physics", "g.set"), True, ""),
    ("analyst1", "add_did", add_did("group.physics", "g.set"), False, "writes only in scope user.analyst1"),
    ("analyst1", "add_replicas", {"rse": "CNAF-DISK", "rse_id": "id-cnaf-disk", "files": [OWN]}, True, ""),
    ("analyst1", "add_replicas", {"rse": "CNAF-TAPE", "rse_id": "id-cnaf-tape", "files": [OWN]}, False,
     "CNAF-TAPE is a tape RSE"),
    # Replicas of files that exist (hole 2): every file's scope counts, not only new files'.
    ("analyst1", "add_replicas", {"rse": "CNAF-DISK", "rse_id": "id-cnaf-disk", "files": [OWN, RAW]}, False,
     "replicas of files in scope raw"),
    ("analyst1", "add_replicas", {"rse": "CNAF-DISK", "rse_id": "id-cnaf-disk"}, False, "could not see the files"),
    # add_did with content (hole 1): the adapter supplies dids/rse_id from the gateway's call.
    ("analyst1", "add_did", add_did("user.analyst1", "x", dids=[{"scope": "raw", "name": RAW_FILE}],
                                    rse_id="id-cnaf-disk"), False, "registering new files"),
    ("analyst1", "add_did", add_did("user.analyst1", "x", __juno_content_unseen__=True), False,
     "could not see this add_did's content"),
    # Analysts' rule options (hole 5).
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "CNAF-DISK", "analyst1",
                                      source_replica_expression="IHEP-TAPE"), False, "read from disk only"),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "CNAF-DISK", "analyst1", priority=5), False,
     "priority 3 at most"),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "CNAF-DISK", "analyst1",
                                      activity="T0 Export"), False, "analysis activity"),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "CNAF-DISK", "analyst1",
                                      activity="User Subscriptions", source_replica_expression="CNAF-DISK",
                                      priority=2), True, ""),
    # Suspicious declarations (hole 3) and the account without a role.
    ("analyst1", "declare_suspicious_file_replicas", {}, False, "only admins do it"),
    ("root", "declare_suspicious_file_replicas", {}, None, ""),
    ("newcomer", "add_did", add_did("user.newcomer", "x"), False, "has no JUNO role"),
    ("newcomer", "add_rule", add_rule([("user.newcomer", "x")], "CNAF-DISK", "newcomer"), False, "has no JUNO role"),
    ("newcomer", "get_auth_token_user_pass", {"account": "newcomer", "username": "a", "password": "b"}, None, ""),
    # Fail closed: an action the table does not list.
    ("analyst1", "some_future_action", {}, False, "not in JUNO's permission table"),
    ("ops", "some_future_action", {}, None, ""),
    ("analyst1", "add_dids", {"rse": "CNAF-DISK", "rse_id": "id-cnaf-disk",
                              "dids": [{"scope": "user.analyst1", "name": "out.root", "type": "FILE"}]}, True, ""),
    ("analyst1", "add_dids", {"rse": "CNAF-DISK", "rse_id": "id-cnaf-disk",
                              "dids": [{"scope": "raw", "name": RAW_FILE, "type": "FILE"}]}, False,
     "written only by the ingest service"),
    ("analyst1", "attach_dids", attach("user.analyst1", "my.set", [("raw", RAW_FILE)]), True, ""),
    ("analyst1", "attach_dids", attach("user.analyst1", "my.set", [("raw", RAW_FILE)], "id-cnaf-disk"), False,
     "registering new files"),
    ("analyst1", "attach_dids", attach("raw", BLOCK, [("raw", RAW_FILE)]), False, "written only by the ingest"),
    ("analyst1", "detach_dids", {"scope": "raw", "name": BLOCK, "dids": []}, False, "never rearranged"),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "CNAF-DISK", "analyst1"), True, ""),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "rse_type=DISK", "analyst1", copies=2), True, ""),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "CNAF-TAPE", "analyst1"), False,
     "includes tape RSE(s) CNAF-TAPE"),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "site=CNAF", "analyst1"), False,
     "includes tape RSE(s) CNAF-TAPE"),
    ("analyst1", "add_rule", add_rule([("raw", BLOCK)], "CNAF-DISK", "analyst1"), False,
     "only on DIDs of scope user.analyst1"),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "CNAF-DISK", "analyst1", locked=True), False,
     "cannot be locked"),
    ("analyst1", "add_rule", add_rule([("user.analyst1", "my.set")], "CNAF-DISK", "analyst2"), False,
     "belong to the account"),
    ("analyst1", "del_rule", {"rule_id": "r-a1", "purge_replicas": None}, True, ""),
    ("analyst2", "del_rule", {"rule_id": "r-a1", "purge_replicas": None}, False, "only the rule's owner (analyst1)"),
    ("analyst1", "update_rule", {"rule_id": "r-a1", "options": {"lifetime": 3600}}, True, ""),
    ("analyst1", "update_rule", {"rule_id": "r-a1", "options": {"locked": True}}, False,
     "ask a coordinator for locked"),
    ("analyst2", "update_rule", {"rule_id": "r-a1", "options": {"lifetime": 3600}}, False, "only the rule's owner"),
    ("analyst1", "move_rule", {"rule_id": "r-a1", "rse_expression": "IN2P3-DISK", "override": {}}, True, ""),
    ("analyst1", "move_rule", {"rule_id": "r-a1", "rse_expression": "IHEP-TAPE", "override": {}}, False,
     "includes tape RSE(s) IHEP-TAPE"),
    ("analyst1", "approve_rule", {"rule_id": "r-a1", "options": {"approve": True}}, False,
     "only coordinators and admins approve"),
    ("analyst1", "set_metadata", {"scope": "user.analyst1", "name": "my.set", "key": "purpose", "value": "ibd"},
     True, ""),
    ("analyst1", "set_metadata", {"scope": "raw", "name": BLOCK, "key": "juno_place_raw_in2p3_third",
                                  "value": "v1;placed"}, False, "recorded only by the ingest service and coordinators"),
    ("analyst1", "get_auth_token_user_pass", {"account": "analyst1", "username": "a", "password": "b"}, None, ""),
    # -- root and admins: everything (but names still follow the conventions)
    ("root", "add_did", add_did("raw", BLOCK), True, ""),
    ("ops", "del_rule", {"rule_id": "r-raw-cnaf", "purge_replicas": None}, True, ""),
    ("ops", "detach_dids", {"scope": "raw", "name": BLOCK, "dids": []}, True, ""),
    ("ops", "add_rule", add_rule([("raw", BLOCK)], "CNAF-TAPE", "juno_prod", locked=True), True, ""),
    ("root", "add_did", add_did("raw", "my-block"), False, "not a raw block name: expected block.<detector>"),
]


@pytest.mark.parametrize(("issuer", "action", "kwargs", "allowed", "message"), MATRIX,
                         ids=[f"{i}-{row[0]}-{row[1]}" for i, row in enumerate(MATRIX)])
def test_matrix(issuer: str, action: str, kwargs: dict[str, Any], allowed: bool | None, message: str) -> None:
    decision = check(issuer, action, kwargs)
    assert decision.allowed is allowed, decision.message
    assert message in decision.message
    if allowed is False:
        assert decision.message, "a denial must say why"


def test_ingest_rules_need_the_policy_on_the_server() -> None:
    decision = check("juno_ingest", "add_rule", add_rule([("raw", BLOCK)], "CNAF-DISK", "juno_ingest"),
                     FakeFacts(policy_configured=False))
    assert decision.allowed is False
    assert "[policy] juno_replication_policy" in decision.message


def test_placement_decisions_are_final() -> None:
    key = "juno_place_raw_in2p3_third"
    facts = FakeFacts(meta={("raw", BLOCK, key): "v1;placed;bytes=1;total_before=0;placed_before=0;fraction=1/3"})
    same = {"scope": "raw", "name": BLOCK, "key": key,
            "value": "v1;placed;bytes=1;total_before=0;placed_before=0;fraction=1/3"}
    assert check("juno_ingest", "set_metadata", same, facts).allowed is True  # idempotent re-run
    other = dict(same, value="v1;skipped;bytes=1;total_before=0;placed_before=0;fraction=1/3")
    decision = check("jcoord", "set_metadata", other, facts)
    assert decision.allowed is False and "placement decisions are final" in decision.message
    assert check("ops", "set_metadata", other, facts).allowed is True  # an admin can repair


