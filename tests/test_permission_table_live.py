"""The whole decision table through the live server: every action x every role, generated from
rucio_policy.permission_table.

Each cell logs in as the role's account, makes one request that reaches the action's permission check
(REST, stock Rucio client, or the client's own request helper for routes it has no method for) and
expects Rucio's AccessDenied exactly when the table says so:

  allow / deny       as written
  rucio              Rucio's generic rule: ROOT_ONLY and NEVER below, otherwise admins pass; the named
                     non-admin cases (logging in, own usage, own follows) pass for one's own account
  check              the role does its natural thing (its own scope, its own rule); CHECK_DENIED says
                     which roles a check still refuses for that request

A handful of actions have no REST route in Rucio 41 (or only one that stops before the permission
check in a single-VO deployment); their cells go through rucio.core.permission.has_permission in this
process, against the same database and policy package: NO_ROUTE lists them and the report counts them.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from rucio.common.exception import AccessDenied, AccountNotFound, Duplicate, RucioException

from rucio_policy import permission_table as table

pytestmark = pytest.mark.grid

RUN = uuid.uuid4().hex[:6]
DAY = "20251009"
ADLER = "0badc0de"
_count = itertools.count()

# The live account of each role: the grid's accounts, plus an admin and an account without a role.
ACCOUNTS = {"root": "root", "admin": "jadmin", "ingest": "juno_ingest", "production": "juno_prod",
            "coordinator": "jcoord", "analyst": "analyst1", "none": "jnorole"}
NATURAL_SCOPE = {"root": "raw", "admin": "raw", "ingest": "raw", "production": "rtraw",
                 "coordinator": "user.jcoord", "analyst": "user.analyst1", "none": "user.jnorole"}
# Generic rules that are narrower than "admins pass".
ROOT_ONLY = {"add_account", "del_account", "declare_bad_file_replicas", "set_rse_usage", "list_heartbeats",
             "add_bad_pfns", "export", "get_signed_url", "queue_requests", "cancel_request", "get_next",
             "del_identity"}
NEVER = {"delete_replicas"}  # Rucio's generic rule: nobody, through the API
OWN_ONLY = {"remove_did_from_followed", "remove_dids_from_followed"}
NO_IDENTITY = {"get_auth_token_gss", "get_auth_token_x509"}  # the grid's accounts have no such identity
# Roles a check refuses for the natural request of the action (the others pass).
CHECK_DENIED: dict[str, set[str]] = {
    "detach_dids": {"ingest"},  # raw blocks are never rearranged
    "update_rule": {"ingest"}, "del_rule": {"ingest"}, "reduce_rule": {"ingest"}, "move_rule": {"ingest"},
}
# Non-admin "rucio" cells whose natural request Rucio's own rule refuses.
RUCIO_DENIED = {"get_signed_url"}  # needs the account attribute sign-url
# VO routes are not served in a single-VO deployment; config_* without a route; skip_availability_check is
# never answered to the client; the grid has no GSS/X.509/SSH identities to log in with.
NO_ROUTE = {"queue_requests", "cancel_request", "get_next", "config_add_section", "config_has_section",
            "config_options", "config_has_option", "config_remove_section", "skip_availability_check",
            "get_auth_token_gss", "get_auth_token_x509", "get_auth_token_ssh", "add_vo", "update_vo",
            "list_vos", "recover_vo_root_identity", "access_rule_vo", "del_identity",
            "update_lifetime_exceptions",
            # Streamed answers: the gateway checks inside the generator, so a denial ends the stream empty and
            # the client sees no error (nothing is leaked: the check comes before the first row).
            "list_requests", "list_requests_history",
            # Rucio 41's REST route for the bulk call does not parse ("follow" taken as a DID name).
            "remove_dids_from_followed"}


def expected_allowed(action: str, role: str) -> bool:
    cell = table.cell(action, role)
    assert cell is not None
    if cell.kind == table.ALLOW:
        return True
    if cell.kind == table.DENY:
        return False
    if cell.kind == table.RUCIO:
        if action in NEVER:
            return False
        if action in NO_IDENTITY:
            return False
        if action in ROOT_ONLY:
            return role == "root"
        if role in ("root", "admin"):
            return True
        return action not in RUCIO_DENIED
    if action in OWN_ONLY:
        return True  # its own follows: every role may
    # An account without a role writes nowhere: every check refuses its natural request.
    return role != "none" and role not in CHECK_DENIED.get(action, set())


def unique() -> str:
    return f"{RUN}x{next(_count)}"


@dataclass
class Env:
    root: Any
    clients: dict[str, Any]
    rse: str  # a throwaway RSE for RSE administration
    rse2: str
    account: str  # a throwaway account for account administration
    meta_key: str  # a metadata convention key, for add_value
    made: list[Callable[[], None]] = field(default_factory=list)
    # What the probes act on, made in a few bulk calls before the cells run (a cell then costs one call).
    datasets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    files: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    rules: dict[str, list[str]] = field(default_factory=dict)
    pfns: dict[str, list[str]] = field(default_factory=dict)

    def dataset(self, role: str) -> tuple[str, str]:
        return self.datasets[role].pop()

    def file(self, role: str, rse: str = "IHEP-EOS", register: bool = True) -> dict[str, Any]:
        if register:
            return self.files[(role, rse)].pop()
        return new_file(role)

    def rule(self, role: str) -> str:
        return self.rules[role].pop()

    def pfn(self, role: str) -> str:
        return self.pfns[role].pop()

    def stock(self) -> None:
        """Per role: 14 datasets, 8 files at IHEP-EOS, 8 at CNAF-DISK (4 of them for PFNs), 6 rules."""
        self.datasets = {role: [new_dataset(role) for _ in range(14)] for role in ROLES}
        self.root.add_dids([{"scope": s, "name": n, "type": "DATASET"} for ds in self.datasets.values() for s, n in ds])
        for rse in ("IHEP-EOS", "CNAF-DISK"):
            for role in ROLES:
                self.files[(role, rse)] = [new_file(role) for _ in range(8)]
            self.root.add_replicas(rse=rse, files=[f for role in ROLES for f in self.files[(role, rse)]])
        for role in ROLES:
            pfn_files = [self.files[(role, "CNAF-DISK")].pop() for _ in range(4)]
            replicas = self.root.list_replicas([_name(f) for f in pfn_files], rse_expression="CNAF-DISK")
            self.pfns[role] = [next(iter(r["rses"]["CNAF-DISK"])) for r in replicas]
            ruled = [self.datasets[role].pop() for _ in range(6)]
            self.rules[role] = [str(r) for r in self.root.add_replication_rule(
                [{"scope": s, "name": n} for s, n in ruled], 1, "CNAF-DISK", account=ACCOUNTS[role],
                activity="User Subscriptions")]


ROLES = table.ROLES


def new_dataset(role: str) -> tuple[str, str]:
    scope = NATURAL_SCOPE[role]
    return scope, (f"block.JUNODAQ.live{unique()}.{DAY}" if scope == "raw" else f"live.{unique()}")


def new_file(role: str) -> dict[str, Any]:
    scope = NATURAL_SCOPE[role]
    name = (f"RUN.10554.JUNODAQ.Physics.ds-2.live{unique()}.{DAY}140223.001.dat" if scope == "raw"
            else f"live.{unique()}.dat")
    return {"scope": scope, "name": name, "bytes": 1, "adler32": ADLER}


def rest(client: Any, method: str, path: str, data: Any = None) -> None:
    """A request the stock client has no method for, sent and judged the client's own way."""
    from rucio.common.constants import HTTPMethod

    response = client._send_request(f"{client.host}/{path}", method=HTTPMethod[method],
                                    data=None if data is None else json.dumps(data))
    if response.status_code >= 400:
        cls, message = client._get_exception(headers=response.headers, status_code=response.status_code,
                                             data=response.content)
        raise cls(message)


