"""Transformation files (YAML) → `Transformation`, or every problem found, each with file:line.

The same two passes as juno-submit's task files (juno_jobs.taskfile), over one node tree:
1. structure against etc/transformation.schema.json (the one editors can use too);
2. meaning: sizes and durations parse, the memory ladder climbs, step names are unique, output names per
   etc/naming.md can be made (rtraw/esd only from inputs named after raw), where jobs may run fits the input
   (keep-up at IHEP; a step after the first reads its predecessor's outputs).
Nothing here talks to Rucio or HTCondor: a bad file fails before anything is resolved or submitted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from juno_common.etc import etc_file
from juno_common.yamlfile import Issue
from juno_jobs.model import Did, Range, Resources, RetryPolicy
from juno_jobs.taskfile import FileChecker, read_checked
from juno_prod.model import DEFAULT_RELEASE_BASE, MC, NEW_RAW, SELECTION, InputSel, Step, Transformation

SCHEMA_PATH = etc_file("transformation.schema.json")
RAW_EXTS = ("dat",)  # an output must never look like raw data


class TransformationError(Exception):
    """A transformation file that cannot be used; `issues` says where and why."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


@cache
def schema() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_PATH.read_text()))


class _Builder(FileChecker):
    def build(self) -> Transformation:
        d = self.data
        sel = self._input()
        release = d.get("release")
        steps: list[Step] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(d.get("steps") or []):
            step = self._step(i, raw, release, sel)
            if step.name in seen:
                self.error(["steps", i, "name"], f"step name {step.name!r} is used twice (first: step "
                           f"{seen[step.name]})", "give every step its own name")
            seen.setdefault(step.name, i)
            steps.append(step)
        return Transformation(name=str(d["name"]), source=self.path, input=sel, steps=tuple(steps),
                              release_base=str(d.get("release_base") or DEFAULT_RELEASE_BASE),
                              description=str(d.get("description") or ""), raw=d)

    def _input(self) -> InputSel:
        raw = self.data["input"]
        if "jobs" in raw:
            return InputSel(kind=MC, jobs=int(raw["jobs"]))
        if "new_raw" in raw:
            return InputSel(kind=NEW_RAW, streams=tuple(raw["new_raw"]["streams"]))
        dids = tuple(Did.parse(t) for t in raw["dids"])
        filt: dict[str, Any] = {}
        for key, value in (raw.get("filter") or {}).items():
            if isinstance(value, dict):
                lo, hi = value.get("min"), value.get("max")
                if lo is not None and hi is not None and type(lo) is type(hi) and lo > hi:
                    self.error(["input", "filter", key], f"min {lo!r} is above max {hi!r}", "swap them")
                filt[key] = Range(lo, hi)
            elif isinstance(value, list):
                filt[key] = tuple(value)
            else:
                filt[key] = value
        return InputSel(kind=SELECTION, dids=dids, filter=filt)

    def _step(self, i: int, raw: Mapping[str, Any], default_release: str | None, sel: InputSel) -> Step:
        at = ["steps", i]
        name = str(raw["name"])
        release = raw.get("release") or default_release
        if not release:
            self.error([*at, "name"], f"step {name} has no release", "set release: J25.1.0 on the step or at the top")
            release = "?"
        out = raw["output"]
        scope = str(out["scope"])
        ext = str(out.get("ext") or name)
        if ext in RAW_EXTS:
            self.error([*at, "output", "ext"] if "ext" in out else [*at, "name"], f"output extension .{ext} is "
                       "raw data's", "choose another extension")
        if scope in ("rtraw", "esd"):
            if ext != scope:
                self.error([*at, "output"], f"files in {scope} are named <raw stem>_<release>.{scope} "
                           f"(etc/naming.md), not .{ext}", f"set output.ext: {scope} or leave it out and name the "
                           f"step {scope}")
            if sel.kind == MC:
                self.error([*at, "output", "scope"], f"{scope} holds data derived from raw files; a Monte Carlo "
                           "chain has no raw input", "write its outputs to scope mc")
        if scope == "mc" and sel.kind != MC:
            self.error([*at, "output", "scope"], "scope mc holds simulation; this transformation reads data",
                       "write rtraw or esd")
        where_raw = raw.get("where")
        where: str | tuple[str, ...]
        if where_raw is None:
            where = "anywhere" if (sel.kind == MC and i == 0) else "input"
        elif isinstance(where_raw, list):
            where = tuple(str(s) for s in where_raw)
        else:
            where = str(where_raw)
        if where == "input" and sel.kind == MC and i == 0:
            self.error([*at, "where"], "the first step of a Monte Carlo chain has no input to run next to",
                       "write where: anywhere, or a list of sites")
        if sel.kind == NEW_RAW and i == 0 and where != ("IHEP",):
            self.error([*at, "where"] if where_raw is not None else [*at, "name"],
                       "keep-up runs at IHEP, where new raw data lands (JUNO's computing model)",
                       "write where: [IHEP]")
        res = raw.get("resources") or {}
        memory = self.size_mb(res.get("memory"), [*at, "resources", "memory"], 2048)
        resources = Resources(memory_mb=memory, cpus=int(res.get("cpus", 1)),
                              disk_mb=self.size_mb(res.get("disk"), [*at, "resources", "disk"], 4096),
                              wall_s=self.duration_s(res.get("wall_time"), [*at, "resources", "wall_time"], 4 * 3600),
                              copies=int(res.get("copies", Resources.copies)))
        rt = raw.get("retry") or {}
        ladder = tuple(self.size_mb(v, [*at, "retry", "memory", k], memory)
                       for k, v in enumerate(rt.get("memory") or []))
        if ladder and (list(ladder) != sorted(set(ladder))):
            self.error([*at, "retry", "memory"], "the memory ladder must climb (each step above the last)",
                       "e.g. [2GB, 4GB, 8GB]")
        if ladder and ladder[0] < memory:
            self.error([*at, "retry", "memory"], f"the ladder starts below resources.memory ({memory} MB)",
                       "start it at resources.memory or above")
        codes = rt.get("exit_codes", "any")
        retry = RetryPolicy(max_attempts=int(rt.get("max_attempts", 3)), memory_ladder_mb=ladder,
                            exit_codes=None if codes == "any" else frozenset(int(c) for c in codes))
        env = {str(k): ("1" if v is True else "0" if v is False else str(v))
               for k, v in (raw.get("environment") or {}).items()}
        return Step(index=i, name=name, release=str(release), payload=str(raw["payload"]),
                    arguments=str(raw.get("arguments") or ""), environment=env,
                    files_per_job=int(raw.get("files_per_job", 1)), where=where, scope=scope, ext=ext,
                    rse=str(out.get("rse") or "site"), resources=resources, retry=retry)


def load(path: Path | str) -> Transformation:
    """Read and check a transformation file; raise TransformationError with every problem found."""
    path = Path(path)
    display = str(path)
    root, data = read_checked(path, TransformationError, "etc/production/", schema())
    builder = _Builder(path.resolve(), root, data, display)
    tf = builder.build()
    if builder.issues:
        raise TransformationError(builder.issues)
    return tf
