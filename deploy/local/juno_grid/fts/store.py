"""Jobs and files in SQLite (WAL), so that a restart, even after SIGKILL, loses nothing.

A job is written in one transaction before its id is returned to the client, and never deleted:
an id this service ever handed out is never reported "404 Not Found" (which Rucio's poller takes for
LOST). Every state change of a file recomputes its job's state in the same transaction.

One connection shared by the threads behind a lock: the service's write rate is tiny (a few rows a
second), and one writer avoids "database is locked" entirely.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .states import FINAL_FILE_STATES, RESUME_FROM, FileState, JobState, JobType, derive_job_state, job_reason
from .submission import Checksum, Submission

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    job_state TEXT NOT NULL,
    job_type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    params TEXT NOT NULL,
    job_metadata TEXT NOT NULL,
    vo_name TEXT NOT NULL,
    submit_time REAL NOT NULL,
    job_finished REAL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS files (
    file_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    file_index INTEGER NOT NULL,
    source_surl TEXT NOT NULL,
    dest_surl TEXT NOT NULL,
    file_state TEXT NOT NULL,
    reason TEXT,
    filesize INTEGER,
    checksum TEXT,
    file_metadata TEXT,
    activity TEXT,
    staging_start REAL,
    staging_finished REAL,
    start_time REAL,
    finish_time REAL,
    transferred INTEGER NOT NULL DEFAULT 0,
    -- 1 once this service checked the destination was free (or could be overwritten) and began
    -- writing it: whatever is at the destination after that is ours to remove and redo.
    dest_ours INTEGER NOT NULL DEFAULT 0,
    -- how many times a copy of this file was interrupted by a stop or crash of the service
    interruptions INTEGER NOT NULL DEFAULT 0,
    dst_file TEXT
);
CREATE INDEX IF NOT EXISTS files_job ON files(job_id);
CREATE INDEX IF NOT EXISTS files_state ON files(file_state);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(job_state);
"""

NON_FINAL_JOB_STATES = (JobState.SUBMITTED, JobState.STAGING, JobState.ACTIVE)


class DuplicateJob(Exception):
    """A deterministic job id that was already submitted (FTS3 answers 409 Conflict)."""


@dataclass(frozen=True)
class Job:
    job_id: str
    job_state: JobState
    job_type: JobType
    priority: int
    params: dict[str, Any]
    job_metadata: dict[str, Any]
    vo_name: str
    submit_time: float
    job_finished: float | None
    reason: str | None

    @property
    def bring_online(self) -> int:
        try:
            return max(int(self.params.get("bring_online") or 0), 0)
        except (TypeError, ValueError):
            return 0

    @property
    def overwrite(self) -> bool:
        return bool(self.params.get("overwrite"))

    @property
    def verify_checksum(self) -> str:
        return str(self.params.get("verify_checksum", "both"))


@dataclass(frozen=True)
class File:
    file_id: int
    job_id: str
    file_index: int
    source_surl: str
    dest_surl: str
    file_state: FileState
    reason: str | None
    filesize: int | None
    checksum: Checksum | None
    file_metadata: Any
    activity: str | None
    staging_start: float | None
    staging_finished: float | None
    start_time: float | None
    finish_time: float | None
    transferred: int
    dest_ours: bool
    interruptions: int
    dst_file: dict[str, Any] | None


def _job(row: sqlite3.Row) -> Job:
    return Job(row["job_id"], JobState(row["job_state"]), JobType(row["job_type"]), row["priority"],
               json.loads(row["params"]), json.loads(row["job_metadata"]), row["vo_name"],
               row["submit_time"], row["job_finished"], row["reason"])