def _rule_kwargs(role: str) -> dict[str, Any]:
    # Within every role's rules: CNAF-DISK x1 is one of the policy's raw rules, a disk RSE, default priority.
    return {"copies": 1, "rse_expression": "CNAF-DISK", "activity": "User Subscriptions"}


Probe = Callable[[Env, Any, str], Any]


def _own(client: Any, env: Env, role: str) -> str:
    return ACCOUNTS[role]


PROBES: dict[str, Probe] = {
    # -- accounts, identities, attributes, scopes
    "add_account": lambda e, c, r: c.add_account(f"jp{unique()}", "USER", "p@juno.local"),
    "del_account": lambda e, c, r: c.delete_account(e.account),
    "update_account": lambda e, c, r: c.update_account(e.account, "email", "q@juno.local"),
    "add_account_identity": lambda e, c, r: c.add_identity(e.account, f"id{unique()}", "USERPASS", "p@juno.local",
                                                           password="x" * 12),
    "del_account_identity": lambda e, c, r: c.del_identity(e.account, f"nosuch{unique()}", "USERPASS"),
    "add_attribute": lambda e, c, r: c.add_account_attribute(e.account, f"k{unique()}", "v"),
    "del_attribute": lambda e, c, r: c.delete_account_attribute(e.account, "probe"),
    "add_scope": lambda e, c, r: c.add_scope(e.account, f"group.p{unique()}"),
    "update_scope": lambda e, c, r: rest(c, "PUT", f"scopes/{e.account}/user.{e.account}", {"owner": e.account}),
    # -- RSEs
    "add_rse": lambda e, c, r: _add_rse(e, c),
    "update_rse": lambda e, c, r: c.update_rse(e.rse, {"availability_read": True}),
    "del_rse": lambda e, c, r: _del_rse(e, c),
    "add_rse_attribute": lambda e, c, r: c.add_rse_attribute(e.rse, f"k{unique()}", "v"),
    "del_rse_attribute": lambda e, c, r: c.delete_rse_attribute(e.rse, "probe"),
    "add_protocol": lambda e, c, r: c.add_protocol(e.rse, {"scheme": "root", "hostname": "127.0.0.1",
                                                          "port": 10000 + next(_count) % 50000, "prefix": "/p/",
                                                          "impl": "rucio.rse.protocols.xrootd.Default",
                                                          "domains": {"lan": {"read": 1, "write": 1, "delete": 1},
                                                                      "wan": {"read": 1, "write": 1, "delete": 1,
                                                                              "third_party_copy_read": 1,
                                                                              "third_party_copy_write": 1}}}),
    "del_protocol": lambda e, c, r: c.delete_protocols(e.rse, "davs"),
    "update_protocol": lambda e, c, r: c.update_protocols(e.rse, "davs", {"prefix": "/q/"}),
    "add_distance": lambda e, c, r: c.add_distance(e.rse, e.rse2, {"distance": 1}),
    "update_distance": lambda e, c, r: c.update_distance(e.rse2, e.rse, {"distance": 2}),
    "delete_distance": lambda e, c, r: c.delete_distance(e.rse, f"NOSUCH{RUN}"),
    "set_rse_usage": lambda e, c, r: c.set_rse_usage(e.rse, "probe", 1, 1),
    "set_rse_limits": lambda e, c, r: c.set_rse_limits(e.rse, "MinFreeSpace", 1),
    "delete_rse_limits": lambda e, c, r: c.delete_rse_limits(e.rse, "NoSuchLimit"),
    "add_qos_policy": lambda e, c, r: c.add_qos_policy(e.rse, f"Q{unique()}"),
    "delete_qos_policy": lambda e, c, r: c.delete_qos_policy(e.rse, "NOSUCH"),
    "list_transfer_limits": lambda e, c, r: list(c.list_transfer_limits()),
    "set_transfer_limit": lambda e, c, r: c.set_transfer_limit(e.rse, activity="Probe", max_transfers=1),
    "delete_transfer_limit": lambda e, c, r: c.delete_transfer_limit(e.rse, activity="Probe"),
    "set_local_account_limit": lambda e, c, r: c.set_local_account_limit(e.account, e.rse, 1),
    "set_global_account_limit": lambda e, c, r: c.set_global_account_limit(e.account, e.rse, 1),
    "delete_local_account_limit": lambda e, c, r: c.delete_local_account_limit(e.account, e.rse),
    "delete_global_account_limit": lambda e, c, r: c.delete_global_account_limit(e.account, e.rse),
    # -- configuration, subscriptions, lifetime exceptions, heartbeats, import/export
    "config_sections": lambda e, c, r: c.get_config(),
    "config_items": lambda e, c, r: c.get_config("juno_probe"),
    "config_get": lambda e, c, r: c.get_config("juno_probe", "x"),
    "config_set": lambda e, c, r: c.set_config_option("juno_probe", "x", "1"),
    "config_remove_option": lambda e, c, r: c.delete_config_option("juno_probe", "nosuch"),
    "add_subscription": lambda e, c, r: c.add_subscription(f"probe{unique()}", e.account, {"scope": ["user.nobody"]},
                                                           [{"copies": 1, "rse_expression": e.rse}], "probe", None,
                                                           0, False),
    "update_subscription": lambda e, c, r: c.update_subscription(f"nosuch{RUN}", account=e.account, comments="x"),
    "list_heartbeats": lambda e, c, r: rest(c, "GET", "heartbeats"),
    "send_heartbeats": lambda e, c, r: rest(c, "POST", "heartbeats",
                                            {"executable": f"juno-probe-{RUN}", "hostname": "probe", "pid": 1,
                                             "thread": 1, "older_than": 600, "payload": None}),
    "export": lambda e, c, r: c.export_data(distance=False),
    "import": lambda e, c, r: c.import_data({}),
    "add_key": lambda e, c, r: c.add_key(f"jp{unique()}", "ALL"),
    "add_value": lambda e, c, r: c.add_value(e.meta_key, f"v{unique()}"),
    # -- replicas and requests
    "delete_replicas": lambda e, c, r: c.delete_replicas("CNAF-DISK", [_name(e.file(r, "CNAF-DISK"))]),
    "update_replicas_states": lambda e, c, r: c.update_replicas_states(
        "CNAF-DISK", [{**_name(e.file(r, "CNAF-DISK")), "state": "A"}]),
    "declare_bad_file_replicas": lambda e, c, r: c.declare_bad_file_replicas([e.pfn(r)], "juno probe"),
    "declare_suspicious_file_replicas": lambda e, c, r: c.declare_suspicious_file_replicas([e.pfn(r)], "juno probe"),
    "add_bad_pfns": lambda e, c, r: c.add_bad_pfns([e.pfn(r)], "juno probe", "BAD", None),
    "quarantine_file_replicas": lambda e, c, r: c.quarantine_replicas([{"path": f"/p/q{unique()}"}], rse=e.rse),
    "set_tombstone": lambda e, c, r: c.set_tombstone([{**_name(e.file(r, "CNAF-DISK")), "rse": "CNAF-DISK"}]),
    "resurrect": lambda e, c, r: c.resurrect([{"scope": "user.analyst1", "name": f"nosuch.{unique()}"}]),
    "get_request_by_did": lambda e, c, r: list(c.list_request_by_did("nosuch", "CNAF-DISK", "user.analyst1")),
    "get_request_history_by_did": lambda e, c, r: list(c.list_request_history_by_did("nosuch", "CNAF-DISK",
                                                                                      "user.analyst1")),
    "get_request_metrics": lambda e, c, r: rest(c, "GET", "requests/metrics"),
    # -- Open Data
    "add_opendata_did": lambda e, c, r: c.add_opendata_did(scope="user.analyst1", name=f"nosuch.{unique()}"),
    "update_opendata_did": lambda e, c, r: c.update_opendata_did(scope="user.analyst1", name=f"nosuch.{unique()}",
                                                                 state="public"),
    "delete_opendata_did": lambda e, c, r: rest(c, "DELETE", f"opendata/dids/user.analyst1/nosuch.{unique()}"),
    # -- logging in, usage, signed URLs, follows
    "get_auth_token_user_pass": lambda e, c, r: _login(e, r),
    "get_local_account_usage": lambda e, c, r: list(c.get_local_account_usage(_own(c, e, r))),
    "get_global_account_usage": lambda e, c, r: list(c.get_global_account_usage(_own(c, e, r))),
    "get_signed_url": lambda e, c, r: c.get_signed_url("CNAF-DISK", "gcs", "read", "https://x/y"),
    "remove_did_from_followed": lambda e, c, r: rest(c, "DELETE", "dids/user.analyst1/nosuch/follow",
                                                     {"account": ACCOUNTS[r]}),
    # -- DIDs, replicas, rules: each role's natural request
    "add_did": lambda e, c, r: c.add_dataset(*new_dataset(r)),
    "add_dids": lambda e, c, r: c.add_dids([{"scope": s, "name": n, "type": "DATASET"} for s, n in [new_dataset(r)]]),
    "attach_dids": lambda e, c, r: c.attach_dids(*e.dataset(r), [_name(e.file(r))]),
    "attach_dids_to_dids": lambda e, c, r: _attach_many(e, c, r),
    "detach_dids": lambda e, c, r: _detach(e, c, r),
    "set_status": lambda e, c, r: c.set_status(*e.dataset(r), open=False),
    "create_did_sample": lambda e, c, r: _sample(e, c, r),
    "set_metadata": lambda e, c, r: c.set_metadata(*e.dataset(r), "juno_probe", "1"),
    "set_metadata_bulk": lambda e, c, r: c.set_metadata_bulk(*e.dataset(r), {"juno_probe": "1"}),
    "add_replicas": lambda e, c, r: c.add_replicas(rse="IHEP-EOS" if NATURAL_SCOPE[r] == "raw" else "CNAF-DISK",
                                                   files=[e.file(r, register=False)]),
    "add_rule": lambda e, c, r: c.add_replication_rule([_did(e.dataset(r))], **_rule_kwargs(r)),
    "update_rule": lambda e, c, r: c.update_replication_rule(e.rule(r), {"lifetime": 86400}),
    "del_rule": lambda e, c, r: c.delete_replication_rule(e.rule(r)),
    "reduce_rule": lambda e, c, r: c.reduce_replication_rule(e.rule(r), 1),
    "move_rule": lambda e, c, r: c.move_replication_rule(e.rule(r), "JINR-DISK", {}),
    "approve_rule": lambda e, c, r: c.approve_replication_rule(e.rule(r)),
}


