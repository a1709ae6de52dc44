"""Rucio's daemons as the grid runs them, each its own process: a daemon killed mid-replication shows as down,
`up` starts it again, the rule still reaches OK and no file is copied twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from juno_grid import daemon_set, procs, storage
from juno_grid import grid as grid_mod

pytestmark = pytest.mark.grid
SCOPE = "user.jcoord"


def test_daemon_set_is_data_the_grid_and_production_share() -> None:
    names = [d.name for d in daemon_set.DAEMONS]
    assert len(names) == len(set(names)) == 11
    for d in daemon_set.DAEMONS:
        prod = d.argv(Path("/usr/bin"), production=True)
        assert prod[0] == f"/usr/bin/rucio-{d.name}" and "--sleep-time" in prod
        assert d.threads >= 1 and d.helm_key
    # The local grid runs the conveyor in cycles (daemon_set.CYCLES_WHY), everything else as Rucio's command.
    local = {d.name: d.argv(Path("/v/bin"))[:3] for d in daemon_set.DAEMONS}
    assert local["conveyor-poller"] == ["/v/bin/python", "-m", "juno_grid.daemons"]
    assert local["judge-evaluator"] == ["/v/bin/rucio-judge-evaluator", "--threads", "2"]


def _status(cfg) -> dict[str, bool]:  # noqa: ANN001
    return {h.name: h.ok for h in grid_mod.status(cfg)}


def _copies(cfg, names: list[str]) -> Counter[str]:  # noqa: ANN001
    db = sqlite3.connect(f"file:{cfg.state_dir / 'fts' / 'jobs.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT dest_surl FROM files WHERE file_state = 'FINISHED'").fetchall()
    finally:
        db.close()
    return Counter(d for (d,) in rows if d.rsplit("/", 1)[-1] in names)


def test_killed_daemon_is_down_then_restarted_and_rules_reach_ok(grid, tmp_path: Path) -> None:
    cfg = grid.cfg
    wanted = grid_mod.wanted_file(cfg).read_text()
    started = grid_mod.start_daemons(cfg)  # the tests' grid steps the daemons in-process; here they are processes
    # ... and wanted as processes, so that status reports each (the finally restores what was wanted).
    grid_mod.wanted_file(cfg).write_text(json.dumps({**grid_mod.wanted(cfg), "daemons": True}))
    try:
        client = grid.client()
        tag = uuid.uuid4().hex[:10]
        names = [f"test.daemonkill.{tag}.{i}.bin" for i in range(8)]
        for name in names:
            storage.put_replica(client, "IHEP-EOS", SCOPE, name, storage.make_file(tmp_path / name, 2_000_000))
        rule_ids = client.add_replication_rule([{"scope": SCOPE, "name": n} for n in names], 1, "CNAF-DISK",
                                               grouping="NONE")

        # Mid-replication: once the first copies were handed to the transfer service, kill the poller hard.
        deadline = time.monotonic() + 180
        while not _copies(cfg, names) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _copies(cfg, names), "no copy reached the transfer service within 180 s"
        victim = "daemon-conveyor-poller"
        rec = procs.read(cfg.run_dir, victim)
        assert rec is not None and procs.alive(rec)
        os.killpg(rec.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while procs.alive(rec) and time.monotonic() < deadline:
            time.sleep(0.1)
        health = _status(cfg)
        assert health[victim] is False
        assert all(ok for name, ok in health.items() if name.startswith("daemon-") and name != victim), health

        # `juno-grid up` starts what is missing: the poller comes back (Rucio's sanity check drops the dead
        # instance's heartbeats), the others keep their PIDs.
        others = grid_mod.daemon_processes(cfg)
        grid_mod.up(cfg, daemons=True, condor_pool=False, log=lambda m: None)
        after = grid_mod.daemon_processes(cfg)
        assert victim in after and after[victim] != rec.pid
        assert {k: v for k, v in after.items() if k != victim} == others
        assert _status(cfg)[victim] is True

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            states = [client.get_replication_rule(r)["state"] for r in rule_ids]
            if all(s == "OK" for s in states):
                break
            time.sleep(1)
        assert all(s == "OK" for s in states), Counter(states)
        copies = _copies(cfg, names)
        assert len(copies) == len(names) and set(copies.values()) == {1}, json.dumps(copies)
    finally:
        if started:  # leave the grid as it was: daemons stepped in-process, not wanted as processes
            grid_mod.stop_daemons(cfg)
            grid_mod.wanted_file(cfg).write_text(wanted)
