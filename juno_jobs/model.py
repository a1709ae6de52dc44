"""The typed objects juno-submit passes between its layers: a task as read from YAML, input files with
their replicas, jobs. Everything past the edges (task file, Rucio, HTCondor) works on these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from juno_jobs.wrapper import COPIES
from rucio_policy.naming import DidRef

Scalar = str | int | float | bool
Did = DidRef  # the one DID identity of the project (rucio_policy.naming), under the name juno_jobs always used


@dataclass(frozen=True)
class Range:
    """A metadata filter {min, max}; either end may be open."""

    min: Scalar | None = None
    max: Scalar | None = None


FilterValue = Scalar | tuple[Scalar, ...] | Range


@dataclass(frozen=True)
class InputSpec:
    dids: tuple[Did, ...]
    filter: Mapping[str, FilterValue] = field(default_factory=dict)


@dataclass(frozen=True)
class JobVar:
    """One JSUB-style job variable: range (first, step, last|count), enumerate (values), list (file)."""

    name: str
    kind: str
    group: str = "default"
    first: float = 1
    step: float = 1
    last: float | None = None
    count: int | None = None
    values: tuple[Scalar, ...] = ()


@dataclass(frozen=True)
class Splitting:
    files_per_job: int | None = None
    jobvars: tuple[JobVar, ...] = ()
    max_jobs: int | None = None


@dataclass(frozen=True)
class OutputSpec:
    dataset: str  # name only ("" = <task name>.<submission time>); the scope is user.<account> unless given
    scope: str | None  # if the task file wrote user.<account>:name
    files: tuple[str, ...]
    rse: str = "site"  # "site" = a disk RSE at the site where the job ran


@dataclass(frozen=True)
class Resources:
    memory_mb: int = 2048
    cpus: int = 1
    disk_mb: int = 4096
    wall_s: int = 4 * 3600
    copies: int = COPIES  # input and output files a job copies at once (the wrapper's xrdcp --parallel)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    memory_ladder_mb: tuple[int, ...] = ()
    exit_codes: frozenset[int] | None = None  # None = any non-zero payload exit code is retried


@dataclass(frozen=True)
class SiteLists:
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    def permits(self, site: str) -> bool:
        return (not self.allow or site in self.allow) and site not in self.deny


@dataclass(frozen=True)
class Task:
    name: str
    source: Path  # the task file
    executable: Path | None  # shipped with the jobs (relative path in the task file) ...
    site_executable: str | None  # ... or a path that exists at the sites
    script: str | None
    arguments: str
    environment: Mapping[str, str]
    release: str | None
    input: InputSpec | None
    splitting: Splitting
    output: OutputSpec | None
    resources: Resources
    retry: RetryPolicy
    sites: SiteLists
    description: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class OutputTarget:
    scope: str
    name: str  # the dataset's full name
    rse: str  # "site" or an RSE
    patterns: tuple[str, ...]
    # "job": outputs are named <dataset>.<job:05d>.<file> (juno-submit); "file": the payload's file name is
    # the DID name (juno-prod, whose names follow etc/naming.md and are fixed before the job runs).
    naming: str = "job"

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"

    def file_name(self, job: int, file: str) -> str:
        """The DID name of an output file: unique per task and job, the same for every attempt."""
        if self.naming == "file":
            return file
        return f"{self.name}.{job:05d}.{file}"


@dataclass(frozen=True, slots=True)
class RseInfo:
    name: str
    site: str
    tape: bool
    juno_site: bool = True  # the RSE has a `site` attribute (topology applied); others never host jobs


@dataclass(slots=True)  # not frozen: 100,000 of them per large task, and frozen __init__ is 3x slower
class InputFile:
    """A file of the input and the RSEs holding an AVAILABLE replica of it."""

    scope: str
    name: str
    bytes: int
    adler32: str | None
    rses: tuple[str, ...]

    @property
    def did(self) -> str:
        return f"{self.scope}:{self.name}"


@dataclass(frozen=True)
class SiteGroup:
    """Files held (on disk, AVAILABLE) by exactly this set of allowed sites."""

    sites: tuple[str, ...]
    files: tuple[InputFile, ...]

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of a task: where it may run, what it reads, its job variables. Its arguments are rendered
    from the task's template where needed (splitting.arguments_of; the wrapper renders its own)."""

    index: int
    sites: tuple[str, ...]  # the sites that hold all of its input (or where a no-input task may run)
    files: tuple[InputFile, ...]
    variables: Mapping[str, Scalar]
    bytes: int = 0
