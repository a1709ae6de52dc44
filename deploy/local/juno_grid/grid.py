"""Bring the whole local grid up and down, in order, and report each component's health."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rucio_policy import topology as topology_mod

from . import daemon_set, kafka, netns, postgres, procs, rucio_server, tls, xrootd
from .config import (
    FTS_COPY_MODE,
    FTS_DAVS_COPY_MODE,
    FTS_ENGINE,
    FTS_PYTHON,
    FTS_WORKERS,
    REPO_ROOT,
    VENV_BIN,
    GridConfig,
)

FTS = "fts"
# Before the daemons ran as processes of their own, one in-process loop ran them all under this name:
# `down` still stops it, should a grid started by an older checkout be running.
LEGACY_DAEMON_LOOP = "rucio-daemons"


@dataclass(frozen=True)
class Health:
    name: str
    ok: bool
    address: str
    pid: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"component": self.name, "ok": self.ok, "address": self.address, "pid": self.pid}


def client_env(cfg: GridConfig) -> dict[str, str]:
    """Environment for anything that talks to the grid: the rucio CLI, our tools, tests."""
    env = rucio_server.env(cfg)
    env["JUNO_GRID_DIR"] = str(cfg.state_dir)
    env["JUNO_GRID_NETNS"] = cfg.netns
    env["JUNO_KAFKA_BOOTSTRAP"] = cfg.kafka_bootstrap
    # The storages' HTTPS is signed by the grid's own CA (tls.py): gfal2, davix and curl trust it from here.
    env["X509_CERT_DIR"] = str(tls.ca_dir(cfg))
    path = os.environ.get("PATH", "")
    if str(VENV_BIN) not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([str(VENV_BIN), path])
    try:
        from . import condor

        env.update(condor.client_env(cfg))
    except ImportError:
        pass
    return env


def enter(cfg: GridConfig) -> None:
    """Join (creating if needed) the grid's network namespace, and point Rucio at the grid's config."""
    netns.ensure(cfg.netns)
    netns.enter(cfg.netns)
    os.environ.update(client_env(cfg))


def start_fts(cfg: GridConfig) -> None:
    # The gfal2 engine runs on Debian's Python, the one python3-gfal2 serves (the service needs only the
    # standard library besides): see config.FTS_ENGINE.
    python = FTS_PYTHON if FTS_ENGINE == "gfal2" else sys.executable
    env = {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "deploy" / "local"), os.environ.get("PYTHONPATH", "")])}
    procs.spawn(cfg.run_dir, cfg.log_dir, FTS,
                [python, "-m", "juno_grid.fts", "--port", str(cfg.ports.fts), "--engine", FTS_ENGINE,
                 "--state", str(cfg.state_dir / "fts"), "--workers", str(FTS_WORKERS), "--copy-mode", FTS_COPY_MODE,
                 "--scheme-mode", f"davs={FTS_DAVS_COPY_MODE}",
                 "--links", str(cfg.state_dir / "fts" / "links.json")], env=env)
    procs.wait_for(lambda: procs.port_open(cfg.ports.fts), "transfer service (FTS3 API)", timeout=30,
                   log=cfg.log_dir / f"{FTS}.log")


def daemon_process_names() -> list[str]:
    """The process names (PID and log files) of every Rucio daemon process the grid runs."""
    return [name for d in daemon_set.DAEMONS for name in d.process_names()]


def start_daemons(cfg: GridConfig) -> list[str]:
    """Start each Rucio daemon of daemon_set.py as its own process (Rucio's own `rucio-<daemon>` command)
    that is not running; returns the names started. Each logs to <state>/log/daemon-<name>.log."""
    started = []
    env = client_env(cfg)
    for daemon in daemon_set.DAEMONS:
        for name in daemon.process_names():
            if procs.alive(procs.read(cfg.run_dir, name)):
                continue
            procs.spawn(cfg.run_dir, cfg.log_dir, name, daemon.argv(VENV_BIN), env=env)
            started.append(name)
    return started


def stop_daemons(cfg: GridConfig) -> list[str]:
    """Stop every daemon process (SIGTERM to all, then wait: Rucio's daemons finish their cycle)."""
    from concurrent.futures import ThreadPoolExecutor

    names = [*daemon_process_names(), LEGACY_DAEMON_LOOP]
    with ThreadPoolExecutor(len(names)) as pool:
        stopped = list(pool.map(lambda n: procs.stop(cfg.run_dir, n), names))
    return [n for n, done in zip(names, stopped, strict=True) if done]


def daemon_processes(cfg: GridConfig) -> dict[str, int]:
    """The grid's daemon processes alive now: name -> PID."""
    out = {}
    for name in daemon_process_names():
        rec = procs.read(cfg.run_dir, name)
        if rec is not None and procs.alive(rec):
            out[name] = rec.pid
    return out


def cmdline(cfg: GridConfig, name: str) -> list[str]:
    """The command line of the grid's process `name` if it runs (started by us: recorded PID), else []."""
    rec = procs.read(cfg.run_dir, name)
    if rec is None or not procs.alive(rec):
        return []
    try:
        return Path(f"/proc/{rec.pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def option(argv: list[str], flag: str, default: str) -> str:
    """The value after `flag` in a command line, or `default`."""
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else default


@contextmanager
def daemons_paused(cfg: GridConfig, log: Callable[[str], None] = print) -> Iterator[str]:
    """Stop the grid's daemon processes (by their recorded PIDs) for the duration and start them again
    after, also on SIGTERM. Benchmarks that must measure without the daemons' work in parallel use it.
    Yields "paused", or "absent" when none runs."""
    if not daemon_processes(cfg):
        yield "absent"
        return
    log("pausing the grid's Rucio daemon processes (started again at the end) ...")
    stop_daemons(cfg)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` restarts them
    try:
        yield "paused"
    finally:
        signal.signal(signal.SIGTERM, previous)
        start_daemons(cfg)
        log("daemon processes started again")


def sync_topology(cfg: GridConfig, log: Callable[[str], None] = print) -> int:
    """Make the grid's Rucio match etc/sites.yaml (environment `local`)."""
    from rucio.client import Client

    from rucio_policy import sites_sync

    from .accounts import local_password, write_account_config

    client = Client()
    topo = topology_mod.load()
    changes = sites_sync.plan(client, topo, "local", password_for=local_password)
    done = sites_sync.apply(changes, on_change=lambda c: log(f"  {c}"))
    # One client config per local account (.grid/rucio/<account>.cfg), for `rucio --config` and our tools.
    for account in topo.accounts_for("local"):
        write_account_config(cfg.rucio_cfg, account.name)
    return done


def wanted_file(cfg: GridConfig) -> Path:
    """Which optional parts `up` started, so `status` only demands those."""
    return cfg.run_dir / "components.json"


def wanted(cfg: GridConfig) -> dict[str, bool]:
    try:
        return dict(json.loads(wanted_file(cfg).read_text()))
    except (OSError, ValueError):
        return {"daemons": True, "condor": True}


def up(cfg: GridConfig, *, daemons: bool = True, condor_pool: bool = True,
       log: Callable[[str], None] = print) -> None:
    if condor_pool:
        from . import condor

        # debootstrap needs the network: build the chroot before joining the grid's namespace.
        if not netns.inside(cfg.netns):
            condor.build_chroot(cfg.chroot, log=log)
        elif not condor.chroot_complete(cfg.chroot):
            raise procs.GridError(f"the HTCondor chroot {cfg.chroot} is not built, and this process is already "
                                  "inside the grid's network namespace: run `juno-grid build-chroot` (or "
                                  "`make install`) first")
    enter(cfg)
    for d in (cfg.state_dir, cfg.run_dir, cfg.log_dir):
        d.mkdir(parents=True, exist_ok=True)
    topo = topology_mod.load()
    previous = wanted(cfg) if wanted_file(cfg).exists() else {}
    # Once up with daemons, they stay wanted until `down` (status reports one that died as down, and the
    # next `up` starts it again).
    wanted_file(cfg).write_text(json.dumps({
        "daemons": daemons or bool(daemon_processes(cfg)) or bool(previous.get("daemons") and running(cfg)),
        "condor": condor_pool or procs.alive(procs.read(cfg.run_dir, "condor"))}))
    log(f"grid state in {cfg.state_dir}, network namespace {cfg.netns}")
    log("PostgreSQL ...")
    postgres.start(cfg)
    log("Rucio server ...")
    rucio_server.start(cfg)
    log("XRootD storage ...")
    xrootd.start(cfg, topo)
    log("transfer service ...")
    start_fts(cfg)
    log("topology from etc/sites.yaml ...")
    n = sync_topology(cfg, log)
    log(f"  {n} change(s)" if n else "  Rucio already matches")
    log("Kafka broker ...")
    kafka.start(cfg)
    if wanted(cfg).get("daemons"):
        started = start_daemons(cfg)
        log(f"Rucio daemons: started {', '.join(started)}" if started else "Rucio daemons: all running")
    if condor_pool:
        from . import condor

        log("HTCondor pool ...")
        condor.start(cfg)


def down(cfg: GridConfig, log: Callable[[str], None] = print) -> None:
    if netns.exists(cfg.netns):
        netns.enter(cfg.netns)
    topo = topology_mod.load()
    try:
        from . import condor

        condor.stop(cfg)
    except ImportError:
        pass
    for name in stop_daemons(cfg):
        log(f"stopped {name}")
    for name in (kafka.NAME, FTS, rucio_server.NAME):
        if procs.stop(cfg.run_dir, name):
            log(f"stopped {name}")
    xrootd.stop(cfg, topo)
    postgres.stop(cfg)
    leftovers = [p.stem for p in cfg.run_dir.glob("*.pid") if procs.alive(procs.read(cfg.run_dir, p.stem))]
    if leftovers:
        raise procs.GridError(f"still running after down: {', '.join(leftovers)}")
    netns.delete(cfg.netns)
    log("grid is down")


def running(cfg: GridConfig) -> set[str]:
    """Names of the grid's processes that are alive now."""
    return {p.stem for p in cfg.run_dir.glob("*.pid") if procs.alive(procs.read(cfg.run_dir, p.stem))}


@contextmanager
def session(cfg: GridConfig, *, daemons: bool = False, condor_pool: bool = False,
            log: Callable[[str], None] = print) -> Iterator[GridConfig]:
    """The grid for a test run or a benchmark: reuse what runs, start what is missing, and on exit
    stop only what this session started (everything, if nothing was running before)."""
    before = running(cfg) if cfg.run_dir.exists() else set()
    try:
        up(cfg, daemons=daemons, condor_pool=condor_pool, log=log)
        yield cfg
    finally:
        if not before:
            down(cfg, log=log)
        else:
            for name in sorted(running(cfg) - before):
                if name == "condor":
                    from . import condor

                    condor.stop(cfg)
                else:
                    procs.stop(cfg.run_dir, name)


def status(cfg: GridConfig) -> list[Health]:
    if netns.exists(cfg.netns):
        enter(cfg)
    topo = topology_mod.load()

    def pid(name: str) -> int | None:
        rec = procs.read(cfg.run_dir, name)
        return rec.pid if procs.alive(rec) else None

    out = []
    ok, addr = postgres.health(cfg)
    out.append(Health("postgresql", ok, addr, pid(postgres.NAME)))
    ok, addr = rucio_server.health(cfg)
    out.append(Health("rucio-server", ok, addr, pid(rucio_server.NAME)))
    for rse in topo.rses:
        ok, addr = xrootd.health_one(cfg, rse)
        out.append(Health(f"xrootd {rse.name}", ok, addr, pid(xrootd.proc_name(rse.name))))
    out.append(Health("transfer service", procs.port_open(cfg.ports.fts) and pid(FTS) is not None,
                      cfg.fts_url, pid(FTS)))
    ok, addr = kafka.health(cfg)
    out.append(Health("kafka (tansu)", ok, addr, pid(kafka.NAME)))
    parts = wanted(cfg)
    if parts.get("daemons", True):
        for d in daemon_set.DAEMONS:
            for name in d.process_names():
                how = d.command if d.local_runner == "rucio" else f"{d.name} in cycles"
                out.append(Health(name, pid(name) is not None, f"{how}, {d.threads} thread(s)", pid(name)))
    if not parts.get("condor", True):
        return out
    try:
        from . import condor

        ok, addr = condor.health(cfg)
        rec = procs.read(cfg.run_dir, "condor")
        out.append(Health("htcondor pool", ok, addr, rec.pid if procs.alive(rec) else None))
    except ImportError:
        pass
    return out


__all__ = ["REPO_ROOT", "Health", "client_env", "down", "enter", "status", "sync_topology", "up"]
