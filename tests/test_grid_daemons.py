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


def _conveyor_heartbeats(pids: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """daemon process name -> the thread names of its live heartbeats (Rucio's heartbeats table)."""
    from rucio.core.heartbeat import list_heartbeats  # the stock client has no call for it

    by_pid = {pid: name for name, pid in pids.items()}
    out: dict[str, list[str]] = {name: [] for name in pids}
    for hb in list_heartbeats():
        if hb["pid"] in by_pid:
            out[by_pid[hb["pid"]]].append(hb["thread_name"])
    return {name: tuple(sorted(threads)) for name, threads in out.items()}


def test_conveyor_threads_hold_fixed_partitions_and_no_request_stays_submitting(grid, tmp_path: Path) -> None:
    """Each thread of a conveyor daemon is a partition for the daemon's whole life: its heartbeat stays between
    cycles. With heartbeats that came and went with each cycle, a thread alone in its cycle took every request,
    two threads fetched the same ones, and the submitter left requests in SUBMITTING for Rucio's 120 min.
    Direct links only: a multihop (JINR through CNAF) meets a race of Rucio's own when the finisher archives
    the first hop's request while the submitter plans the second from a snapshot taken before (the first hop
    is copied again; seen once here with daemon processes, never with daemons stepped in order)."""
    cfg = grid.cfg
    submitter_log = cfg.log_dir / "daemon-conveyor-submitter.log"
    log_from = submitter_log.stat().st_size if submitter_log.exists() else 0
    wanted = grid_mod.wanted_file(cfg).read_text()
    started = grid_mod.start_daemons(cfg)
    grid_mod.wanted_file(cfg).write_text(json.dumps({**grid_mod.wanted(cfg), "daemons": True}))
    try:
        client = grid.client()
        multi = {f"daemon-{d.name}": d.threads for d in daemon_set.DAEMONS
                 if d.local_runner == "cycles" and d.threads > 1}
        assert multi, "no conveyor daemon runs several threads: nothing to partition"
        pids = {name: pid for name, pid in grid_mod.daemon_processes(cfg).items() if name in multi}
        assert set(pids) == set(multi), pids

        tag = uuid.uuid4().hex[:10]
        names = [f"test.partition.{tag}.{i}.bin" for i in range(24)]
        for name in names:
            storage.put_replica(client, "IHEP-EOS", SCOPE, name, storage.make_file(tmp_path / name, 200_000))
        rule_ids = [client.add_replication_rule([{"scope": SCOPE, "name": n}], 1, rse, grouping="NONE")[0]
                    for rse in ("CNAF-DISK", "IN2P3-DISK") for n in names]

        # While the rules replicate, sample the heartbeats: every multi-threaded conveyor daemon has all its
        # threads' heartbeats every time (the first cycles wait until they are all registered).
        samples: list[dict[str, tuple[str, ...]]] = []
        deadline = time.monotonic() + 300
        states: list[str] = []
        while time.monotonic() < deadline:
            samples.append(_conveyor_heartbeats(pids))
            states = [client.get_replication_rule(r)["state"] for r in rule_ids]
            if all(s == "OK" for s in states) and len(samples) >= 20:
                break
            time.sleep(0.2)
        assert all(s == "OK" for s in states), Counter(states)
        counts = Counter((name, len(threads)) for s in samples for name, threads in s.items())
        assert set(counts) == {(name, n) for name, n in multi.items()}, counts
        assert all(len(set(s[name] for s in samples)) == 1 for name in multi), samples[:3]

        # Nothing was fetched twice: the submitter never met a request the other thread had taken.
        with submitter_log.open("rb") as f:
            f.seek(log_from)
            assert b"not in queued state" not in f.read()
        copies = _copies(cfg, names)
        assert len(copies) == 2 * len(names) and set(copies.values()) == {1}, json.dumps(copies)
    finally:
        if started:
            grid_mod.stop_daemons(cfg)
            grid_mod.wanted_file(cfg).write_text(wanted)
