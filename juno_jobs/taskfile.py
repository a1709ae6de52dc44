"""Task files (YAML) → `Task`, or every problem found, each with file:line and what to do.

Two passes over the same node tree (juno_common.yamlfile keeps line numbers):
1. structure against the JSON Schema in etc/task.schema.json (the one editors can use too);
2. meaning: sizes and durations parse, the executable exists, placeholders in `arguments` are known,
   job variables are finite, the memory ladder climbs, allow and deny lists do not contradict.
Nothing here talks to Rucio or HTCondor: a bad file fails before anything is resolved or submitted.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from juno_common.etc import etc_file
from juno_common.yamlfile import Issue, compose, line_of, value_of
from juno_jobs import units
from juno_jobs.model import (
    Did,
    FilterValue,
    InputSpec,
    JobVar,
    OutputSpec,
    Range,
    Resources,
    RetryPolicy,
    SiteLists,
    Splitting,
    Task,
)

SCHEMA_PATH = Path(os.environ.get("JUNO_TASK_SCHEMA") or etc_file("task.schema.json"))
# Placeholders every job has, besides its job variables.
BUILTIN_PLACEHOLDERS = ("inputs", "input", "job", "nfiles")
# Filter keys read from raw file names (rucio_policy.naming), so they cost no Rucio query.
NAME_FILTER_KEYS = ("run", "run_type", "data_stream", "seq", "detector", "stream")
_VAR_EXPR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Field → what to write, for schema messages that would otherwise only name a regex or a type.
_HINTS = {
    "name": "letters, digits, '.', '-' and '_', at most 64, e.g. raw-checksum-202510",
    "dids": "scope:name, e.g. raw:stream.JUNODAQ.global_trigger.202510",
    "memory": "a size, e.g. 512MB or 2GB",
    "disk": "a size, e.g. 10GB",
    "wall_time": "a duration, e.g. 30m, 2h or 1h30m",
    "files": "a glob pattern or a list of them, e.g. ['summary.txt', '*.root']",
    "rse": "'site' (where the job ran) or an RSE name, e.g. CNAF-DISK",
    "dataset": "a dataset name, e.g. raw-checksum-202510 (it goes into user.<account>)",
    "exit_codes": "'any' or a list of exit codes, e.g. [1, 75]",
    "allow": "a list of site names, e.g. [CNAF, JINR]",
    "deny": "a list of site names, e.g. [IN2P3]",
    "type": "range, enumerate or list",
}


class TaskFileError(Exception):
    """A task file that cannot be used; `issues` says where and why."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


@cache
def schema() -> dict[str, Any]:
    try:
        return dict(json.loads(SCHEMA_PATH.read_text()))
    except OSError as err:
        raise RuntimeError(f"the task schema {SCHEMA_PATH} cannot be read ({err.strerror}): "
                           "reinstall juno-dci or set JUNO_TASK_SCHEMA") from err


# --------------------------------------------------------------------------- node helpers


def _child(node: Node, key: str | int) -> tuple[Node | None, Node | None]:
    """(key node, value node) of a mapping key or sequence index."""
    if isinstance(node, MappingNode) and isinstance(key, str):
        for k, v in node.value:
            if isinstance(k, ScalarNode) and str(k.value) == key:
                return k, v
    if isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
        return None, node.value[key]
    return None, None


def _node_at(root: Node, path: Sequence[str | int]) -> Node:
    node = root
    for key in path:
        _, value = _child(node, key)
        if value is None:
            break
        node = value
    return node


def _line_at(root: Node, path: Sequence[str | int]) -> int:
    """The line to report for a path: the key's line for a mapping key (a block value starts below it)."""
    if path and isinstance(path[-1], str):
        key_node, _ = _child(_node_at(root, path[:-1]), path[-1])
        if key_node is not None:
            return line_of(key_node)
    return line_of(_node_at(root, path))


def _duplicates(node: Node, where: str, file: str) -> Iterator[Issue]:
    if isinstance(node, MappingNode):
        seen: dict[str, Node] = {}
        for k, v in node.value:
            name = str(k.value) if isinstance(k, ScalarNode) else "?"
            if name in seen:
                first = line_of(seen[name])
                yield Issue(file, line_of(k), _join(where, name), f"duplicate key (first at line {first})",
                            "keep one of them: YAML would silently use the last")
            seen[name] = k
            yield from _duplicates(v, _join(where, name), file)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicates(item, f"{where}[{i}]", file)


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _where(path: Sequence[str | int]) -> str:
    out = ""
    for key in path:
        out = _join(out, key)
    return out


