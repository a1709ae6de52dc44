"""Task state in SQLite: tasks, jobs, attempts, submission rounds, registered outputs.

Everything a command needs is here or in the task's directory, so any command works after a restart
and nothing depends on the schedd's history. One file per work directory, WAL mode so `status` reads
while another process updates.

Job states     idle → running → finishing → done          (finishing: succeeded, outputs being registered)
                            ↘ held / failed / killed      (failed and killed are final until a resubmit)
Attempt states pending (recorded, not yet in the batch system) → idle → running → succeeded | failed,
               or held, removed (killed, or replaced by a retry), lost
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from juno_jobs.model import OutputTarget

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    account TEXT NOT NULL,
    backend TEXT NOT NULL,
    task_dir TEXT NOT NULL,
    task_file TEXT NOT NULL,
    created REAL NOT NULL,
    n_jobs INTEGER NOT NULL,
    n_files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    output_scope TEXT,
    output_dataset TEXT,
    output_rse TEXT,
    dataset_closed INTEGER NOT NULL DEFAULT 0,
    killed INTEGER NOT NULL DEFAULT 0,
    policy TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    task_id INTEGER NOT NULL,
    job INTEGER NOT NULL,
    sites TEXT NOT NULL,
    n_files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    memory INTEGER NOT NULL,
    site TEXT,
    exit_code INTEGER,
    failure TEXT,
    reason TEXT,
    updated REAL,
    PRIMARY KEY (task_id, job)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS attempts (
    task_id INTEGER NOT NULL,
    job INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    round INTEGER NOT NULL,
    cluster INTEGER,
    proc INTEGER NOT NULL,
    memory INTEGER NOT NULL,
    state TEXT NOT NULL,
    site TEXT,
    exit_code INTEGER,
    failure TEXT,
    reason TEXT,
    max_rss_mb INTEGER,
    decision TEXT,
    submitted REAL,
    started REAL,
    finished REAL,
    PRIMARY KEY (task_id, job, attempt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attempts_by_round ON attempts (task_id, round, proc);
CREATE TABLE IF NOT EXISTS rounds (
    task_id INTEGER NOT NULL,
    round INTEGER NOT NULL,
    cluster INTEGER,
    n_jobs INTEGER NOT NULL,
    submitted REAL NOT NULL,
    items TEXT NOT NULL,
    PRIMARY KEY (task_id, round)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outputs (
    task_id INTEGER NOT NULL,
    job INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    rse TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    adler32 TEXT NOT NULL,
    registered REAL NOT NULL,
    PRIMARY KEY (task_id, name)
) WITHOUT ROWID;
"""

FINAL_JOB_STATES = frozenset({"done", "failed", "killed"})
ACTIVE_ATTEMPT_STATES = ("pending", "idle", "running", "held")


@dataclass(frozen=True)
class TaskRow:
    id: int
    uuid: str
    name: str
    account: str
    backend: str
    task_dir: Path
    task_file: str
    created: float
    n_jobs: int
    n_files: int
    bytes: int
    output_scope: str | None
    output_dataset: str | None
    output_rse: str | None
    dataset_closed: bool
    killed: bool
    policy: dict[str, Any]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> TaskRow:
        d = dict(row)
        d["task_dir"] = Path(d["task_dir"])
        d["dataset_closed"] = bool(d["dataset_closed"])
        d["killed"] = bool(d["killed"])
        d["policy"] = json.loads(d["policy"])
        return cls(**d)

    @property
    def output_did(self) -> str | None:
        return f"{self.output_scope}:{self.output_dataset}" if self.output_dataset else None

    @property
    def output(self) -> OutputTarget | None:
        """The output dataset as planning decided it (plan.output_target), as the store recorded it."""
        from juno_jobs.model import OutputTarget

        if not self.output_dataset or not self.output_scope:
            return None
        return OutputTarget(scope=self.output_scope, name=self.output_dataset, rse=self.output_rse or "site",
                            patterns=tuple(self.policy.get("output_patterns", ())),
                            naming=str(self.policy.get("output_naming", "job")))


@dataclass(frozen=True)
class NewAttempt:
    job: int
    attempt: int
    memory: int
    proc: int


