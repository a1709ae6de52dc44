"""A task file and Rucio → the jobs to run: what `juno-submit plan` shows and `submit` submits.

Order matters for the promise "a bad task or a missing input submits nothing": the task file is checked
first (taskfile.py), then the output dataset and RSE, then the inputs are resolved, grouped by sites and
split. Only a complete plan is ever handed to submission.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from juno_jobs import gcpause, locality, splitting
from juno_jobs.model import InputFile, JobSpec, OutputTarget, RseInfo, SiteGroup, Task
from juno_jobs.pfns import NoReadProtocol, PfnMaker
from juno_jobs.resolve import InputError, Resolver, clone_client, rse_infos


class PlanError(ValueError):
    """The task is fine as a file but cannot run as asked (output dataset taken, unknown RSE, ...)."""


@dataclass
class Plan:
    task: Task
    account: str
    jobs: list[JobSpec]
    groups: list[SiteGroup]
    rses: dict[str, RseInfo]
    output: OutputTarget | None
    rse_bases: dict[str, dict[str, Any]] = field(default_factory=dict)  # RSE → {"site", "base"}
    explicit_pfns: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # (scope, name) → {RSE: PFN}
    job_rses: list[tuple[str, ...]] = field(default_factory=list)  # per job: the RSEs it may read from
    output_bases: dict[str, dict[str, Any]] = field(default_factory=dict)  # output RSE → {"site", "base"} (write)
    n_files: int = 0
    bytes: int = 0
    resolve_s: float = 0.0
    rucio_calls: int = 0
    plan_s: float = 0.0
    own_dataset: bool = True  # juno-submit creates, protects and closes the output dataset; juno-prod does its own



def output_target(task: Task, account: str) -> OutputTarget | None:
    """The output dataset's DID: in user.<account>, its name starting with the scope (so the rucio CLI
    finds the scope from the name alone)."""
    if task.output is None:
        return None
    scope = task.output.scope or f"user.{account}"
    if not scope.startswith("user.") and not scope.startswith("group."):
        raise PlanError(f"output scope {scope}: outputs go to your own scope user.<account>")
    if account == "root" and task.output.scope is None:
        raise PlanError("the Rucio account is root, which has no user scope: write the scope in the task file, "
                        "e.g. output: {dataset: user.analyst1:my-task}, or run as your own account")
    # Without a name, each submission gets its own dataset (as CRAB names outputs after the request):
    # submitting the same task file again must not collide with the last run's closed dataset.
    name = task.output.dataset or f"{task.name}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    if not name.startswith(scope + "."):
        name = f"{scope}.{name}"
    return OutputTarget(scope=scope, name=name, rse=task.output.rse, patterns=task.output.files)


def output_exists(client: Any, target: OutputTarget) -> str:
    """'no', 'empty' (exists, open, no files: e.g. left by a submission the schedd refused) or 'used'."""
    from rucio.common.exception import DataIdentifierNotFound

    try:
        did = client.get_did(target.scope, target.name, dynamic_depth="FILE")
    except DataIdentifierNotFound:
        return "no"
    return "empty" if did.get("open") and not did.get("length") else "used"


def check_output(target: OutputTarget, exists: str, rses: dict[str, RseInfo], owned: Callable[[str, str], bool]
                 ) -> None:
    if target.rse != "site":
        info = rses.get(target.rse)
        if info is None:
            raise PlanError(f"output.rse {target.rse} is not an RSE: choose one of "
                            f"{', '.join(sorted(r for r, i in rses.items() if not i.tape))}, or 'site'")
        if info.tape:
            raise PlanError(f"output.rse {target.rse} is a tape RSE: outputs go to disk")
    if exists == "no":
        return
    if owned(target.scope, target.name):
        raise PlanError(f"output dataset {target.did} belongs to an earlier task here: resubmit that task "
                        "(juno-submit resubmit), or give this one another output.dataset")
    if exists == "empty":
        return  # open and empty: nothing to collide with, it is used as it is
    raise PlanError(f"output dataset {target.did} already exists in Rucio: give output.dataset another name")


def _bases(plan: Plan, maker: PfnMaker, log: Callable[[str], None]) -> None:
    """One base URL per RSE the jobs read from; per-file PFNs where Rucio's paths differ from ours."""
    samples: dict[str, InputFile] = {}
    for group in plan.groups:
        seen: set[tuple[str, ...]] = set()  # files of one block share their RSE tuple: look at each once
        for f in group.files:
            if f.rses in seen:
                continue
            seen.add(f.rses)
            for r in f.rses:
                if r not in samples and r in plan.rses and not plan.rses[r].tape \
                        and plan.rses[r].site in group.sites:
                    samples[r] = f

    def one(item: tuple[str, InputFile]) -> tuple[str, str | None | NoReadProtocol]:
        rse, sample = item
        try:
            return rse, maker.base(rse, sample, clone_client(maker.client))
        except NoReadProtocol as err:
            return rse, err

    with ThreadPoolExecutor(max(1, min(6, len(samples)))) as pool:
        found = list(pool.map(one, sorted(samples.items())))
    for rse, base in found:
        if isinstance(base, NoReadProtocol):
            log(f"  warning: {base}; jobs will not read from it")
            continue
        plan.rse_bases[rse] = {"site": plan.rses[rse].site, "base": base}
        if base is None:
            log(f"  {rse}: Rucio's paths differ from the juno algorithm: listing PFNs file by file")
            files = [f for g in plan.groups for f in g.files if rse in f.rses]
            scopes = {f.name: f.scope for f in files}
            for name, pfn in maker.pfns(rse, files).items():
                plan.explicit_pfns.setdefault((scopes[name], name), {})[rse] = pfn


