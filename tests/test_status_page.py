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
from collections.abc import Iterator
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from juno_grid import daemons
from test_status_collect import SCOPE, MadeBlock, block_glob, make_blocks, new_stream

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


@pytest.fixture(scope="module")
def server(policy_state: tuple[str, list[MadeBlock]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    stream, _ = policy_state
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "juno_status.cli", "serve", "--port", str(port), "--blocks",
                                 block_glob(stream), "--refresh", "2"], stdout=err, stderr=subprocess.STDOUT,
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