class TaskNotFound(LookupError):
    pass


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: one writer at a time; readers (WAL) are never blocked."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ----------------------------------------------------------------------- tasks

    def add_task(self, *, uuid: str, name: str, account: str, backend: str, task_dir: Path, task_file: str,
                 n_files: int, total_bytes: int, output: tuple[str, str, str] | None, policy: dict[str, Any],
                 jobs: Sequence[tuple[int, str, int, int, int]]) -> int:
        """Record a task and its jobs (job, sites, n_files, bytes, memory), all idle; return the task id."""
        now = time.time()
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO tasks (uuid, name, account, backend, task_dir, task_file, created, n_jobs, n_files, bytes,"
                " output_scope, output_dataset, output_rse, policy) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (uuid, name, account, backend, str(task_dir), task_file, now, len(jobs), n_files, total_bytes,
                 *(output or (None, None, None)), json.dumps(policy)))
            task_id = int(cur.lastrowid or 0)
            # attempts=1: round 1 follows at once (add_round then leaves these rows alone)
            db.executemany("INSERT INTO jobs (task_id, job, sites, n_files, bytes, state, attempts, memory, updated)"
                           " VALUES (?,?,?,?,?,'idle',1,?,?)",
                           ((task_id, j, sites, n, b, mem, now) for j, sites, n, b, mem in jobs))
        return task_id

    def task(self, ref: str | int) -> TaskRow:
        """By id, uuid, or name (the latest task of that name)."""
        text = str(ref)
        row = None
        if text.isdigit():
            row = self.db.execute("SELECT * FROM tasks WHERE id=?", (int(text),)).fetchone()
        if row is None:
            row = self.db.execute("SELECT * FROM tasks WHERE uuid=? OR name=? ORDER BY id DESC LIMIT 1",
                                  (text, text)).fetchone()
        if row is None:
            raise TaskNotFound(f"no task {text!r} in {self.path}: `juno-submit list` shows the tasks")
        return TaskRow.from_row(row)

    def tasks(self) -> list[TaskRow]:
        return [TaskRow.from_row(r) for r in self.db.execute("SELECT * FROM tasks ORDER BY id")]

    def latest_task(self) -> TaskRow | None:
        row = self.db.execute("SELECT * FROM tasks ORDER BY id DESC LIMIT 1").fetchone()
        return TaskRow.from_row(row) if row else None

    def set_task(self, task_id: int, **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        with self.transaction() as db:
            db.execute(f"UPDATE tasks SET {cols} WHERE id=?", (*fields.values(), task_id))

    def output_dataset_owner(self, scope: str, name: str) -> TaskRow | None:
        row = self.db.execute("SELECT * FROM tasks WHERE output_scope=? AND output_dataset=? ORDER BY id LIMIT 1",
                              (scope, name)).fetchone()
        return TaskRow.from_row(row) if row else None

    # ----------------------------------------------------------------------- rounds and attempts

    def next_round(self, task_id: int) -> int:
        row = self.db.execute("SELECT COALESCE(MAX(round), 0) FROM rounds WHERE task_id=?", (task_id,)).fetchone()
        return int(row[0]) + 1

    def add_round(self, task_id: int, rnd: int, items: Path, attempts: Sequence[NewAttempt]) -> None:
        """Record a round's attempts as pending (before the batch system hears of them)."""
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT INTO rounds (task_id, round, cluster, n_jobs, submitted, items) VALUES (?,?,NULL,?,?,?)",
                       (task_id, rnd, len(attempts), now, str(items)))
            db.executemany("INSERT INTO attempts (task_id, job, attempt, round, cluster, proc, memory, state,"
                           " submitted) VALUES (?,?,?,?,NULL,?,?,'pending',?)",
                           ((task_id, a.job, a.attempt, rnd, a.proc, a.memory, now) for a in attempts))
            if rnd > 1:
                db.executemany("UPDATE jobs SET state='idle', attempts=?, memory=?, site=NULL, exit_code=NULL,"
                               " failure=NULL, reason=NULL, updated=? WHERE task_id=? AND job=?",
                               ((a.attempt, a.memory, now, task_id, a.job) for a in attempts))

    def round_submitted(self, task_id: int, rnd: int, cluster: int, *, held: str | None = None) -> None:
        """The batch system has the round: its attempts are idle (or held, with that reason)."""
        state = "held" if held else "idle"
        with self.transaction() as db:
            db.execute("UPDATE rounds SET cluster=? WHERE task_id=? AND round=?", (cluster, task_id, rnd))
            db.execute("UPDATE attempts SET cluster=?, state=?, reason=? WHERE task_id=? AND round=?"
                       " AND state='pending'", (cluster, state, held, task_id, rnd))
            if held:
                db.execute("UPDATE jobs SET state='held', reason=? WHERE task_id=? AND job IN"
                           " (SELECT job FROM attempts WHERE task_id=? AND round=?)", (held, task_id, task_id, rnd))

    def renumber(self, task_id: int, rnd: int, procs: Sequence[tuple[int, int, int]]) -> None:
        """(job, attempt, proc): the items a round is finally submitted with, in order."""
        with self.transaction() as db:
            # Attempts left out get negative procs, so no two attempts of the round share a proc.
            db.execute("UPDATE attempts SET proc=-1-proc WHERE task_id=? AND round=? AND proc>=0", (task_id, rnd))
            db.executemany("UPDATE attempts SET proc=? WHERE task_id=? AND round=? AND job=? AND attempt=?",
                           ((p, task_id, rnd, j, a) for j, a, p in procs))

    def rounds(self, task_id: int) -> list[sqlite3.Row]:
        return list(self.db.execute("SELECT * FROM rounds WHERE task_id=? ORDER BY round", (task_id,)))

    def unsubmitted_rounds(self, task_id: int) -> list[sqlite3.Row]:
        return list(self.db.execute("SELECT * FROM rounds WHERE task_id=? AND cluster IS NULL ORDER BY round",
                                    (task_id,)))

    def _tuples(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Plain tuples: sqlite3.Row costs 3x more for the 10,000-row lookups of a large task."""
        cur = self.db.cursor()
        cur.row_factory = None
        return cur.execute(sql, args).fetchall()

    def attempts_by_proc(self, task_id: int) -> dict[tuple[int, int], tuple[int, int]]:
        """(cluster, proc) → (job, attempt)."""
        return {(c, p): (j, a) for c, p, j, a in self._tuples(
            "SELECT cluster, proc, job, attempt FROM attempts WHERE task_id=? AND cluster IS NOT NULL", (task_id,))}

    def attempts_by_round(self, task_id: int) -> dict[tuple[int, int], tuple[int, int]]:
        """(round, proc) → (job, attempt), for backends without cluster ids."""
        return {(r, p): (j, a) for r, p, j, a in self._tuples(
            "SELECT round, proc, job, attempt FROM attempts WHERE task_id=?", (task_id,))}

    def has_pending(self, task_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM attempts WHERE task_id=? AND state='pending' LIMIT 1",
                               (task_id,)).fetchone() is not None

    def attempt(self, task_id: int, job: int, attempt: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM attempts WHERE task_id=? AND job=? AND attempt=?",
                               (task_id, job, attempt)).fetchone()

    def attempts(self, task_id: int, job: int | None = None) -> list[sqlite3.Row]:
        if job is None:
            return list(self.db.execute("SELECT * FROM attempts WHERE task_id=? ORDER BY job, attempt", (task_id,)))
        return list(self.db.execute("SELECT * FROM attempts WHERE task_id=? AND job=? ORDER BY attempt",
                                    (task_id, job)))

    def active_attempts(self, task_id: int) -> list[sqlite3.Row]:
        marks = ",".join("?" * len(ACTIVE_ATTEMPT_STATES))
        return list(self.db.execute(f"SELECT * FROM attempts WHERE task_id=? AND state IN ({marks})",
                                    (task_id, *ACTIVE_ATTEMPT_STATES)))

    def update_attempts(self, task_id: int, changes: Iterable[tuple[int, int, dict[str, Any]]]) -> None:
        """Apply {column: value} to attempts and mirror them on the job when it is the job's latest attempt."""
        now = time.time()
        with self.transaction() as db:
            for job, attempt, fields in changes:
                if not fields:
                    continue
                cols = ", ".join(f"{k}=?" for k in fields)
                db.execute(f"UPDATE attempts SET {cols} WHERE task_id=? AND job=? AND attempt=?",
                           (*fields.values(), task_id, job, attempt))
                mirror = {k: v for k, v in fields.items() if k in ("site", "exit_code", "failure", "reason")}
                if "state" in fields:
                    mirror["state"] = _job_state(fields["state"])
                if mirror:
                    cols = ", ".join(f"{k}=?" for k in mirror)
                    db.execute(f"UPDATE jobs SET {cols}, updated=? WHERE task_id=? AND job=? AND attempts=?",
                               (*mirror.values(), now, task_id, job, attempt))

    def states(self, task_id: int) -> dict[tuple[int, int], str]:
        """(job, attempt) → attempt state, for every attempt of the task."""
        return {(j, a): s for j, a, s in self._tuples(
            "SELECT job, attempt, state FROM attempts WHERE task_id=?", (task_id,))}

    def undecided(self, task_id: int) -> list[sqlite3.Row]:
        """Failed attempts nobody has decided about yet (retry or give up)."""
        return list(self.db.execute(
            "SELECT a.*, j.attempts AS latest FROM attempts a JOIN jobs j ON a.task_id=j.task_id AND a.job=j.job"
            " WHERE a.task_id=? AND a.state IN ('failed','lost') AND a.decision IS NULL ORDER BY a.job",
            (task_id,)))

    def decide(self, task_id: int, decisions: Iterable[tuple[int, int, str]],
               final: Iterable[tuple[int, str]] = ()) -> None:
        """Mark attempts decided ('retry' | 'final' | 'stale'); jobs given up on become failed with a reason."""
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE attempts SET decision=? WHERE task_id=? AND job=? AND attempt=?",
                           ((d, task_id, j, a) for j, a, d in decisions))
            db.executemany("UPDATE jobs SET state='failed', reason=?, updated=? WHERE task_id=? AND job=?",
                           ((reason, now, task_id, j) for j, reason in final))

    def set_jobs(self, task_id: int, jobs: Iterable[int], **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        now = time.time()
        with self.transaction() as db:
            db.executemany(f"UPDATE jobs SET {cols}, updated=? WHERE task_id=? AND job=?",
                           ((*fields.values(), now, task_id, j) for j in jobs))

    # ----------------------------------------------------------------------- jobs

    def jobs(self, task_id: int, states: Iterable[str] | None = None, numbers: Iterable[int] | None = None
             ) -> list[sqlite3.Row]:
        sql = "SELECT * FROM jobs WHERE task_id=?"
        args: list[Any] = [task_id]
        if states is not None:
            st = list(states)
            sql += f" AND state IN ({','.join('?' * len(st))})"
            args += st
        rows = list(self.db.execute(sql + " ORDER BY job", args))
        if numbers is not None:
            wanted = set(numbers)
            rows = [r for r in rows if r["job"] in wanted]
        return rows

    def job(self, task_id: int, job: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM jobs WHERE task_id=? AND job=?", (task_id, job)).fetchone()

    def counts(self, task_id: int) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute(
            "SELECT state, COUNT(*) FROM jobs WHERE task_id=? GROUP BY state", (task_id,))}

    def counts_by_site(self, task_id: int) -> dict[str, dict[str, int]]:
        """site → state → jobs; a job that has not run yet counts under its candidate sites' list."""
        out: dict[str, dict[str, int]] = {}
        for site, sites, state, n in self.db.execute(
                "SELECT site, sites, state, COUNT(*) FROM jobs WHERE task_id=? GROUP BY site, sites, state",
                (task_id,)):
            key = site or f"({sites or 'any'})"
            out.setdefault(key, {})[state] = out.get(key, {}).get(state, 0) + n
        return out

    # ----------------------------------------------------------------------- outputs

    def outputs(self, task_id: int, job: int | None = None) -> list[sqlite3.Row]:
        if job is None:
            return list(self.db.execute("SELECT * FROM outputs WHERE task_id=? ORDER BY job, name", (task_id,)))
        return list(self.db.execute("SELECT * FROM outputs WHERE task_id=? AND job=? ORDER BY name", (task_id, job)))

    def add_outputs(self, task_id: int, rows: Sequence[tuple[int, int, str, str, str, int, str]]) -> None:
        """(job, attempt, scope, name, rse, bytes, adler32), once each (a second finalization changes nothing)."""
        now = time.time()
        with self.transaction() as db:
            db.executemany("INSERT OR IGNORE INTO outputs (task_id, job, attempt, scope, name, rse, bytes, adler32,"
                           " registered) VALUES (?,?,?,?,?,?,?,?,?)", ((task_id, *r, now) for r in rows))


def _job_state(attempt_state: str) -> str:
    return {"pending": "idle", "idle": "idle", "running": "running", "held": "held", "succeeded": "finishing",
            "failed": "failed", "removed": "killed", "lost": "failed"}.get(attempt_state, attempt_state)
