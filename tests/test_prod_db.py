"""The bookkeeping on SQLite (fast, no grid): files are unique per transformation and step, a claim
never hands a file out twice even with several workers at once, and state survives a restart."""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.synchronize
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from juno_prod.db import Db, NewFile
from juno_prod.model import ASSIGNED, FAILED, PROBLEMATIC, PROCESSED, WAITING


def _files(n: int, grp: str = "b1") -> list[NewFile]:
    return [NewFile("raw", f"f{i:05d}.dat", 10, "00000001", ("IHEP-EOS",), grp) for i in range(n)]


def test_discovering_again_adds_nothing(tmp_path: Path) -> None:
    db = Db(f"sqlite:///{tmp_path / 'p.sqlite'}")
    tf = db.add_transformation("t", "selection", "x", "x.yaml")
    assert db.add_files(tf, 0, _files(50), 512) == 50
    assert db.add_files(tf, 0, _files(60), 512) == 10
    assert db.add_files(tf, 1, _files(5), 512) == 5  # another step: its own rows
    assert db.counts(tf) == {0: {WAITING: 60}, 1: {WAITING: 5}}


def test_state_survives_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    db = Db(url)
    tf = db.add_transformation("t", "selection", "x", "x.yaml")
    db.add_files(tf, 0, _files(3), 512)
    token, rows = db.claim(tf, 0, "b1", 512, 2)
    db.close()
    again = Db(url)
    assert again.counts(tf) == {0: {WAITING: 1, ASSIGNED: 2}}
    assert [c["token"] for c in again.claims(tf, states=["submitting"])] == [token]


def _claimer(url: str, tf: int, out: mp.Queue[list[int]], start: mp.synchronize.Barrier) -> None:
    db = Db(url)
    got: list[int] = []
    start.wait()  # all at once
    while True:
        try:
            _, rows = db.claim(tf, 0, "b1", 512, 7)
        except RuntimeError:
            continue
        if not rows:
            break
        got += [int(r["id"]) for r in rows]
        time.sleep(0.005)  # let the others in: one worker alone could take all 400 before they start
    out.put(got)


def _four_workers_claim_all_400_once(url: str, db: Db, tf: int) -> None:
    ctx = mp.get_context("fork")  # each child opens its own Db
    q: mp.Queue[list[int]] = ctx.Queue()
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_claimer, args=(url, tf, q, start)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    claimed = [i for r in results for i in r]
    assert len(claimed) == 400 and len(set(claimed)) == 400
    assert sum(1 for r in results if r) >= 2, "the workers did not overlap: the test proves nothing"
    assert db.counts(tf) == {0: {ASSIGNED: 400}}


def test_several_workers_never_claim_a_file_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    db = Db(url)
    tf = db.add_transformation("t", "selection", "x", "x.yaml")
    db.add_files(tf, 0, _files(400), 512)
    _four_workers_claim_all_400_once(url, db, tf)


def test_settle_release_and_retry(tmp_path: Path) -> None:
    db = Db(f"sqlite:///{tmp_path / 'p.sqlite'}")
    tf = db.add_transformation("t", "selection", "x", "x.yaml")
    db.add_files(tf, 0, _files(4), 512)
    token, rows = db.claim(tf, 0, "b1", 512, 4)
    ids = [int(r["id"]) for r in rows]
    db.claim_submitted(token, 7)
    out = {"tf_id": tf, "step": 0, "scope": "rtraw", "name": "f00000_J.rtraw", "parent_scope": "raw",
           "parent_name": "f00000.dat", "dataset": "rtraw.t.rtraw.b1", "rse": "IHEP-EOS", "bytes": 5,
           "adler32": "00000002", "meta_set": 0}
    db.settle(token, processed=[ids[0]], failed=[(ids[1], FAILED, 1024, "memory"), (ids[2], PROBLEMATIC, 512, "x")],
              new_outputs=[out], done=False)
    db.settle(token, processed=[ids[0]], failed=[], new_outputs=[out], done=False)  # again: changes nothing
    assert db.counts(tf) == {0: {PROCESSED: 1, FAILED: 1, PROBLEMATIC: 1, ASSIGNED: 1}}
    assert len(db.outputs(tf)) == 1 and db.files(tf, states=[PROCESSED])[0]["attempts"] == 1
    assert db.claimable(tf) == [(0, "b1", 1024, 1)]  # the failed one, with the next memory
    assert db.retry(tf, memory_mb=2048) == 1
    assert {(f["state"], f["memory_mb"]) for f in db.files(tf, states=[WAITING])} == {(WAITING, 2048)}
    # A claim that never reached the batch system: its files go back, attempts unchanged.
    t2, rows2 = db.claim(tf, 0, "b1", 2048, 10)
    assert db.release_claim(t2, "restart") == 1
    assert db.files(tf, states=[WAITING])[0]["attempts"] == 0


@pytest.mark.grid
def test_several_workers_never_claim_a_file_twice_on_postgresql(grid: Any) -> None:
    """The production backend: the grid's PostgreSQL (a database of this test's own)."""
    import psycopg

    name = f"juno_prod_{uuid.uuid4().hex[:8]}"
    admin = f"host=127.0.0.1 port={grid.cfg.ports.postgres} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{grid.cfg.ports.postgres}/{name}"
    try:
        db = Db(url)
        tf = db.add_transformation("t", "selection", "x", "x.yaml")
        db.add_files(tf, 0, _files(400), 512)
        assert db.add_files(tf, 0, _files(400), 512) == 0
        _four_workers_claim_all_400_once(url, db, tf)
        db.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
