"""Make Rucio match etc/sites.yaml: RSEs, attributes, protocols, distances, accounts, scopes, limits.

`plan()` reads Rucio and returns the changes needed, each a small `Change` that knows how to apply
itself; `apply()` runs them. Nothing is deleted: a thing in Rucio that the file does not name is
reported by `plan` as `extra`, for a person to decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rucio.common.exception import AccountNotFound, Duplicate, RSENotFound

from .topology import RSE, Topology, rse_attributes

PROTOCOL_IMPL = {"root": "rucio.rse.protocols.xrootd.Default", "davs": "rucio.rse.protocols.gfal.Default",
                 "https": "rucio.rse.protocols.gfal.Default"}
UNLIMITED = -1  # Rucio's account-limit value for no limit
DATA_SCOPES = ("raw", "rtraw", "esd", "mc")
SCOPE_OWNERS = {"raw": "juno_ingest", "rtraw": "juno_prod", "esd": "juno_prod", "mc": "juno_prod"}


@dataclass
class Change:
    kind: str  # add | update | extra
    what: str  # rse, attribute, protocol, distance, account, identity, scope, limit
    target: str
    detail: str = ""
    run: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "what": self.what, "target": self.target, "detail": self.detail}

    def __str__(self) -> str:
        sign = {"add": "+", "update": "~", "extra": "?"}[self.kind]
        return f"{sign} {self.what:<9} {self.target}" + (f"  ({self.detail})" if self.detail else "")


def desired_attributes(topo: Topology, rse: RSE, environment: str) -> dict[str, Any]:
    return {**rse_attributes(topo, rse), "fts": topo.fts[environment]}


def rucio_prefix(scheme: str, prefix: str) -> str:
    """XRootD URLs need the path after host:port to start with '//' (root://h:p//eos/...); Rucio's
    xrootd protocol only joins, so the registered prefix carries the extra slash."""
    if scheme == "root":
        return "/" + prefix if not prefix.startswith("//") else prefix
    return prefix


def protocol_params(rse: RSE, environment: str) -> dict[str, Any]:
    return _params(rse.protocols[environment], 1)


def all_protocol_params(rse: RSE, environment: str) -> list[dict[str, Any]]:
    """The RSE's protocols in Rucio: its main one, then davs at priority 2 (Rucio keeps choosing the main one
    unless asked for davs: `[conveyor] scheme`, a client's scheme)."""
    p = rse.protocols[environment]
    return [_params(p, 1)] + ([_params(p.davs, 2)] if p.davs else [])


def _params(p: Any, priority: int) -> dict[str, Any]:
    return {
        "scheme": p.scheme,
        "hostname": p.hostname,
        "port": p.port,
        "prefix": rucio_prefix(p.scheme, p.prefix),
        "impl": PROTOCOL_IMPL.get(p.scheme, "rucio.rse.protocols.gfal.Default"),
        "domains": {
            "lan": {"read": priority, "write": priority, "delete": priority},
            "wan": {"read": priority, "write": priority, "delete": priority, "third_party_copy_read": priority,
                    "third_party_copy_write": priority},
        },
    }


def _same(a: Any, b: Any) -> bool:
    return str(a).lower() == str(b).lower()


def plan(client: Any, topo: Topology, environment: str,
         password_for: Callable[[str], str] | None = None) -> list[Change]:
    """What differs between the topology and Rucio. `password_for(account)` gives accounts a userpass
    identity (the local grid passes its well-known passwords; production accounts use X.509 or tokens)."""
    changes: list[Change] = []
    existing_rses = {r["rse"] for r in client.list_rses()}
    for rse in topo.rses:
        if environment not in rse.protocols:
            continue
        changes += _plan_rse(client, topo, rse, environment, rse.name in existing_rses)
    wanted = topo.rse_names()
    changes += [Change("extra", "rse", name, "in Rucio, not in sites.yaml") for name in sorted(existing_rses - wanted)]
    changes += _plan_distances(client, topo, existing_rses)
    changes += _plan_accounts(client, topo, environment, password_for)
    return changes


def _plan_rse(client: Any, topo: Topology, rse: RSE, environment: str, exists: bool) -> list[Change]:
    out: list[Change] = []
    if not exists:
        out.append(Change("add", "rse", rse.name, f"{rse.type} at {rse.site}",
                          lambda: client.add_rse(rse.name, rse_type="TAPE" if rse.is_tape else "DISK",
                                                 deterministic=True)))
        current_attrs: dict[str, Any] = {}
        current_protocols: list[dict[str, Any]] = []
    else:
        current_attrs = client.list_rse_attributes(rse.name)
        current_protocols = client.get_protocols(rse.name, protocol_domain="ALL", operation=None) or []
    for key, value in desired_attributes(topo, rse, environment).items():
        if key not in current_attrs:
            out.append(Change("add", "attribute", f"{rse.name}:{key}", str(value),
                              lambda k=key, v=value: client.add_rse_attribute(rse.name, k, v)))
        elif not _same(current_attrs[key], value):
            out.append(Change("update", "attribute", f"{rse.name}:{key}", f"{current_attrs[key]} -> {value}",
                              lambda k=key, v=value: client.add_rse_attribute(rse.name, k, v)))
    for want in all_protocol_params(rse, environment):
        out += _plan_protocol(client, rse, want, current_protocols)
    return out


def _plan_protocol(client: Any, rse: RSE, want: dict[str, Any], current: list[dict[str, Any]]) -> list[Change]:
    out: list[Change] = []
    have = [p for p in current if p.get("scheme") == want["scheme"]]
    if not have:
        out.append(Change("add", "protocol", rse.name, f"{want['scheme']}://{want['hostname']}:{want['port']}"
                                                        f"{want['prefix']}",
                          lambda: client.add_protocol(rse.name, want)))
    else:
        h = have[0]
        if (h["hostname"], int(h["port"]), h["prefix"]) != (want["hostname"], want["port"], want["prefix"]):
            out.append(Change("update", "protocol", rse.name,
                              f"{h['hostname']}:{h['port']}{h['prefix']} -> "
                              f"{want['hostname']}:{want['port']}{want['prefix']}",
                              lambda: client.update_protocols(
                                  rse.name, want["scheme"],
                                  {"hostname": want["hostname"], "port": want["port"], "prefix": want["prefix"]},
                                  hostname=h["hostname"], port=h["port"])))
    return out


def _plan_distances(client: Any, topo: Topology, existing_rses: set[str]) -> list[Change]:
    out: list[Change] = []
    wanted = topo.distances()
    for (src, dst), distance in sorted(wanted.items()):
        current = None
        if src in existing_rses and dst in existing_rses:
            found = client.get_distance(src, dst)
            current = found[0]["distance"] if found else None
        if current is None:
            out.append(Change("add", "distance", f"{src}->{dst}", str(distance),
                              lambda s=src, d=dst, n=distance: client.add_distance(s, d, {"distance": n})))
        elif current != distance:
            out.append(Change("update", "distance", f"{src}->{dst}", f"{current} -> {distance}",
                              lambda s=src, d=dst, n=distance: client.update_distance(s, d, {"distance": n})))
    # A link marked unavailable must have no distance, or Rucio would use it directly.
    names = sorted(topo.rse_names() & existing_rses)
    for src in names:
        for dst in names:
            if src != dst and (src, dst) not in wanted and client.get_distance(src, dst):
                out.append(Change("update", "distance", f"{src}->{dst}", "remove: link unavailable in sites.yaml",
                                  lambda s=src, d=dst: client.delete_distance(s, d)))
    return out


def _plan_accounts(client: Any, topo: Topology, environment: str,
                   password_for: Callable[[str], str] | None) -> list[Change]:
    out: list[Change] = []
    existing = {a["account"] for a in client.list_accounts()}
    scopes = set(client.list_scopes())
    rses = [r for r in topo.rses if environment in r.protocols]
    for acc in topo.accounts_for(environment):
        if acc.name not in existing:
            out.append(Change("add", "account", acc.name, f"{acc.type}, role {acc.role}",
                              lambda a=acc: client.add_account(a.name, a.type, a.email)))
            attrs: dict[str, Any] = {}
            identities: list[dict[str, Any]] = []
        else:
            attrs = {a["key"]: a["value"] for page in client.list_account_attributes(acc.name) for a in page}
            identities = list(client.list_identities(acc.name))
        if not _same(attrs.get("role"), acc.role):
            out.append(Change("add", "attribute", f"account {acc.name}:role", acc.role,
                              lambda a=acc: _set_account_attribute(client, a.name, "role", a.role)))
        if password_for is not None and not any(i["type"] == "USERPASS" for i in identities):
            out.append(Change("add", "identity", acc.name, "userpass",
                              lambda a=acc: client.add_identity(a.name, a.name, "USERPASS", a.email,
                                                                password=password_for(a.name))))
        user_scope = f"user.{acc.name}"
        if acc.type == "USER" and user_scope not in scopes:
            out.append(Change("add", "scope", user_scope, f"owner {acc.name}",
                              lambda a=acc, s=user_scope: client.add_scope(a.name, s)))
        limits = {} if acc.name not in existing else client.get_local_account_limits(acc.name)
        quota = topo.quotas.get(acc.role, {})
        for rse in rses:
            want = quota.get(rse.type, UNLIMITED)
            want = UNLIMITED if want is None else int(want)
            have = limits.get(rse.name)
            have = UNLIMITED if have == float("inf") else have
            if have != want:
                out.append(Change("add" if have is None else "update", "limit", f"{acc.name}@{rse.name}",
                                  "unlimited" if want == UNLIMITED else f"{want} bytes",
                                  lambda a=acc, r=rse, w=want: client.set_local_account_limit(a.name, r.name, w)))
    # root owns what the grid's tests and tools create as admin: no limit anywhere.
    root_limits = client.get_local_account_limits("root")
    for rse in rses:
        if root_limits.get(rse.name) not in (float("inf"), UNLIMITED):
            out.append(Change("add", "limit", f"root@{rse.name}", "unlimited",
                              lambda r=rse: client.set_local_account_limit("root", r.name, UNLIMITED)))
    for scope in DATA_SCOPES:
        if scope not in scopes:
            owner = SCOPE_OWNERS[scope]
            out.append(Change("add", "scope", scope, f"owner {owner}", lambda s=scope, o=owner: client.add_scope(o, s)))
    return out


def _set_account_attribute(client: Any, account: str, key: str, value: str) -> None:
    try:
        client.add_account_attribute(account, key, value)
    except Duplicate:
        client.delete_account_attribute(account, key)
        client.add_account_attribute(account, key, value)


def apply(changes: Iterable[Change], *, on_change: Callable[[Change], None] | None = None) -> int:
    """Run every add/update change in order; return how many ran."""
    done = 0
    for change in changes:
        if change.kind == "extra" or change.run is None:
            continue
        try:
            change.run()
        except (Duplicate, RSENotFound, AccountNotFound) as exc:
            raise RuntimeError(f"{change}: {exc}") from exc
        done += 1
        if on_change:
            on_change(change)
    return done
