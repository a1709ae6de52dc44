"""`juno-submit`: JUNO analysis tasks on HTCondor, at the sites that hold their input data."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import click

from juno_common.cli import classify
from juno_common.exit_codes import Exit, help_epilog
from juno_common.logs import mute_rucio_client
from juno_jobs import control, settings, units
from juno_jobs.store import Store, TaskNotFound, TaskRow

# Exit codes: juno_common's table, the same for every juno-dci command (also in `juno-submit --help`).
OK = Exit.OK
FAILED = Exit.ERROR  # unexpected error
TASK_FILE = Exit.INVALID  # the task file is invalid (messages say file:line)
INPUT = Exit.REFUSED  # the inputs or outputs cannot be used as asked (missing DID, tape only, dataset exists, ...)
SERVICE = Exit.UNAVAILABLE  # Rucio or HTCondor could not be reached or failed
NOT_FOUND = Exit.NOT_FOUND  # no such task
JOBS_FAILED = Exit.FAILED  # the task ended with failed or killed jobs (status --watch, submit --wait)

EXIT_HELP = help_epilog()

STATES = ("idle", "running", "held", "finishing", "done", "failed", "killed")


class Context:
    def __init__(self, work_dir: Path | None, backend: str | None, quiet: bool, verbose: bool) -> None:
        self.work_dir = work_dir
        self.backend = backend
        self.quiet = quiet
        self.verbose = verbose
        self._session: control.Session | None = None

    def log(self, msg: str) -> None:
        if not self.quiet:
            click.echo(msg, err=True)

    def session(self) -> control.Session:
        if self._session is None:
            try:
                cfg = settings.from_env(work_dir=self.work_dir, backend=self.backend)
            except ValueError as err:
                fail(str(err), FAILED)
            self._session = control.Session(cfg=cfg, store=Store(cfg.db_path), rucio=_rucio_client, log=self.log)
        return self._session

    def task(self, ref: str | None) -> TaskRow:
        store = self.session().store
        try:
            if ref is None:
                latest = store.latest_task()
                if latest is None:
                    fail(f"no task in {store.path} yet: submit one with `juno-submit submit TASK.yaml`", NOT_FOUND)
                return latest
            return store.task(ref)
        except TaskNotFound as err:
            fail(str(err), NOT_FOUND)


def _rucio_client() -> Any:
    from rucio.client import Client

    return Client()


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"juno-submit: {message}", err=True)
    sys.exit(code)


def _is(err: BaseException, module: str, *names: str) -> bool:
    """isinstance against classes of a module, without importing it: if the module was never imported,
    the error cannot come from it (and `status` stays free of planning's imports)."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(err, tuple(getattr(mod, n) for n in names))


@contextmanager
def errors(ctx: Context) -> Iterator[None]:
    """Map every error a person can meet to its message and exit code (one place, as globus-cli does)."""
    try:
        yield
    except Exception as err:
        if _is(err, "juno_jobs.taskfile", "TaskFileError"):
            issues = err.issues  # type: ignore[attr-defined]
            fail(f"the task file has {len(issues)} problem(s); nothing was submitted:\n"
                 + "\n".join(f"  {i}" for i in issues), TASK_FILE)
        if _is(err, "juno_jobs.resolve", "InputError") or _is(err, "juno_jobs.locality", "LocalityError") \
                or _is(err, "juno_jobs.plan", "PlanError") or _is(err, "juno_jobs.splitting", "SplitError"):
            fail(f"{err}" + ("" if "Nothing was submitted" in str(err) else "\nNothing was submitted."), INPUT)
        if isinstance(err, control.CommandError):
            fail(str(err), INPUT)
        if isinstance(err, control.BackendError):
            fail(str(err), SERVICE)
        if isinstance(err, TaskNotFound):
            fail(str(err), NOT_FOUND)
        code, label, message = classify(err)  # Rucio's exceptions and connection errors: juno_common.errors
        if code != Exit.ERROR:
            fail(message if message.startswith(label) else f"{label}: {message}", code)
        raise


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=EXIT_HELP)
@click.option("--dir", "work_dir", type=click.Path(path_type=Path), envvar="JUNO_SUBMIT_DIR",
              help="Where tasks are kept (database and task directories). [env JUNO_SUBMIT_DIR; default on the "
                   "local grid: .grid/jobs/juno-submit]")
