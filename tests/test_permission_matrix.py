"""Who may do what, enforced by the live Rucio server: each role × each action, through the REST API.

Each cell logs in as the role's account (userpass on the local grid), tries one action on DIDs made
for that cell alone, and expects either success or Rucio's AccessDenied carrying JUNO's reason
(rucio_policy.access). The table is issue 3's; etc/naming.md documents it.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rucio.common.exception import AccessDenied

RUN = uuid.uuid4().hex[:8]
_counter = itertools.count()
ROLES = ("root", "juno_ingest", "juno_prod", "jcoord", "analyst1")
OTHER = "analyst2"  # the "other account" of every cell
DAY = "20251009"
ADLER = "0badc0de"


def unique() -> str:
    return f"{RUN}_{next(_counter)}"


def raw_block(root: Any) -> str:
    name = f"block.JUNODAQ.perm_{unique()}.{DAY}"
    root.add_dataset("raw", name)
    return name


def raw_file_name() -> str:
    return f"RUN.10554.JUNODAQ.Physics.ds-2.perm_{unique()}.{DAY}140223.001.dat"


def own_scope(account: str) -> str:
    return f"user.{account}"


# The scope each role naturally writes in, for the actions that need "a DID of one's own".
NATURAL_SCOPE = {"root": "raw", "juno_ingest": "raw", "juno_prod": "rtraw", "jcoord": "user.jcoord",
                 "analyst1": "user.analyst1"}


def natural_collection(root: Any, account: str) -> tuple[str, str]:
    """A dataset the account would put rules on: a raw block for root, ingest and the coordinator
    (rules on any scope), its production dataset for production, its own dataset for an analyst."""
    if account in ("root", "juno_ingest", "jcoord"):
        return "raw", raw_block(root)
    scope = NATURAL_SCOPE[account]
    name = f"perm.{unique()}"
    root.add_dataset(scope, name)
    return scope, name


@dataclass(frozen=True)
class Cell:
    allowed: bool
    message: str = ""  # must appear in the AccessDenied text


A = Cell(True)


def D(message: str) -> Cell:  # noqa: N802 - reads as a table entry
    return Cell(False, message)


RAW_ONLY_INGEST = "scope raw is written only by the ingest service (account attribute role=ingest)"
NEVER_EXPIRE = "raw DIDs never expire: lifetime cannot be set on raw:"


def _prod_scope(scope: str) -> dict[str, Cell]:
    return {"root": A, "juno_ingest": D(f"the ingest service writes only in scope raw, not in {scope}"),
            "juno_prod": A, "jcoord": D(f"scope {scope} is written only by production (account attribute "
                                        "role=production)"),
            "analyst1": D(f"scope {scope} is written only by production")}


MATRIX: dict[str, dict[str, Cell]] = {
    "add_did_raw": {"root": A, "juno_ingest": A, "juno_prod": D(RAW_ONLY_INGEST), "jcoord": D(RAW_ONLY_INGEST),
                    "analyst1": D(RAW_ONLY_INGEST)},
    "add_did_rtraw": _prod_scope("rtraw"),
    "add_did_esd": _prod_scope("esd"),
    "add_did_mc": _prod_scope("mc"),
    # root has no user scope of its own (only USER accounts get one): that cell does not exist.
    "add_did_user_own": {"juno_ingest": D("the ingest service writes only in scope raw, not in user.juno_ingest"),
                         "juno_prod": D("production writes only in rtraw, esd and mc, not in user.juno_prod"),
                         "jcoord": A, "analyst1": A},
    "add_did_user_other": {"root": A,
                           "juno_ingest": D("the ingest service writes only in scope raw, not in user.analyst2"),
                           "juno_prod": D("production writes only in rtraw, esd and mc, not in user.analyst2"),
                           "jcoord": D("jcoord writes only in scope user.jcoord, not in user.analyst2"),
                           "analyst1": D("analyst1 writes only in scope user.analyst1, not in user.analyst2")},
    "add_replica_ihep_eos": {"root": A, "juno_ingest": A, "juno_prod": A, "jcoord": A, "analyst1": A},
    "add_replica_cnaf_disk": {"root": A, "juno_ingest": D("the ingest service registers replicas only at IHEP "
                                                          "RSEs (RSE attribute site=IHEP); CNAF-DISK has site=CNAF"),
                              "juno_prod": A, "jcoord": A, "analyst1": A},
    "attach_to_raw_block": {"root": A, "juno_ingest": A, "juno_prod": D(RAW_ONLY_INGEST),
                            "jcoord": D(RAW_ONLY_INGEST), "analyst1": D(RAW_ONLY_INGEST)},
    "add_rule_tape": {"root": A, "juno_ingest": A, "juno_prod": A, "jcoord": A,
                      "analyst1": D("analyst1 adds rules on disk RSEs only; IHEP-TAPE includes tape RSE(s) "
                                    "IHEP-TAPE")},
    "add_rule_disk": {"root": A, "juno_ingest": A, "juno_prod": A, "jcoord": A, "analyst1": A},
    "add_rule_outside_policy": {"root": A, "juno_ingest": D("the ingest service adds only the replication "
                                                            "policy's rules on raw; tier=1&rse_type=DISK x1 is not "
                                                            "one of them"),
                                "juno_prod": A, "jcoord": A, "analyst1": A},
    "add_rule_on_raw": {"root": A, "juno_ingest": A, "juno_prod": A, "jcoord": A,
                        "analyst1": D("analyst1 adds rules only on DIDs of scope user.analyst1; raw:block.")},
    "delete_rule_of_other": {"root": A, "juno_ingest": D("the ingest service never deletes rules: ask a "
                                                         "computing coordinator"),
                             "juno_prod": D("only the rule's owner (analyst2), coordinators and admins may "
                                            "delete rule"),
                             "jcoord": A,
                             "analyst1": D("only the rule's owner (analyst2), coordinators and admins may "
                                           "delete rule")},
    "delete_rule_on_raw_own": {"root": A, "jcoord": A,
                               "juno_prod": D("rules on raw (raw:block."),
                               "juno_ingest": D("the ingest service never deletes rules"),
                               "analyst1": D("only the rule's owner (juno_prod), coordinators and admins")},
    "erase_raw_did": {"root": A, "juno_ingest": D(NEVER_EXPIRE), "juno_prod": D(NEVER_EXPIRE),
                      "jcoord": D(NEVER_EXPIRE), "analyst1": D(NEVER_EXPIRE)},
    "detach_from_raw_block": {"root": A, "juno_ingest": D("raw blocks and containers are never rearranged"),
                              "juno_prod": D("raw blocks and containers are never rearranged"),
                              "jcoord": D("raw blocks and containers are never rearranged"),
                              "analyst1": D("raw blocks and containers are never rearranged")},
}


# -- the actions: each prepares what it needs as root, then acts as `account` -----------------------


def _add_did(scope_of: Callable[[str], str]) -> Callable[[Any, Any, str], None]:
    def run(root: Any, client: Any, account: str) -> None:
        scope = scope_of(account)
        name = f"block.JUNODAQ.perm_{unique()}.{DAY}" if scope == "raw" else f"perm.{unique()}"
        client.add_dataset(scope, name)

    return run


def _add_replica(rse: str) -> Callable[[Any, Any, str], None]:
    def run(root: Any, client: Any, account: str) -> None:
        scope = NATURAL_SCOPE[account]
        name = raw_file_name() if scope == "raw" else f"perm.{unique()}.dat"
        client.add_replicas(rse=rse, files=[{"scope": scope, "name": name, "bytes": 1, "adler32": ADLER}])

    return run


def attach_to_raw_block(root: Any, client: Any, account: str) -> None:
    block = raw_block(root)
    name = raw_file_name()
    root.add_replicas(rse="IHEP-EOS", files=[{"scope": "raw", "name": name, "bytes": 1, "adler32": ADLER}])
    client.attach_dids("raw", block, [{"scope": "raw", "name": name}])


def _add_rule(expression: str, on_raw: bool = False) -> Callable[[Any, Any, str], None]:
    def run(root: Any, client: Any, account: str) -> None:
        scope, name = ("raw", raw_block(root)) if on_raw else natural_collection(root, account)
        client.add_replication_rule([{"scope": scope, "name": name}], 1, expression)

    return run


def delete_rule_of_other(root: Any, client: Any, account: str) -> None:
    name = f"perm.{unique()}"
    root.add_dataset(own_scope(OTHER), name)
    [rule_id] = root.add_replication_rule([{"scope": own_scope(OTHER), "name": name}], 1, "CNAF-DISK",
                                          account=OTHER)
    client.delete_replication_rule(rule_id)


def delete_rule_on_raw_own(root: Any, client: Any, account: str) -> None:
    """A rule production put on a raw block (production may add rules anywhere, never remove raw copies)."""
    block = raw_block(root)
    [rule_id] = root.add_replication_rule([{"scope": "raw", "name": block}], 1, "JINR-DISK", account="juno_prod")
    client.delete_replication_rule(rule_id)


def erase_raw_did(root: Any, client: Any, account: str) -> None:
    """What `rucio erase` does: give the DID a lifetime, after which the undertaker deletes it."""
    client.set_metadata("raw", raw_block(root), "lifetime", 3600)


def detach_from_raw_block(root: Any, client: Any, account: str) -> None:
    block = raw_block(root)
    name = raw_file_name()
    root.attach_dids("raw", block, [{"scope": "raw", "name": name, "bytes": 1, "adler32": ADLER}], rse="IHEP-EOS")
    client.detach_dids("raw", block, [{"scope": "raw", "name": name}])


ACTIONS: dict[str, Callable[[Any, Any, str], None]] = {
    "add_did_raw": _add_did(lambda account: "raw"),
    "add_did_rtraw": _add_did(lambda account: "rtraw"),
    "add_did_esd": _add_did(lambda account: "esd"),
    "add_did_mc": _add_did(lambda account: "mc"),
    "add_did_user_own": _add_did(own_scope),
    "add_did_user_other": _add_did(lambda account: own_scope(OTHER)),
    "add_replica_ihep_eos": _add_replica("IHEP-EOS"),
    "add_replica_cnaf_disk": _add_replica("CNAF-DISK"),
    "attach_to_raw_block": attach_to_raw_block,
    "add_rule_tape": _add_rule("IHEP-TAPE"),
    "add_rule_disk": _add_rule("CNAF-DISK"),
    "add_rule_outside_policy": _add_rule("tier=1&rse_type=DISK"),
    "add_rule_on_raw": _add_rule("CNAF-DISK", on_raw=True),
    "delete_rule_of_other": delete_rule_of_other,
    "delete_rule_on_raw_own": delete_rule_on_raw_own,
    "erase_raw_did": erase_raw_did,
    "detach_from_raw_block": detach_from_raw_block,
}
assert set(ACTIONS) == set(MATRIX)

CELLS = [pytest.param(action, role, MATRIX[action][role], id=f"{action}-{role}")
         for action in MATRIX for role in ROLES if role in MATRIX[action]]


@pytest.fixture(scope="module")
def clients(grid: Any) -> dict[str, Any]:
    return {role: grid.client(role) for role in ROLES}


@pytest.mark.grid
@pytest.mark.parametrize(("action", "role", "cell"), CELLS)
def test_permission(clients: dict[str, Any], action: str, role: str, cell: Cell) -> None:
    run = ACTIONS[action]
    if cell.allowed:
        run(clients["root"], clients[role], role)
        return
    with pytest.raises(AccessDenied) as denied:
        run(clients["root"], clients[role], role)
    text = " ".join(str(denied.value).split())
    assert f"Account {role} can not" in text, text
    assert cell.message in text, f"expected {cell.message!r} in: {text}"


def test_every_role_and_action_is_covered() -> None:
    """The matrix is complete: a missing cell would silently not be tested."""
    for action, row in MATRIX.items():
        missing = set(ROLES) - set(row) - ({"root"} if action == "add_did_user_own" else set())
        assert not missing, f"{action}: no expectation for {sorted(missing)}"
