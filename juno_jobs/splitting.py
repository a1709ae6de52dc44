"""Task → jobs (pure): files per job within each group of sites, or JSUB-style job variables.

Files of one job always come from one site group (locality.py), so every job can run at a site that
holds all of its input. Job numbers start at 0, in a stable order: groups as locality sorts them, files
in name order within a group.
"""

from __future__ import annotations

import itertools
import shlex
import string
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from juno_jobs.model import InputFile, JobSpec, JobVar, Scalar, SiteGroup

DEFAULT_MAX_JOBS = 100_000  # JSUB's cap on job-variable tasks


class SplitError(ValueError):
    """The splitting cannot produce jobs (e.g. no values); the message says what to change."""


def split_files(groups: Sequence[SiteGroup], files_per_job: int, *, max_jobs: int | None = None) -> list[JobSpec]:
    """Chunk each group's files into jobs of at most `files_per_job` files."""
    if files_per_job < 1:
        raise SplitError("files_per_job must be at least 1")
    jobs: list[JobSpec] = []
    for group in groups:
        files = group.files
        for start in range(0, len(files), files_per_job):
            chunk = files[start:start + files_per_job]
            jobs.append(JobSpec(index=len(jobs), sites=group.sites, files=chunk, variables={},
                                bytes=sum(f.bytes for f in chunk)))
    if max_jobs is not None and len(jobs) > max_jobs:
        raise SplitError(f"{len(jobs)} jobs, more than max_jobs {max_jobs}: raise files_per_job or max_jobs")
    return jobs


def _values(var: JobVar, limit: int) -> Iterator[Scalar]:
    if var.kind == "enumerate":
        yield from var.values
        return
    value, n = var.first, 0
    while n < limit:
        if var.count is not None and n >= var.count:
            return
        if var.last is not None and (value - var.last) * var.step > 0:
            return
        yield _number(value)
        value += var.step
        n += 1


def _number(value: float) -> Scalar:
    return int(value) if float(value).is_integer() else value


def _zip_group(variables: Sequence[JobVar], limit: int) -> list[dict[str, Scalar]]:
    """Variables of one group advance together; the shortest decides (JSUB)."""
    columns = [list(itertools.islice(_values(v, limit), limit)) for v in variables]
    length = min(len(c) for c in columns)
    return [{v.name: col[i] for v, col in zip(variables, columns, strict=True)} for i in range(length)]


def expand_jobvars(variables: Sequence[JobVar], max_jobs: int | None = None) -> list[dict[str, Scalar]]:
    """One dict of variable values per job, as JSUB's splitByJobvars combines them.

    Named groups multiply (Cartesian product, earlier groups vary slowest); the default group is zipped
    with that product (the shorter decides). At most `max_jobs` (default 100,000) sets.
    """
    limit = max_jobs or DEFAULT_MAX_JOBS
    groups: dict[str, list[JobVar]] = {}
    for var in variables:
        groups.setdefault(var.group, []).append(var)
    product: list[dict[str, Scalar]] | None = None
    for name, members in groups.items():
        if name == "default":
            continue
        rows = _zip_group(members, limit)
        if product is None:
            product = rows
        else:
            product = [{**a, **b} for a, b in itertools.islice(itertools.product(product, rows), limit)]
    default = _zip_group(groups["default"], limit) if "default" in groups else None
    if product is None:
        combined = default or []
    elif default is None:
        combined = product
    else:
        combined = [{**a, **b} for a, b in zip(product, default, strict=False)]
    combined = combined[:limit]
    if not combined:
        raise SplitError("the job variables give no values: check first/last/step and the enumerate values")
    return combined


def split_jobvars(variables: Sequence[JobVar], *, sites: tuple[str, ...] = (), max_jobs: int | None = None
                  ) -> list[JobSpec]:
    return [JobSpec(index=i, sites=sites, files=(), variables=values)
            for i, values in enumerate(expand_jobvars(variables, max_jobs))]


# --------------------------------------------------------------------------- arguments


def tokenize(arguments: str) -> list[str]:
    return shlex.split(arguments)


def arguments_of(job: JobSpec, template: str) -> tuple[str, ...]:
    return render(tokenize(template), job.index, job.files, job.variables)


def input_path(f: InputFile) -> str:
    """Where the wrapper puts an input file, relative to the payload's working directory."""
    return f"inputs/{f.name}"


class _Values(dict[str, Any]):
    def __missing__(self, key: str) -> str:  # checked when the task file was read; keep the text if not
        return "{" + key + "}"


def render(tokens: Sequence[str], index: int, files: Sequence[InputFile], variables: Mapping[str, Scalar]) -> tuple[
        str, ...]:
    """The payload's argv for one job: {inputs} becomes one word per file, the rest are formatted."""
    if not tokens:
        return ()
    values = _Values(variables)
    values["job"] = index
    values["nfiles"] = len(files)
    if files:
        values["input"] = input_path(files[0])
    out: list[str] = []
    fmt = string.Formatter()
    for token in tokens:
        if token == "{inputs}":
            out.extend(input_path(f) for f in files)
        elif "{" in token or "}" in token:
            out.append(fmt.vformat(token, (), values))
        else:
            out.append(token)
    return tuple(out)
