"""Rucio's replication daemons driven in-process, one cycle on demand: for tests that step them.

These are Rucio's own daemon functions, unmodified, called with `once=True` and no partition wait:
a cycle of all eleven takes a second or a few, where their CLIs' `--run-once` waits 10 s each first.
The grid itself (`juno-grid up`) runs each daemon as its own process, as production does
(daemon_set.py); `drive_until` then only waits, and the processes do the work.

RUCIO_CONFIG must be set before this module is imported (Rucio reads its config at import time).
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from .daemon_set import DAEMONS, RECOVERER_LIMIT_PER_RSE, RECOVERER_NATTEMPTS, RECOVERER_POLICY

ORDER = tuple(d.name for d in DAEMONS)
TRANSFER = ("conveyor-preparer", "conveyor-submitter", "conveyor-poller", "conveyor-finisher")

log = logging.getLogger("juno_grid.daemons")


def _one_cycle(graceful_stop: threading.Event, executable: str, run_once: Callable[..., Any]) -> Callable[[], None]:
    from rucio.daemons.common import run_daemon

    return lambda: run_daemon(once=True, graceful_stop=graceful_stop, executable=executable, partition_wait_time=0,
                              sleep_time=60, run_once_fnc=run_once)


def _runner(name: str) -> Callable[[], None]:
    # Imported lazily: each import pulls in Rucio's core and reads the configuration.
    if name == "judge-evaluator":
        from rucio.daemons.judge import evaluator

        return lambda: evaluator.re_evaluator(once=True, did_limit=1000)
    if name == "judge-repairer":
        from rucio.daemons.judge import repairer

        return lambda: repairer.rule_repairer(once=True)
    if name == "conveyor-preparer":
        from rucio.daemons.conveyor import preparer

        return lambda: preparer.preparer(once=True, partition_wait_time=0, bulk=1000)
    if name == "conveyor-submitter":
        from rucio.daemons.conveyor import submitter

        return lambda: submitter.submitter(once=True, partition_wait_time=0, bulk=1000, group_bulk=200)
    if name == "conveyor-poller":
        from rucio.daemons.conveyor import poller

        return lambda: poller.poller(once=True, older_than=0, partition_wait_time=0, db_bulk=1000)
    if name == "conveyor-finisher":
        from rucio.daemons.conveyor import finisher

        return lambda: finisher.finisher(once=True, partition_wait_time=0, db_bulk=1000)
    # These three have no entry point that skips the partition wait: their own run_once, one cycle,
    # through Rucio's run_daemon (heartbeats), as their main functions call it with once=True.
    if name == "replica-recoverer":
        from rucio.daemons.replicarecoverer import suspicious_replica_recoverer as recoverer

        return _one_cycle(recoverer.GRACEFUL_STOP, recoverer.DAEMON_NAME, partial(
            recoverer.run_once, younger_than=10, nattempts=RECOVERER_NATTEMPTS, vos=None,
            limit_suspicious_files_on_rse=RECOVERER_LIMIT_PER_RSE, json_file_name=str(RECOVERER_POLICY),
            active_mode=True))
    if name == "necromancer":
        from rucio.daemons.badreplicas import necromancer

        return _one_cycle(necromancer.graceful_stop, necromancer.DAEMON_NAME,
                          partial(necromancer.run_once, bulk=1000))
    if name == "judge-cleaner":
        from rucio.daemons.judge import cleaner

        # Removes expired rules, which is also how a rule deleted through the API goes (Rucio only sets
        # its expiry an hour ahead). The paused rules (locked rows, retried later) are kept across cycles
        # as the daemon keeps them.
        return _one_cycle(cleaner.graceful_stop, cleaner.DAEMON_NAME, partial(cleaner.run_once, paused_rules={}))
    if name == "undertaker":
        from rucio.daemons.undertaker import undertaker

        return lambda: undertaker.undertaker(once=True, chunk_size=100)
    if name == "reaper":
        from rucio.daemons.reaper import reaper

        return lambda: reaper.reaper(rses=[], include_rses=None, exclude_rses=None, once=True, greedy=True)
    raise ValueError(f"unknown daemon {name!r}; known: {', '.join(ORDER)}")


_RUNNERS: dict[str, Callable[[], None]] = {}


def run_once(names: Iterable[str] = ORDER) -> dict[str, str]:
    """One cycle of each named daemon, in order; returns name → 'ok' or the error it raised."""
    result: dict[str, str] = {}
    for name in names:
        fn = _RUNNERS.get(name) or _RUNNERS.setdefault(name, _runner(name))
        try:
            fn()
            result[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - a daemon's failure is reported, the others still run
            log.exception("daemon %s failed", name)
            result[name] = f"{type(exc).__name__}: {exc}"
    return result


def hold_heartbeats(name: str, threads: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """Give this process's once=True cycles `threads` heartbeats that live as long as the process, as Rucio's
    continuous daemons have (one HeartbeatHandler per thread for the daemon's life). Returns two functions
    for the stop: one that lets a cycle still waiting for the others go, one that removes the heartbeats.

    A once=True cycle runs in a thread of its own (the conveyor's producer thread, new each cycle) and its
    HeartbeatHandler removes that thread's heartbeat when the cycle ends. Rucio partitions the work by the
    live heartbeats of the daemon (worker i of n), so a cycle alone saw n = 1 and took every request while
    a concurrent one took its half: both fetched the same requests. The submitter then marks a job's first
    requests SUBMITTING, meets one the other cycle took ("does not exist or is not in queued state") and
    returns, leaving those it marked in SUBMITTING (Rucio's finisher requeues them after 120 min only).

    Here each cycle borrows one of `threads` slots, registers its heartbeat under the slot (Rucio keys a
    heartbeat by the thread's ident and name) and gives the slot back without removing it: at most `threads`
    cycles run at once, each on its own partition. The first use of each slot waits until every slot has
    registered, so no cycle computes its partition from a partial count."""
    from types import SimpleNamespace

    from rucio.core import heartbeat as heartbeat_core
    from rucio.daemons.common import HeartbeatHandler

    free: queue.SimpleQueue[SimpleNamespace] = queue.SimpleQueue()
    slots = [SimpleNamespace(ident=i + 1, name=f"{name}-{i}", registered=False) for i in range(threads)]
    for slot in slots:
        free.put(slot)
    all_registered = threading.Barrier(threads)
    owner: dict[str, str | int] = {}
    enter = HeartbeatHandler.__enter__

    def __enter__(self: HeartbeatHandler) -> HeartbeatHandler:
        slot = free.get()
        self.hb_thread = slot  # type: ignore[assignment] - Rucio reads .ident and .name
        try:
            enter(self)  # Rucio's: drops dead PIDs' heartbeats of this host, registers the slot's
            owner.update(executable=self.executable, hostname=self.hostname, pid=self.pid)
            if not slot.registered:
                all_registered.wait()
                slot.registered = True
                self.live(force_renew=True)  # now with every slot counted
        except BaseException:
            free.put(slot)
            raise
        return self

    def __exit__(self: HeartbeatHandler, *_exc: object) -> None:
        free.put(self.hb_thread)  # type: ignore[arg-type] - the heartbeat stays for the next cycle

    HeartbeatHandler.__enter__ = __enter__  # type: ignore[method-assign]
    HeartbeatHandler.__exit__ = __exit__  # type: ignore[method-assign]

    def release() -> None:
        if owner:
            for slot in slots:
                heartbeat_core.die(str(owner["executable"]), str(owner["hostname"]), int(owner["pid"]), slot)

    return all_registered.abort, release


def cycle_loop(name: str, threads: int, sleep: float, stop: threading.Event) -> None:
    """One daemon, as its own process: `threads` threads each running Rucio's daemon function once per
    cycle, `sleep` seconds apart, each thread a fixed partition of the work (hold_heartbeats).

    Not Rucio's --total-threads (one producer feeding consumer threads): a once=True cycle fetches one
    batch and hands it to one consumer, so one cycle at a time with total_threads=2 submits serially.
    Measured (session 6, one bench/replicate run each, 1-min load average 18-31): Rucio request -> submitted mean
    137 s, every rule OK after 276 s, against 72 s and 163 s with independent threads."""
    fn = _runner(name)
    unblock, release = hold_heartbeats(name, threads)
    failures = 0

    def thread() -> None:
        nonlocal failures
        while not stop.is_set():
            try:
                fn()
            except threading.BrokenBarrierError:
                return  # stopping before every thread registered
            except Exception:  # noqa: BLE001 - counted and logged; the daemon goes on, as Rucio's do
                failures += 1
                log.exception("%s cycle failed", name)
            stop.wait(sleep)

    workers = [threading.Thread(target=thread, name=f"{name}-{i}") for i in range(threads)]
    for w in workers:
        w.start()
    stop.wait()
    unblock()
    release_error = None
    for w in workers:
        w.join()
    try:
        release()
    except Exception as exc:  # noqa: BLE001 - Rucio's sanity check removes them at the next start anyway
        release_error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"event": "stopped", "daemon": name, "failed_cycles": failures,
                      "heartbeat_cleanup_error": release_error}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m juno_grid.daemons",
                                     description="Run one Rucio daemon in cycles, as its own process (daemon_set.py "
                                                 "says which daemons the local grid runs this way, and why).")
    parser.add_argument("daemon", choices=ORDER)
    parser.add_argument("--threads", type=int, default=1, help="threads, each a partition of the work")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds between a thread's cycles")
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="Rucio's and this runner's log level (INFO: each cycle's fetch, submission, timing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","thread":"%(threadName)s",'
                               '"msg":"%(message)s"}')
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    cycle_loop(args.daemon, max(args.threads, 1), args.sleep, stop)
    return 0


def drive_until(done: Callable[[], bool], *, timeout: float = 180.0, names: Iterable[str] = ORDER,
                pause: float = 0.3, describe: Callable[[], str] | None = None) -> int:
    """Run daemon cycles until `done()` is true; return the number of cycles. TimeoutError otherwise,
    with `describe()` (the state that was waited on) in its message. When the grid runs its daemons as
    processes, wait for them instead (the `names` subset is then theirs to run)."""
    names = tuple(names)
    deadline = time.monotonic() + timeout
    cycles = 0
    step = not processes_running()
    while True:
        if done():
            return cycles
        if time.monotonic() > deadline:
            what = f": {describe()}" if describe else ""
            by = "daemon cycles" if step else "seconds' waits for the grid's daemon processes"
            raise TimeoutError(f"condition not reached after {cycles} {by} ({timeout:.0f} s){what}")
        if step:
            run_once(names)
        else:
            time.sleep(0.5)
        cycles += 1
        time.sleep(pause)


def processes_running() -> bool:
    """The grid this process belongs to runs Rucio's daemons as processes (`juno-grid up` with daemons):
    then they do the work, and a test only waits. Two instances of a daemon would split the work between
    them by heartbeat, so stepping them here as well would only add a competitor."""
    from . import grid
    from .config import load

    return bool(grid.daemon_processes(load()))


if __name__ == "__main__":
    sys.exit(main())