@click.option("--backend", type=click.Choice(["condor", "local"]), envvar="JUNO_SUBMIT_BACKEND",
              help="condor (an HTCondor schedd; default) or local (processes on this machine). [env "
                   "JUNO_SUBMIT_BACKEND]")
@click.option("-q", "--quiet", is_flag=True, help="No progress messages on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="More detail in tables.")
@click.pass_context
def main(click_ctx: click.Context, work_dir: Path | None, backend: str | None, quiet: bool, verbose: bool) -> None:
    """Run an analysis task where its input data lives.

    A task file (YAML, see etc/tasks/ and etc/task.schema.json) names a payload, Rucio input data, how to
    split it into jobs, and where outputs go. juno-submit finds the AVAILABLE disk replicas of the input in
    Rucio, groups files by the sites that hold them, and submits jobs that run only at those sites and read
    their input from local storage. Failed jobs are retried (with more memory when memory was the cause);
    outputs are registered in Rucio in your user.<account> scope.

    \b
    A session (Rucio as yourself: outputs go to your user.<account> scope):
      juno-submit plan etc/tasks/mc-jobvars.yaml      what would run where, and the submit description
      juno-submit submit etc/tasks/mc-jobvars.yaml    prints the task's number, e.g. 1
      juno-submit status 1 --watch                    follow it until every job is done
      juno-submit status 1 --jobs                     one line per job: state, tries, memory, site, why
      juno-submit logs 1 -j 0                         stdout, stderr, events of every attempt of job 0
      juno-submit resubmit 1 --failed --memory 4GB
    On the local grid, prefix each with
      .venv/bin/juno-grid exec -- env RUCIO_CONFIG=.grid/rucio/analyst1.cfg   (README: juno-submit)

    Outputs are registered by the registrar, `juno-submit sync --follow`, which submit and status start in
    the background (one per work directory; JUNO_SUBMIT_REGISTRAR=off: run `sync` yourself).
    Progress goes to stderr, results to stdout; --json (where offered) prints one JSON document.
    TASK is a task's number (see `list`), its name (the latest of that name) or its uuid.
    """
    if not verbose:
        mute_rucio_client()
    # Rucio's client warns on the root logger about things users cannot act on (e.g. the default VO).
    logging.getLogger().setLevel(logging.INFO if verbose else logging.ERROR)
    click_ctx.obj = Context(work_dir, backend, quiet, verbose)


# --------------------------------------------------------------------------- plan / submit


def _plan(ctx: Context, task_file: Path, inputs: tuple[str, ...] = ()) -> Any:
    import dataclasses

    from juno_jobs import plan as plan_mod
    from juno_jobs import taskfile
    from juno_jobs.model import Did, InputSpec

    task = taskfile.load(task_file)  # before anything talks to a service
    _warn_memory(ctx, task)
    if inputs:
        bad = [d for d in inputs if ":" not in d or not d.split(":", 1)[1]]
        if bad:
            raise click.BadParameter(f"{bad[0]!r}: write scope:name", param_hint="--input")
        if task.input is None:
            raise click.BadParameter("this task has no input section (it splits by jobvars)", param_hint="--input")
        task = dataclasses.replace(task, input=InputSpec(dids=tuple(Did.parse(d) for d in inputs),
                                                         filter=task.input.filter))
    sess = ctx.session()
    ctx.log(f"task {task.name}: planning with Rucio account {sess.client.account} ...")
    return plan_mod.make_plan(task, sess.client, log=ctx.log,
                              owned=lambda s, n: sess.store.output_dataset_owner(s, n) is not None)


def _warn_memory(ctx: Context, task: Any) -> None:
    """Memory no slot offers means jobs that never start (the local pool's slots have 2 GB)."""
    backend = ctx.session().backend(ctx.backend or ctx.session().cfg.backend)
    largest = backend.largest_slots()
    sites = [s for s in largest if task.sites.permits(s)]
    if not sites:
        return
    top = max(largest[s] for s in sites)
    for label, mb in [("resources.memory", task.resources.memory_mb),
                      *(("retry.memory step", m) for m in task.retry.memory_ladder_mb)]:
        if mb > top:
            ctx.log(f"warning: {label} {units.format_mb(mb)} is more than any slot offers "
                    f"({units.format_mb(top)} at most, at {', '.join(sorted(s for s in sites if largest[s] == top))}): "
                    "jobs asking for it will stay idle")


def _plan_json(ctx: Context, plan: Any, description: str, *, jobs: bool) -> dict[str, Any]:
    from juno_jobs.plan import jobs_per_site, site_summary
    from juno_jobs.splitting import arguments_of

    out: dict[str, Any] = {
        "task": plan.task.name, "account": plan.account, "jobs": len(plan.jobs), "files": plan.n_files,
        "bytes": plan.bytes, "groups": [{"sites": s, "jobs": j, "files": f, "bytes": b}
                                        for s, j, f, b in site_summary(plan)],
        "jobs_per_site": jobs_per_site(plan),
        "output": {"dataset": plan.output.did, "rse": plan.output.rse, "files": list(plan.output.patterns)}
        if plan.output else None,
        "memory_mb": plan.task.resources.memory_mb, "retry": {
            "max_attempts": plan.task.retry.max_attempts, "memory_ladder_mb": list(plan.task.retry.memory_ladder_mb)},
        "plan_s": round(plan.plan_s, 3), "rucio_calls": plan.rucio_calls, "submit_description": description,
    }
    if jobs:
        out["job_list"] = [{"job": j.index, "sites": list(j.sites), "files": [f.did for f in j.files],
                            "bytes": j.bytes, "arguments": list(arguments_of(j, plan.task.arguments)),
                            "variables": dict(j.variables)}
                           for j in plan.jobs]
    return out


def _print_plan(ctx: Context, plan: Any, description: str, *, jobs: bool) -> None:
    from juno_jobs.plan import jobs_per_site, site_summary
    from juno_jobs.splitting import arguments_of

    t = plan.task
    head = f"task {t.name}: {len(plan.jobs)} jobs"
    if plan.n_files:
        head += f", {plan.n_files} files, {units.format_bytes(plan.bytes)}"
    click.echo(head + f" (Rucio account {plan.account})")
    if t.input is not None:
        click.echo("input: " + ", ".join(str(d) for d in t.input.dids)
                   + (f"  filter {dict(t.input.filter)}" if t.input.filter else ""))
    header = "sites holding the files" if t.input is not None else "sites the jobs may run at"
    click.echo(f"\n{header:<28} {'jobs':>6} {'files':>7} {'bytes':>10}")
    for sites, n_jobs, n_files, n_bytes in site_summary(plan):
        click.echo(f"{sites:<28} {n_jobs:>6} {n_files:>7} {units.format_bytes(n_bytes):>10}")
    per_site = jobs_per_site(plan)
    click.echo("\njobs each site may run: " + ", ".join(f"{s} {n}" for s, n in per_site.items()))
    if plan.output:
        where = "the site where each job ran" if plan.output.rse == "site" else plan.output.rse
        click.echo(f"outputs: {', '.join(plan.output.patterns)} -> {plan.output.did} at {where}")
    steps = [t.resources.memory_mb, *(m for m in t.retry.memory_ladder_mb if m > t.resources.memory_mb)]
    ladder = " -> ".join(units.format_mb(m) for m in steps)
    click.echo(f"resources: {units.format_mb(t.resources.memory_mb)}, {t.resources.cpus} cpu, "
               f"wall {units.format_duration(t.resources.wall_s)}; retries: {t.retry.max_attempts} attempts, "
               f"memory {ladder}")
    if jobs:
        click.echo(f"\n{'job':>5} {'sites':<16} {'files':>5} {'bytes':>10}  arguments")
        for j in plan.jobs:
            click.echo(f"{j.index:>5} {','.join(j.sites):<16} {len(j.files):>5} {units.format_bytes(j.bytes):>10}  "
                       + " ".join(arguments_of(j, t.arguments)))
    click.echo("\nsubmit description (one cluster; one item line 'job attempt memory sites' per job):")
    click.echo("  " + description.rstrip().replace("\n", "\n  "))


INPUT_OPTION = click.option("--input", "inputs", multiple=True, metavar="SCOPE:NAME",
                            help="Use this input instead of the task file's input.dids (repeatable).")


@main.command()
@click.argument("task_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@INPUT_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--jobs", "show_jobs", is_flag=True, help="List every job (files, arguments).")
@pass_ctx
def plan(ctx: Context, task_file: Path, inputs: tuple[str, ...], as_json: bool, show_jobs: bool) -> None:
    """What `submit` would do, without submitting (= submit --dry-run).

    Resolves the input in Rucio (AVAILABLE disk replicas only), groups files by the sites that hold them,
    splits them into jobs and shows jobs per site, files and bytes, and the HTCondor submit description.
    Inputs only on tape or nowhere stop here, with what to do about it.
    """
    with errors(ctx):
        p = _plan(ctx, task_file, inputs)
        backend = ctx.session().cfg.backend
        desc = control.describe(ctx.session(), p, backend)
        if as_json:
            click.echo(json.dumps(_plan_json(ctx, p, desc, jobs=show_jobs), indent=1))
        else:
            _print_plan(ctx, p, desc, jobs=show_jobs)


@main.command(name="submit")
@click.argument("task_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@INPUT_OPTION
@click.option("--dry-run", is_flag=True, help="Plan only: show what would be submitted (same as `plan`).")
@click.option("--wait", is_flag=True, help="Follow the task until every job is final (as status --watch).")
@click.option("--json", "as_json", is_flag=True, help="Print the new task as JSON.")
@pass_ctx
@click.pass_context
def submit_cmd(click_ctx: click.Context, ctx: Context, task_file: Path, inputs: tuple[str, ...], dry_run: bool,
               wait: bool, as_json: bool) -> None:
    """Submit a task: one HTCondor cluster, jobs at the sites holding their input.

    Nothing is submitted if the task file or the input has a problem. The task is recorded in the local
    task database; follow it with `juno-submit status`.
    """
    if dry_run:
        click_ctx.invoke(plan, task_file=task_file, inputs=inputs, as_json=as_json, show_jobs=False)
        return
    with errors(ctx):
        p = _plan(ctx, task_file, inputs)
        sess = ctx.session()
        task = control.submit(sess, p)
        if not wait:
            _start_registrar(ctx)
        if as_json:
            click.echo(json.dumps(_task_json(sess, task)))
        else:
            click.echo(f"task {task.id} ({task.name}): {task.n_jobs} jobs submitted ({task.backend}); "
                       f"follow it with: juno-submit status {task.id}")
        if wait:
            sys.exit(_watch(ctx, task, 5.0, as_json=False))


# --------------------------------------------------------------------------- status / list


def _start_registrar(ctx: Context) -> None:
    from juno_jobs import registrar

    work = ctx.session().cfg.work_dir
    if registrar.start(work) is not None:
        ctx.log(f"registrar started: it registers outputs as jobs end (log: {registrar.log_path(work)})")


def _task_json(sess: control.Session, task: TaskRow) -> dict[str, Any]:
    counts = sess.store.counts(task.id)
    return {"id": task.id, "uuid": task.uuid, "name": task.name, "account": task.account, "backend": task.backend,
            "created": task.created, "jobs": task.n_jobs, "files": task.n_files, "bytes": task.bytes,
            "state": control.task_state(task, counts), "counts": {s: counts.get(s, 0) for s in STATES},
            "by_site": sess.store.counts_by_site(task.id), "output_dataset": task.output_did,
            "output_rse": task.output_rse, "dataset_closed": task.dataset_closed,
            "outputs_registered": len(sess.store.outputs(task.id)) if task.output_dataset else 0,
            "task_dir": str(task.task_dir)}




def _sync(ctx: Context, task: TaskRow, *, register: bool = True, wait: bool = True) -> TaskRow:
    sess = ctx.session()
    report = control.sync(sess, task, register=register, wait=wait)
    for w in report.warnings:
        ctx.log(f"warning: {w}")
    return sess.store.task(task.id)


def _look(ctx: Context, task: TaskRow, *, act: bool = False) -> TaskRow:
    """What `status` (act=False), `resubmit` and `kill` (act=True) do first. The registrar is the one
    process that moves a task on (events, registration, retries): it is started here if the task needs
    it and none runs, and `status` then only reads what it recorded, which takes the same few
    milliseconds for 10 jobs or 10,000 ending together. Without a registrar (JUNO_SUBMIT_REGISTRAR=off),
    and for resubmit and kill, which must act on the current state, new events are read and retries
    submitted here, but nothing is registered: no Rucio, no storage."""
    from juno_jobs import registrar

    sess = ctx.session()
    if act or not registrar.enabled():
        task = _sync(ctx, task, register=False, wait=act)
    if control.needs_registrar(sess, task):
        for problem in registrar.problems(sess.cfg.work_dir):
            ctx.log(f"warning: registrar: {problem}")
        if registrar.start(sess.cfg.work_dir) is not None:
            ctx.log(f"registrar started for {sess.cfg.work_dir} (log: {registrar.log_path(sess.cfg.work_dir)})")
    return task


def _job_rows(sess: control.Session, task: TaskRow) -> list[dict[str, Any]]:
    return [{"job": r["job"], "state": r["state"], "attempts": r["attempts"], "memory_mb": r["memory"],
             "sites": r["sites"], "site": r["site"], "exit_code": r["exit_code"], "failure": r["failure"],
             "reason": r["reason"]} for r in sess.store.jobs(task.id)]


def _print_status(ctx: Context, task: TaskRow, *, jobs: bool) -> None:
    sess = ctx.session()
    counts = sess.store.counts(task.id)
    state = control.task_state(task, counts)
    click.echo(f"task {task.id} {task.name}: {state}; {task.n_jobs} jobs"
               + (f", {task.n_files} files, {units.format_bytes(task.bytes)}" if task.n_files else "")
               + f" ({task.backend}, account {task.account})")
    click.echo("  " + "  ".join(f"{s} {counts[s]}" for s in STATES if counts.get(s)))
    by_site = sess.store.counts_by_site(task.id)
    shown = [s for s in STATES if any(c.get(s) for c in by_site.values())]
    click.echo(f"\n  {'site':<22}" + "".join(f"{s:>10}" for s in shown))
    for site in sorted(by_site):
        click.echo(f"  {site:<22}" + "".join(f"{by_site[site].get(s, 0):>10}" for s in shown))
    if task.output_did:
        n = len(sess.store.outputs(task.id))
        click.echo(f"\n  output {task.output_did}: {n} file(s) registered, "
                   + ("closed" if task.dataset_closed else "open"))
    if jobs:
        click.echo(f"\n  {'job':>5} {'state':<10} {'try':>3} {'memory':>7} {'site':<6} {'sites':<16} {'exit':>4}  "
                   "why")
        for r in _job_rows(sess, task):
            click.echo(f"  {r['job']:>5} {r['state']:<10} {r['attempts']:>3} {units.format_mb(r['memory_mb']):>7} "
                       f"{r['site'] or '-':<6} {r['sites'] or '-':<16} "
                       f"{'' if r['exit_code'] is None else r['exit_code']:>4}  "
                       + (f"{r['failure']}: {r['reason']}" if r["failure"] else (r["reason"] or "")))
    else:
        bad = sess.store.jobs(task.id, states=["failed", "held"])
        for b in bad[:5]:
            click.echo(f"  job {b['job']} {b['state']}: {b['failure'] or ''}: {b['reason'] or ''}")
        if len(bad) > 5:
            click.echo(f"  ... and {len(bad) - 5} more (--jobs lists them all)")
        if any(r["state"] == "failed" for r in bad):
            click.echo(f"  see why: juno-submit logs {task.id} -j {bad[0]['job']}; try again: "
                       f"juno-submit resubmit {task.id} --failed")


def _watch(ctx: Context, task: TaskRow, interval: float, *, as_json: bool, jobs: bool = False) -> int:
    sess = ctx.session()
    while True:
        task = _sync(ctx, task)
        counts = sess.store.counts(task.id)
        state = control.task_state(task, counts)
        if as_json:
            click.echo(json.dumps(_task_json(sess, task)))
        else:
            click.echo(f"[{time.strftime('%H:%M:%S')}] task {task.id}: {state}; "
                       + "  ".join(f"{s} {counts[s]}" for s in STATES if counts.get(s)))
        if state != "running" and (task.dataset_closed or not task.output_did or state != "completed"):
            if not as_json:
                _print_status(ctx, task, jobs=jobs)
            return OK if state == "completed" else JOBS_FAILED
        time.sleep(interval)


@main.command()
@click.argument("task_ref", metavar="[TASK]", required=False)
@click.option("--jobs", "show_jobs", is_flag=True, help="One line per job: state, attempts, memory, site, why.")
@click.option("--watch", "watch", is_flag=False, flag_value="10", default=None, metavar="[SECONDS]",
              help="Repeat every SECONDS (10) until every job is final; exit 7 if some failed.")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout (with --jobs: every job too).")
@click.option("--no-sync", is_flag=True, help="Only read the database; start no registrar.")
@pass_ctx
def status(ctx: Context, task_ref: str | None, show_jobs: bool, watch: str | None, as_json: bool,
           no_sync: bool) -> None:
    """Counts per state and per site; --jobs for every job; --watch to follow.

    Quick however many jobs end at once: it shows what the registrar recorded. The registrar
    (`juno-submit sync --follow`, one per work directory, started by `submit` and here when it is not
    running) reads new batch-system events every few seconds, verifies finished jobs' outputs on storage
    and registers them in Rucio (jobs wait in `finishing` until then, then become `done`), retries
    failed jobs per the task's policy and closes the output dataset when all are done.
    --watch does the same passes itself. With JUNO_SUBMIT_REGISTRAR=off, status reads new events and
    retries, and `juno-submit sync` registers. Without TASK: every unfinished task, or the latest one.
    """
    with errors(ctx):
        sess = ctx.session()
        if task_ref is None and watch is None:
            tasks = [t for t in sess.store.tasks() if not control.finished(sess, t)] or \
                    [t for t in [sess.store.latest_task()] if t is not None]
            if not tasks:
                fail(f"no task in {sess.store.path} yet: submit one with `juno-submit submit TASK.yaml`", NOT_FOUND)
        else:
            tasks = [ctx.task(task_ref)]
        if watch is not None:
            sys.exit(_watch(ctx, tasks[0], float(watch), as_json=as_json, jobs=show_jobs))
        docs = []
        for task in tasks:
            if not no_sync:
                task = _look(ctx, task)
            if as_json:
                doc = _task_json(sess, task)
                if show_jobs:
                    doc["job_list"] = _job_rows(sess, task)
                docs.append(doc)
            else:
                _print_status(ctx, task, jobs=show_jobs)
        if as_json:
            click.echo(json.dumps(docs[0] if task_ref is not None else docs, indent=1))


@main.command()
@click.argument("task_ref", metavar="[TASK]", required=False)
@click.option("--follow", is_flag=True,
              help="Stay: a pass every --interval seconds over every unfinished task of the work directory, until "
                   "none is left (the registrar; one per work directory: a second one exits at once).")
@click.option("--interval", type=click.FloatRange(min=0.5), default=5.0, show_default=True, metavar="SECONDS",
              help="With --follow: seconds between passes.")
@click.option("--idle-exit", type=click.FloatRange(min=1), default=3600.0, show_default=True, metavar="SECONDS",
              help="With --follow: stop when nothing changed this long (`status` starts a registrar again).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document per task on stdout (without --follow).")
@pass_ctx
def sync(ctx: Context, task_ref: str | None, follow: bool, interval: float, idle_exit: float, as_json: bool) -> None:
    """Move tasks forward, registering outputs: what the registrar does.

    A pass reads new batch-system events, checks each finished job's outputs on storage by checksum query
    (no bytes move), registers them in Rucio in bulk (at most 1,000 files a call, each exactly once),
    retries failed jobs and closes the output dataset when every job is done. Without TASK: every task
    that is not finished.

    \b
    `submit` and `status` start `juno-submit sync --follow` in the background when it is not running
    (log: WORKDIR/registrar.log). To run it yourself instead, set JUNO_SUBMIT_REGISTRAR=off and e.g.
      juno-submit sync                  from a timer (cron, systemd --user timer), or
      juno-submit sync --follow         as a service (systemd --user, Restart=on-failure)
    """
    from juno_jobs import registrar

    with errors(ctx):
        sess = ctx.session()
        if follow:
            if task_ref is not None:
                raise click.UsageError("--follow follows every task of the work directory: give no TASK")
            stamp = lambda m: click.echo(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {m}", err=True)  # noqa: E731
            registrar.follow(sess, interval_s=interval, idle_exit_s=idle_exit, log=stamp)
            return
        tasks = [ctx.task(task_ref)] if task_ref is not None else \
            [t for t in sess.store.tasks() if control.needs_registrar(sess, t)]
        docs = []
        for task in tasks:
            report = control.sync(sess, task)
            for w in report.warnings:
                ctx.log(f"warning: task {task.id}: {w}")
            task = sess.store.task(task.id)
            if as_json:
                docs.append({**_task_json(sess, task), "pass": {
                    "events": report.events, "finalized": report.finalized, "retried": report.retried,
                    "gave_up": report.gave_up, "closed": report.closed}})
            else:
                counts = sess.store.counts(task.id)
                click.echo(f"task {task.id} {task.name}: {control.task_state(task, counts)}; "
                           f"{report.finalized} job(s) done in this pass, {report.retried} retried; "
                           + "  ".join(f"{s} {counts[s]}" for s in STATES if counts.get(s)))
        if as_json:
            click.echo(json.dumps(docs[0] if task_ref is not None else docs, indent=1))


@main.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="JSON on stdout.")
@pass_ctx
def list_cmd(ctx: Context, as_json: bool) -> None:
    """Every task in the database (no update: `status` updates)."""
    with errors(ctx):
        sess = ctx.session()
        tasks = sess.store.tasks()
        if as_json:
            click.echo(json.dumps([_task_json(sess, t) for t in tasks], indent=1))
            return
        click.echo(f"{'id':>4} {'name':<28} {'backend':<7} {'created':<16} {'jobs':>6} {'state':<10} output")
        for t in tasks:
            counts = sess.store.counts(t.id)
            click.echo(f"{t.id:>4} {t.name[:28]:<28} {t.backend:<7} "
                       f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(t.created)):<16} {t.n_jobs:>6} "
                       f"{control.task_state(t, counts):<10} {t.output_did or '-'}")


