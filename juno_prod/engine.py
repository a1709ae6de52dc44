"""One production cycle, over every transformation (what `juno-prod run` repeats and `run --once` does once):

  1. reconcile  claims recorded but whose juno_jobs task never reached the batch system (a crash between
                the two) go back to waiting; a task that did get there is adopted
  2. sync       each running claim's juno_jobs task moves on (control.sync: events, outputs verified on
                storage and registered in bulk, exactly once); files of finished jobs become processed
                (their outputs recorded with their parent), failed (assigned again, memory ladder) or
                problematic (reason kept)
  3. discover   new input files in Rucio: the selection's blocks, the keep-up streams' blocks, Monte Carlo
                stand-ins, and for later steps the previous step's output datasets (data-driven: a step's
                jobs start as soon as its input files exist, not when the previous step is done)
  4. assign     the output datasets still missing, all at once (one add_dids, each policy rule sent once for
                all of them); waiting/failed files → claims (one transaction, never twice) → jobs at the
                sites the step allows, through juno_jobs (plan_for_jobs with the service's cached URL bases
                + control.submit), one juno_jobs task per claim
  5. metadata   provenance on the new outputs (input DID, transformation, step, release)
  6. close      output datasets whose input is closed and whose files are all processed

Every step is idempotent, and each commits before the next begins: `kill -9` at any moment loses
nothing (a claim whose task is missing is released; a task that exists is adopted) and duplicates
nothing (file rows are unique, claims re-check states, registration is juno_jobs' exactly-once).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from juno_common.logs import fields
from juno_jobs import control, outputs
from juno_jobs import plan as jplan
from juno_jobs.locality import LocalityError
from juno_jobs.model import Did, InputSpec, OutputSpec, OutputTarget, RetryPolicy, RseInfo, Splitting, Task
from juno_jobs.pfns import PfnMaker
from juno_jobs.resolve import InputError, Resolver, clone_client, rse_infos
from juno_jobs.settings import Settings
from juno_jobs.store import FINAL_JOB_STATES, Store
from juno_prod import decide, naming
from juno_prod import transformation as tfile
from juno_prod.db import Db, NewFile
from juno_prod.model import ACTIVE, MC, MC_SCOPE, NEW_RAW, PAUSED, PROBLEMATIC, Transformation

log = logging.getLogger("juno_prod.engine")
CLAIM_FILES = 5000  # files per claim (one juno_jobs task, one cluster): a block of raw data is one claim
KEEPUP_WALK_S = 300.0  # keep-up: the stream containers are walked at least this often (events may be lost)
DISCOVER_WORKERS = 4  # datasets listed in Rucio at once (next steps' input)
SYNC_WORKERS = 2  # claims synced at once: storage checks of one overlap the Rucio registration of another


@dataclass
class CycleReport:
    discovered: int = 0
    assigned: int = 0
    jobs: int = 0
    processed: int = 0
    retried: int = 0
    problematic: int = 0
    released: int = 0
    closed: int = 0
    warnings: list[str] = field(default_factory=list)

    def add(self, other: CycleReport) -> None:
        for k in ("discovered", "assigned", "jobs", "processed", "retried", "problematic", "released", "closed"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.warnings += other.warnings


def jj_name(token: str) -> str:
    return f"prod-{token}"


class Production:
    """The production service: its bookkeeping (Db), juno_jobs as its job layer, a Rucio client."""

    def __init__(self, db: Db, work_dir: Path, rucio: Callable[[], Any], jobs_cfg: Settings) -> None:
        self.db = db
        self.work_dir = work_dir
        self.tf_dir = work_dir / "transformations"
        self.tf_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = jobs_cfg
        self.sess = control.Session(cfg=jobs_cfg, store=Store(jobs_cfg.db_path), rucio=rucio,
                                    log=lambda m: log.debug(m))
        self._rses: dict[str, RseInfo] | None = None
        self._pfns: PfnMaker | None = None  # the RSEs' read and write URL bases, asked once per service
        self._policy: Any = None
        self.hints: set[str] = set()  # block DIDs events named (keep-up): `hint` adds, from any thread
        self._hints_lock = threading.Lock()
        self.events = False  # keep-up events are consumed (juno-prod run with Kafka): hints arrive
        self._walked: dict[int, float] = {}  # keep-up transformation → when its streams were last walked
        self.stop = threading.Event()
        self.hold = False  # submit on hold (benchmarks: the pool never runs the jobs)

    @property
    def client(self) -> Any:
        return self.sess.client

    def rses(self) -> dict[str, RseInfo]:
        if self._rses is None:
            self._rses = rse_infos(self.client)
        return self._rses

    def pfns(self) -> PfnMaker:
        if self._pfns is None:
            self._pfns = PfnMaker(self.client)
        return self._pfns

    def hint(self, did: str) -> None:
        """An event named this block (scope:name): the next cycle looks at it without walking the streams."""
        with self._hints_lock:
            self.hints.add(did)

    # ------------------------------------------------------------------ submit

    def submit(self, tf: Transformation) -> int:
        if self.db.transformation(tf.name) is not None:
            raise ValueError(f"transformation {tf.name} exists already: `juno-prod status {tf.name}`; give a new "
                             "name for another campaign")
        dest = self.tf_dir / f"{tf.name}.yaml"
        shutil.copy2(tf.source, dest)
        return self.db.add_transformation(tf.name, tf.kind, dest.read_text(), str(dest))

    def load(self, row: dict[str, Any]) -> Transformation:
        return tfile.load(row["source"])

    # ------------------------------------------------------------------ the cycle

    def cycle(self, only: str | None = None) -> CycleReport:
        total = CycleReport()
        for row in self.db.transformations(states=[ACTIVE, PAUSED]):
            if only is not None and row["name"] != only:
                continue
            if self.stop.is_set():
                break
            tf = self.load(row)
            r = CycleReport()
            self._reconcile(row["id"], r)
            self._sync(row["id"], tf, r)
            self._discover(row["id"], tf, r)
            if row["state"] == ACTIVE and not self.stop.is_set():
                self._assign(row["id"], tf, r)
            self._metadata(r)
            self._close(row["id"], tf, r)
            log.info("cycle", extra=fields(transformation=tf.name, discovered=r.discovered, assigned=r.assigned,
                                           jobs=r.jobs, processed=r.processed, retried=r.retried,
                                           problematic=r.problematic, released=r.released, closed=r.closed))
            total.add(r)
        return total

    # 1 -------------------------------------------------------------- reconcile

    def _reconcile(self, tf_id: int, r: CycleReport) -> None:
        pending = self.db.claims(tf_id, states=["submitting"])
        if not pending:
            return
        by_name = {t.name: t for t in self.sess.store.tasks()}
        for claim in pending:
            task = by_name.get(jj_name(claim["token"]))
            if task is not None and self.sess.store.rounds(task.id):
                # A round is recorded before it goes to the batch system: adopt the task (juno_jobs' sync
                # submits a round the schedd never got, and finds one it got without the record saying so).
                self.db.claim_submitted(claim["token"], task.id)
                continue
            if task is not None:
                # Killed while juno_jobs wrote the task (no round yet): nothing can have reached the schedd.
                control._forget(self.sess.store, task.id, control.task_dir(task))
            r.released += self.db.release_claim(claim["token"], "its jobs were never submitted (restart)")

    # 2 -------------------------------------------------------------- sync

    def _sync(self, tf_id: int, tf: Transformation, r: CycleReport) -> None:
        """control.sync of every running claim's task, SYNC_WORKERS at once: one task's outputs are checked
        on storage (checksum queries) while another's are registered in Rucio, instead of one after the
        other. Each worker has its own store connection and Rucio session; juno_jobs' per-task lock keeps a
        task to one pass at a time (a registrar, another worker). Files are settled here, in this thread,
        as each task's pass ends."""
        claims = self.db.claims(tf_id, states=["running"])
        if not claims:
            return
        if len(claims) == 1 or SYNC_WORKERS == 1:
            for claim in claims:
                if self.stop.is_set():
                    return
                task = self.sess.store.task(int(claim["task_id"]))
                r.warnings += control.sync(self.sess, task).warnings
                self._settle(tf, claim, task, r)
            return

        def one(claim: dict[str, Any]) -> list[str] | None:
            if self.stop.is_set():
                return None
            client = clone_client(self.client)  # a session of its own (requests sessions are not shared)
            sess = control.Session(cfg=self.cfg, store=Store(self.cfg.db_path), rucio=lambda: client,
                                   log=self.sess.log)
            try:
                return control.sync(sess, sess.store.task(int(claim["task_id"]))).warnings
            finally:
                sess.store.close()  # in the thread that opened it (sqlite)

        with ThreadPoolExecutor(SYNC_WORKERS) as pool:
            for claim, warnings in zip(claims, pool.map(one, claims), strict=True):
                if warnings is None:
                    continue  # stopping: not synced
                r.warnings += warnings
                self._settle(tf, claim, self.sess.store.task(int(claim["task_id"])), r)

    def _settle(self, tf: Transformation, claim: dict[str, Any], task: Any, r: CycleReport) -> None:
        step = tf.steps[claim["step"]]
        rows = [f for f in self.db.claim_files(claim["token"]) if f["state"] == "assigned"]
        if not rows:
            self.db.settle(claim["token"], processed=[], failed=[], new_outputs=[], done=True)
            return
        jobs = {j["job"]: j for j in self.sess.store.jobs(task.id)}
        by_job: dict[int, list[dict[str, Any]]] = {}
        for f in rows:
            by_job.setdefault(int(f["job"]), []).append(f)
        ds = naming.dataset_name(step.scope, tf.name, step.name, claim["grp"])
        processed: list[int] = []
        failed: list[tuple[int, str, int, str]] = []
        new_outputs: list[dict[str, Any]] = []
        regs_by_job: dict[int, dict[str, Any]] = {}
        for o in self.sess.store.outputs(task.id):  # one query for the task, not one per job
            regs_by_job.setdefault(int(o["job"]), {})[o["name"]] = o
        open_jobs = 0
        for job, files_ in by_job.items():
            j = jobs.get(job)
            if j is None or j["state"] not in FINAL_JOB_STATES:
                open_jobs += 1
                continue
            if j["state"] == "done":
                regs = regs_by_job.get(job, {})
                expected = {int(f["id"]): decide.output_name(tf.name, step, f) for f in files_}
                problem = decide.outputs_ok(list(expected.values()), list(regs))
                for f in files_:
                    if problem:
                        failed.append((int(f["id"]), PROBLEMATIC, int(f["memory_mb"]), problem))
                        continue
                    o = regs[expected[int(f["id"])]]
                    processed.append(int(f["id"]))
                    new_outputs.append({"tf_id": claim["tf_id"], "step": claim["step"], "scope": o["scope"],
                                        "name": o["name"], "parent_scope": f["scope"], "parent_name": f["name"],
                                        "dataset": ds, "rse": o["rse"], "bytes": o["bytes"],
                                        "adler32": o["adler32"], "meta_set": 0})
                continue
            for f in files_:
                out = decide.failed_file(step, attempts=int(f["attempts"]) + 1, memory_mb=int(j["memory"]),
                                         failure=j["failure"] or ("killed" if j["state"] == "killed" else None),
                                         exit_code=j["exit_code"], reason=j["reason"])
                failed.append((int(f["id"]), out.state, out.memory_mb, out.reason or ""))
        self.db.settle(claim["token"], processed=processed, failed=failed, new_outputs=new_outputs,
                       done=open_jobs == 0)
        r.processed += len(processed)
        r.retried += sum(1 for f in failed if f[1] != PROBLEMATIC)
        r.problematic += sum(1 for f in failed if f[1] == PROBLEMATIC)

    # 3 -------------------------------------------------------------- discover

    def _discover(self, tf_id: int, tf: Transformation, r: CycleReport) -> None:
        for step in tf.steps:
            if self.stop.is_set():
                return
            if step.index == 0:
                found = self._discover_first(tf_id, tf)
            else:
                found = self._discover_next(tf_id, tf, step.index)
            for grp, (new, closed) in found.items():
                out_scope = step.scope
                self.db.add_dataset(tf_id, step.index, grp, out_scope,
                                    naming.dataset_name(out_scope, tf.name, step.name, grp))
                added = self.db.add_files(tf_id, step.index, new, step.resources.memory_mb)
                if closed:
                    self.db.set_dataset(tf_id, step.index, grp, input_closed=1)
                r.discovered += added

    def _discover_first(self, tf_id: int, tf: Transformation) -> dict[str, tuple[list[NewFile], bool]]:
        if tf.kind == MC:
            have = sum(self.db.counts(tf_id).get(0, {}).values())
            if have >= tf.input.jobs:
                return {}
            out: dict[str, tuple[list[NewFile], bool]] = {}
            for i in range(tf.input.jobs):
                grp = naming.mc_group(i)
                out.setdefault(grp, ([], True))[0].append(
                    NewFile(MC_SCOPE, naming.mc_input_name(tf.name, i), 0, None, (), grp))
            return out
        if tf.kind == NEW_RAW:
            if self.events and not decide.keepup_walk_due(self._walked.get(tf_id), time.monotonic(),
                                                          KEEPUP_WALK_S):
                return self._discover_keepup(tf_id, tf)
            self._walked[tf_id] = time.monotonic()  # (a walk that fails is due again: see below)
            roots = [Did("raw", f"stream.{key}") for key in tf.input.streams]
            filt: dict[str, Any] = {}
        # The input datasets this campaign has taken completely (closed in Rucio, every file recorded): not
        # listed again; a root that is one of them has nothing more to give. Containers are walked (new blocks).
        done = {d["grp"] for d in self.db.datasets(tf_id, 0) if d["input_closed"]}
        if tf.kind != NEW_RAW:
            roots = [d for d in tf.input.dids if d.name not in done]
            filt = dict(tf.input.filter)
            if not roots:
                return {}
        resolver = Resolver(self.client)
        try:
            found = resolver.check_dids(roots)
            blocks, direct = resolver.datasets_of(found)
        except BaseException as err:
            self._walked.pop(tf_id, None)  # walk again next cycle
            if isinstance(err, InputError):
                log.warning("input not found", extra=fields(transformation=tf.name, error=str(err)))
                return {}
            raise
        todo = [b for b in blocks if b.name not in done]
        out = dict(self._blocks_files(todo, filt))
        if direct:
            try:
                res = resolver.resolve(direct, filt, rses=self.rses())
                out["files"] = ([NewFile(f.scope, f.name, f.bytes, f.adler32, f.rses, "files")
                                 for f in res.files if f.rses], True)
            except InputError:
                pass
        return out

    def _discover_keepup(self, tf_id: int, tf: Transformation) -> dict[str, tuple[list[NewFile], bool]]:
        """Keep-up between two walks of the stream containers: only the blocks events named and the blocks
        still open in the bookkeeping (new files join open blocks) are looked at in Rucio. A hint is
        dropped only once its block was looked at; a block no event named waits for the next walk
        (KEEPUP_WALK_S at most)."""
        from rucio.common.exception import DataIdentifierNotFound

        with self._hints_lock:
            hints = set(self.hints)
        named = decide.hinted_blocks(hints, tf.input.streams)
        known = self.db.datasets(tf_id, 0)
        closed = {d["grp"] for d in known if d["input_closed"]}
        open_known = {d["grp"] for d in known if not d["input_closed"]}
        todo = sorted({Did(s, n) for s, n in named if n not in closed} | {Did("raw", g) for g in open_known},
                      key=lambda d: d.name)
        resolver = Resolver(self.client)
        out: dict[str, tuple[list[NewFile], bool]] = {}
        for block in todo:
            try:
                out[block.name] = self._files_of(resolver, block, {})
            except DataIdentifierNotFound:
                log.warning("block named by an event not in Rucio", extra=fields(transformation=tf.name,
                                                                                  block=str(block)))
        with self._hints_lock:
            self.hints -= {f"{s}:{n}" for s, n in named} & hints
        return out

    def _files_of(self, resolver: Resolver, did: Did, filt: dict[str, Any], closed: bool | None = None
                  ) -> tuple[list[NewFile], bool]:
        """A dataset's files with AVAILABLE disk replicas, and whether it is complete (closed, all there).
        The open flag is read first (here, unless the caller read it just before: `closed`): if the
        dataset was closed then, the listing that follows is all of it."""
        if closed is None:
            closed = not resolver.client.get_did(did.scope, did.name).get("open", True)
        files = resolver.dataset_files(did, filt, self.rses())
        ready = [NewFile(f.scope, f.name, f.bytes, f.adler32, f.rses, did.name) for f in files if f.rses]
        return ready, closed and len(ready) == len(files)

    def _blocks_files(self, blocks: list[Did], filt: dict[str, Any]) -> list[tuple[str, tuple[list[NewFile], bool]]]:
        """_files_of for many datasets: their open flags in one bulk call (read before any listing), then
        DISCOVER_WORKERS listings at once, each thread with its own HTTP session."""
        if not blocks:
            return []
        closed: dict[tuple[str, str], bool] = {}
        for i in range(0, len(blocks), 1000):
            for m in self.client.get_metadata_bulk([{"scope": b.scope, "name": b.name} for b in blocks[i:i + 1000]]):
                closed[(str(m["scope"]), str(m["name"]))] = not m.get("is_open", True)
        self.rses()  # the RSE catalogue once, before the threads share it

        def one(block: Did) -> tuple[str, tuple[list[NewFile], bool]]:
            resolver = Resolver(clone_client(self.client), workers=1)
            return block.name, self._files_of(resolver, block, filt, closed.get((block.scope, block.name), False))

        with ThreadPoolExecutor(min(DISCOVER_WORKERS, len(blocks))) as pool:
            return list(pool.map(one, blocks))

    def _discover_next(self, tf_id: int, tf: Transformation, k: int) -> dict[str, tuple[list[NewFile], bool]]:
        """Step k's input: step k-1's output datasets, as Rucio has them now."""
        done = {d["grp"] for d in self.db.datasets(tf_id, k) if d["input_closed"]}
        n_out = self.db.output_counts(tf_id, k - 1)
        # Datasets with nothing registered in them yet have nothing to look for in Rucio.
        todo = [d for d in self.db.datasets(tf_id, k - 1) if d["grp"] not in done and n_out.get(d["name"])]
        if not todo:
            return {}
        self.rses()  # the RSE catalogue once, before the threads share it

        def one(d: dict[str, Any]) -> tuple[str, tuple[list[NewFile], bool]]:
            resolver = Resolver(clone_client(self.client), workers=1)  # one HTTP session per thread
            # Complete when juno-prod closed it (the bookkeeping, read before this listing) and every output
            # recorded in it is listed: Rucio's own open flag is not asked for.
            files_, _ = self._files_of(resolver, Did(d["scope"], d["name"]), {}, closed=bool(d["closed"]))
            return d["grp"], ([NewFile(f.scope, f.name, f.bytes, f.adler32, f.rses, d["grp"]) for f in files_],
                              bool(d["closed"]) and len(files_) == n_out[d["name"]])

        # Each dataset's listing is a few Rucio calls that wait on the server: several at once.
        with ThreadPoolExecutor(min(DISCOVER_WORKERS, len(todo))) as pool:
            return dict(pool.map(one, todo))

    # 4 -------------------------------------------------------------- assign

    def _assign(self, tf_id: int, tf: Transformation, r: CycleReport) -> None:
        claimable = self.db.claimable(tf_id)
        self._ensure_datasets(tf_id, tf, sorted({(step_i, grp) for step_i, grp, _m, _n in claimable}))
        for step_i, grp, memory, _n in claimable:
            while not self.stop.is_set():
                token, rows = self.db.claim(tf_id, step_i, grp, memory, CLAIM_FILES)
                if not rows:
                    break
                try:
                    njobs = self._submit_claim(tf_id, tf, step_i, grp, memory, token, rows)
                except LocalityError as err:
                    r.released += self.db.release_claim(token, f"no usable replica yet: {err}")
                    r.warnings.append(f"{tf.name} step {tf.steps[step_i].name}: {err}")
                    break
                except Exception:
                    # Nothing reached the batch system (juno_jobs forgets a refused task): the files wait.
                    if not any(t.name == jj_name(token) for t in self.sess.store.tasks()):
                        self.db.release_claim(token, "submission failed; tried again next cycle")
                    raise
                r.assigned += len(rows)
                r.jobs += njobs
                if len(rows) < CLAIM_FILES:
                    break

    def _ensure_datasets(self, tf_id: int, tf: Transformation, wanted: list[tuple[int, str]]) -> None:
        """The output datasets of these (step, group)s in Rucio, with the rules the replication policy gives
        their class (the same engine as raw blocks: rucio_policy.engine), all at once: one add_dids call
        per 1,000 datasets, each rule sent once for all of them (ensure_blocks_rules). A dataset whose row
        says its rules are there (created before them) is not asked about again."""
        from rucio.common.exception import DataIdentifierAlreadyExists

        from rucio_policy import engine as policy_engine

        todo: dict[tuple[int, str], tuple[str, str]] = {}
        for step_i, grp in wanted:
            row = self.db.dataset(tf_id, step_i, grp)
            if row is None or not row["rules"]:
                step = tf.steps[step_i]
                todo[(step_i, grp)] = (step.scope, naming.dataset_name(step.scope, tf.name, step.name, grp))
        if not todo:
            return
        if self._policy is None:
            self._policy = policy_engine.load_default_policy()
        dids = sorted(set(todo.values()))
        created: set[tuple[str, str]] = set()
        for i in range(0, len(dids), 1000):
            chunk = dids[i:i + 1000]
            try:
                self.client.add_dids([{"scope": s, "name": n, "type": "DATASET"} for s, n in chunk])
                created.update(chunk)
            except DataIdentifierAlreadyExists:
                # Some exist (a cycle stopped between creating them and their rules): one by one; their
                # state is then read back from Rucio by the policy engine.
                for s, n in chunk:
                    outputs.ensure_dataset(self.client, s, n)
        by_scope: dict[str, list[str]] = {}
        for s, n in dids:
            by_scope.setdefault(s, []).append(n)
        for scope, names in by_scope.items():
            policy_engine.ensure_blocks_rules(self.client, scope, names, policy=self._policy,
                                              new={n: {} for n in names if (scope, n) in created})
        for step_i, grp in todo:
            self.db.set_dataset(tf_id, step_i, grp, rules=1)

    def _submit_claim(self, tf_id: int, tf: Transformation, step_i: int, grp: str, memory: int, token: str,
                      rows: list[dict[str, Any]]) -> int:
        step = tf.steps[step_i]
        batch = decide.make_jobs(tf.name, step, rows, self.rses())
        self.db.set_jobs(token, batch.file_job)
        scope, ds = step.scope, naming.dataset_name(step.scope, tf.name, step.name, grp)  # _ensure_datasets made it
        release_dir = step.release_dir(tf.release_base)
        args = f"--step {step.name} --release {step.release} {step.arguments}".strip()
        task = Task(name=jj_name(token), source=self.tf_dir / f"{tf.name}.yaml",
                    executable=None, site_executable=f"{release_dir}/{step.payload}", script=None,
                    arguments=args, environment=dict(step.environment), release=release_dir,
                    input=InputSpec(dids=()) if rows[0]["scope"] != MC_SCOPE else None,
                    splitting=Splitting(files_per_job=step.files_per_job),
                    output=OutputSpec(dataset=ds, scope=scope, files=(f"*.{step.ext}",), rse=step.rse),
                    resources=_with_memory(step.resources, memory),
                    # juno-prod decides retries per file (decide.failed_file): one attempt per juno_jobs job.
                    retry=RetryPolicy(max_attempts=1), sites=decide.site_lists(step),
                    description=f"{tf.name} step {step.name} {grp}")
        target = OutputTarget(scope=scope, name=ds, rse=step.rse, patterns=(f"*.{step.ext}",), naming="file")
        plan = jplan.plan_for_jobs(task, self.client, jobs=batch.jobs, groups=batch.groups, rses=self.rses(),
                                   output=target, own_dataset=False, pfns=self.pfns())
        row = control.submit(self.sess, plan, hold=self.hold)
        self.db.claim_submitted(token, row.id)
        log.info("submitted", extra=fields(transformation=tf.name, step=step.name, group=grp, files=len(rows),
                                           jobs=len(batch.jobs), task=row.id, memory_mb=memory))
        return len(batch.jobs)

    # 5 -------------------------------------------------------------- metadata

    def _metadata(self, r: CycleReport) -> None:
        rows = self.db.outputs_without_meta()
        if not rows:
            return
        rows_by_id = {t["id"]: t for t in self.db.transformations()}
        tfs: dict[int, Transformation] = {}
        dids = []
        for o in rows:
            if o["tf_id"] not in tfs:
                tfs[o["tf_id"]] = self.load(rows_by_id[o["tf_id"]])  # once per transformation, not per output
            tf = tfs[o["tf_id"]]
            step = tf.steps[o["step"]]
            parent = f"{o['parent_scope']}:{o['parent_name']}" if o["parent_scope"] != MC_SCOPE else ""
            dids.append({"scope": o["scope"], "name": o["name"],
                         "meta": {"parent": parent, "transformation": tf.name, "step": step.name,
                                  "release": step.release}})
        try:
            self.client.set_dids_metadata_bulk(dids)
        except Exception as err:  # noqa: BLE001 - provenance is also in the bookkeeping; tried again next cycle
            r.warnings.append(f"provenance metadata not set yet: {type(err).__name__}: {err}")
            return
        self.db.meta_done([int(o["id"]) for o in rows])

    # 6 -------------------------------------------------------------- close

    def _close(self, tf_id: int, tf: Transformation, r: CycleReport) -> None:
        for d in self.db.datasets(tf_id):
            if d["closed"] or not d["input_closed"]:
                continue
            counts = self.db.group_counts(tf_id, d["step"]).get(d["grp"], {})
            if not decide.dataset_complete(True, counts):
                continue
            if not d["rules"]:
                outputs.ensure_dataset(self.client, d["scope"], d["name"])  # (made with its rules otherwise)
            outputs.close_dataset(self.client, d["scope"], d["name"])
            self.db.set_dataset(tf_id, d["step"], d["grp"], closed=1)
            r.closed += 1
            log.info("dataset closed", extra=fields(transformation=tf.name, dataset=f"{d['scope']}:{d['name']}"))


def _with_memory(res: Any, memory: int) -> Any:
    from dataclasses import replace

    return replace(res, memory_mb=memory)


__all__ = ["CycleReport", "Production", "jj_name"]