def _name(did: dict[str, Any]) -> dict[str, Any]:
    return {"scope": did["scope"], "name": did["name"]}


def _did(scope_name: tuple[str, str]) -> dict[str, str]:
    return {"scope": scope_name[0], "name": scope_name[1]}


def _attach_many(env: Env, client: Any, role: str) -> None:
    scope, name = env.dataset(role)
    client.attach_dids_to_dids([{"scope": scope, "name": name, "dids": [_name(env.file(role))]}])


def _detach(env: Env, client: Any, role: str) -> None:
    scope, name = env.dataset(role)
    did = env.file(role)
    env.root.attach_dids(scope, name, [_name(did)])
    client.detach_dids(scope, name, [_name(did)])


def _sample(env: Env, client: Any, role: str) -> None:
    scope, name = env.dataset(role)
    env.root.attach_dids(scope, name, [_name(env.file(role))])
    client.create_did_sample(scope, name, *new_dataset(role), 1)


def _add_rse(env: Env, client: Any) -> None:
    name = f"PROBE{unique().upper()}"
    client.add_rse(name)
    env.made.append(lambda: env.root.delete_rse(name))


def _del_rse(env: Env, client: Any) -> None:
    name = f"PROBE{unique().upper()}"
    env.root.add_rse(name)
    try:
        client.delete_rse(name)
    except AccessDenied:
        env.made.append(lambda: env.root.delete_rse(name))
        raise


