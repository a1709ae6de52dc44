"""JUNO's site topology (`etc/sites.yaml`) as typed objects.

The file is the one description of sites, RSEs, protocols, links, accounts and quotas: the local
grid starts its storage from it and `juno-policy sites plan|apply` makes Rucio match it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import Node

from juno_common.errors import InvalidFile
from juno_common.etc import etc_file
from juno_common.yamlfile import Issue, Reader, compose, value_of

DEFAULT_SITES = etc_file("sites.yaml")
ENVIRONMENTS = ("local", "production")
RSE_TYPES = ("disk", "tape")
ROLES = ("ingest", "production", "coordinator", "analyst")


class TopologyError(InvalidFile, ValueError):
    """etc/sites.yaml is not valid; the message lists every problem with file:line (`issues`)."""

    def __init__(self, message: str | list[Issue]) -> None:
        self.issues: list[Issue] = message if isinstance(message, list) else []
        super().__init__("\n".join(str(i) for i in message) if isinstance(message, list) else message)


@dataclass(frozen=True)
class Protocol:
    scheme: str
    hostname: str
    port: int
    prefix: str
    # HTTPS/WebDAV next to it (the same storage's davs endpoint; FTS3 can do HTTP third-party copy there).
    davs: Protocol | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.hostname}:{self.port}"


@dataclass(frozen=True)
class RSE:
    name: str
    site: str
    type: str  # disk | tape
    storage: str
    protocols: dict[str, Protocol]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def is_tape(self) -> bool:
        return self.type == "tape"


@dataclass(frozen=True)
class Site:
    name: str
    country: str
    tier: int
    rses: tuple[RSE, ...]


@dataclass(frozen=True)
class Link:
    a: str
    b: str
    distance: int
    available: bool = True


@dataclass(frozen=True)
class Account:
    name: str
    type: str
    role: str
    email: str
    environments: tuple[str, ...] = ENVIRONMENTS


@dataclass(frozen=True)
class Topology:
    sites: tuple[Site, ...]
    links: tuple[Link, ...]
    accounts: tuple[Account, ...]
    quotas: dict[str, dict[str, int | None]]
    fts: dict[str, str]
    path: Path

    @property
    def rses(self) -> tuple[RSE, ...]:
        return tuple(r for s in self.sites for r in s.rses)

    def rse(self, name: str) -> RSE:
        for r in self.rses:
            if r.name == name:
                return r
        raise KeyError(f"no RSE {name!r} in {self.path}")

    def rse_names(self) -> set[str]:
        return {r.name for r in self.rses}

    def distances(self) -> dict[tuple[str, str], int]:
        """(source RSE, destination RSE) → distance, for every available link, both ways."""
        by_site = {s.name: s.rses for s in self.sites}
        out: dict[tuple[str, str], int] = {}
        for link in self.links:
            if not link.available:
                continue
            for x, y in ((link.a, link.b), (link.b, link.a)):
                for src in by_site[x]:
                    for dst in by_site[y]:
                        if src.name != dst.name:
                            out[(src.name, dst.name)] = link.distance
        return out

    def accounts_for(self, environment: str) -> tuple[Account, ...]:
        return tuple(a for a in self.accounts if environment in a.environments)


def rse_attributes(topo: Topology, rse: RSE) -> dict[str, Any]:
    """The attributes the RSE has in Rucio once `juno-policy sites apply` ran, whatever the environment
    (the FTS server, which depends on it, is added by sites_sync): what RSE expressions can select on."""
    site = next(s for s in topo.sites if s.name == rse.site)
    attrs: dict[str, Any] = {"site": rse.site, "country": site.country, "tier": str(site.tier), "type": rse.type,
                             "storage": rse.storage, "istape": rse.is_tape}
    attrs.update(rse.attributes)
    return attrs


_TOP = ("version", "fts", "sites", "links", "accounts", "quotas")
_SITE = ("country", "tier", "rses")
_RSE = ("type", "storage", "attributes", "protocols")
_PROTOCOL = ("scheme", "hostname", "port", "prefix", "davs")
_ACCOUNT = ("type", "role", "email", "environments")


def load(path: Path = DEFAULT_SITES, display: str | None = None) -> Topology:
    """Read and check the file; raise TopologyError listing every problem with file:line."""
    name = display or str(path)
    root, issues = compose(Path(path), name)
    r = Reader(name, issues)
    topo = _read(r, root, Path(path)) if root is not None else None
    if r.issues or topo is None:
        raise TopologyError(r.issues)
    return topo


def _value(r: Reader, m: dict[str, tuple[Node, Node]], key: str, where: str, kind: type | tuple[type, ...],
           default: Any = None) -> Any:
    if key not in m:
        return default
    ok, value = r.scalar(m[key][1], f"{where}.{key}")
    if ok and (not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, str))):
        r.error(m[key][1], f"{where}.{key}", f"expected {getattr(kind, '__name__', 'a value')}, found {value!r}")
        return default
    return value if ok else default


def _read(r: Reader, root: Node, path: Path) -> Topology:
    top = r.mapping(root, "", _TOP)
    if "sites" not in top:
        r.error(root, "", "no 'sites' section", "this does not look like etc/sites.yaml")
    sites = [_site(r, sname, snode) for sname, (_, snode) in
             (r.mapping(top["sites"][1], "sites").items() if "sites" in top else [])]
    site_names = {s.name for s in sites}
    links = []
    for i, lnode in enumerate(r.sequence(top["links"][1], "links") if "links" in top else []):
        where = f"links[{i}]"
        lm = r.mapping(lnode, where, ("between", "distance", "available"), required=("between",))
        pair = value_of(lm["between"][1]) if "between" in lm else None
        if "between" in lm and not (isinstance(pair, list) and len(pair) == 2 and set(pair) <= site_names):
            r.error(lm["between"][1], f"{where}.between", f"needs two known sites, found {pair!r}",
                    f"known sites: {', '.join(sorted(site_names))}")
            continue
        if pair:
            links.append(Link(pair[0], pair[1], _value(r, lm, "distance", where, int, 1),
                              _value(r, lm, "available", where, bool, True)))
    accounts = []
    for aname, (_, anode) in (r.mapping(top["accounts"][1], "accounts").items() if "accounts" in top else []):
        where = f"accounts.{aname}"
        am = r.mapping(anode, where, _ACCOUNT, required=("role",))
        role = _value(r, am, "role", where, str)
        if "role" in am and role not in ROLES:
            r.error(am["role"][1], f"{where}.role", f"{role!r} is not one of {', '.join(ROLES)}")
        envs = tuple(s for _, s in r.strings(am["environments"][1], f"{where}.environments")) \
            if "environments" in am else ENVIRONMENTS
        for env in envs:
            if env not in ENVIRONMENTS:
                r.error(am["environments"][1], f"{where}.environments", f"unknown environment {env!r}",
                        f"use {', '.join(ENVIRONMENTS)}")
        accounts.append(Account(aname, str(_value(r, am, "type", where, str, "USER")), str(role),
                                str(_value(r, am, "email", where, str, "")), envs))
    quotas: dict[str, dict[str, int | None]] = {}
    for role, (key, qnode) in (r.mapping(top["quotas"][1], "quotas").items() if "quotas" in top else []):
        if role not in ROLES:
            r.error(key, f"quotas.{role}", "unknown role", f"use {', '.join(ROLES)}")
        quotas[role] = {k: value_of(v) for k, (_, v) in r.mapping(qnode, f"quotas.{role}", RSE_TYPES).items()}
    fts = {k: str(value_of(v)) for k, (_, v) in
           (r.mapping(top["fts"][1], "fts", ENVIRONMENTS).items() if "fts" in top else [])}
    return Topology(tuple(sites), tuple(links), tuple(accounts), quotas, fts, path)


def _site(r: Reader, sname: str, snode: Node) -> Site:
    where = f"sites.{sname}"
    sm = r.mapping(snode, where, _SITE)
    rses = [_rse(r, sname, rname, knode, rnode) for rname, (knode, rnode) in
            (r.mapping(sm["rses"][1], f"{where}.rses").items() if "rses" in sm else [])]
    return Site(sname, str(_value(r, sm, "country", where, str, "")), int(_value(r, sm, "tier", where, int, 1)),
                tuple(x for x in rses if x is not None))


def _rse(r: Reader, sname: str, rname: str, knode: Node, rnode: Node) -> RSE | None:
    where = f"sites.{sname}.rses.{rname}"
    rm = r.mapping(rnode, where, _RSE)
    rtype = _value(r, rm, "type", where, str)
    if rtype not in RSE_TYPES:
        r.error(rm["type"][1] if "type" in rm else knode, f"{where}.type",
                f"RSE type must be disk or tape, found {rtype or 'nothing'!r}")
        return None
    protocols: dict[str, Protocol] = {}
    for env, (key, pnode) in (r.mapping(rm["protocols"][1], f"{where}.protocols").items()
                              if "protocols" in rm else []):
        if env not in ENVIRONMENTS:
            r.error(key, f"{where}.protocols.{env}", "unknown environment", f"use {', '.join(ENVIRONMENTS)}")
            continue
        pwhere = f"{where}.protocols.{env}"
        pm = r.mapping(pnode, pwhere, _PROTOCOL, required=("scheme", "hostname", "port", "prefix"), owner=key)
        if not {"scheme", "hostname", "port", "prefix"} <= set(pm):
            continue
        host, prefix = str(value_of(pm["hostname"][1])), str(value_of(pm["prefix"][1]))
        davs = None
        if "davs" in pm:
            dm = r.mapping(pm["davs"][1], f"{pwhere}.davs", ("hostname", "port", "prefix"), required=("port",))
            if "port" in dm:
                davs = Protocol("davs", str(_value(r, dm, "hostname", f"{pwhere}.davs", str, host)),
                                _value(r, dm, "port", f"{pwhere}.davs", int, 0),
                                str(_value(r, dm, "prefix", f"{pwhere}.davs", str, prefix)))
        protocols[env] = Protocol(str(value_of(pm["scheme"][1])), host, _value(r, pm, "port", pwhere, int, 0), prefix,
                                  davs)
    attributes = {k: value_of(v) for k, (_, v) in
                  (r.mapping(rm["attributes"][1], f"{where}.attributes").items() if "attributes" in rm else [])}
    return RSE(rname, sname, rtype, str(_value(r, rm, "storage", where, str, "")), protocols, attributes)
