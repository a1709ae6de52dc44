"""`juno-dci serve`: the page loaded in headless Chromium (Debian's `chromium`), its numbers against Rucio.

The server runs as a subprocess; it inherits the grid's network namespace from the test process, and
so does Chromium: every request stays on the namespace's loopback (the flags below also keep Chromium
from calling home). The rendered DOM (after the page's JS ran) is read with --dump-dom; a screenshot
goes to the test's tmp dir and to bench/results/status.png for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from juno_grid import daemons
from test_prod_live import Env, _all_processed, make_env, until
from test_status_collect import SCOPE, MadeBlock, block_glob, make_blocks, new_stream

from juno_prod import cli as prod_cli
from juno_prod import transformation

pytestmark = pytest.mark.grid
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000"]
DRIVE_S = 300


@pytest.fixture(scope="module")
def policy_state(grid, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[MadeBlock]]]:
    """2 closed blocks × 3 files with every rule the real policy gives them (the engine's own path, as the
    ingester does it), replicated by Rucio's daemons: tape, CNAF, IN2P3 if placed, JINR through CNAF.

    Drives the daemons until every rule but JINR's is OK (its multihop path is the slowest), for at most
    DRIVE_S: on a busy shared grid the copies may still be queued then, and the page must be right in
    any state (what is missing shows as replicating, with its transfers in flight)."""
    from rucio_policy import engine

    client = grid.client()
    stream = new_stream()
    blocks = make_blocks(client, tmp_path_factory.mktemp("page"), stream, [date(2025, 10, 13), date(2025, 10, 14)])
    for block in blocks:
        engine.ensure_block_rules(client, SCOPE, block.name)
        client.close(SCOPE, block.name)
        engine.finalize_block(client, SCOPE, block.name)
    rules = [r for b in blocks for r in client.list_did_rules(SCOPE, b.name)]
    direct = [r["id"] for r in rules if r["rse_expression"] != "JINR-DISK"]
    # Ahead of whatever else the shared grid is moving; the policy's priorities are put back at the end.
    for rule in rules:
        client.update_replication_rule(rule["id"], {"priority": 5})
    try:
        try:
            daemons.drive_until(lambda: all(client.get_replication_rule(r)["state"] == "OK" for r in direct),
                                timeout=DRIVE_S)
        except TimeoutError:
            pass  # the test compares the page with whatever state Rucio is in
        yield stream, blocks
    finally:
        policy = engine.load_default_policy()
        engine.apply(client, engine.plan(client, policy, scope_filter=SCOPE, name_filter=block_glob(stream)))


@contextmanager
def _serve(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[tuple[Any, str]]:
    """`juno-dci serve ARGS` on a free loopback port until it answers /healthz: (process, URL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "juno_status.cli", "serve", "--port", str(port), *args],
                                stdout=err, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"juno-dci serve did not come up on {url}:\n{log.read_text()}")
            time.sleep(0.2)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()  # only if the test itself did not stop it (by its PID)
            proc.wait(10)