def _login(env: Env, role: str) -> None:
    from juno_grid.accounts import local_password
    from rucio.client import Client

    if role == "root":
        env.root.whoami()
        return
    Client(account=ACCOUNTS[role], auth_type="userpass",
           creds={"username": ACCOUNTS[role], "password": local_password(ACCOUNTS[role])}).whoami()


def _in_process(action: str, account: str) -> bool:
    """No REST route reaches this check in Rucio 41: ask the server's permission layer in this process."""
    from rucio.common.types import InternalAccount
    from rucio.core.permission import has_permission
    from rucio.db.sqla.session import DatabaseOperationType, db_session

    kwargs: dict[str, Any] = {"account": InternalAccount(account), "issuer": account, "vo": None, "dids": [],
                              "scope": None, "accounts": [], "rse": "CNAF-DISK", "rse_id": None}
    if action.startswith("get_auth_token"):
        kwargs.update({"dn": account, "gsscred": account, "username": account})
    with db_session(DatabaseOperationType.READ) as session:
        try:
            return bool(has_permission(InternalAccount(account), action, kwargs, session=session))
        except (KeyError, TypeError, AttributeError, RucioException):
            return False  # Rucio's own rule could not even evaluate this request for this account


def _ensure_account(root: Any, account: str, attributes: dict[str, str]) -> None:
    from juno_grid.accounts import local_password

    try:
        root.get_account(account)
    except AccountNotFound:
        root.add_account(account, "USER", f"{account}@juno.local")
    for key, value in attributes.items():
        try:
            root.add_account_attribute(account, key, value)
        except Duplicate:
            pass
    try:
        root.add_identity(account, account, "USERPASS", f"{account}@juno.local", password=local_password(account))
    except Duplicate:
        pass
    try:
        root.add_scope(account, f"user.{account}")
    except Duplicate:
        pass
    for rse in ("CNAF-DISK", "JINR-DISK", "IHEP-EOS"):
        root.set_local_account_limit(account, rse, 10**12)


