"""juno-prod's decisions, pure (no Rucio, no HTCondor, no database): which sites a step may use, how
assigned files become jobs (with their output names), what a failed job means for each of its files, when
an output dataset is complete. Unit-tested fast in tests/test_prod_decide.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from juno_jobs import locality, retry, splitting
from juno_jobs.model import InputFile, JobSpec, RseInfo, SiteGroup, SiteLists
from juno_prod import naming
from juno_prod.model import FAILED, MC_SCOPE, PROBLEMATIC, PROCESSED, Step


def site_lists(step: Step) -> SiteLists:
    """Where a step's jobs may run: a list of sites, or anywhere (locality still keeps them next to input)."""
    if isinstance(step.where, tuple):
        return SiteLists(allow=step.where)
    return SiteLists()


def mc_sites(step: Step, rses: Mapping[str, RseInfo]) -> tuple[str, ...]:
    """Sites a Monte Carlo job without input may run at: the allowed ones, else every site with disk."""
    every = sorted({i.site for i in rses.values() if not i.tape})
    allowed = site_lists(step)
    return tuple(s for s in every if allowed.permits(s))


def output_name(tf_name: str, step: Step, row: Mapping[str, Any]) -> str:
    if row["scope"] == MC_SCOPE:
        return naming.output_name(step, row["name"])  # '<tf>.<job>.job' → '<tf>.<job>_<release>.<ext>'
    return naming.output_name(step, row["name"])


@dataclass(frozen=True)
class Batch:
    """What one claim becomes: jobs (files in input order, output names in the job variables)."""

    jobs: list[JobSpec]
    groups: list[SiteGroup]
    file_job: dict[int, int]  # file id → job index
    expected: dict[int, str]  # file id → output name


def make_jobs(tf_name: str, step: Step, rows: Sequence[Mapping[str, Any]], rses: Mapping[str, RseInfo]) -> Batch:
    """Jobs for claimed files. Files with input: grouped by the sites holding them (Ganga's algorithm, as
    juno-submit) within the sites the step allows, then split by files_per_job. Monte Carlo: one job per
    stand-in input, at any allowed site. Raises locality.LocalityError when a file is nowhere usable."""
    expected = {int(r["id"]): output_name(tf_name, step, r) for r in rows}
    file_job: dict[int, int] = {}
    if rows and rows[0]["scope"] == MC_SCOPE:
        sites = mc_sites(step, rses)
        jobs = []
        for k, r in enumerate(rows):
            jobs.append(JobSpec(index=k, sites=sites, files=(), bytes=0,
                                variables={"mc": r["name"], "outputs": expected[int(r["id"])]}))
            file_job[int(r["id"])] = k
        return Batch(jobs, [], file_job, expected)
    by_did = {(r["scope"], r["name"]): r for r in rows}
    inputs = [InputFile(scope=r["scope"], name=r["name"], bytes=int(r["bytes"] or 0), adler32=r["adler32"],
                        rses=tuple(x for x in str(r["rses"]).split(",") if x)) for r in rows]
    groups = locality.group_by_sites(inputs, rses, site_lists(step))
    jobs = splitting.split_files(groups, step.files_per_job)
    out = []
    for job in jobs:
        ids = [int(by_did[(f.scope, f.name)]["id"]) for f in job.files]
        for fid in ids:
            file_job[fid] = job.index
        out.append(replace(job, variables={"outputs": " ".join(expected[i] for i in ids)}))
    return Batch(out, groups, file_job, expected)


@dataclass(frozen=True)
class FileOutcome:
    state: str  # processed | failed (assigned again next cycle) | problematic
    memory_mb: int
    reason: str | None


def failed_file(step: Step, *, attempts: int, memory_mb: int, failure: str | None, exit_code: int | None,
                reason: str | None) -> FileOutcome:
    """A file whose job failed: again (as `failed`, with the memory the ladder gives) or problematic.
    `attempts` counts this one. The step's retry policy decides, as juno-submit's (juno_jobs.retry)."""
    d = retry.decide(failure or "wrapper", exit_code=exit_code, attempt=attempts, memory_mb=memory_mb,
                     policy=step.retry)
    if d.retry:
        return FileOutcome(FAILED, d.memory_mb, f"{d.reason} (last: {reason or failure})")
    return FileOutcome(PROBLEMATIC, memory_mb, f"{d.reason}. Last error: {reason or failure}")


def outputs_ok(expected: Sequence[str], registered: Sequence[str]) -> str | None:
    """None when a job registered exactly the names it was given; else what differs."""
    missing = sorted(set(expected) - set(registered))
    extra = sorted(set(registered) - set(expected))
    if not missing and not extra:
        return None
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}")
    if extra:
        parts.append(f"unexpected {', '.join(extra[:3])}")
    return "outputs differ from the names juno-prod gave the job: " + "; ".join(parts)


def dataset_complete(input_closed: bool, counts: Mapping[str, int]) -> bool:
    """An output dataset closes when no more input can come and every input file is processed."""
    total = sum(counts.values())
    return input_closed and total > 0 and counts.get(PROCESSED, 0) == total


def keepup_walk_due(last_walk: float | None, now: float, every_s: float) -> bool:
    """Keep-up: walk the whole stream containers (every block in Rucio) now? On the first cycle, and at
    least every `every_s`: events are hints, and one that was lost must not lose its block's files."""
    return last_walk is None or now - last_walk >= every_s


def hinted_blocks(hints: Iterable[str], streams: Iterable[str]) -> list[tuple[str, str]]:
    """(scope, name) of the blocks events named that belong to one of the streams (pure; `hints` are
    'scope:name' DIDs, blocks are named `block.<stream>.<YYYYMMDD>`: etc/naming.md)."""
    prefixes = tuple(f"block.{s}." for s in streams)
    out = set()
    for did in hints:
        scope, sep, name = did.partition(":")
        if sep and name.startswith(prefixes):
            out.add((scope, name))
    return sorted(out)


def eta_s(left: int, rate_per_s: float) -> float | None:
    return None if rate_per_s <= 0 or left <= 0 else left / rate_per_s
