"""JUNO's site topology (`etc/sites.yaml`) as typed objects.

The file is the one description of sites, RSEs, protocols, links, accounts and quotas: the local
grid starts its storage from it and `juno-policy sites plan|apply` makes Rucio match it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from juno_common.errors import InvalidFile
from juno_common.etc import etc_file

DEFAULT_SITES = etc_file("sites.yaml")
ENVIRONMENTS = ("local", "production")
RSE_TYPES = ("disk", "tape")
ROLES = ("ingest", "production", "coordinator", "analyst")


class TopologyError(InvalidFile, ValueError):
    """etc/sites.yaml is not valid; the message lists every problem with its place."""


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


def _need(errors: list[str], where: str, node: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in node:
        errors.append(f"{where}: missing key '{key}'")
        return None
    if not isinstance(node[key], kind):
        errors.append(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {node[key]!r}")
        return None
    return node[key]


def load(path: Path = DEFAULT_SITES) -> Topology:
    """Read and check the file; raise TopologyError listing every problem."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"{path}: cannot read: {exc}") from exc
    errors: list[str] = []
    if not isinstance(raw, dict):
        raise TopologyError(f"{path}: expected a mapping at the top")
    sites: list[Site] = []
    for sname, snode in (raw.get("sites") or {}).items():
        where = f"{path}: sites.{sname}"
        rses = []
        for rname, rnode in (snode.get("rses") or {}).items():
            rwhere = f"{where}.rses.{rname}"
            rtype = _need(errors, rwhere, rnode, "type", str)
            if rtype and rtype not in RSE_TYPES:
                errors.append(f"{rwhere}.type: {rtype!r} is not one of {RSE_TYPES}")
            protocols = {}
            for env, p in (rnode.get("protocols") or {}).items():
                if env not in ENVIRONMENTS:
                    errors.append(f"{rwhere}.protocols: unknown environment {env!r} (use {ENVIRONMENTS})")
                    continue
                try:
                    davs = None
                    if p.get("davs") is not None:
                        d = p["davs"]
                        davs = Protocol("davs", str(d.get("hostname", p["hostname"])), int(d["port"]),
                                        str(d.get("prefix", p["prefix"])))
                    protocols[env] = Protocol(str(p["scheme"]), str(p["hostname"]), int(p["port"]), str(p["prefix"]),
                                              davs)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    errors.append(f"{rwhere}.protocols.{env}: needs scheme, hostname, port, prefix, and davs (if "
                                  f"given) a port ({exc})")
            rses.append(RSE(rname, sname, rtype or "disk", str(rnode.get("storage", "")), protocols,
                            dict(rnode.get("attributes") or {})))
        sites.append(Site(sname, str(snode.get("country", "")), int(snode.get("tier", 1)), tuple(rses)))
    site_names = {s.name for s in sites}
    links = []
    for i, lnode in enumerate(raw.get("links") or []):
        pair = lnode.get("between")
        if not (isinstance(pair, list) and len(pair) == 2 and set(pair) <= site_names):
            errors.append(f"{path}: links[{i}].between: needs two known sites, got {pair!r}")
            continue
        links.append(Link(pair[0], pair[1], int(lnode.get("distance", 1)), bool(lnode.get("available", True))))
    accounts = []
    for aname, anode in (raw.get("accounts") or {}).items():
        role = anode.get("role")
        if role not in ROLES:
            errors.append(f"{path}: accounts.{aname}.role: {role!r} is not one of {ROLES}")
        envs = tuple(anode.get("environments") or ENVIRONMENTS)
        accounts.append(Account(aname, str(anode.get("type", "USER")), str(role), str(anode.get("email", "")), envs))
    quotas = dict(raw.get("quotas") or {})
    for role in quotas:
        if role not in ROLES:
            errors.append(f"{path}: quotas.{role}: unknown role (use {ROLES})")
    if errors:
        raise TopologyError("\n".join(errors))
    return Topology(tuple(sites), tuple(links), tuple(accounts), quotas, dict(raw.get("fts") or {}), Path(path))