@pytest.fixture(scope="module")
def env(grid: Any) -> Iterator[Env]:
    root = grid.client("root")
    _ensure_account(root, ACCOUNTS["admin"], {"admin": "True"})
    _ensure_account(root, ACCOUNTS["none"], {})
    rse, rse2, account = f"PROBE{RUN.upper()}A", f"PROBE{RUN.upper()}B", f"jp{RUN}"
    root.add_rse(rse)
    root.add_rse(rse2)
    root.add_protocol(rse, {"scheme": "davs", "hostname": "127.0.0.1", "port": 1, "prefix": "/p/",
                            "impl": "rucio.rse.protocols.gfal.Default",
                            "domains": {"lan": {"read": 1, "write": 1, "delete": 1},
                                        "wan": {"read": 1, "write": 1, "delete": 1}}})
    root.add_rse_attribute(rse, "probe", "1")
    root.add_account(account, "USER", "p@juno.local")
    root.add_account_attribute(account, "probe", "1")
    clients = {role: grid.client(name) for role, name in ACCOUNTS.items()}
    meta_key = f"jp{RUN}key"
    root.add_key(meta_key, "ALL")
    environment = Env(root=root, clients=clients, rse=rse, rse2=rse2, account=account, meta_key=meta_key)
    environment.stock()
    yield environment
    for undo in environment.made:
        try:
            undo()
        except RucioException:
            pass
    for name in (rse, rse2):
        try:
            root.delete_protocols(name, "davs")
            root.delete_rse(name)
        except RucioException:
            pass


CELLS = [pytest.param(action, role, id=f"{action}-{role}") for action in sorted(table.TABLE) for role in table.ROLES]


def test_every_action_has_a_probe_or_is_named_without_route() -> None:
    assert set(PROBES) | NO_ROUTE == set(table.TABLE), sorted(set(table.TABLE) ^ (set(PROBES) | NO_ROUTE))
    assert not set(PROBES) & NO_ROUTE


@pytest.mark.parametrize(("action", "role"), CELLS)
def test_cell(env: Env, action: str, role: str) -> None:
    want = expected_allowed(action, role)
    if action in NO_ROUTE:
        assert _in_process(action, ACCOUNTS[role]) is want, f"{action} as {role}: table says {want}"
        return
    try:
        PROBES[action](env, env.clients[role], role)
    except AccessDenied as err:
        assert not want, f"{action} as {role} ({ACCOUNTS[role]}) was denied, the table allows it: {err}"
        return
    except RucioException:
        pass  # past the permission check: Rucio refused the request itself (no such thing, bad input, ...)
    assert want, f"{action} as {role} ({ACCOUNTS[role]}) got through, the table denies it"