# --------------------------------------------------------------------------- pass 1: the schema


def _schema_issues(data: Any, root: Node, file: str, doc: Mapping[str, Any] | None = None) -> list[Issue]:
    """Schema problems as Issues with file:line (`doc`: another schema than the task file's: juno-prod's)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(doc if doc is not None else schema())
    issues: list[Issue] = []
    for err in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        if err.validator in ("oneOf", "anyOf") and err.context:
            # "not valid under any of the given schemas" says little: the deepest branch error points at
            # the offending item (e.g. the one bad DID of a list), unless every branch fails at the top.
            deepest = max(err.context, key=lambda e: len(e.absolute_path))
            if len(deepest.absolute_path) > len(err.absolute_path):
                err = deepest
        path = list(err.absolute_path)
        node = _node_at(root, path)
        line = _line_at(root, path)
        where = _where(path)
        field_name = next((str(p) for p in reversed(path) if isinstance(p, str)), "")
        hint = _HINTS.get(field_name, "")
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            extra = [k for k in (err.instance or {}) if k not in allowed]
            for key in extra:
                key_node, _ = _child(node, key)
                close = difflib.get_close_matches(key, allowed, n=1)
                fix = f"did you mean {close[0]!r}? " if close else ""
                issues.append(Issue(file, line_of(key_node) if key_node else line, _join(where, key), "unknown key",
                                    f"{fix}known keys: {', '.join(allowed)}"))
        elif err.validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            key = missing[0] if missing else "?"
            issues.append(Issue(file, line, where or "(top level)", f"missing key {key!r}",
                                f"add {key}: ... ({_HINTS.get(key, 'see etc/tasks/ for examples')})"))
        elif err.validator == "type":
            want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
            issues.append(Issue(file, line, where, f"expected {_article(want)}, found {_kind(err.instance)}",
                                hint or "quote the value if YAML reads it as something else"))
        elif err.validator in ("pattern", "oneOf", "anyOf", "const", "enum", "format"):
            issues.append(Issue(file, line, where, f"{_short(err.instance)} is not valid here",
                                f"write {hint}" if hint else _first_line(err.message)))
        elif err.validator in ("minimum", "maximum", "minLength", "maxLength", "minItems", "minProperties", "not"):
            issues.append(Issue(file, line, where, _first_line(err.message), hint))
        elif err.validator == "propertyNames":
            issues.append(Issue(file, line, where, f"a key is not a valid name: {_first_line(err.message)}",
                                "use letters, digits and _"))
        else:
            issues.append(Issue(file, line, where, _first_line(err.message), hint))
    return issues


def _article(word: str) -> str:
    names = {"object": "a mapping", "array": "a list", "string": "text", "integer": "an integer",
             "number": "a number", "boolean": "true or false"}
    return names.get(word, word)


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (empty value)"
    return f"{type(value).__name__} {value!r}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200]


# --------------------------------------------------------------------------- pass 2: meaning


class FileChecker:
    """Checks the meaning of one YAML file after its schema: collects Issues with file:line (task files
    here, juno-prod's transformation files too)."""

    def __init__(self, path: Path, root: Node, data: Mapping[str, Any], display: str | None = None) -> None:
        self.path = path
        self.file = display or str(path)
        self.root = root
        self.data = data
        self.issues: list[Issue] = []

    def error(self, where: Sequence[str | int], message: str, fix: str = "") -> None:
        self.issues.append(Issue(self.file, _line_at(self.root, where), _where(where), message, fix))

    def size_mb(self, value: Any, where: Sequence[str | int], default: int) -> int:
        if value is None:
            return default
        try:
            mb = units.size_mb(value)
        except units.UnitError as err:
            self.error(where, str(err), "write a size, e.g. 512MB or 2GB")
            return default
        if mb <= 0:
            self.error(where, f"{value!r} is zero", "give a positive size")
        return mb

    def duration_s(self, value: Any, where: Sequence[str | int], default: int) -> int:
        if value is None:
            return default
        try:
            s = units.duration_s(value)
        except units.UnitError as err:
            self.error(where, str(err), "write a duration, e.g. 30m, 2h or 1h30m")
            return default
        if s <= 0:
            self.error(where, f"{value!r} is zero", "give a positive duration")
        return s


class _Builder(FileChecker):
    def build(self) -> Task:
        d = self.data
        executable, site_executable = self._executable()
        input_spec = self._input()
        splitting = self._splitting(has_input=input_spec is not None)
        resources = self._resources()
        retry = self._retry(resources)
        sites = self._sites()
        output = self._output()
        release = d.get("release")
        if isinstance(release, str):
            release = self._expand(release, ["release"])
        arguments = str(d.get("arguments", "") or "")
        self._check_arguments(arguments, splitting, input_spec is not None)
        environment = {str(k): _env_value(v) for k, v in (d.get("environment") or {}).items()}
        return Task(name=str(d.get("name")), source=self.path, executable=executable, site_executable=site_executable,
                    script=d.get("script"), arguments=arguments, environment=environment, release=release,
                    input=input_spec, splitting=splitting, output=output, resources=resources, retry=retry,
                    sites=sites, description=str(d.get("description", "") or ""), raw=d)

    def _expand(self, text: str, where: Sequence[str | int]) -> str:
        def sub(m: re.Match[str]) -> str:
            value = os.environ.get(m[1])
            if value is None:
                self.error(where, f"${{{m[1]}}} is not set in the environment",
                           f"export {m[1]}=... or write the path in full")
                return m[0]
            return value

        return _VAR_EXPR.sub(sub, text)

    def _executable(self) -> tuple[Path | None, str | None]:
        d = self.data
        if "executable" in d and "script" in d:
            self.error(["script"], "both executable and script are given", "keep one of them")
            return None, None
        if "executable" not in d and "script" not in d:
            self.error([], "missing key 'executable' (or 'script')",
                       "add executable: my_analysis.sh (next to the task file) or script: | followed by shell lines")
            return None, None
        exe = d.get("executable")
        if not isinstance(exe, str):
            return None, None
        if os.path.isabs(exe):
            return None, exe  # a path at the sites (release, CVMFS): checked by the wrapper when the job runs
        local = (self.path.parent / exe).resolve()
        if not local.is_file():
            self.error(["executable"], f"{exe} not found (looked for {local})",
                       "give a path relative to the task file, or an absolute path that exists at the sites")
            return None, None
        return local, None

    def _input(self) -> InputSpec | None:
        raw = self.data.get("input")
        if not isinstance(raw, dict):
            return None
        dids_raw = raw.get("dids")
        items = [dids_raw] if isinstance(dids_raw, str) else list(dids_raw or [])
        dids = []
        seen: set[Did] = set()
        for i, text in enumerate(items):
            where: list[str | int] = ["input", "dids"] if isinstance(dids_raw, str) else ["input", "dids", i]
            did = Did.parse(str(text))
            if did in seen:
                self.error(where, f"{did} is listed twice", "remove one")
                continue
            seen.add(did)
            dids.append(did)
        filt: dict[str, FilterValue] = {}
        for key, value in (raw.get("filter") or {}).items():
            if isinstance(value, dict):
                lo, hi = value.get("min"), value.get("max")
                if lo is not None and hi is not None and _comparable(lo, hi) and lo > hi:
                    self.error(["input", "filter", key], f"min {lo!r} is above max {hi!r}", "swap them")
                filt[key] = Range(lo, hi)
            elif isinstance(value, list):
                filt[key] = tuple(value)
            else:
                filt[key] = value
        return InputSpec(dids=tuple(dids), filter=filt)

    def _splitting(self, *, has_input: bool) -> Splitting:
        raw = self.data.get("splitting")
        if not isinstance(raw, dict):
            return Splitting()
        fpj = raw.get("files_per_job")
        jobvars_raw = raw.get("jobvars") or {}
        max_jobs = raw.get("max_jobs")
        if has_input and fpj is None:
            self.error(["splitting"], "the task has input but no files_per_job",
                       "add files_per_job: N (files of the same sites go together, N at most per job)")
        if not has_input and fpj is not None:
            self.error(["splitting", "files_per_job"], "files_per_job needs input data",
                       "add input: {dids: [scope:name]} or split by jobvars instead")
        if has_input and jobvars_raw:
            self.error(["splitting", "jobvars"], "jobvars split tasks without input; this task has input",
                       "remove jobvars, or remove input for a job-variable (e.g. MC) task")
        if not has_input and not jobvars_raw and "splitting" in self.data:
            self.error(["splitting"], "no input and no jobvars: nothing says how many jobs to make",
                       "add jobvars (e.g. seed: {type: range, first: 1, count: 10}) or input")
        jobvars = []
        for name, spec in jobvars_raw.items():
            jv = self._jobvar(str(name), spec)
            if jv is not None:
                jobvars.append(jv)
        if jobvars and max_jobs is None and all(self._open_ended(j) for j in jobvars):
            self.error(["splitting", "jobvars"], "every job variable is an open-ended range: the task has no end",
                       "give one of them last: or count:, or set splitting.max_jobs")
        return Splitting(files_per_job=fpj, jobvars=tuple(jobvars), max_jobs=max_jobs)

    @staticmethod
    def _open_ended(jv: JobVar) -> bool:
        return jv.kind == "range" and jv.last is None and jv.count is None

    def _jobvar(self, name: str, spec: Any) -> JobVar | None:
        if not isinstance(spec, dict):
            return None
        where: list[str | int] = ["splitting", "jobvars", name]
        kind = spec.get("type")
        allowed = {"range": {"type", "first", "step", "last", "count", "group"},
                   "enumerate": {"type", "values", "group"}, "list": {"type", "file", "group"}}.get(str(kind))
        if allowed is None:
            return None
        for key in spec:
            if key not in allowed:
                self.error([*where, key], f"{key} does not apply to a {kind} variable",
                           f"a {kind} variable takes {', '.join(sorted(allowed - {'type'}))}")
        group = str(spec.get("group", "default"))
        if kind == "range":
            first, step = spec.get("first", 1), spec.get("step", 1)
            last, count = spec.get("last"), spec.get("count")
            if last is not None and count is not None:
                self.error([*where, "count"], "give last or count, not both", "keep one")
            if last is not None and (last - first) * step < 0:
                self.error([*where, "last"], f"a range from {first} in steps of {step} never reaches {last}",
                           "check first, step and last")
            return JobVar(name=name, kind="range", group=group, first=first, step=step, last=last, count=count)
        if kind == "enumerate":
            values = spec.get("values")
            if not isinstance(values, list):
                self.error(where, "an enumerate variable needs values: [...]", "add values: [a, b, c]")
                return None
            return JobVar(name=name, kind="enumerate", group=group, values=tuple(values))
        file = spec.get("file")
        if not isinstance(file, str):
            self.error(where, "a list variable needs file: (one value per line)", "add file: values.txt")
            return None
        path = (self.path.parent / file).resolve()
        try:
            lines = [ln.strip() for ln in path.read_text().splitlines()]
        except OSError as err:
            self.error([*where, "file"], f"cannot read {path}: {err.strerror}",
                       "give a path relative to the task file")
            return None
        values = tuple(ln for ln in lines if ln and not ln.startswith("#"))
        if not values:
            self.error([*where, "file"], f"{path} has no values", "write one value per line")
            return None
        return JobVar(name=name, kind="enumerate", group=group, values=values)

    def _resources(self) -> Resources:
        raw = self.data.get("resources") or {}
        base = Resources()
        wall = raw.get("wall_time")
        wall_s = base.wall_s
        if wall is not None:
            try:
                wall_s = units.duration_s(wall)
            except units.UnitError as err:
                self.error(["resources", "wall_time"], str(err))
        return Resources(memory_mb=self.size_mb(raw.get("memory"), ["resources", "memory"], base.memory_mb),
                         cpus=int(raw.get("cpus", base.cpus)),
                         disk_mb=self.size_mb(raw.get("disk"), ["resources", "disk"], base.disk_mb),
                         wall_s=wall_s, copies=int(raw.get("copies", base.copies)))

    def _retry(self, resources: Resources) -> RetryPolicy:
        raw = self.data.get("retry") or {}
        ladder = []
        for i, step in enumerate(raw.get("memory") or []):
            ladder.append(self.size_mb(step, ["retry", "memory", i], 0))
        for i in range(1, len(ladder)):
            if ladder[i] <= ladder[i - 1]:
                self.error(["retry", "memory", i], f"the memory ladder must climb: {units.format_mb(ladder[i])} "
                           f"after {units.format_mb(ladder[i - 1])}", "list the steps from small to large")
        if ladder and ladder[-1] <= resources.memory_mb:
            self.error(["retry", "memory"], f"every step of the ladder is at or below resources.memory "
                       f"({units.format_mb(resources.memory_mb)}): no step to escalate to",
                       "start the ladder at resources.memory and go up, e.g. [2GB, 4GB, 8GB]")
        codes = raw.get("exit_codes", "any")
        exit_codes = None if codes == "any" else frozenset(int(c) for c in codes or [])
        return RetryPolicy(max_attempts=int(raw.get("max_attempts", RetryPolicy.max_attempts)),
                           memory_ladder_mb=tuple(ladder), exit_codes=exit_codes)

    def _sites(self) -> SiteLists:
        raw = self.data.get("sites") or {}
        allow = tuple(str(s) for s in raw.get("allow") or [])
        deny = tuple(str(s) for s in raw.get("deny") or [])
        both = sorted(set(allow) & set(deny))
        if both:
            self.error(["sites", "deny"], f"{', '.join(both)} both allowed and denied", "remove it from one list")
        elif allow and not set(allow) - set(deny):
            self.error(["sites"], "no site left after the deny list", "allow at least one site that is not denied")
        return SiteLists(allow=allow, deny=deny)

    def _output(self) -> OutputSpec | None:
        raw = self.data.get("output")
        if not isinstance(raw, dict):
            return None
        files_raw = raw.get("files")
        files = (files_raw,) if isinstance(files_raw, str) else tuple(files_raw or ())
        for i, pattern in enumerate(files):
            if os.path.isabs(pattern) or ".." in Path(pattern).parts:
                where: list[str | int] = ["output", "files"] if isinstance(files_raw, str) else ["output", "files", i]
                self.error(where, f"{pattern!r} leaves the job's working directory",
                           "give a pattern relative to it, e.g. out/*.root")
        dataset = str(raw.get("dataset") or "")  # empty: named at submission (plan.output_target)
        scope = None
        if ":" in dataset:
            scope, dataset = dataset.split(":", 1)
        return OutputSpec(dataset=dataset, scope=scope, files=files, rse=str(raw.get("rse", "site")))

    def _check_arguments(self, arguments: str, splitting: Splitting, has_input: bool) -> None:
        try:
            tokens = shlex.split(arguments)
        except ValueError as err:
            self.error(["arguments"], f"cannot split the arguments like a shell line: {err}", "close the quotes")
            return
        known = set(BUILTIN_PLACEHOLDERS) | {v.name for v in splitting.jobvars}
        for token in tokens:
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(token) if f is not None]
            except ValueError as err:
                self.error(["arguments"], f"{token!r}: {err}", "write {{ and }} for literal braces")
                continue
            for name in fields:
                base = re.split(r"[.\[!:]", name, maxsplit=1)[0]
                if base not in known:
                    close = difflib.get_close_matches(base, sorted(known), n=1)
                    self.error(["arguments"], f"unknown placeholder {{{name}}}",
                               (f"did you mean {{{close[0]}}}? " if close else "")
                               + f"known: {', '.join('{' + k + '}' for k in sorted(known))}")
                elif base in ("inputs", "input", "nfiles") and not has_input:
                    self.error(["arguments"], f"{{{base}}} needs input data; this task has none",
                               "remove it or add input")
                elif base == "inputs" and token != "{inputs}":
                    self.error(["arguments"], "{inputs} must be a word of its own (it becomes one word per file)",
                               "separate it with spaces, or use {input} for the first file")


