"""Test session set-up: the pytest process joins the local grid's network namespace at import time.

The `grid` fixture reuses a running grid or starts one (without the background daemon loop: tests
drive Rucio's daemons in-process, cycle by cycle) and stops, at the end, only what it started.
Tests marked `grid` need it; the others are pure and fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from juno_grid import grid as grid_mod
from juno_grid import xrootd
from juno_grid.config import GridConfig, load

from rucio_policy.topology import Topology
from rucio_policy.topology import load as load_topology

CFG = load()
# The namespace pytest started in (the host's), kept open so tests can look at it from outside the grid.
HOST_NETNS_FD = os.open("/proc/self/ns/net", os.O_RDONLY)
if os.geteuid() == 0:
    # Before any thread exists and before anything imports Rucio (it reads RUCIO_CONFIG at import).
    grid_mod.enter(CFG)
_before = grid_mod.running(CFG) if CFG.run_dir.exists() else set()


@dataclass
class Grid:
    cfg: GridConfig
    topo: Topology

    def xrootd_url(self, rse: str) -> str:
        return self.topo.rse(rse).protocols["local"].url

    def storage_path(self, rse: str) -> Path:
        return xrootd.storage_root(self.cfg, rse)

    def client(self, account: str = "root"):  # noqa: ANN201 - rucio's Client
        from rucio.client import Client

        if account == "root":
            return Client()
        from juno_grid.accounts import local_password

        return Client(account=account, auth_type="userpass",
                      creds={"username": account, "password": local_password(account)})


@pytest.fixture(scope="session")
def grid() -> Iterator[Grid]:
    if os.geteuid() != 0:
        pytest.fail("the grid tests need root (network namespace, PostgreSQL as postgres)")
    started = time.monotonic()
    with grid_mod.session(CFG, daemons=False, condor_pool=True, log=lambda m: print(m, flush=True)):
        # Printed with -s, and kept in the log below for the record of how long a fresh start takes.
        took = time.monotonic() - started
        print(f"\ngrid ready in {took:.1f} s", flush=True)
        (CFG.log_dir / "last-test-grid-start.txt").write_text(f"{took:.1f}\n")
        yield Grid(CFG, load_topology())
    left = grid_mod.running(CFG)
    assert not left or left <= _before, f"grid processes left after the session: {sorted(left)}"



# A client per role, for the tests that act as that role (module-scoped: one login per module).
@pytest.fixture(scope="module")
def root(grid: Grid) -> Any:
    return grid.client("root")


@pytest.fixture(scope="module")
def ingest(grid: Grid) -> Any:
    return grid.client("juno_ingest")


@pytest.fixture(scope="module")
def coord(grid: Grid) -> Any:
    return grid.client("jcoord")


@pytest.fixture(scope="module")
def analyst(grid: Grid) -> Any:
    return grid.client("analyst1")


# Tests that need transfers to finish run first, while the transfer queue is short: the ingest and
# policy tests that follow create thousands of raw rules, and Rucio's submitter serves the oldest
# requests first whatever their priority.
FIRST = ("test_grid", "test_grid_lifecycle", "test_transfers", "test_replication", "test_demo",
         "test_condor_pool", "test_status_collect", "test_status_page", "test_status_cli", "test_fts_service")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        return FIRST.index(module) if module in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: within a module, and among the rest, the usual order stays


# Which protocol Rucio transfers over (juno_grid.tpc): parametrize a test with
# `@pytest.mark.parametrize("transfers_over", ["root", "davs"], indirect=True)`; root is chosen again after it.
@pytest.fixture
def transfers_over(request: pytest.FixtureRequest, grid: Grid) -> Iterator[str]:
    from juno_grid import tpc

    scheme = str(getattr(request, "param", "root"))
    client = grid.client()
    rses = [r.name for r in grid.topo.rses]
    tape = {r.name for r in grid.topo.rses if r.is_tape}
    tpc.choose(client, rses, tape, scheme)
    try:
        yield scheme
    finally:
        tpc.choose(client, rses, tape, "root")
