"""Production's figures for `juno-prod status` and the status page (juno_prod.report), on SQLite, no grid:
one computation for both; a missing production database is said, not fatal, and nothing is created."""

from __future__ import annotations

import time
from pathlib import Path

from juno_prod.db import Db, NewFile
from juno_prod.model import FILE_STATES
from juno_prod.report import overview, step_names, transformation_status
from juno_status.text import _production

SPEC = """\
name: t1
release: J25.1.0
input: {jobs: 5}
steps:
  - {name: detsim, payload: bin/juno-prod-step}
  - {name: rec, payload: bin/juno-prod-step}
"""


def test_no_production_database_is_said_and_nothing_is_created(tmp_path: Path) -> None:
    work = tmp_path / "prod"
    got = overview({"JUNO_PROD_DIR": str(work)})
    assert got["available"] is False and got["transformations"] == []
    assert str(work / "prod.sqlite") in got["detail"] and "JUNO_PROD_DIR" in got["detail"]
    assert not work.exists()
    assert _production(got) == [f"Production: {got['detail']}"]
    assert _production(None) == ["Production: not checked (--no-production)"]


def test_an_unreadable_database_is_said_with_its_password_hidden() -> None:
    got = overview({"JUNO_PROD_DB": "postgresql+psycopg://juno_prod:s3cret@127.0.0.1:1/juno_prod"})
    assert got["available"] is False and "cannot read the production database" in got["detail"]
    assert "s3cret" not in str(got) and "***" in got["database"]


def test_overview_is_what_juno_prod_status_computes(tmp_path: Path) -> None:
    work = tmp_path / "prod"
    work.mkdir()
    db = Db(f"sqlite:///{work / 'prod.sqlite'}")
    tf = db.add_transformation("t1", "mc", SPEC, str(work / "t1.yaml"))
    db.add_files(tf, 0, [NewFile("-", f"t1.{i:06d}.job", 0, None, (), "t1") for i in range(5)], 256)
    token, rows = db.claim(tf, 0, "t1", 256, 3)
    db.settle(token, processed=[rows[0]["id"]], failed=[(rows[1]["id"], "problematic", 256, "exit 1")],
              new_outputs=[], done=False)
    row = db.transformation("t1")
    assert row is not None and step_names(row) == ["detsim", "rec"]
    mine = transformation_status(db, None, row, now=time.time())
    assert mine["steps"][0]["files"] == {"waiting": 2, "assigned": 1, "processed": 1, "failed": 0, "problematic": 1}
    assert mine["steps"][1] == {"step": "rec", "files": dict.fromkeys(FILE_STATES, 0), "jobs": {}}
    assert mine["processed_per_hour"] == 1.0 and mine["eta_s"] == 3 * 3600.0  # 3 files left at 1 file/h
    got = overview({"JUNO_PROD_DIR": str(work)})
    assert got["available"] is True and got["transformations"] == [mine]
    text = "\n".join(_production(got))
    assert "t1 (mc, active)" in text and "detsim     files: waiting=2 assigned=1 processed=1 problematic=1" in text
