"""Which protocol Rucio has FTS3 copy over between the grid's storages: XRootD (`root`) or HTTP-TPC (`davs`).

Rucio's conveyor (`[conveyor] scheme = root,davs`, as in production) asks the transfer tool to copy with the
pair of protocols that the two RSEs rank best for third-party copy: rsemanager.find_matching_scheme walks
the destination's protocols by their `third_party_copy_write` priority, then the source's by
`third_party_copy_read`, and takes the first compatible pair (root with root, davs with davs/https). So
production chooses HTTP-TPC by registering davs at third-party-copy priority 1 (WLCG's move off GridFTP;
JUNO's since 2023), and keeps root first for the jobs' reads and writes (the lan/wan read/write/delete
priorities, which this module leaves alone).

etc/sites.yaml registers root first everywhere; `juno-grid tpc davs` (or a test) re-ranks every RSE's two
protocols for third-party copy, as an operator would with `rucio-admin rse update-protocol`.

Tape: a recall (bring-online) needs the storage's tape interface. The local storages' XrdHttp (XRootD 5.5)
has no WLCG tape REST API, so with davs chosen a tape RSE still serves third-party *reads* over root only
(its davs protocol gets no third_party_copy_read priority); writes to tape go over davs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SCHEMES = ("root", "davs")
TPC_OPS = ("third_party_copy_read", "third_party_copy_write")


@dataclass(frozen=True)
class Ranking:
    """One protocol's wanted third-party-copy priorities on one RSE (None: not for that operation)."""

    rse: str
    scheme: str
    hostname: str
    port: int
    read: int | None
    write: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"rse": self.rse, "scheme": self.scheme, "third_party_copy_read": self.read,
                "third_party_copy_write": self.write}


def rank(scheme: str, prefer: str, *, is_tape: bool) -> tuple[int | None, int | None]:
    """The (read, write) third-party-copy priorities of `scheme` on an RSE when `prefer` is chosen."""
    if prefer not in SCHEMES:
        raise ValueError(f"protocol {prefer!r}: choose one of {', '.join(SCHEMES)}")
    if scheme == prefer:
        if is_tape and scheme == "davs":
            return None, 1  # no tape recall over HTTP on these storages (module docstring)
        return 1, 1
    return 2, 2


def wanted(protocols_by_rse: dict[str, list[dict[str, Any]]], tape: set[str], prefer: str) -> list[Ranking]:
    """The rankings every RSE's root and davs protocols should have (`protocols_by_rse`: Rucio's get_protocols)."""
    out = []
    for rse, protocols in sorted(protocols_by_rse.items()):
        for p in protocols:
            if p["scheme"] in SCHEMES:
                read, write = rank(p["scheme"], prefer, is_tape=rse in tape)
                out.append(Ranking(rse, p["scheme"], p["hostname"], int(p["port"]), read, write))
    return out


def chosen(protocols_by_rse: dict[str, list[dict[str, Any]]]) -> dict[str, str | None]:
    """Per RSE, the scheme ranked first for third-party writes (what a transfer to it uses), or None."""
    out: dict[str, str | None] = {}
    for rse, protocols in protocols_by_rse.items():
        ranked = [(p["domains"]["wan"].get("third_party_copy_write"), p["scheme"]) for p in protocols
                  if p["scheme"] in SCHEMES and p["domains"]["wan"].get("third_party_copy_write")]
        out[rse] = min(ranked)[1] if ranked else None
    return out


# --- adapter: Rucio's client ---------------------------------------------------------------------


def _protocols(client: Any, rses: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {rse: client.get_protocols(rse, protocol_domain="ALL", operation=None) or [] for rse in rses}


def current(client: Any, rses: list[str]) -> dict[str, str | None]:
    return chosen(_protocols(client, rses))


def changes(client: Any, rses: list[str], tape: set[str], prefer: str) -> list[Ranking]:
    """The rankings that differ from Rucio's now."""
    have = _protocols(client, rses)
    out = []
    for want in wanted(have, tape, prefer):
        p = next(p for p in have[want.rse] if p["scheme"] == want.scheme and p["hostname"] == want.hostname
                 and int(p["port"]) == want.port)
        wan = p["domains"]["wan"]
        if (wan.get("third_party_copy_read"), wan.get("third_party_copy_write")) != (want.read, want.write):
            out.append(want)
    return out


def apply(client: Any, todo: list[Ranking]) -> None:
    for r in todo:
        client.update_protocols(r.rse, r.scheme, {"domains": {"wan": {"third_party_copy_read": r.read,
                                                                      "third_party_copy_write": r.write}}},
                                hostname=r.hostname, port=r.port)


def choose(client: Any, rses: list[str], tape: set[str], prefer: str) -> list[Ranking]:
    """Make Rucio transfer over `prefer` between all `rses`; returns what was changed."""
    todo = changes(client, rses, tape, prefer)
    apply(client, todo)
    return todo
