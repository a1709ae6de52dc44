"""What the commands do: submit a plan, follow a task (sync), retry, resubmit, kill.

`sync` is where a task moves forward:
  1. rounds recorded but never submitted (a crash between the two) are submitted;
  2. new batch-system events update attempts; an attempt that ended is judged by the wrapper's
     result.json (the batch system's exit code alone cannot tell a payload failure from a memory kill);
     a job HTCondor holds is removed and counts as failed (for memory when the hold says so);
  3. each job that succeeded has its outputs (on storage already: the job put them there) verified by
     checksum query and registered in Rucio in bulk (outputs.py), exactly once;
  4. each failed attempt gets a decision (retry.py); the retries of one sync form one new round;
  5. when every job is done, the output dataset is closed.
Steps 3 and 5 talk to Rucio and the storages and take seconds when thousands of jobs end together: the
registrar (registrar.py: `juno-submit sync --follow`, started by the tool) runs them, and `status` runs
a pass without them (`register=False`) that never waits for the task's lock.
A file lock on the task directory keeps two syncs of one task from interleaving.
"""

from __future__ import annotations

import fcntl
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from juno_jobs import backends, gcpause, retry
from juno_jobs.backends.base import Backend, BackendError
from juno_jobs.monitor import HOLD_SUBMITTED_ON_HOLD, fold, is_memory_hold
from juno_jobs.settings import Settings
from juno_jobs.store import FINAL_JOB_STATES, NewAttempt, Store, TaskRow
from juno_jobs.submit import Item
from juno_jobs.taskdir import TaskDir

if TYPE_CHECKING:  # planning, the task model and Rucio are imported where used: `status` needs none of them
    from juno_jobs.model import Resources, RetryPolicy
    from juno_jobs.plan import Plan

# HTCondor hold codes that mean the job ran out of its wall time (allowed_execute_duration, job duration).
HOLD_WALLTIME = frozenset({46, 47})
# Finished jobs whose outputs are verified and registered together (bulk calls of <= 1,000 files).
FINALIZE_BATCH_JOBS = 1000
FINALIZE_BATCH_JOBS_BUDGET = 25  # a status registers batches of this many while it is inside its budget


@dataclass
class Session:
    """What every command shares: settings, the store, a Rucio client (made on first use), backends."""

    cfg: Settings
    store: Store
    rucio: Callable[[], Any]
    log: Callable[[str], None] = lambda m: None
    finalize_budget_s: float | None = None  # `status` sets one: registration goes on in the next pass
    _client: Any = None
    _backends: dict[str, Backend] = field(default_factory=dict)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self.rucio()
        return self._client

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            self._backends[name] = backends.get(name, self.cfg)
        return self._backends[name]


@dataclass
class SyncReport:
    events: int = 0
    ended: int = 0
    finalized: int = 0
    retried: int = 0
    gave_up: int = 0
    closed: bool = False
    busy: bool = False  # another pass (the registrar) had the task: nothing was done, the store is as it left it
    warnings: list[str] = field(default_factory=list)


def _policy(plan: Plan) -> dict[str, Any]:
    t = plan.task
    return {"max_attempts": t.retry.max_attempts, "memory_ladder_mb": list(t.retry.memory_ladder_mb),
            "exit_codes": sorted(t.retry.exit_codes) if t.retry.exit_codes is not None else None,
            "resources": {"memory_mb": t.resources.memory_mb, "cpus": t.resources.cpus,
                          "disk_mb": t.resources.disk_mb, "wall_s": t.resources.wall_s},
            "output_patterns": list(plan.output.patterns) if plan.output else [],
            "output_naming": plan.output.naming if plan.output else "job", "own_dataset": plan.own_dataset,
            "rse_bases": plan.rse_bases, "output_bases": plan.output_bases}


def retry_policy(task: TaskRow) -> RetryPolicy:
    from juno_jobs.model import RetryPolicy

    p = task.policy
    codes = p.get("exit_codes")
    return RetryPolicy(max_attempts=int(p["max_attempts"]), memory_ladder_mb=tuple(p["memory_ladder_mb"]),
                       exit_codes=frozenset(codes) if codes is not None else None)


def resources(task: TaskRow) -> Resources:
    from juno_jobs.model import Resources

    return Resources(**task.policy["resources"])