def make_plan(task: Task, client: Any, *, owned: Callable[[str, str], bool] = lambda s, n: False,
              log: Callable[[str], None] = lambda m: None, workers: int | None = None) -> Plan:
    """Resolve, group and split. Raises PlanError, InputError, LocalityError or SplitError; submits nothing."""
    with gcpause.paused():
        return _make_plan(task, client, owned=owned, log=log, workers=workers)


def _make_plan(task: Task, client: Any, *, owned: Callable[[str, str], bool], log: Callable[[str], None],
               workers: int | None) -> Plan:
    started = time.perf_counter()
    account = str(client.account)
    target = output_target(task, account)
    resolver = Resolver(client, log=log, **({"workers": workers} if workers else {}))
    with ThreadPoolExecutor(1) as side:
        # Whether the output dataset exists is asked while the input is resolved.
        exists = side.submit(output_exists, clone_client(client), target) if target is not None else None
        res = resolver.resolve(task.input.dids, task.input.filter, wanted_site=task.sites.permits) \
            if task.input is not None else None
        rses = res.rses if res is not None else rse_infos(client)
        if target is not None and exists is not None:
            check_output(target, exists.result(), rses, owned)
    plan = Plan(task=task, account=account, jobs=[], groups=[], rses=rses, output=target)
    split = task.splitting
    if res is not None:
        plan.resolve_s, plan.rucio_calls = res.resolve_s, res.calls
        plan.groups = locality.group_by_sites(res.files, rses, task.sites)
        assert split.files_per_job is not None
        with ThreadPoolExecutor(1) as side:
            # The RSE bases are a few REST calls: they come in while the files are split into jobs.
            bases = side.submit(_bases, plan, PfnMaker(client), log)
            plan.jobs = splitting.split_files(plan.groups, split.files_per_job, max_jobs=split.max_jobs)
            plan.n_files = len(res.files)
            plan.bytes = sum(g.bytes for g in plan.groups)
            bases.result()
        readable = set(plan.rse_bases)
        cache: dict[frozenset[tuple[str, ...]], tuple[str, ...]] = {}
        for job in plan.jobs:
            # Files of one block share one RSE tuple: decide per distinct set of tuples, not per file.
            key = frozenset(f.rses for f in job.files)
            job_rses = cache.get(key)
            if job_rses is None:
                job_rses = cache[key] = tuple(sorted({r for t in key for r in t if r in readable}))
            plan.job_rses.append(job_rses)
    else:
        sites = tuple(sorted(set(task.sites.allow) or {i.site for i in rses.values() if not i.tape and i.juno_site}))
        sites = tuple(s for s in sites if task.sites.permits(s))
        if not sites:
            raise PlanError("no site left to run at: check sites.allow and sites.deny")
        plan.jobs = splitting.split_jobvars(task.splitting.jobvars, sites=sites, max_jobs=split.max_jobs)
        plan.job_rses = [() for _ in plan.jobs]
    if target is not None:
        plan.output_bases = _output_bases(plan, PfnMaker(client))
    plan.plan_s = time.perf_counter() - started
    return plan