def _comparable(a: Any, b: Any) -> bool:
    return isinstance(a, int | float) and isinstance(b, int | float) or isinstance(a, str) and isinstance(b, str)


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# --------------------------------------------------------------------------- entry point


def read_checked(path: Path, error: Callable[[list[Issue]], Exception], examples: str,
                 doc: Mapping[str, Any] | None = None) -> tuple[Node, dict[str, Any]]:
    """A YAML file's node tree and data once its syntax, keys and schema pass (task files here, juno-prod's
    transformation files with `doc`); otherwise raise error(issues) with every problem at file:line."""
    display = str(path)
    root, issues = compose(path, display)
    if root is None:
        raise error(issues)
    issues = list(_duplicates(root, "", display))
    if issues:
        raise error(issues)
    data = value_of(root)
    if not isinstance(data, dict):
        raise error([Issue(display, line_of(root), "", f"expected a mapping of keys, found {_kind(data)}",
                           f"see {examples} for examples")])
    issues = _schema_issues(data, root, display, doc)
    if issues:
        raise error(issues)
    return root, data


def load(path: Path | str) -> Task:
    """Read and check a task file; raise TaskFileError with every problem found."""
    path = Path(path)
    display = str(path)
    root, data = read_checked(path, TaskFileError, "etc/tasks/")
    builder = _Builder(path.resolve(), root, data)
    task = builder.build()
    if builder.issues:
        # Line numbers refer to the file as given; keep the name the person typed.
        raise TaskFileError([Issue(display, i.line, i.where, i.message, i.fix) for i in builder.issues])
    return task