@pytest.fixture(scope="module")
def server(policy_state: tuple[str, list[MadeBlock]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    stream, _ = policy_state
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with _serve(["--blocks", block_glob(stream), "--refresh", "2"], log) as (proc, url):
        yield proc, url, log


def _chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
                          capture_output=True, text=True, timeout=120)


class _Dom(HTMLParser):
    """The data-* attributes the page puts on its numbers, by row (data-rse, data-block)."""

    def __init__(self) -> None:
        super().__init__()
        self.rse_fields: dict[tuple[str, str], str] = {}
        self.tiles: dict[str, str] = {}
        self.cells: dict[tuple[str, str], dict[str, str]] = {}
        self.reasons: list[str] = []
        self.verdict: dict[str, str] = {}
        self._row: dict[str, str] = {}
        self._in_sites = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "table":
            self._in_sites = a.get("id") == "sites"
        if tag == "tr":
            self._row = a
            if "data-reason" in a:
                self.reasons.append(a["data-reason"])
        if a.get("id") == "verdict":
            self.verdict = a
        if "class" in a and "tile" in a["class"].split() and "data-field" in a:
            self.tiles[a["data-field"]] = a.get("data-value", "")
        if tag == "td" and self._in_sites and "data-field" in a and "data-rse" in self._row:
            self.rse_fields[(self._row["data-rse"], a["data-field"])] = a.get("data-value", "")
        if tag == "td" and "data-block" in self._row and "data-rse" in a:
            self.cells[(self._row["data-block"], a["data-rse"])] = a


def _rucio_view(client: Any, blocks: list[MadeBlock]) -> tuple[Counter[tuple[str, str]], dict[str, dict[str, str]]]:
    """Rucio's own view (REST): AVAILABLE files per (block, RSE), and each block's rules by RSE expression."""
    per_block: Counter[tuple[str, str]] = Counter()
    rules: dict[str, dict[str, str]] = {}
    for block in blocks:
        for rep in client.list_replicas([{"scope": SCOPE, "name": f["name"]} for f in block.files], all_states=True):
            for rse, state in rep["states"].items():
                per_block[(block.name, rse)] += state == "AVAILABLE"
        rules[block.name] = {r["rse_expression"]: str(r["state"]) for r in client.list_did_rules(SCOPE, block.name)}
    return per_block, rules


def test_page_numbers_match_rucio(grid, policy_state: tuple[str, list[MadeBlock]], server: Any,
                                  tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (deploy/local/bin/install-system)")
    stream, blocks = policy_state
    proc, url, log = server
    client = grid.client()

    # The page as served: self-contained, nothing to fetch from anywhere else.
    with urllib.request.urlopen(url + "/", timeout=60) as response:
        served = response.read().decode()
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", served)
    # The only URLs in it: the SVG namespace name (an identifier, never fetched) and loopback ones in the data.
    urls = set(re.findall(r"https?://[^\s\"'<>]+", served)) - {"http://www.w3.org/2000/svg"}
    assert all(u.startswith("http://127.0.0.1:") for u in urls), urls

    # JINR's copies may still be moving (the background daemons run on): compare only a page rendered
    # between two identical views of Rucio.
    for _attempt in range(5):
        before = _rucio_view(client, blocks)
        with urllib.request.urlopen(url + "/api/status", timeout=120) as response:
            api = json.load(response)
        dom_run = _chromium(url + "/", tmp_path / "profile", "--window-size=1400,1000", "--dump-dom")
        assert dom_run.returncode == 0, dom_run.stderr[-2000:]
        if _rucio_view(client, blocks) == before:
            break
        time.sleep(3)
    else:
        pytest.fail("Rucio's state kept changing while the page was loaded")
    per_block, rules = before
    dom = _Dom()
    dom.feed(dom_run.stdout)
    assert dom.verdict.get("data-complete") in ("true", "false"), "the page's script did not run"
    assert api["selection"]["blocks"] == block_glob(stream)

    per_rse: Counter[str] = Counter()
    for (_block, rse), n in per_block.items():
        per_rse[rse] += n
    for r in api["rses"]:
        rse = r["rse"]
        assert r["present"]["files"] == per_rse.get(rse, 0), rse
        assert r["expected"]["files"] == sum(len(b.files) for b in blocks if rse in rules[b.name]), rse
        assert r["verified"]["files"] == r["present"]["files"], rse  # every copy came by a verified transfer
        for field, value in (("expected-files", r["expected"]["files"]), ("present-files", r["present"]["files"]),
                             ("present-bytes", r["present"]["bytes"]), ("verified-files", r["verified"]["files"])):
            assert dom.rse_fields[(rse, field)] == str(value), (rse, field)
    assert dom.rse_fields[("all", "present-files")] == str(sum(per_rse.values()))
    assert dom.tiles["total-present-files"] == str(sum(per_rse.values()))
    for block in blocks:
        for rse in rules[block.name]:
            cell = dom.cells[(block.name, rse)]
            assert cell["data-present"] == str(per_block[(block.name, rse)]), (block.name, rse)
            assert cell["data-expected"] == str(len(block.files))
            assert cell["data-state"] == ("complete" if per_block[(block.name, rse)] == len(block.files)
                                          else "incomplete"), (block.name, rse)
    assert per_rse["IHEP-EOS"] == sum(len(b.files) for b in blocks)
    # The verdict is Rucio's: complete exactly when every rule of these blocks is OK.
    all_ok = all(state == "OK" for block_rules in rules.values() for state in block_rules.values())
    assert api["complete"] is all_ok and dom.verdict["data-complete"] == str(all_ok).lower()

    shot = tmp_path / "status.png"
    shot_run = _chromium(url + "/", tmp_path / "profile", "--window-size=1400,1700", f"--screenshot={shot}")
    assert shot_run.returncode == 0 and shot.stat().st_size > 10_000, shot_run.stderr[-2000:]
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, results / "status.png")

    # SIGTERM → a clean stop.
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()
    assert "SIGTERM: stopping" in log.read_text() and log.read_text().rstrip().endswith("stopped")


class _ProdDom(HTMLParser):
    """The production section's data-* attributes: per transformation, per step's files and jobs."""

    def __init__(self) -> None:
        super().__init__()
        self.available: str | None = None
        self.none_text: list[str] = []
        self.tfs: dict[str, dict[str, str]] = {}
        self.files: dict[tuple[str, str], dict[str, int]] = {}
        self.jobs: dict[tuple[str, str], dict[str, dict[str, int]]] = {}
        self.sites_table = False
        self._row: dict[str, str] = {}
        self._in_none = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._in_none = a.get("id") == "production-none"
        if a.get("id") == "production":
            self.available = a.get("data-available")
        if a.get("id") == "sites":
            self.sites_table = True
        if "prod-tf" in a.get("class", "").split():
            self.tfs[a["data-transformation"]] = a
        if tag == "tr":
            self._row = a
        key = (self._row.get("data-transformation", ""), self._row.get("data-step", ""))
        if "data-step" not in self._row:
            return
        if tag == "td" and a.get("data-field", "").startswith("files-"):
            self.files.setdefault(key, {})[a["data-field"][len("files-"):]] = int(a["data-value"])
        if tag == "span" and "data-site" in a and "data-state" in a:
            self.jobs.setdefault(key, {}).setdefault(a["data-site"], {})[a["data-state"]] = int(a["data-value"])

    def handle_data(self, data: str) -> None:
        if self._in_none:
            self.none_text.append(data)


@pytest.mark.condor
def test_production_view_shows_what_juno_prod_status_says(grid: Any, tmp_path: Path) -> None:
    """A small Monte Carlo transformation run by the juno-prod engine on the live pool; the page's production
    numbers (rendered by Chromium) equal `juno-prod status --json`'s; without a production database the
    section says so and the rest of the page still draws."""
    if CHROMIUM is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (deploy/local/bin/install-system)")
    env: Env = make_env(grid)
    name = f"pv-t{uuid.uuid4().hex[:8]}"
    path = tmp_path / "tf.yaml"
    path.write_text(f"""\
name: {name}
release: J25.1.0
input: {{jobs: 2}}
steps:
  - {{name: detsim, payload: bin/juno-prod-step, where: anywhere, output: {{scope: mc, rse: site}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
  - {{name: rec, payload: bin/juno-prod-step, output: {{scope: mc, rse: site}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
""")
    prod = env.production()
    tf_id = prod.submit(transformation.load(path))
    started = time.monotonic()
    until(prod, _all_processed(prod, tf_id, 2, 2), "2 jobs x 2 steps processed")
    ran = time.monotonic() - started
    r = CliRunner(env=env.cli_env()).invoke(prod_cli.main, ["status", "--json"])
    assert r.exit_code == 0, r.output
    cli = json.loads(r.output)
    assert [d["name"] for d in cli] == [name]
    assert all(sum(s["jobs"].get(site, {}).get("done", 0) for site in s["jobs"]) == 2 for s in cli[0]["steps"]), cli

    serve_env = {**os.environ, "JUNO_PROD_DIR": str(env.work)}
    args = ["--blocks", f"block.NONE.{uuid.uuid4().hex[:8]}.*", "--no-ingest", "--refresh", "2"]
    with _serve(args, tmp_path / "serve.log", serve_env) as (proc, url):
        with urllib.request.urlopen(url + "/api/status", timeout=120) as response:
            api = json.load(response)
        dom_run = _chromium(url + "/", tmp_path / "profile", "--window-size=1400,1000", "--dump-dom")
        assert dom_run.returncode == 0, dom_run.stderr[-2000:]
        shot = tmp_path / "status-production.png"
        shot_run = _chromium(url + "/", tmp_path / "profile", "--window-size=1400,1400", f"--screenshot={shot}")
        assert shot_run.returncode == 0 and shot.stat().st_size > 10_000, shot_run.stderr[-2000:]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, results / "status-production.png")
    print(f"production view: transformation run in {ran:.0f} s, page served and drawn in "
          f"{time.monotonic() - started - ran:.0f} s")

    assert api["production"]["available"] is True and api["production"]["transformations"] == cli
    dom = _ProdDom()
    dom.feed(dom_run.stdout)
    assert dom.available == "true"
    d = cli[0]
    page = dom.tfs[name]
    assert float(page["data-processed-per-hour"]) == d["processed_per_hour"] > 0
    assert page["data-eta-s"] == ("" if d["eta_s"] is None else str(d["eta_s"]))
    assert (int(page["data-datasets-closed"]), int(page["data-datasets-open"])) == (d["datasets"]["closed"], 0)
    for step in d["steps"]:
        assert dom.files[(name, step["step"])] == step["files"], step["step"]
        assert dom.jobs[(name, step["step"])] == step["jobs"], step["step"]

    # No production database: the section says so; the rest of the page is drawn as before.
    from juno_prod.report import overview
    from juno_status.page import render_page

    missing = overview({"JUNO_PROD_DIR": str(tmp_path / "no-prod")})
    report = tmp_path / "report.html"
    report.write_text(render_page({**api, "production": missing}, live=False))
    run = _chromium(report.as_uri(), tmp_path / "profile", "--dump-dom")
    assert run.returncode == 0, run.stderr[-2000:]
    dom = _ProdDom()
    dom.feed(run.stdout)
    assert dom.available == "false" and "".join(dom.none_text) == missing["detail"] and dom.sites_table