def _file(row: sqlite3.Row) -> File:
    return File(row["file_id"], row["job_id"], row["file_index"], row["source_surl"], row["dest_surl"],
                FileState(row["file_state"]), row["reason"], row["filesize"],
                Checksum.parse(row["checksum"]) if row["checksum"] else None,
                json.loads(row["file_metadata"]) if row["file_metadata"] is not None else None,
                row["activity"], row["staging_start"], row["staging_finished"], row["start_time"],
                row["finish_time"], row["transferred"], bool(row["dest_ours"]), row["interruptions"],
                json.loads(row["dst_file"]) if row["dst_file"] else None)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of this process (the case that matters here); only a
        # power cut can lose the last commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- identity -----------------------------------------------------------------------------

    def base_id(self) -> str:
        """A UUID fixed for the life of the state directory: the root of deterministic job ids."""
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'base_id'").fetchone()
            if row:
                return str(row["value"])
            value = str(uuid.uuid1())
            db.execute("INSERT INTO meta(key, value) VALUES ('base_id', ?)", (value,))
            return value

    # --- submission ---------------------------------------------------------------------------

    def add_job(self, sub: Submission, vo_name: str, job_id: str | None = None) -> Job:
        job_id = job_id or str(uuid.uuid4())
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone():
                raise DuplicateJob(job_id)
            state = derive_job_state(sub.job_type, [(f.file_index, f.state) for f in sub.files])
            db.execute(
                "INSERT INTO jobs(job_id, job_state, job_type, priority, params, job_metadata, vo_name,"
                " submit_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, state, sub.job_type, sub.priority, json.dumps(sub.params),
                 json.dumps(sub.job_metadata), vo_name, now),
            )
            db.executemany(
                "INSERT INTO files(job_id, file_index, source_surl, dest_surl, file_state, filesize,"
                " checksum, file_metadata, activity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(job_id, f.file_index, f.source_surl, f.dest_surl, f.state, f.filesize,
                  str(f.checksum) if f.checksum else None, json.dumps(f.metadata), f.activity)
                 for f in sub.files],
            )
        job = self.job(job_id)
        assert job is not None
        return job

    # --- reading ------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs_in(self, states: Sequence[JobState], limit: int = 1000) -> list[Job]:
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE job_state IN ({marks}) ORDER BY submit_time DESC LIMIT ?",
                (*states, limit),
            ).fetchall()
        return [_job(r) for r in rows]

    def files(self, job_id: str) -> list[File]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM files WHERE job_id = ? ORDER BY file_id", (job_id,)).fetchall()
        return [_file(r) for r in rows]

    def file(self, file_id: int) -> File:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE file_id = ?", (file_id,)).fetchone()
        return _file(row)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT file_state, COUNT(*) AS n FROM files GROUP BY file_state").fetchall()
        return {r["file_state"]: r["n"] for r in rows}

    def files_in(self, states: Sequence[FileState]) -> list[tuple[Job, File]]:
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                f"SELECT f.* FROM files f WHERE f.file_state IN ({marks}) ORDER BY f.file_id", tuple(states)
            ).fetchall()
        out = []
        for row in rows:
            job = self.job(row["job_id"])
            assert job is not None
            out.append((job, _file(row)))
        return out

    # --- state changes ------------------------------------------------------------------------

    def claim_next(self) -> tuple[Job, File] | None:
        """Move the most urgent SUBMITTED file to ACTIVE and return it (highest priority, then oldest)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT f.file_id FROM files f JOIN jobs j ON j.job_id = f.job_id"
                " WHERE f.file_state = ? ORDER BY j.priority DESC, j.submit_time, f.file_id LIMIT 1",
                (FileState.SUBMITTED,),
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE files SET file_state = ?, start_time = ?, finish_time = NULL, reason = NULL"
                       " WHERE file_id = ?", (FileState.ACTIVE, time.time(), row["file_id"]))
            job_id = self._refresh_job(db, file_id=row["file_id"])
        job = self.job(job_id)
        assert job is not None
        return job, self.file(row["file_id"])

    def mark_dest_ours(self, file_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE files SET dest_ours = 1 WHERE file_id = ?", (file_id,))

    def finish(self, file_id: int, state: FileState, reason: str | None = None, *,
               transferred: int | None = None, dst_file: dict[str, Any] | None = None) -> bool:
        """Record the end of an ACTIVE copy. False if the file was no longer ACTIVE (canceled meanwhile)."""
        assert state in FINAL_FILE_STATES
        with self._tx() as db:
            cur = db.execute(
                "UPDATE files SET file_state = ?, reason = ?, finish_time = ?,"
                " transferred = COALESCE(?, transferred), dst_file = ?"
                " WHERE file_id = ? AND file_state = ?",
                (state, reason, time.time(), transferred, json.dumps(dst_file) if dst_file else None,
                 file_id, FileState.ACTIVE),
            )
            if cur.rowcount == 0:
                return False
            self._after_final(db, file_id, state)
            self._refresh_job(db, file_id=file_id)
            return True

    def fail_staging(self, file_id: int, reason: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE files SET file_state = ?, reason = ?, finish_time = ?"
                " WHERE file_id = ? AND file_state IN (?, ?)",
                (FileState.FAILED, reason, time.time(), file_id, FileState.STAGING, FileState.STARTED),
            )
            if cur.rowcount == 0:
                return False
            self._after_final(db, file_id, FileState.FAILED)
            self._refresh_job(db, file_id=file_id)
            return True

    def staging_requested(self, file_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE files SET file_state = ?, staging_start = COALESCE(staging_start, ?)"
                " WHERE file_id = ? AND file_state = ?",
                (FileState.STARTED, time.time(), file_id, FileState.STAGING),
            )
            self._refresh_job(db, file_id=file_id)

    def staged(self, file_id: int) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE files SET file_state = ?, staging_finished = ? WHERE file_id = ? AND file_state = ?",
                (FileState.SUBMITTED, time.time(), file_id, FileState.STARTED),
            )
            self._refresh_job(db, file_id=file_id)

    def requeue(self, file_id: int, reason: str) -> None:
        """An ACTIVE copy interrupted by a stop of the service: run it again after the restart."""
        with self._tx() as db:
            db.execute(
                "UPDATE files SET file_state = ?, reason = ?, interruptions = interruptions + 1"
                " WHERE file_id = ? AND file_state = ?",
                (FileState.SUBMITTED, reason, file_id, FileState.ACTIVE),
            )
            self._refresh_job(db, file_id=file_id)

    def recover(self, max_interruptions: int) -> list[File]:
        """At start-up: files left ACTIVE or STARTED by a crash resume (or fail if they keep crashing).

        Returns the files that were resumed.
        """
        resumed: list[File] = []
        with self._tx() as db:
            rows = db.execute(
                f"SELECT * FROM files WHERE file_state IN ({','.join('?' * len(RESUME_FROM))})",
                tuple(RESUME_FROM),
            ).fetchall()
            for row in rows:
                file = _file(row)
                if file.file_state is FileState.STARTED:
                    # Staging was only being waited for: ask again, nothing was written.
                    db.execute("UPDATE files SET file_state = ? WHERE file_id = ?", (FileState.STAGING, file.file_id))
                    resumed.append(file)
                elif file.interruptions + 1 > max_interruptions:
                    db.execute(
                        "UPDATE files SET file_state = ?, reason = ?, finish_time = ?,"
                        " interruptions = interruptions + 1 WHERE file_id = ?",
                        (FileState.FAILED,
                         f"TRANSFER [4] interrupted {file.interruptions + 1} times by restarts of the "
                         "transfer service; giving up", time.time(), file.file_id),
                    )
                    self._after_final(db, file.file_id, FileState.FAILED)
                else:
                    db.execute(
                        "UPDATE files SET file_state = ?, interruptions = interruptions + 1 WHERE file_id = ?",
                        (FileState.SUBMITTED, file.file_id),
                    )
                    resumed.append(file)
                self._refresh_job(db, file_id=file.file_id)
        return resumed

    def cancel(self, job_id: str) -> list[int]:
        """Cancel every file not yet final; returns the ids of those that were ACTIVE (to be stopped)."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute("SELECT file_id, file_state FROM files WHERE job_id = ?", (job_id,)).fetchall()
            active = [r["file_id"] for r in rows if r["file_state"] == FileState.ACTIVE]
            open_ids = [r["file_id"] for r in rows if FileState(r["file_state"]) not in FINAL_FILE_STATES]
            # Alternatives and later hops that never ran stay NOT_USED, as in FTS3.
            db.executemany(
                "UPDATE files SET file_state = ?, reason = ?, finish_time = ? WHERE file_id = ?",
                [(FileState.CANCELED, "Job canceled by the user", now, fid) for fid in open_ids],
            )
            self._refresh_job(db, job_id=job_id)
        return active

    def set_priority(self, job_id: str, priority: int) -> None:
        with self._tx() as db:
            job = db.execute("SELECT params FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            params = json.loads(job["params"])
            params["priority"] = priority
            db.execute("UPDATE jobs SET priority = ?, params = ? WHERE job_id = ?",
                       (priority, json.dumps(params), job_id))

    # --- internals ----------------------------------------------------------------------------

    def _after_final(self, db: sqlite3.Connection, file_id: int, state: FileState) -> None:
        """Release what waited on this file: the next hop after a success, the next replica after a failure."""
        row = db.execute(
            "SELECT f.job_id, f.file_index, j.job_type, j.params FROM files f JOIN jobs j ON j.job_id = f.job_id"
            " WHERE f.file_id = ?", (file_id,)
        ).fetchone()
        job_type = JobType(row["job_type"])
        if job_type is JobType.MULTI_HOP:
            if state is FileState.FINISHED:
                db.execute(
                    "UPDATE files SET file_state = ? WHERE file_id = (SELECT MIN(file_id) FROM files"
                    " WHERE job_id = ? AND file_index > ? AND file_state = ?)",
                    (FileState.SUBMITTED, row["job_id"], row["file_index"], FileState.NOT_USED),
                )
        elif job_type is JobType.MULTIPLE_REPLICA and state is FileState.FAILED:
            bring_online = json.loads(row["params"]).get("bring_online") or 0
            nxt = FileState.STAGING if int(bring_online) > 0 else FileState.SUBMITTED
            db.execute(
                "UPDATE files SET file_state = ? WHERE file_id = (SELECT MIN(file_id) FROM files"
                " WHERE job_id = ? AND file_id > ? AND file_state = ?)",
                (nxt, row["job_id"], file_id, FileState.NOT_USED),
            )

    def _refresh_job(self, db: sqlite3.Connection, *, file_id: int | None = None, job_id: str | None = None) -> str:
        if job_id is None:
            job_id = str(db.execute("SELECT job_id FROM files WHERE file_id = ?", (file_id,)).fetchone()["job_id"])
        job = db.execute("SELECT job_type, job_state FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        rows = db.execute("SELECT file_index, file_state FROM files WHERE job_id = ?", (job_id,)).fetchall()
        files = [(r["file_index"], FileState(r["file_state"])) for r in rows]
        state = derive_job_state(JobType(job["job_type"]), files)
        if state != job["job_state"]:
            final = state not in NON_FINAL_JOB_STATES
            db.execute("UPDATE jobs SET job_state = ?, job_finished = ?, reason = ? WHERE job_id = ?",
                       (state, time.time() if final else None, job_reason(state), job_id))
        return job_id
