"""The RSEs of etc/sites.yaml as the replication policy validator needs them: names and attributes.

A view of the topology (rucio_policy.topology reads the file): for each RSE, the attributes Rucio will
have once the topology is applied, so RSE expressions in the replication policy can be evaluated offline:

  <RSE name>: True       (Rucio adds it to every RSE)
  site, country, tier    from the site (tier as text, as Rucio stores it)
  type: disk|tape, istape, storage   as `juno-policy sites apply` sets them (topology.rse_attributes)
  rse_type: DISK|TAPE    Rucio's RSE column, also usable in expressions
  ...                    every key of the RSE's `attributes`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rucio_policy.topology import Topology, TopologyError, load, rse_attributes


@dataclass(frozen=True)
class RseEntry:
    name: str
    site: str
    rse_type: str  # DISK or TAPE
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RseCatalog:
    rses: dict[str, RseEntry]
    source: str = ""

    @property
    def names(self) -> list[str]:
        return sorted(self.rses)

    def attribute_table(self) -> dict[str, dict[str, Any]]:
        return {name: entry.attributes for name, entry in self.rses.items()}

    @classmethod
    def from_names(cls, types: dict[str, str], site: str = "") -> RseCatalog:
        """A catalog from names and types only (tests, or callers that know the RSEs otherwise)."""
        return cls({name: RseEntry(name, site, kind.upper(),
                                   {name: True, "rse_type": kind.upper(), **({"site": site} if site else {})})
                    for name, kind in types.items()})


CatalogInvalid = TopologyError  # the sites file is not valid: every problem with file:line


def from_topology(topo: Topology, source: str = "") -> RseCatalog:
    rses = {}
    for rse in topo.rses:
        kind = rse.type.upper()
        rses[rse.name] = RseEntry(rse.name, rse.site, kind,
                                  {**rse_attributes(topo, rse), "rse_type": kind, rse.name: True})
    return RseCatalog(rses, source or str(topo.path))


def load_catalog(path: Path, display: str | None = None) -> RseCatalog:
    """Read the RSEs of a sites file; raise CatalogInvalid (with file:line issues) if it is not valid."""
    return from_topology(load(path, display), display or str(path))
