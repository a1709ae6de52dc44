"""The bookkeeping: per transformation and step, every input file with its state, attempts and the job
holding it; the jobs (juno_jobs tasks) juno-prod created; the outputs; the output datasets. SQLAlchemy Core
on a SQLite file by default (JUNO_PROD_DB=sqlite:///...), PostgreSQL in production
(JUNO_PROD_DB=postgresql+psycopg://...).

Exactly once: a file row exists once per (transformation, step, scope, name) (a unique key: discovering it
again inserts nothing), and `claim` moves files from waiting/failed to assigned in one transaction whose
UPDATE re-checks the state, so two workers (or a restarted one) can never assign a file twice. On SQLite
every write transaction starts with BEGIN IMMEDIATE (one writer at a time); on PostgreSQL the candidates
are read FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import json
import time
import uuid as uuidlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from juno_prod.model import ACTIVE, ASSIGNED, FAILED, PROBLEMATIC, PROCESSED, WAITING

meta = MetaData()

transformations = Table(
    "transformations", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("state", String(16), nullable=False, default=ACTIVE),
    Column("kind", String(16), nullable=False),
    Column("spec", Text, nullable=False),  # the YAML text as submitted
    Column("source", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
)

files = Table(
    "files", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tf_id", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("scope", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("bytes", Integer, nullable=False, default=0),
    Column("adler32", String(8)),
    Column("rses", Text, nullable=False, default=""),  # comma-separated: where an AVAILABLE disk replica was
    Column("grp", String(255), nullable=False),  # the input block (or Monte Carlo job chunk): the output dataset
    Column("state", String(16), nullable=False, default=WAITING),
    Column("attempts", Integer, nullable=False, default=0),
    Column("memory_mb", Integer, nullable=False),
    Column("claim", String(40)),  # the job batch holding it (claims.token)
    Column("job", Integer),  # its job in that batch
    Column("reason", Text),
    Column("updated", Float, nullable=False),
    UniqueConstraint("tf_id", "step", "scope", "name", name="uq_file"),
    Index("ix_files_state", "tf_id", "step", "state"),
    Index("ix_files_claim", "claim"),
)

# One batch of jobs juno-prod made: one juno_jobs task (its jobs at one step, one group, one memory).
claims = Table(
    "claims", meta,
    Column("token", String(40), primary_key=True),
    Column("tf_id", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("grp", String(255), nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("task_id", Integer),  # juno_jobs' task id, once submitted
    Column("state", String(16), nullable=False),  # submitting | running | done
    Column("n_files", Integer, nullable=False),
    Column("created", Float, nullable=False),
    Index("ix_claims_tf", "tf_id", "state"),
)

outputs = Table(
    "outputs", meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tf_id", Integer, nullable=False),
    Column("step", Integer, nullable=False),
    Column("scope", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("parent_scope", String(32), nullable=False),
    Column("parent_name", String(255), nullable=False),
    Column("dataset", String(255), nullable=False),
    Column("rse", String(64), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("adler32", String(8), nullable=False),
    Column("meta_set", Integer, nullable=False, default=0),
    Column("created", Float, nullable=False),
    UniqueConstraint("scope", "name", name="uq_output"),
    Index("ix_outputs_tf", "tf_id", "step"),
)

# Output datasets per transformation, step and group; `input_closed`: no more input can come to it.
datasets = Table(
    "datasets", meta,
    Column("tf_id", Integer, primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("grp", String(255), primary_key=True),
    Column("scope", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("input_closed", Integer, nullable=False, default=0),
    Column("closed", Integer, nullable=False, default=0),
    Column("rules", Integer, nullable=False, default=0),
)


@dataclass(frozen=True)
class NewFile:
    scope: str
    name: str
    bytes: int
    adler32: str | None
    rses: tuple[str, ...]
    grp: str


def _sqlite_immediate(engine: Engine) -> None:
    """pysqlite's own transaction handling defers BEGIN; take the write lock at the start instead."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Db:
    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self.engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
        if self.sqlite:
            _sqlite_immediate(self.engine)
        meta.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    # ------------------------------------------------------------------ transformations

    def add_transformation(self, name: str, kind: str, spec: str, source: str) -> int:
        now = time.time()
        with self.tx() as c:
            res = c.execute(insert(transformations).values(name=name, kind=kind, spec=spec, source=source,
                                                           state=ACTIVE, created=now, updated=now))
            return int(res.inserted_primary_key[0])

    def transformation(self, ref: str | int) -> dict[str, Any] | None:
        col = transformations.c.id if isinstance(ref, int) or str(ref).isdigit() else transformations.c.name
        value = int(ref) if col is transformations.c.id else ref
        with self.engine.connect() as c:
            row = c.execute(select(transformations).where(col == value)).mappings().first()
        return dict(row) if row else None

    def transformations(self, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        q = select(transformations).order_by(transformations.c.id)
        if states is not None:
            q = q.where(transformations.c.state.in_(list(states)))
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def set_state(self, tf_id: int, state: str) -> None:
        with self.tx() as c:
            c.execute(update(transformations).where(transformations.c.id == tf_id)
                      .values(state=state, updated=time.time()))

    # ------------------------------------------------------------------ files

    def add_files(self, tf_id: int, step: int, new: Sequence[NewFile], memory_mb: int) -> int:
        """Insert files not yet known (per tf, step, scope, name); return how many were new. Known files
        that still wait get their replica sites refreshed (replication goes on) where they changed."""
        if not new:
            return 0
        now = time.time()
        with self.tx() as c:
            known: dict[tuple[str, str], tuple[int, str, str]] = {}
            names = [f.name for f in new]
            for i in range(0, len(names), 900):
                for r in c.execute(select(files.c.id, files.c.scope, files.c.name, files.c.rses, files.c.state)
                                   .where(files.c.tf_id == tf_id, files.c.step == step,
                                          files.c.name.in_(names[i:i + 900]))):
                    known[(r[1], r[2])] = (int(r[0]), str(r[3]), str(r[4]))
            rows = [{"tf_id": tf_id, "step": step, "scope": f.scope, "name": f.name, "bytes": f.bytes,
                     "adler32": f.adler32, "rses": ",".join(f.rses), "grp": f.grp, "state": WAITING, "attempts": 0,
                     "memory_mb": memory_mb, "updated": now} for f in new if (f.scope, f.name) not in known]
            for i in range(0, len(rows), 500):
                c.execute(insert(files), rows[i:i + 500])
            moved = []
            for f in new:
                have = known.get((f.scope, f.name))
                if have and have[2] in (WAITING, FAILED) and have[1] != ",".join(f.rses):
                    moved.append({"fid": have[0], "new_rses": ",".join(f.rses)})
            if moved:  # one executemany, not a statement per file
                c.execute(update(files).where(files.c.id == bindparam("fid")).values(rses=bindparam("new_rses")),
                          moved)
        return len(rows)

    def claim(self, tf_id: int, step: int, grp: str, memory_mb: int, limit: int) -> tuple[str, list[dict[str, Any]]]:
        """Move up to `limit` waiting/failed files of (tf, step, grp, memory) to assigned under a new claim
        token, in one transaction; the UPDATE re-checks their state, so no file is ever claimed twice."""
        token = uuidlib.uuid4().hex
        with self.tx() as c:
            q = (select(files.c.id).where(files.c.tf_id == tf_id, files.c.step == step, files.c.grp == grp,
                                          files.c.memory_mb == memory_mb, files.c.state.in_([WAITING, FAILED]))
                 .order_by(files.c.name).limit(limit))
            if not self.sqlite:
                q = q.with_for_update(skip_locked=True)
            ids = [r[0] for r in c.execute(q)]
            if not ids:
                return token, []
            res = c.execute(update(files).where(files.c.id.in_(ids), files.c.state.in_([WAITING, FAILED]))
                            .values(state=ASSIGNED, claim=token, job=None, updated=time.time()))
            if res.rowcount != len(ids):
                raise RuntimeError("claim raced with another worker")  # rolls back: nothing claimed
            c.execute(insert(claims).values(token=token, tf_id=tf_id, step=step, grp=grp, memory_mb=memory_mb,
                                            task_id=None, state="submitting", n_files=len(ids), created=time.time()))
            rows = [dict(r) for r in c.execute(select(files).where(files.c.id.in_(ids)).order_by(files.c.name))
                    .mappings()]
        return token, rows

    def claimable(self, tf_id: int) -> list[tuple[int, str, int, int]]:
        """(step, group, memory, count) of files waiting or failed (to be assigned)."""
        with self.engine.connect() as c:
            return [tuple(r) for r in c.execute(  # type: ignore[misc]
                select(files.c.step, files.c.grp, files.c.memory_mb, func.count())
                .where(files.c.tf_id == tf_id, files.c.state.in_([WAITING, FAILED]))
                .group_by(files.c.step, files.c.grp, files.c.memory_mb)
                .order_by(files.c.step, files.c.grp))]

    def set_jobs(self, token: str, jobs: dict[int, int]) -> None:
        """file id → job index within the claim's juno_jobs task."""
        if not jobs:
            return
        with self.tx() as c:  # one executemany: thousands of files per claim
            c.execute(update(files).where(files.c.id == bindparam("fid")).values(job=bindparam("new_job")),
                      [{"fid": fid, "new_job": job} for fid, job in jobs.items()])

    def claim_submitted(self, token: str, task_id: int) -> None:
        with self.tx() as c:
            c.execute(update(claims).where(claims.c.token == token).values(task_id=task_id, state="running"))

    def release_claim(self, token: str, reason: str) -> int:
        """Files of a claim that never reached the batch system go back to waiting (attempts unchanged)."""
        with self.tx() as c:
            res = c.execute(update(files).where(files.c.claim == token, files.c.state == ASSIGNED)
                            .values(state=WAITING, claim=None, job=None, reason=reason, updated=time.time()))
            c.execute(claims.delete().where(claims.c.token == token))
            return int(res.rowcount)

    def claims(self, tf_id: int | None = None, states: Iterable[str] = ("submitting", "running")
               ) -> list[dict[str, Any]]:
        q = select(claims).where(claims.c.state.in_(list(states))).order_by(claims.c.created)
        if tf_id is not None:
            q = q.where(claims.c.tf_id == tf_id)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def claim_files(self, token: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(select(files).where(files.c.claim == token)).mappings()]

    def settle(self, token: str, *, processed: Sequence[int], failed: Sequence[tuple[int, str, int, str]],
               new_outputs: Sequence[dict[str, Any]], done: bool) -> None:
        """One transaction: files processed, failed files (id, state, memory for the next attempt, reason),
        the outputs recorded, the claim done when all its files are settled."""
        now = time.time()
        with self.tx() as c:
            if processed:
                for i in range(0, len(processed), 900):
                    c.execute(update(files).where(files.c.id.in_(processed[i:i + 900]), files.c.claim == token,
                                                  files.c.state == ASSIGNED)
                              .values(state=PROCESSED, attempts=files.c.attempts + 1, reason=None, updated=now))
            if failed:
                c.execute(update(files).where(files.c.id == bindparam("fid"), files.c.claim == token,
                                              files.c.state == ASSIGNED)
                          .values(state=bindparam("new_state"), attempts=files.c.attempts + 1,
                                  memory_mb=bindparam("new_memory"), reason=bindparam("new_reason"), updated=now),
                          [{"fid": fid, "new_state": state, "new_memory": memory, "new_reason": reason}
                           for fid, state, memory, reason in failed])
            if new_outputs:
                names = [o["name"] for o in new_outputs]
                have = {r[0] for i in range(0, len(names), 900) for r in c.execute(
                    select(outputs.c.name).where(outputs.c.name.in_(names[i:i + 900])))}
                rows = [{**o, "created": now} for o in new_outputs if o["name"] not in have]
                if rows:
                    c.execute(insert(outputs), rows)
            if done:
                c.execute(update(claims).where(claims.c.token == token).values(state="done"))

    def retry(self, tf_id: int, step: int | None = None, memory_mb: int | None = None,
              names: Sequence[str] | None = None) -> int:
        """Problematic files back to waiting (attempts reset; optionally more memory)."""
        values: dict[str, Any] = {"state": WAITING, "attempts": 0, "reason": None, "claim": None, "job": None,
                                  "updated": time.time()}
        if memory_mb is not None:
            values["memory_mb"] = memory_mb
        cond = [files.c.tf_id == tf_id, files.c.state == PROBLEMATIC]
        if step is not None:
            cond.append(files.c.step == step)
        if names:
            cond.append(files.c.name.in_(list(names)))
        with self.tx() as c:
            return int(c.execute(update(files).where(and_(*cond)).values(**values)).rowcount)

    def files(self, tf_id: int, *, step: int | None = None, states: Iterable[str] | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
        q = select(files).where(files.c.tf_id == tf_id).order_by(files.c.step, files.c.name)
        if step is not None:
            q = q.where(files.c.step == step)
        if states is not None:
            q = q.where(files.c.state.in_(list(states)))
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def counts(self, tf_id: int) -> dict[int, dict[str, int]]:
        """step → state → files."""
        out: dict[int, dict[str, int]] = {}
        with self.engine.connect() as c:
            for step, state, n in c.execute(select(files.c.step, files.c.state, func.count())
                                            .where(files.c.tf_id == tf_id).group_by(files.c.step, files.c.state)):
                out.setdefault(int(step), {})[str(state)] = int(n)
        return out

    def group_counts(self, tf_id: int, step: int) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as c:
            for grp, state, n in c.execute(select(files.c.grp, files.c.state, func.count())
                                           .where(files.c.tf_id == tf_id, files.c.step == step)
                                           .group_by(files.c.grp, files.c.state)):
                out.setdefault(str(grp), {})[str(state)] = int(n)
        return out

    def processed_since(self, tf_id: int, since: float) -> int:
        with self.engine.connect() as c:
            return int(c.execute(select(func.count()).select_from(files).where(
                files.c.tf_id == tf_id, files.c.state == PROCESSED, files.c.updated >= since)).scalar_one())

    # ------------------------------------------------------------------ outputs, datasets

    def outputs(self, tf_id: int, *, step: int | None = None, parent: tuple[str, str] | None = None,
                name: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        q = select(outputs).where(outputs.c.tf_id == tf_id).order_by(outputs.c.step, outputs.c.name)
        if step is not None:
            q = q.where(outputs.c.step == step)
        if parent is not None:
            q = q.where(outputs.c.parent_scope == parent[0], outputs.c.parent_name == parent[1])
        if name is not None:
            q = q.where(outputs.c.scope == name[0], outputs.c.name == name[1])
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def output_counts(self, tf_id: int, step: int) -> dict[str, int]:
        """dataset → outputs recorded (one query for every dataset of a step)."""
        with self.engine.connect() as c:
            return {str(ds): int(n) for ds, n in c.execute(
                select(outputs.c.dataset, func.count()).where(outputs.c.tf_id == tf_id, outputs.c.step == step)
                .group_by(outputs.c.dataset))}

    def outputs_without_meta(self, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(select(outputs).where(outputs.c.meta_set == 0).limit(limit)).mappings()]

    def meta_done(self, ids: Sequence[int]) -> None:
        with self.tx() as c:
            for i in range(0, len(ids), 900):
                c.execute(update(outputs).where(outputs.c.id.in_(ids[i:i + 900])).values(meta_set=1))

    def dataset(self, tf_id: int, step: int, grp: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(datasets).where(datasets.c.tf_id == tf_id, datasets.c.step == step,
                                                   datasets.c.grp == grp)).mappings().first()
        return dict(row) if row else None

    def datasets(self, tf_id: int, step: int | None = None) -> list[dict[str, Any]]:
        q = select(datasets).where(datasets.c.tf_id == tf_id).order_by(datasets.c.step, datasets.c.grp)
        if step is not None:
            q = q.where(datasets.c.step == step)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def add_dataset(self, tf_id: int, step: int, grp: str, scope: str, name: str) -> None:
        with self.tx() as c:
            have = c.execute(select(datasets.c.name).where(datasets.c.tf_id == tf_id, datasets.c.step == step,
                                                           datasets.c.grp == grp)).first()
            if have is None:
                c.execute(insert(datasets).values(tf_id=tf_id, step=step, grp=grp, scope=scope, name=name,
                                                  input_closed=0, closed=0, rules=0))

    def set_dataset(self, tf_id: int, step: int, grp: str, **values: Any) -> None:
        with self.tx() as c:
            c.execute(update(datasets).where(datasets.c.tf_id == tf_id, datasets.c.step == step,
                                             datasets.c.grp == grp).values(**values))


def spec_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


__all__ = ["Db", "NewFile"]
