"""Group input files by the set of sites that hold them (pure): Ganga's algorithm, with site lists.

A file counts as held by a site when one of the site's *disk* RSEs has an AVAILABLE replica (resolve.py
asks Rucio for AVAILABLE replicas only) and the task's allow/deny lists permit the site. Files with the
same set of sites form a group; a job takes files from one group only and may run at any site of it.
Files no permitted site holds on disk stop the task before anything is submitted, with the reason: on
tape only, only at denied sites, or nowhere.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from juno_jobs.model import InputFile, RseInfo, SiteGroup, SiteLists

EXAMPLES = 3  # file names shown per problem


class LocalityError(ValueError):
    """Some input files cannot be read at any permitted site; the message lists why and what to do."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(p.describe() for p in self.problems))


@dataclass(frozen=True)
class Problem:
    kind: str  # tape_only | denied_only | nowhere
    files: tuple[str, ...]  # DIDs
    where: tuple[str, ...] = ()  # RSEs or sites that do hold them

    def describe(self) -> str:
        n = len(self.files)
        shown = ", ".join(self.files[:EXAMPLES]) + (f" and {n - EXAMPLES} more" if n > EXAMPLES else "")
        what = f"{n} input file{'s' if n != 1 else ''}"
        if self.kind == "tape_only":
            return (f"{what} only on tape ({', '.join(self.where)}): {shown}. Jobs read from disk: ask for a disk "
                    "copy first, e.g. `rucio rule add <block DID> --copies 1 --rses CNAF-DISK`, and submit when the "
                    "rule is OK")
        if self.kind == "denied_only":
            return (f"{what} only at sites your task excludes ({', '.join(self.where)}): {shown}. "
                    f"Allow one of those sites in sites.allow/sites.deny, or ask for a copy at an allowed site")
        return (f"{what} with no AVAILABLE replica anywhere: {shown}. They may still be arriving (check "
                f"`rucio replica list file <DID>`) or be lost; narrow input.filter to leave them out")


def site_sets(files: Iterable[InputFile], rses: Mapping[str, RseInfo], sites: SiteLists) -> tuple[
        dict[tuple[str, ...], list[InputFile]], list[Problem]]:
    """Files keyed by the sorted tuple of permitted sites holding them on disk, and the problems."""
    groups: dict[tuple[str, ...], list[InputFile]] = defaultdict(list)
    tape_only: list[str] = []
    tape_rses: set[str] = set()
    denied: list[str] = []
    denied_sites: set[str] = set()
    nowhere: list[str] = []
    cache: dict[frozenset[str], tuple[str, ...]] = {}  # many files share their RSEs: decide once per RSE set
    for f in files:
        key = frozenset(f.rses)
        held = cache.get(key)
        if held is None:
            held = tuple(sorted({rses[r].site for r in key
                                 if r in rses and not rses[r].tape and sites.permits(rses[r].site)}))
            cache[key] = held
        if held:
            groups[held].append(f)
            continue
        disk_sites = {rses[r].site for r in key if r in rses and not rses[r].tape}
        if disk_sites:
            denied.append(f.did)
            denied_sites |= disk_sites
        elif any(r in rses and rses[r].tape for r in key):
            tape_only.append(f.did)
            tape_rses |= {r for r in key if r in rses and rses[r].tape}
        else:
            nowhere.append(f.did)
    problems = []
    if tape_only:
        problems.append(Problem("tape_only", tuple(tape_only), tuple(sorted(tape_rses))))
    if denied:
        problems.append(Problem("denied_only", tuple(denied), tuple(sorted(denied_sites))))
    if nowhere:
        problems.append(Problem("nowhere", tuple(nowhere)))
    return groups, problems


ANYWHERE = SiteLists()


def group_by_sites(files: Iterable[InputFile], rses: Mapping[str, RseInfo], sites: SiteLists = ANYWHERE
                   ) -> list[SiteGroup]:
    """Site groups, largest first (then by site names); files in name order. Raises LocalityError."""
    groups, problems = site_sets(files, rses, sites)
    if problems:
        raise LocalityError(problems)
    by_did = attrgetter("scope", "name")
    out = [SiteGroup(sites=key, files=tuple(sorted(members, key=by_did))) for key, members in groups.items()]
    out.sort(key=lambda g: (-len(g.files), g.sites))
    return out


def jobs_per_site(site_lists: Iterable[Sequence[str]]) -> dict[str, int]:
    """How many jobs each site may run (a job with several sites counts at each)."""
    counts: dict[str, int] = defaultdict(int)
    for job_sites in site_lists:
        for s in job_sites:
            counts[s] += 1
    return dict(sorted(counts.items()))
