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
from collections import Counter
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from juno_grid import daemons
from test_status_collect import SCOPE, MadeBlock, block_glob, make_blocks, new_stream

from juno_dci.collect import Selection, collect

pytestmark = pytest.mark.grid
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000"]


@pytest.fixture(scope="module")
def policy_state(grid, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[MadeBlock]]:
    """2 closed blocks × 3 files with every rule the real policy gives them (the engine's own path, as the
    ingester does it), replicated by Rucio's daemons: tape, CNAF, JINR through CNAF, IN2P3 if placed."""
    from rucio_policy import engine

    client = grid.client()
    stream = new_stream()
    blocks = make_blocks(client, tmp_path_factory.mktemp("page"), stream, [date(2025, 10, 13), date(2025, 10, 14)])
    for block in blocks:
        engine.ensure_block_rules(client, SCOPE, block.name)
        client.close(SCOPE, block.name)
        engine.finalize_block(client, SCOPE, block.name)
    rules = [r for b in blocks for r in client.list_did_rules(SCOPE, b.name)]
    # Ahead of whatever else the shared grid is moving; the policy's priorities are put back below.
    for rule in rules:
        client.update_replication_rule(rule["id"], {"priority": 5})
    try:
        daemons.drive_until(lambda: all(client.get_replication_rule(r["id"])["state"] == "OK" for r in rules),
                            timeout=600)
    finally:
        policy = engine.load_default_policy()
        engine.apply(client, engine.plan(client, policy, scope_filter=SCOPE, name_filter=block_glob(stream)))
    return stream, blocks


@pytest.fixture(scope="module")
def server(policy_state: tuple[str, list[MadeBlock]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    stream, _ = policy_state
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "juno_dci.cli", "serve", "--port", str(port), "--blocks",
                                 block_glob(stream), "--refresh", "30"], stdout=err, stderr=subprocess.STDOUT,
                                cwd=REPO)
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
        yield proc, url, log
    finally:
        if proc.poll() is None:
            proc.kill()  # only if the test itself did not stop it (by its PID, below)
            proc.wait(10)


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
    with urllib.request.urlopen(url + "/api/status", timeout=60) as response:
        api = json.load(response)
    assert api["selection"]["blocks"] == block_glob(stream)
    assert api["schema"] == collect(Selection(blocks=block_glob(stream), transfers="blocks", ingest=False))["schema"]

    dom_run = _chromium(url + "/", tmp_path / "profile", "--window-size=1400,1000", "--dump-dom")
    assert dom_run.returncode == 0, dom_run.stderr[-2000:]
    dom = _Dom()
    dom.feed(dom_run.stdout)
    assert dom.verdict.get("data-complete") in ("true", "false"), "the page's script did not run"

    # Rucio's own view (REST): AVAILABLE files per RSE and per block, and the rules each block has.
    per_rse: Counter[str] = Counter()
    per_block: dict[tuple[str, str], int] = Counter()
    wanted: dict[str, set[str]] = {}
    for block in blocks:
        for rep in client.list_replicas([{"scope": SCOPE, "name": f["name"]} for f in block.files], all_states=True):
            for rse, state in rep["states"].items():
                if state == "AVAILABLE":
                    per_rse[rse] += 1
                    per_block[(block.name, rse)] += 1
        wanted[block.name] = {r["rse_expression"] for r in client.list_did_rules(SCOPE, block.name)}
        assert all(r["state"] == "OK" for r in client.list_did_rules(SCOPE, block.name))

    for r in api["rses"]:
        rse = r["rse"]
        assert r["present"]["files"] == per_rse.get(rse, 0), rse
        assert dom.rse_fields[(rse, "expected-files")] == str(r["expected"]["files"]), rse
        assert dom.rse_fields[(rse, "present-files")] == str(per_rse.get(rse, 0)), rse
        assert dom.rse_fields[(rse, "present-bytes")] == str(r["present"]["bytes"]), rse
        assert dom.rse_fields[(rse, "verified-files")] == str(r["verified"]["files"]), rse
        expected_here = sum(len(b.files) for b in blocks if rse in wanted[b.name])
        assert r["expected"]["files"] == expected_here, rse  # every rule the policy wants exists (engine-made)
    assert dom.rse_fields[("all", "present-files")] == str(sum(per_rse.values()))
    assert dom.tiles["total-present-files"] == str(sum(r["present"]["files"] for r in api["rses"]))
    for block in blocks:
        for rse in wanted[block.name]:
            cell = dom.cells[(block.name, rse)]
            assert cell["data-present"] == str(per_block[(block.name, rse)]) == cell["data-expected"], (block, rse)
            assert cell["data-state"] == "complete"
    # Everything the policy wants is there and verified: the page says so.
    assert api["complete"] and dom.verdict["data-complete"] == "true"
    assert all(r["verified"]["files"] == r["expected"]["files"] for r in api["rses"])
    assert {"IHEP-TAPE", "CNAF-DISK", "CNAF-TAPE", "JINR-DISK"} <= {rse for rse, n in per_rse.items() if n}

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
