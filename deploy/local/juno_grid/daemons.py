"""Rucio's replication daemons, driven in-process: one cycle on demand (tests) or a loop (the grid).

These are Rucio's own daemon functions, unmodified, called with `once=True` and no partition wait:
a cycle of all eleven takes a second or a few, where their CLIs' `--run-once` waits 10 s each first.
The loop (`python -m juno_grid.daemons`) is what `juno-grid up` runs in the background; production
runs each daemon as its own service (see deploy/production).

RUCIO_CONFIG must be set before this module is imported (Rucio reads its config at import time).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from .config import ETC

ORDER = (
    "judge-evaluator",
    "conveyor-preparer",
    "conveyor-submitter",
    "conveyor-poller",
    "conveyor-finisher",
    "replica-recoverer",
    "necromancer",
    "judge-repairer",
    "judge-cleaner",
    "undertaker",
    "reaper",
)
TRANSFER = ("conveyor-preparer", "conveyor-submitter", "conveyor-poller", "conveyor-finisher")

log = logging.getLogger("juno_grid.daemons")

# Bad replicas. The conveyor-finisher declares a transfer's source SUSPICIOUS when the failure matches
# `[conveyor] suspicious_pattern` (rucio.cfg: a checksum mismatch measured at the source). The
# replica-recoverer declares BAD the suspicious replicas that have an AVAILABLE copy on another RSE
# (on RSEs with the attribute enable_suspicious_file_recovery=true, etc/sites.yaml), and the
# necromancer sends the rules that lock a BAD replica back to REPLICATING with a new transfer to it,
# from such a copy (a BAD replica no rule locks is deleted; a file with no copy left becomes LOST).
# Rucio counts a replica's SUSPICIOUS declarations of the last 10 days (get_suspicious_files' own
# window: the daemon's younger_than days reach it as an int and are ignored) and acts when the count is
# > nattempts. ATLAS's default (5) absorbs flaky storage behind broad patterns ("No such file", ...);
# JUNO's pattern is only the storage's own checksum of the source disagreeing with Rucio's, which does
# not go away on a retry: one is enough.
RECOVERER_NATTEMPTS = 0
# More suspicious replicas than this on one RSE in one pass look like a storage problem, not corrupted
# files: Rucio then marks them TEMPORARY_UNAVAILABLE (for 3 days) instead of declaring them BAD.
RECOVERER_LIMIT_PER_RSE = 20
# The recoverer's per-datatype policy for suspicious *last* copies. Empty: a last copy is never declared
# bad automatically (the necromancer would mark the file LOST); operators decide. Note that Rucio's
# recoverer always declares bad suspicious files named log.* or user* (an ATLAS convention in its code).
RECOVERER_POLICY = ETC / "suspicious_replica_recoverer.json"


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


def loop(sleep: float, stop: threading.Event, names: Iterable[str] = ORDER) -> None:
    names = tuple(names)
    errors: dict[str, int] = dict.fromkeys(names, 0)
    cycles = 0
    while not stop.is_set():
        started = time.monotonic()
        result = run_once(names)
        cycles += 1
        for name, outcome in result.items():
            if outcome != "ok":
                errors[name] += 1
        print(json.dumps({"event": "cycle", "n": cycles, "seconds": round(time.monotonic() - started, 3),
                          "errors": {k: v for k, v in result.items() if v != "ok"}}), flush=True)
        stop.wait(sleep)
    print(json.dumps({"event": "stopped", "cycles": cycles, "errors_total": errors}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run Rucio's replication daemons in one process.")
    parser.add_argument("--sleep", type=float, default=2.0, help="seconds between cycles")
    parser.add_argument("--once", action="store_true", help="one cycle, then exit")
    parser.add_argument("--daemons", default=",".join(ORDER), help="comma-separated subset, run in this order")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    names = [n for n in args.daemons.split(",") if n]
    if args.once:
        result = run_once(names)
        print(json.dumps(result))
        return 0 if all(v == "ok" for v in result.values()) else 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    loop(args.sleep, stop, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def drive_until(done: Callable[[], bool], *, timeout: float = 180.0, names: Iterable[str] = ORDER,
                pause: float = 0.3, describe: Callable[[], str] | None = None) -> int:
    """Run daemon cycles until `done()` is true; return the number of cycles. TimeoutError otherwise,
    with `describe()` (the state that was waited on) in its message."""
    names = tuple(names)
    deadline = time.monotonic() + timeout
    cycles = 0
    while True:
        if done():
            return cycles
        if time.monotonic() > deadline:
            what = f": {describe()}" if describe else ""
            raise TimeoutError(f"condition not reached after {cycles} daemon cycles ({timeout:.0f} s){what}")
        run_once(names)
        cycles += 1
        time.sleep(pause)
