"""`juno-dci status | report` through click's CliRunner, against the live grid."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner
from juno_grid import daemons
from test_status_collect import add_rules, block_glob, make_blocks, new_stream, rules_ok

from juno_status import cli as cli_mod
from juno_status.cli import cli

SITES = ("IHEP", "CNAF", "JINR", "IN2P3")
# A policy under which the state below is complete: raw blocks wanted at IHEP-EOS and CNAF-DISK only.
SMALL_POLICY = """\
version: 1
classes:
  raw:
    description: test policy, IHEP and CNAF disk only
    match: {scope: raw, did_type: DATASET, name: "block.*"}
    rules:
      - {id: ihep_disk, rse_expression: IHEP-EOS}
      - {id: cnaf_disk, rse_expression: CNAF-DISK}
"""


@pytest.fixture(scope="module")
def stream(grid, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One block of 2 files at IHEP with a rule to CNAF-DISK, replicated."""
    client = grid.client()
    name = new_stream()
    blocks = make_blocks(client, tmp_path_factory.mktemp("cli"), name, [date(2025, 10, 12)], files_per_block=2)
    rule_ids = add_rules(client, blocks, "CNAF-DISK")
    daemons.drive_until(lambda: rules_ok(client, rule_ids), timeout=900)
    return name


@pytest.fixture
def small_policy(tmp_path: Path) -> Path:
    from rucio_policy.engine import DEFAULT_POLICY

    shutil.copy(DEFAULT_POLICY.parent / "sites.yaml", tmp_path / "sites.yaml")
    path = tmp_path / "replication.yaml"
    path.write_text(SMALL_POLICY)
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.grid
def test_table_shows_every_site_and_exits_3_when_incomplete(stream: str) -> None:
    code, out, _ = run("status", "--blocks", block_glob(stream), "--no-ingest")
    assert code == 8, out
    lines = out.splitlines()
    for site in SITES:
        assert any(line.startswith(site + " ") for line in lines), f"no row for {site}:\n{out}"
    cnaf = next(line for line in lines if " CNAF-DISK " in line)
    assert cnaf.split()[2] == "2" and cnaf.split()[-1] == "yes"  # 2 files expected, present: complete
    assert "INCOMPLETE (exit 8):" in out and "JINR-DISK: 2 of 2 expected files not present" in out
    assert "Ingest: not checked" in out


@pytest.mark.grid
def test_json_parses_and_carries_the_exit_code(stream: str) -> None:
    code, out, _ = run("status", "--blocks", block_glob(stream), "--no-ingest", "--json")
    status = json.loads(out)
    assert code == status["exit_code"] == 8
    assert [s["site"] for s in status["sites"]] == list(SITES)
    cnaf = next(r for r in status["rses"] if r["rse"] == "CNAF-DISK")
    assert cnaf["present"]["files"] == cnaf["expected"]["files"] == cnaf["verified"]["files"] == 2


@pytest.mark.grid
def test_exit_0_when_complete_under_the_policy_given(stream: str, small_policy: Path) -> None:
    code, out, _ = run("status", "--blocks", block_glob(stream), "--no-ingest", "--policy", str(small_policy))
    assert code == 0, out
    assert "COMPLETE: every expected file is present" in out
    jinr = next(line for line in out.splitlines() if " JINR-DISK " in line)
    assert jinr.split()[2] == "0" and jinr.split()[-1] == "yes"  # this policy wants nothing at JINR


@pytest.mark.grid
def test_watch_redraws_until_interrupted(stream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_mod.time, "sleep", interrupt)
    code, out, _ = run("status", "--blocks", block_glob(stream), "--no-ingest", "--json", "--watch", "5")
    [line] = out.splitlines()  # one compact JSON object per refresh
    assert json.loads(line)["exit_code"] == code == 8


@pytest.mark.grid
def test_report_writes_html_and_json(stream: str, tmp_path: Path) -> None:
    html, data = tmp_path / "status.html", tmp_path / "status.json"
    code, out, _ = run("report", "--blocks", block_glob(stream), "--no-ingest", "--html", str(html),
                       "--json-file", str(data))
    assert code == 8 and f"wrote {html}" in out
    status = json.loads(data.read_text())
    assert status["selection"]["blocks"] == block_glob(stream)
    assert 'id="status-data"' in html.read_text() and block_glob(stream) in html.read_text()


def test_bad_policy_is_exit_3_with_the_file_named(tmp_path: Path) -> None:
    bad = tmp_path / "replication.yaml"
    bad.write_text("version: 1\nclasses: [oops\n")
    code, _, err = run("status", "--no-ingest", "--policy", str(bad))
    assert code == 3
    assert f"cannot load the replication policy {bad}" in err and "juno-policy validate" in err


def test_usage_errors_exit_2() -> None:
    assert run("status", "--blocks", "block.[ab]")[0] == 2
    assert run("status", "--failed-since", "soon")[0] == 2
    code, _, err = run("report")
    assert code == 2 and "--html FILE and/or --json-file FILE" in err


def test_help_documents_the_exit_codes() -> None:
    code, out, _ = run("status", "--help")
    assert code == 0
    out = " ".join(out.split())
    for text in ("Exit codes", "0 complete", "5 the Rucio database could not be read", "8 incomplete", "--watch",
                 "--json", "verified"):
        assert text in out
    assert "Exit codes" in run("report", "--help")[1]


def test_serve_refuses_a_non_loopback_address() -> None:
    code, _, err = run("serve", "--host", "0.0.0.0", "--port", "18599")
    assert code == 2 and "served on loopback only" in err


def test_serve_says_when_the_port_is_taken() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run("serve", "--port", str(taken.getsockname()[1]))
    assert code == 2 and "cannot listen on 127.0.0.1:" in err and "pick another --port" in err


def test_page_embeds_data_that_cannot_end_its_script_element() -> None:
    from juno_status.page import render_page

    html = render_page({"reason": "</script><img src=x onerror=alert(1)>"}, live=False)
    assert "</script><img" not in html and "\\u003c/script\\u003e\\u003cimg" in html
    assert html.count("<script") == html.count("</script>") == 3


def test_serve_collects_at_most_once_per_refresh_and_keeps_the_last_good_status() -> None:
    import time

    from juno_status.collect import Selection
    from juno_status.db import StatusError
    from juno_status.server import StatusCache

    calls: list[int] = []

    def collector(_selection: Selection) -> dict[str, int]:
        calls.append(1)
        if len(calls) == 2:
            raise StatusError("database down")
        return {"n": len(calls)}

    cache = StatusCache(Selection(), ttl=0.2, collector=collector)
    assert cache.get() == ({"n": 1}, None) and cache.get() == ({"n": 1}, None) and len(calls) == 1
    time.sleep(0.25)
    assert cache.get() == ({"n": 1}, "database down")  # the page keeps the last numbers, with a banner
    time.sleep(0.25)
    assert cache.get() == ({"n": 3}, None)
