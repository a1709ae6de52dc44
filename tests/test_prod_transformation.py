"""Transformation files: the examples are valid; every problem is reported with file:line; nothing is
recorded when a file is invalid (fast, no grid)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from juno_prod import transformation as tfile
from juno_prod.cli import main
from juno_prod.model import MC, NEW_RAW, SELECTION

EXAMPLES = sorted((Path(__file__).parent.parent / "etc" / "production").glob("*.yaml"))


def test_every_example_is_valid() -> None:
    assert {p.name for p in EXAMPLES} >= {"kup.yaml", "reprod-25x.yaml", "mc.yaml"}
    kinds = {p.name: tfile.load(p).kind for p in EXAMPLES}
    assert kinds["kup.yaml"] == NEW_RAW and kinds["reprod-25x.yaml"] == SELECTION and kinds["mc.yaml"] == MC


def test_keep_up_runs_at_ihep_and_mc_runs_anywhere() -> None:
    kup = tfile.load(EXAMPLES[[p.name for p in EXAMPLES].index("kup.yaml")])
    assert [s.where for s in kup.steps] == [("IHEP",), ("IHEP",)]
    assert [(s.scope, s.ext) for s in kup.steps] == [("rtraw", "rtraw"), ("esd", "esd")]
    mc = tfile.load(EXAMPLES[[p.name for p in EXAMPLES].index("mc.yaml")])
    assert mc.steps[0].where == "anywhere" and mc.steps[1].where == "input"
    assert mc.input.jobs == 6
    assert {s.resources.copies for s in kup.steps} == {4}  # files a job copies at once: the wrapper's default


def test_a_step_says_how_many_files_its_jobs_copy_at_once(tmp_path: Path) -> None:
    text = EXAMPLES[[p.name for p in EXAMPLES].index("kup.yaml")].read_text()
    assert "wall_time: 1h}" in text
    tf = tfile.load(_write(tmp_path, text.replace("wall_time: 1h}", "wall_time: 1h, copies: 8}", 1)))
    assert [s.resources.copies for s in tf.steps] == [8, 4]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tf.yaml"
    p.write_text(text)
    return p


BAD = """\
name: bad one
release: J25.1.0
input:
  new_raw: {streams: [JUNODAQ.global_trigger]}
steps:
  - name: rtraw
    payload: bin/juno-prod-step
    output: {scope: esd, rse: IHEP-EOS}
    resources: {memory: 2GB}
    retry: {memory: [4GB, 1GB]}
    colour: blue
"""


def test_schema_problems_have_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(tfile.TransformationError) as exc:
        tfile.load(_write(tmp_path, BAD))
    text = [str(i) for i in exc.value.issues]
    assert any(":1:" in t and "name" in t for t in text), text  # 'bad one' breaks the name pattern
    assert any(":11:" in t and "colour" in t and "unknown key" in t for t in text), text


MEANING = """\
name: kup-x
release: J25.1.0
input:
  new_raw: {streams: [JUNODAQ.global_trigger]}
steps:
  - name: rtraw
    payload: bin/juno-prod-step
    where: anywhere
    output: {scope: esd, rse: IHEP-EOS}
    resources: {memory: 2GB}
    retry: {memory: [4GB, 1GB]}
  - name: rtraw
    payload: bin/juno-prod-step
    where: [IHEP]
    output: {scope: mc}
"""


def test_meaning_problems_are_all_reported_with_lines(tmp_path: Path) -> None:
    with pytest.raises(tfile.TransformationError) as exc:
        tfile.load(_write(tmp_path, MEANING))
    by_line = {(i.line, i.message.split(" ")[0]) for i in exc.value.issues}
    msgs = " | ".join(f"{i.line}:{i.message}" for i in exc.value.issues)
    assert any(i.line == 8 and "IHEP" in i.message for i in exc.value.issues), msgs  # keep-up elsewhere
    assert any(i.line == 9 and "<raw stem>_<release>.esd" in i.message for i in exc.value.issues), msgs
    assert any(i.line == 11 and "climb" in i.message for i in exc.value.issues), msgs
    assert any(i.line == 12 and "used twice" in i.message for i in exc.value.issues), msgs
    assert any(i.line == 15 and "simulation" in i.message for i in exc.value.issues), msgs
    assert len(by_line) >= 5


def test_monte_carlo_first_step_cannot_follow_its_input(tmp_path: Path) -> None:
    text = ("name: mc-x\nrelease: J25.1.0\ninput: {jobs: 3}\nsteps:\n  - name: detsim\n    payload: bin/x\n"
            "    where: input\n    output: {scope: mc}\n")
    with pytest.raises(tfile.TransformationError) as exc:
        tfile.load(_write(tmp_path, text))
    assert [i.line for i in exc.value.issues] == [7]


def test_input_kinds_are_exclusive(tmp_path: Path) -> None:
    text = ("name: x\nrelease: J25.1.0\ninput:\n  jobs: 3\n  dids: ['raw:block.JUNODAQ.s.20250101']\n"
            "steps:\n  - name: detsim\n    payload: bin/x\n    output: {scope: mc}\n")
    with pytest.raises(tfile.TransformationError) as exc:
        tfile.load(_write(tmp_path, text))
    assert exc.value.issues and all(i.line >= 3 for i in exc.value.issues)


def test_cli_validate_and_submit_refuse_a_bad_file_and_record_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUNO_PROD_DIR", str(tmp_path / "prod"))
    monkeypatch.delenv("JUNO_PROD_DB", raising=False)
    bad = _write(tmp_path, BAD)
    r = CliRunner().invoke(main, ["validate", str(bad)])
    assert r.exit_code == 3 and f"{bad}:11:" in r.output
    r = CliRunner().invoke(main, ["submit", str(bad)])
    assert r.exit_code == 3, r.output
    assert "nothing was submitted" in r.output
    r = CliRunner().invoke(main, ["list", "--json"])
    assert r.exit_code == 0 and r.output.strip() == "[]"
    good = EXAMPLES[[p.name for p in EXAMPLES].index("mc.yaml")]
    r = CliRunner().invoke(main, ["submit", str(good), "--dry-run", "--json"])
    assert r.exit_code == 0 and '"dry_run": true' in r.output
    r = CliRunner().invoke(main, ["list", "--json"])
    assert r.output.strip() == "[]"
    r = CliRunner().invoke(main, ["submit", str(good)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["submit", str(good)])
    assert r.exit_code == 4 and "exists already" in r.output
    r = CliRunner().invoke(main, ["status", "nope"])
    assert r.exit_code == 6
