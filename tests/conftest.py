"""Test session set-up: the pytest process joins the local grid's network namespace at import time.

The `grid` fixture reuses a running grid or starts one (without the background daemon loop: tests
drive Rucio's daemons in-process, cycle by cycle) and stops, at the end, only what it started.
Tests marked `grid` need it; the others are pure and fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from juno_grid import grid as grid_mod
from juno_grid import procs, xrootd
from juno_grid.config import GridConfig, load
from rucio_policy.topology import Topology
from rucio_policy.topology import load as load_topology

CFG = load()
if os.geteuid() == 0:
    # Before any thread exists and before anything imports Rucio (it reads RUCIO_CONFIG at import).
    grid_mod.enter(CFG)


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
        from rucio_policy.sites_sync import local_password

        return Client(account=account, auth_type="userpass",
                      creds={"username": account, "password": local_password(account)})


def _running(cfg: GridConfig) -> set[str]:
    return {p.stem for p in cfg.run_dir.glob("*.pid") if procs.alive(procs.read(cfg.run_dir, p.stem))}


@pytest.fixture(scope="session")
def grid() -> Iterator[Grid]:
    if os.geteuid() != 0:
        pytest.fail("the grid tests need root (network namespace, PostgreSQL as postgres)")
    before = _running(CFG)
    # Idempotent: starts only what is not running (the whole grid on a fresh machine).
    grid_mod.up(CFG, daemons=False, condor_pool=True, log=lambda m: print(m, flush=True))
    g = Grid(CFG, load_topology())
    yield g
    if not before:
        grid_mod.down(CFG, log=lambda m: print(m, flush=True))
        left = _running(CFG)
        assert not left, f"grid processes left after down: {sorted(left)}"
        return
    for name in sorted(_running(CFG) - before):
        if name == "condor":
            from juno_grid import condor

            condor.stop(CFG)
        else:
            procs.stop(CFG.run_dir, name)
