"""The RSEs of etc/sites.yaml, as the replication policy validator needs them: names and attributes.

A deliberately small reader (the full topology model belongs to `juno-policy sites`): for each
RSE, the attributes Rucio will have once the topology is applied, so RSE expressions in the
replication policy can be evaluated offline:

  <RSE name>: True       (Rucio adds it to every RSE)
  site, country, tier    from the site (tier as text, as Rucio stores it)
  type: disk|tape, istape, storage   as `juno-policy sites apply` sets them
  rse_type: DISK|TAPE    Rucio's RSE column, also usable in expressions
  ...                    every key of the RSE's `attributes`
(tests/test_replication_validate.py checks this against sites_sync.desired_attributes.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from juno_common.errors import InvalidFile
from juno_common.yamlfile import Issue, Reader, compose


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


class CatalogInvalid(InvalidFile):
    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues))
        self.issues = issues


def load_catalog(path: Path, display: str | None = None) -> RseCatalog:
    """Read the RSEs of a sites file; raise CatalogInvalid (with file:line issues) if unreadable."""
    name = display or str(path)
    root, issues = compose(path, name)
    reader = Reader(name, issues)
    rses: dict[str, RseEntry] = {}
    if root is not None:
        top = reader.mapping(root, "")
        if "sites" not in top:
            reader.error(root, "", "no 'sites' section", "this does not look like etc/sites.yaml")
        else:
            for site, (_, site_node) in reader.mapping(top["sites"][1], "sites").items():
                where = f"sites.{site}"
                site_map = reader.mapping(site_node, where)
                site_attrs = {k: reader.scalar(site_map[k][1], f"{where}.{k}")[1]
                              for k in ("country", "tier") if k in site_map}
                if "rses" not in site_map:
                    continue
                for rse, (key_node, rse_node) in reader.mapping(site_map["rses"][1], f"{where}.rses").items():
                    rse_where = f"{where}.rses.{rse}"
                    rse_map = reader.mapping(rse_node, rse_where)
                    kind = str(reader.scalar(rse_map["type"][1], rse_where)[1]).upper() if "type" in rse_map else ""
                    if kind not in ("DISK", "TAPE"):
                        reader.error(rse_map["type"][1] if "type" in rse_map else key_node, f"{rse_where}.type",
                                     f"RSE type must be disk or tape, found {kind or 'nothing'!r}")
                        continue
                    storage = reader.scalar(rse_map["storage"][1], f"{rse_where}.storage")[1] \
                        if "storage" in rse_map else None
                    extra: dict[str, Any] = {}
                    if "attributes" in rse_map:
                        for attr, (_, value_node) in reader.mapping(rse_map["attributes"][1],
                                                                    f"{rse_where}.attributes").items():
                            extra[attr] = reader.scalar(value_node, f"{rse_where}.attributes.{attr}")[1]
                    attributes: dict[str, Any] = {k: str(v) for k, v in site_attrs.items() if v is not None}
                    attributes.update(site=site, type=kind.lower(), istape=kind == "TAPE", rse_type=kind)
                    if storage is not None:
                        attributes["storage"] = str(storage)
                    attributes.update(extra)
                    attributes[rse] = True
                    rses[rse] = RseEntry(rse, site, kind, attributes)
    if reader.issues:
        raise CatalogInvalid(reader.issues)
    return RseCatalog(rses, name)