# --------------------------------------------------------------------------- logs


@main.command()
@click.argument("task_ref", metavar="TASK")
@click.option("-j", "--job", "job", type=int, required=True, help="The job number (0, 1, ...: see status --jobs).")
@click.option("-a", "--attempt", type=int, help="Only this attempt (default: every attempt).")
@click.option("--only", type=click.Choice(["stdout", "stderr", "events", "result"]), help="Only one part.")
@pass_ctx
def logs(ctx: Context, task_ref: str, job: int, attempt: int | None, only: str | None) -> None:
    """Everything about one job, attempt by attempt: stdout, stderr, batch-system events, wrapper result."""
    from juno_jobs.taskdir import TaskDir

    with errors(ctx):
        sess = ctx.session()
        task = ctx.task(task_ref)
        if not 0 <= job < task.n_jobs:
            fail(f"task {task.id} has jobs 0..{task.n_jobs - 1}, not {job}", INPUT)
        td = TaskDir(task.task_dir)
        backend = sess.backend(task.backend)
        rows = [a for a in sess.store.attempts(task.id, job) if attempt is None or a["attempt"] == attempt]
        if not rows:
            fail(f"job {job} of task {task.id} has no attempt{' ' + str(attempt) if attempt else ''} yet", NOT_FOUND)
        for a in rows:
            n = a["attempt"]
            key = a["round"] if backend.keyed_by_round else a["cluster"]
            where = f"{'round' if backend.keyed_by_round else 'cluster'} {key}.{a['proc']}"
            click.echo(f"==== job {job} attempt {n}: {a['state']}, {where}, site {a['site'] or '-'}, "
                       f"{units.format_mb(a['memory'])} requested"
                       + (f", peak {a['max_rss_mb']} MB" if a["max_rss_mb"] else "")
                       + (f", exit {a['exit_code']}" if a["exit_code"] is not None else "")
                       + (f", {a['failure']}: {a['reason']}" if a["failure"] else ""))
            events = backend.job_events(td, key, a["proc"]) if only in (None, "events") and key is not None else []
            parts: list[tuple[str, Callable[[], str]]] = [
                ("stdout", partial(_read, td.stdout(job, n))),
                ("stderr", partial(_read, td.stderr(job, n))),
                ("events", partial(str, "\n".join(events) or "(none yet)")),
                ("result", partial(_read, td.result(job, n))),
            ]
            for name, read in parts:
                if only in (None, name):
                    click.echo(f"---- {name}" + (f" ({td.stdout(job, n)})" if name == "stdout" else
                                                 f" ({td.stderr(job, n)})" if name == "stderr" else ""))
                    click.echo(read().rstrip())


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace") or "(empty)"
    except FileNotFoundError:
        return "(not written yet)"