def task_dir(task: TaskRow) -> TaskDir:
    return TaskDir(task.task_dir)


@contextmanager
def locked(td: TaskDir, *, wait: bool = True) -> Iterator[bool]:
    """The task's lock; with wait=False, yields False at once if another process holds it."""
    with open(td.lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- submit


def describe(sess: Session, plan: Plan, backend: str, *, hold: bool = False) -> str:
    """The submit description `submit` would use (with a placeholder task directory)."""
    td = TaskDir(sess.cfg.tasks_dir / f"{plan.task.name}.<uuid>")
    return sess.backend(backend).describe(td, uuid="<uuid>", name=plan.task.name, task_id=0,
                                          resources=plan.task.resources, rnd=1, hold=hold)


def submit(sess: Session, plan: Plan, *, backend: str | None = None, hold: bool = False) -> TaskRow:
    """Record the task, write its directory, create the output dataset, submit round 1."""
    with gcpause.paused():
        return _submit(sess, plan, backend=backend, hold=hold)


def _submit(sess: Session, plan: Plan, *, backend: str | None, hold: bool) -> TaskRow:
    from juno_jobs import outputs, taskdir

    backend_name = backend or sess.cfg.backend
    be = sess.backend(backend_name)
    import uuid as uuidlib  # here: `status` never creates a task (start-up time)

    uuid = uuidlib.uuid4().hex
    td = TaskDir(sess.cfg.tasks_dir / f"{plan.task.name}.{uuid[:8]}")
    memory = plan.task.resources.memory_mb
    store = sess.store
    started = time.perf_counter()
    task_id = store.add_task(
        uuid=uuid, name=plan.task.name, account=plan.account, backend=backend_name, task_dir=td.root,
        task_file=str(plan.task.source), n_files=plan.n_files, total_bytes=plan.bytes,
        output=(plan.output.scope, plan.output.name, plan.output.rse) if plan.output else None,
        policy=_policy(plan),
        jobs=[(j.index, ",".join(j.sites), len(j.files), j.bytes, memory) for j in plan.jobs])
    try:
        output = {"scope": plan.output.scope, "dataset": plan.output.name, "rse": plan.output.rse,
                  "bases": plan.output_bases, "naming": plan.output.naming} if plan.output else None
        taskdir.write(td, plan.task, task_id=task_id, uuid=uuid, jobs=plan.jobs, job_rses=plan.job_rses,
                      rse_bases=plan.rse_bases, explicit_pfns=plan.explicit_pfns, cfg=sess.cfg, output=output)
        if plan.output is not None and plan.own_dataset:
            outputs.ensure_dataset(sess.client, plan.output.scope, plan.output.name)
            outputs.protect(sess.client, plan.output.scope, plan.output.name, sorted(plan.output_bases))
    except BaseException:
        _forget(store, task_id, td)  # nothing reached the batch system: leave no trace of the task
        raise
    sess.log(f"task {task_id} written to {td.root} ({time.perf_counter() - started:.2f} s)")
    items = [Item(job=j.index, attempt=1, memory_mb=memory, sites=j.sites) for j in plan.jobs]
    task = store.task(task_id)
    try:
        _submit_round(sess, be, task, items, hold=hold)
    except BackendError:
        # The batch system refused the first round: nothing runs, so nothing of the task is kept (the
        # output dataset stays, open and empty: submitting again uses it).
        _forget(store, task_id, td)
        raise
    return store.task(task_id)


def _forget(store: Store, task_id: int, td: TaskDir) -> None:
    with store.transaction() as db:
        for table in ("attempts", "rounds", "jobs"):
            db.execute(f"DELETE FROM {table} WHERE task_id=?", (task_id,))
        db.execute("DELETE FROM tasks WHERE id=?", (task_id,))
    shutil.rmtree(td.root, ignore_errors=True)


def _submit_round(sess: Session, be: Backend, task: TaskRow, items: Sequence[Item], *, hold: bool = False) -> int:
    td = task_dir(task)
    rnd = sess.store.next_round(task.id)
    sess.store.add_round(task.id, rnd, td.items(rnd),
                         [NewAttempt(job=i.job, attempt=i.attempt, memory=i.memory_mb, proc=p) for p, i in
                          enumerate(items)])
    started = time.perf_counter()
    cluster = be.submit(td, items, uuid=task.uuid, name=task.name, task_id=task.id, resources=resources(task),
                        rnd=rnd, hold=hold)
    sess.store.round_submitted(task.id, rnd, cluster, held="submitted on hold" if hold else None)
    sess.log(f"round {rnd}: {len(items)} job(s) submitted as {'cluster' if not be.keyed_by_round else 'round'} "
             f"{cluster} ({time.perf_counter() - started:.2f} s)")
    return cluster


# --------------------------------------------------------------------------- sync


def task_state(task: TaskRow, counts: dict[str, int]) -> str:
    """running | completed | killed | failed, from the jobs' counts per state (the one place it is derived)."""
    active = sum(n for s, n in counts.items() if s not in FINAL_JOB_STATES)
    if active:
        return "running"
    if counts.get("done", 0) == task.n_jobs:
        return "completed"
    return "killed" if task.killed else "failed"


def finished(sess: Session, task: TaskRow) -> bool:
    """Nothing can change any more without a command (every job final, dataset closed if any)."""
    state = task_state(task, sess.store.counts(task.id))
    return state != "running" and (task.output_dataset is None or task.dataset_closed or state != "completed")


def sync(sess: Session, task: TaskRow, *, register: bool = True, wait: bool = True) -> SyncReport:
    """One pass over the task. register=False: no Rucio and no storage (steps 3 and 5 wait for the
    registrar); wait=False: if another pass holds the task, return at once (report.busy)."""
    report = SyncReport()
    if finished(sess, task) and not sess.store.undecided(task.id):
        return report
    td = task_dir(task)
    be = sess.backend(task.backend)
    with locked(td, wait=wait) as got:
        if not got:
            report.busy = True
            return report
        for rnd in sess.store.unsubmitted_rounds(task.id):
            _resubmit_unsubmitted(sess, be, task, rnd)
        _apply_events(sess, be, task, report)
        if register:
            _finalize(sess, task, report)
        _retries(sess, be, task, report)
        if register:
            _close(sess, task, report)
    return report


def needs_registrar(sess: Session, task: TaskRow) -> bool:
    """Something a registrar pass would do: jobs not final yet (running, or finishing: outputs to
    register), or a complete task whose dataset is still open (store reads only)."""
    return not finished(sess, task)


def _resubmit_unsubmitted(sess: Session, be: Backend, task: TaskRow, rnd: Any) -> None:
    """A round recorded before a crash kept it from the batch system: submit what is still wanted."""
    rows = [a for a in sess.store.attempts(task.id) if a["round"] == rnd["round"] and a["state"] == "pending"]
    if not rows:
        sess.store.round_submitted(task.id, rnd["round"], -1)  # everything in it was killed meanwhile
        return
    td = task_dir(task)
    found = be.find_round(td, task.uuid, rnd["round"])
    if found is not None:
        sess.store.round_submitted(task.id, rnd["round"], found)  # it got there: only the record was missing
        return
    rows.sort(key=lambda a: a["proc"])
    sess.store.renumber(task.id, rnd["round"], [(a["job"], a["attempt"], p) for p, a in enumerate(rows)])
    jobs = {j["job"]: j for j in sess.store.jobs(task.id)}
    items = [Item(job=a["job"], attempt=a["attempt"], memory_mb=a["memory"],
                  sites=tuple(s for s in jobs[a["job"]]["sites"].split(",") if s)) for a in rows]
    cluster = be.submit(task_dir(task), items, uuid=task.uuid, name=task.name, task_id=task.id,
                        resources=resources(task), rnd=rnd["round"])
    sess.store.round_submitted(task.id, rnd["round"], cluster)


_FINAL_ATTEMPT = frozenset({"succeeded", "failed", "removed", "lost"})


def _apply_events(sess: Session, be: Backend, task: TaskRow, report: SyncReport) -> None:
    events = be.events(task_dir(task))
    report.events = len(events)
    if not sess.store.has_pending(task.id):
        # A submit event only confirms what the store recorded at submission (attempts idle); it matters
        # only for a round whose submission was interrupted. 10,000 of them follow a large submission.
        events = [e for e in events if e.kind != "submit"]
    if not events:
        return
    td = task_dir(task)
    changes = fold(events)
    mapping = sess.store.attempts_by_round(task.id) if be.keyed_by_round else sess.store.attempts_by_proc(task.id)
    current = sess.store.states(task.id)
    updates: list[tuple[int, int, dict[str, Any]]] = []
    to_remove: list[tuple[int, int]] = []
    for key, ch in changes.items():
        ja = mapping.get(key)
        if ja is None:
            continue  # not an attempt of this task (a foreign event in the log, or a round not recorded)
        state = current.get(ja)
        if state is None or state in _FINAL_ATTEMPT:
            continue  # already decided here (e.g. we removed it ourselves): later events change nothing
        fields: dict[str, Any] = {}
        if ch.site:
            fields["site"] = ch.site
        if ch.started:
            fields["started"] = ch.started
        if ch.state == "idle" and state in ("pending", "running"):
            fields["state"] = "idle"
        elif ch.state == "running":
            fields["state"] = "running"
        elif ch.state == "held":
            if ch.hold_code == HOLD_SUBMITTED_ON_HOLD:
                fields.update(state="held", reason=ch.hold_reason)
            else:
                kind = "memory" if is_memory_hold(ch.hold_code, ch.hold_reason) else \
                    "walltime" if ch.hold_code in HOLD_WALLTIME else "held"
                fields.update(state="failed", failure=kind, finished=time.time(),
                              reason=f"held by HTCondor (code {ch.hold_code}): {ch.hold_reason}")
                to_remove.append(key)
        elif ch.state == "ended":
            fields.update(_judge(td, ja[0], ja[1], ch.exit_code, ch.signal, ch.site))
            fields["finished"] = ch.finished
            report.ended += 1
        elif ch.state == "lost":
            fields.update(state="lost", failure="lost", finished=ch.finished,
                          reason="the job stopped without a result (its runner or node went away)")
        elif ch.state == "removed":
            # Someone removed it outside juno-submit (condor_rm, an administrator): that is a decision
            # to stop it, not bad luck, so it is not retried automatically.
            fields.update(state="removed", finished=ch.finished,
                          reason="removed from the batch system outside juno-submit (condor_rm?); "
                                 "`juno-submit resubmit` brings it back")
        if ch.memory_mb and "max_rss_mb" not in fields:
            fields["max_rss_mb"] = ch.memory_mb
        if fields:
            updates.append((ja[0], ja[1], fields))
    sess.store.update_attempts(task.id, updates)
    if to_remove:
        be.remove(td, task.uuid, to_remove)


def _judge(td: TaskDir, job: int, attempt: int, exit_code: int | None, signal: int | None,
           batch_site: str | None) -> dict[str, Any]:
    """An ended attempt's outcome, from the wrapper's result.json."""
    result = td.read_result(job, attempt)
    if result is None:
        how = f"exit code {exit_code}" if signal is None else f"signal {signal}"
        return {"state": "failed", "failure": "lost", "exit_code": exit_code,
                "reason": f"the job ended ({how}) without writing a result: see `juno-submit logs` for this job"}
    fields: dict[str, Any] = {"exit_code": result.get("exit_code"), "max_rss_mb": result.get("max_rss_mb")}
    site = batch_site or result.get("site")
    if site:
        fields["site"] = site
    if batch_site and result.get("site") not in (None, batch_site):
        fields["reason"] = f"HTCondor says {batch_site}, the wrapper says {result.get('site')}"
    if result.get("failure"):
        fields.update(state="failed", failure=result["failure"], reason=result.get("message", ""))
    else:
        fields["state"] = "succeeded"
    return fields


def _finalize(sess: Session, task: TaskRow, report: SyncReport) -> None:
    """Register the outputs of every job that finished (they are on storage already: the jobs put them
    there). Bounded by `sess.finalize_budget_s` so that `status` answers quickly while thousands of jobs
    end together: what is left waits for the next pass."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    from requests import RequestException
    from rucio.common.exception import RucioException

    from juno_jobs import outputs
    from juno_jobs.resolve import clone_client

    rows = sess.store.jobs(task.id, states=["finishing"])
    if not rows:
        return
    target = task.output
    if target is None:
        sess.store.set_jobs(task.id, [r["job"] for r in rows], state="done")
        report.finalized += len(rows)
        return
    td = task_dir(task)
    bases = task.policy.get("output_bases", {})
    started = time.perf_counter()
    checker = outputs.StorageChecker()
    dataset = (target.scope, target.name)
    # Under a time budget (status), smaller batches: the first one is always done, and it must fit.
    size = FINALIZE_BATCH_JOBS if sess.finalize_budget_s is None else FINALIZE_BATCH_JOBS_BUDGET
    batches = [rows[i:i + size] for i in range(0, len(rows), size)]
    # Without a budget, the next batch is verified (storage checksums, Rucio asked) while this one is
    # registered: a client of its own for that thread.
    side_client = clone_client(sess.client) if sess.finalize_budget_s is None and len(batches) > 1 else sess.client

    def prepare(batch: list[Any], client: Any) -> tuple[dict[int, int], dict[int, outputs.OutputError],
                                                          outputs.Verified]:
        wanted: list[outputs.Expected] = []
        failed: dict[int, outputs.OutputError] = {}
        by_job: dict[int, int] = {}
        for row in batch:
            job, attempt = row["job"], row["attempts"]
            result = td.read_result(job, attempt) or {}
            by_job[job] = attempt
            try:
                wanted += outputs.expected(result.get("outputs", []), job=job, attempt=attempt, target=target,
                                           bases=bases)
            except outputs.OutputError as err:
                failed[job] = err
        return by_job, failed, outputs.verify(client, wanted, checker)

    transient = (RucioException, RequestException, OSError, subprocess.TimeoutExpired)
    with ThreadPoolExecutor(1) as side:
        pending = side.submit(prepare, batches[0], sess.client)
        last = False
        for k in range(len(batches)):
            try:
                by_job, failed, verified = pending.result()
            except transient as err:
                # Rucio or storage unreachable for a moment: the jobs stay `finishing`; every step is
                # idempotent, so the next status goes through them again.
                report.warnings.append(f"outputs not registered yet ({type(err).__name__}: {err}); the next "
                                       "status tries again")
                return
            if k + 1 < len(batches):
                if sess.finalize_budget_s is None:
                    pending = side.submit(prepare, batches[k + 1], side_client)
                elif time.perf_counter() - started > sess.finalize_budget_s / 2:
                    left = sum(len(b) for b in batches[k + 1:])
                    report.warnings.append(f"{left} finished job(s) wait for the next pass to have their outputs "
                                           "registered")
                    last = True
                else:
                    pending = side.submit(prepare, batches[k + 1], sess.client)
            try:
                registered, errors = outputs.register_verified(sess.client, dataset, verified, log=sess.log)
            except outputs.OutputError as err:
                if not err.permanent:
                    report.warnings.append(f"outputs not registered yet ({err}); the next status tries again")
                    return
                registered, errors = [], {job: err for job in by_job}
            except transient as err:
                report.warnings.append(f"outputs not registered yet ({type(err).__name__}: {err}); the next "
                                       "status tries again")
                return
            errors.update(failed)
            sess.store.add_outputs(task.id, [(e.job, e.attempt, e.item.scope, e.item.name, e.item.rse, e.item.bytes,
                                              e.item.adler32) for e in registered])
            for job, err in sorted(errors.items()):
                if err.permanent:
                    sess.store.set_jobs(task.id, [job], state="failed", failure="outputs", reason=str(err))
                    report.gave_up += 1
                else:
                    report.warnings.append(f"job {job}: outputs not registered yet ({err}); the next status tries "
                                           "again")
            done = [job for job in by_job if job not in errors]
            sess.store.set_jobs(task.id, done, state="done")
            report.finalized += len(done)
            if last:
                break


def _retries(sess: Session, be: Backend, task: TaskRow, report: SyncReport) -> None:
    undecided = sess.store.undecided(task.id)
    if not undecided:
        return
    policy = retry_policy(task)
    decisions: list[tuple[int, int, str]] = []
    final: list[tuple[int, str]] = []
    items: list[Item] = []
    jobs = {j["job"]: j for j in sess.store.jobs(task.id, numbers=[a["job"] for a in undecided])}
    for a in undecided:
        job = jobs[a["job"]]
        if a["attempt"] != a["latest"] or job["state"] == "killed":
            decisions.append((a["job"], a["attempt"], "stale"))
            continue
        d = retry.decide(a["failure"] or "wrapper", exit_code=a["exit_code"], attempt=a["attempt"],
                         memory_mb=a["memory"], policy=policy)
        if d.retry:
            decisions.append((a["job"], a["attempt"], "retry"))
            items.append(Item(job=a["job"], attempt=a["attempt"] + 1, memory_mb=d.memory_mb,
                              sites=tuple(s for s in job["sites"].split(",") if s)))
            sess.log(f"job {a['job']}: {d.reason}")
        else:
            decisions.append((a["job"], a["attempt"], "final"))
            final.append((a["job"], f"{d.reason}. Last error: {a['reason'] or a['failure']}"))
    sess.store.decide(task.id, decisions, final)
    report.gave_up += len(final)
    if items:
        _submit_round(sess, be, task, items)
        report.retried += len(items)


def _close(sess: Session, task: TaskRow, report: SyncReport) -> None:
    task = sess.store.task(task.id)
    if task.output_dataset is None or task.output_scope is None or task.dataset_closed or task.killed:
        return
    if not task.policy.get("own_dataset", True):
        return  # the caller (juno-prod) owns the dataset: it closes it when its whole group is done
    if sess.store.counts(task.id).get("done", 0) != task.n_jobs:
        return
    from juno_jobs import outputs

    outputs.close_dataset(sess.client, task.output_scope, task.output_dataset)
    sess.store.set_task(task.id, dataset_closed=1)
    report.closed = True
    sess.log(f"task {task.id} complete: output dataset {task.output_scope}:{task.output_dataset} closed")


# --------------------------------------------------------------------------- resubmit, kill


class CommandError(ValueError):
    """A command that cannot do what was asked (e.g. resubmit a job that is running)."""


def resubmit(sess: Session, task: TaskRow, *, jobs: Sequence[int] | None = None, failed: bool = False,
             memory_mb: int | None = None) -> int:
    """A new attempt for the chosen jobs (failed or killed ones; never a job that is running or done)."""
    if task.dataset_closed:
        raise CommandError(f"task {task.id} is complete and its output dataset is closed: nothing to resubmit")
    be = sess.backend(task.backend)
    with locked(task_dir(task)):
        rows = sess.store.jobs(task.id, states=["failed", "killed"] if failed or jobs is None else None,
                               numbers=jobs)
        if jobs is not None:
            unknown = sorted(set(jobs) - {r["job"] for r in sess.store.jobs(task.id, numbers=jobs)})
            if unknown:
                raise CommandError(f"task {task.id} has no job {', '.join(map(str, unknown))} "
                                   f"(jobs are 0..{task.n_jobs - 1})")
            busy = [r["job"] for r in rows if r["state"] not in ("failed", "killed")]
            if busy:
                raise CommandError(f"job(s) {', '.join(map(str, busy))} are not failed or killed "
                                   "(see `juno-submit status --jobs`): only those can be resubmitted")
        if not rows:
            return 0
        # Anything still undecided about these jobs is settled by this command.
        stale = [(a["job"], a["attempt"], "stale") for a in sess.store.undecided(task.id)
                 if a["job"] in {r["job"] for r in rows}]
        sess.store.decide(task.id, stale)
        items = [Item(job=r["job"], attempt=r["attempts"] + 1, memory_mb=memory_mb or r["memory"],
                      sites=tuple(s for s in r["sites"].split(",") if s)) for r in rows]
        if task.killed:
            sess.store.set_task(task.id, killed=0)
        _submit_round(sess, be, task, items)
    return len(items)


def kill(sess: Session, task: TaskRow, *, jobs: Sequence[int] | None = None) -> int:
    """Remove the task's (or these) jobs from the batch system; they end as killed."""
    be = sess.backend(task.backend)
    td = task_dir(task)
    with locked(td):
        active = [a for a in sess.store.active_attempts(task.id) if jobs is None or a["job"] in set(jobs)]
        now = time.time()
        sess.store.update_attempts(task.id, ((a["job"], a["attempt"], {"state": "removed", "finished": now,
                                                                        "reason": "killed by juno-submit kill"})
                                             for a in active))
        if jobs is None:
            sess.store.set_task(task.id, killed=1)
            be.remove(td, task.uuid, None)
        else:
            keyed = [(a["round"] if be.keyed_by_round else a["cluster"], a["proc"]) for a in active
                     if a["cluster"] is not None]
            be.remove(td, task.uuid, keyed)
    return len(active)


__all__ = ["BackendError", "CommandError", "Session", "SyncReport", "kill", "resubmit", "submit", "sync"]