def _output_bases(plan: Plan, maker: PfnMaker) -> dict[str, dict[str, Any]]:
    """The write URL base of every RSE a job may stage its outputs out to: the jobs compute each file's
    path themselves (the `juno` lfn2pfn algorithm), as for inputs. An RSE whose paths differ cannot take
    outputs from jobs: planning stops there, before anything runs."""
    target = plan.output
    assert target is not None
    if target.rse != "site":
        candidates = [target.rse]
    else:
        sites = {s for j in plan.jobs for s in j.sites}
        candidates = sorted(r for r, i in plan.rses.items() if not i.tape and i.site in sites)
    sample = target.file_name(0, "sample")
    out: dict[str, dict[str, Any]] = {}
    for rse in candidates:
        try:
            base = maker.write_base(rse, target.scope, sample)
        except NoReadProtocol as err:
            if target.rse != "site":
                raise PlanError(f"output.rse {rse}: {err}") from None
            continue
        if base is None:
            raise PlanError(f"output RSE {rse} places files at paths other than the juno algorithm's "
                            f"({maker.write_url(rse, target.scope, sample)}): jobs could not stage their outputs "
                            "out there; choose another output.rse")
        out[rse] = {"site": plan.rses[rse].site, "base": base}
    return out


def plan_for_jobs(task: Task, client: Any, *, jobs: list[JobSpec], groups: list[SiteGroup],
                  rses: dict[str, RseInfo], output: OutputTarget | None, own_dataset: bool = True,
                  log: Callable[[str], None] = lambda m: None, pfns: PfnMaker | None = None) -> Plan:
    """A plan from jobs the caller made itself (juno-prod: the files it assigned, with their output names in
    the job variables): the same read and write bases as make_plan, nothing resolved again. `pfns`: a maker
    the caller keeps across plans (the URL bases it already knows are not asked again)."""
    maker = pfns if pfns is not None else PfnMaker(client)
    started = time.perf_counter()
    plan = Plan(task=task, account=str(client.account), jobs=jobs, groups=groups, rses=rses, output=output,
                own_dataset=own_dataset)
    plan.n_files = sum(len(j.files) for j in jobs)
    plan.bytes = sum(j.bytes for j in jobs)
    if groups:
        _bases(plan, maker, log)
        readable = set(plan.rse_bases)
        plan.job_rses = [tuple(sorted({r for f in j.files for r in f.rses if r in readable})) for j in jobs]
    else:
        plan.job_rses = [() for _ in jobs]
    if output is not None:
        plan.output_bases = _output_bases(plan, maker)
    plan.plan_s = time.perf_counter() - started
    return plan


def site_summary(plan: Plan) -> list[tuple[str, int, int, int]]:
    """(sites, jobs, files, bytes) per group of sites, in plan order."""
    rows: dict[tuple[str, ...], list[int]] = {}
    for job in plan.jobs:
        row = rows.setdefault(job.sites, [0, 0, 0])
        row[0] += 1
        row[1] += len(job.files)
        row[2] += job.bytes
    return [(",".join(k) or "(any)", *v) for k, v in rows.items()]  # type: ignore[misc]


def jobs_per_site(plan: Plan) -> dict[str, int]:
    return locality.jobs_per_site(j.sites for j in plan.jobs)


__all__ = ["InputError", "OutputTarget", "Plan", "PlanError", "make_plan", "output_target", "plan_for_jobs",
           "site_summary"]