# --------------------------------------------------------------------------- resubmit / kill


def _job_list(text: str | None) -> list[int] | None:
    """'1,4,7-9' → [1, 4, 7, 8, 9]."""
    if text is None:
        return None
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise click.BadParameter(f"{part!r}: write job numbers like 1,4,7-9", param_hint="--jobs")
        lo, hi = int(m[1]), int(m[2] or m[1])
        out += range(lo, hi + 1)
    return out


@main.command()
@click.argument("task_ref", metavar="TASK")
@click.option("--failed", is_flag=True, help="Every failed or killed job (the default without --jobs).")
@click.option("--jobs", "jobs_text", metavar="LIST", help="These jobs, e.g. 1,4,7-9 (must be failed or killed).")
@click.option("--memory", help="Memory for the new attempts, e.g. 4GB (default: as their last attempt).")
@pass_ctx
def resubmit(ctx: Context, task_ref: str, failed: bool, jobs_text: str | None, memory: str | None) -> None:
    """A new attempt for failed or killed jobs, in one new cluster."""
    if failed and jobs_text:
        raise click.UsageError("give --failed or --jobs, not both")
    jobs = _job_list(jobs_text)
    try:
        memory_mb = units.size_mb(memory) if memory else None
    except units.UnitError as err:
        raise click.BadParameter(str(err), param_hint="--memory") from None
    with errors(ctx):
        sess = ctx.session()
        task = _look(ctx, ctx.task(task_ref), act=True)
        n = control.resubmit(sess, task, jobs=jobs, failed=failed or jobs is None, memory_mb=memory_mb)
        if n == 0:
            click.echo(f"task {task.id}: no failed or killed job to resubmit")
        else:
            click.echo(f"task {task.id}: {n} job(s) resubmitted"
                       + (f" with {units.format_mb(memory_mb)}" if memory_mb else ""))


@main.command()
@click.argument("task_ref", metavar="TASK")
@click.option("--jobs", "jobs_text", metavar="LIST", help="Only these jobs, e.g. 3,5-8 (default: the whole task).")
@pass_ctx
def kill(ctx: Context, task_ref: str, jobs_text: str | None) -> None:
    """Remove the task's jobs (or some) from the batch system; they end as killed (resubmit brings them back)."""
    jobs = _job_list(jobs_text)
    with errors(ctx):
        sess = ctx.session()
        task = _look(ctx, ctx.task(task_ref), act=True)
        n = control.kill(sess, task, jobs=jobs)
        click.echo(f"task {task.id}: {n} job(s) killed")


if __name__ == "__main__":
    main()
