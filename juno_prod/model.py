"""The typed objects juno-prod passes between its layers: a transformation as read from YAML, its steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from juno_jobs.model import Did, FilterValue, Resources, RetryPolicy

DEFAULT_RELEASE_BASE = "/cvmfs/juno.ihep.ac.cn"
# Input kinds: a Rucio selection (re-production), new raw data as it arrives (keep-up), none (Monte Carlo).
SELECTION, NEW_RAW, MC = "selection", "new_raw", "mc"
# File states in the bookkeeping (per transformation, step and input file).
WAITING, ASSIGNED, PROCESSED, FAILED, PROBLEMATIC = "waiting", "assigned", "processed", "failed", "problematic"
FILE_STATES = (WAITING, ASSIGNED, PROCESSED, FAILED, PROBLEMATIC)
# Transformation states.
ACTIVE, PAUSED, STOPPED = "active", "paused", "stopped"
MC_SCOPE = "-"  # the scope of a Monte Carlo job's stand-in "input" (no file behind it)


@dataclass(frozen=True)
class InputSel:
    kind: str  # SELECTION | NEW_RAW | MC
    dids: tuple[Did, ...] = ()
    filter: Mapping[str, FilterValue] = field(default_factory=dict)
    streams: tuple[str, ...] = ()
    jobs: int = 0


@dataclass(frozen=True)
class Step:
    index: int  # 0-based position in the chain
    name: str
    release: str
    payload: str  # relative to the release directory
    arguments: str
    environment: Mapping[str, str]
    files_per_job: int
    where: str | tuple[str, ...]  # "input", "anywhere" or sites
    scope: str
    ext: str
    rse: str  # "site" or an RSE
    resources: Resources
    retry: RetryPolicy

    def release_dir(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.release}"


@dataclass(frozen=True)
class Transformation:
    name: str
    source: Path
    input: InputSel
    steps: tuple[Step, ...]
    release_base: str = DEFAULT_RELEASE_BASE
    description: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def kind(self) -> str:
        return self.input.kind
