"""The Rucio daemons JUNO runs, as data: which ones, how many processes and threads, with which options.

One description for both deployments: `juno-grid up` starts each daemon here as its own process (Rucio's
own `rucio-<name>` command, unmodified, as the `rucio/rucio-daemons` image does), and the production Helm
values (`rucio-daemons` chart: `<helm_key>Count`, `<helm_key>.threads`, `.sleepTime`, ...) are meant to be
generated from, or checked against, the same entries. Only the sleep times differ: the local grid is small
and tests wait for it, so its daemons look for work every second or few; production sleeps longer
(`production_sleep_s`, Rucio's and the chart's defaults).

Partitions: Rucio splits each daemon's work between all live instances of it (processes x threads) by
hashing request/rule ids over the heartbeats table; `threads` is the partition count per process and
`count` the number of processes (the chart's replica count). A daemon killed hard leaves its heartbeats
behind: the next start of that daemon on the same host removes those of dead PIDs (Rucio's sanity check).

Rucio's configuration options (rucio.cfg) are data too: deploy/rucio-config.yaml (rucio_config.py), from which
the local rucio.cfg and the production Helm values' `config:` are both made.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .config import ETC

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


@dataclass(frozen=True)
class Daemon:
    """One Rucio daemon: `rucio-<name>` with `threads` threads in each of `count` processes."""

    name: str
    helm_key: str  # the rucio-daemons chart's values key (its count is `<helm_key>Count`)
    threads: int
    threads_flag: str | None  # the CLI's flag for threads (Rucio's daemons spell it three ways)
    sleep_s: int  # local grid: seconds a thread sleeps when a cycle found nothing to do
    production_sleep_s: int
    options: tuple[tuple[str, str | None], ...] = field(default_factory=tuple)  # flag, value (None: a switch)
    count: int = 1
    # "rucio": Rucio's own continuous command. "cycles": on the local grid, `python -m juno_grid.daemons NAME`
    # runs Rucio's own daemon function once per cycle in each of `threads` threads (see CYCLES_WHY).
    local_runner: str = "rucio"

    @property
    def command(self) -> str:
        return f"rucio-{self.name}"

    def argv(self, bin_dir: Path, *, production: bool = False) -> list[str]:
        """The daemon's command line: Rucio's own entry point (production, and the local grid's "rucio"
        runner), or the local grid's cycle runner."""
        if self.local_runner == "cycles" and not production:
            return [str(bin_dir / "python"), "-m", "juno_grid.daemons", self.name, "--threads", str(self.threads),
                    "--sleep", str(self.sleep_s)]
        out = [str(bin_dir / self.command)]
        if self.threads_flag:
            out += [self.threads_flag, str(self.threads)]
        out += ["--sleep-time", str(self.production_sleep_s if production else self.sleep_s)]
        for flag, value in self.options:
            out += [flag] if value is None else [flag, value]
        return out

    def process_names(self) -> Iterator[str]:
        """The names juno-grid records each of its processes under (PID file, log file)."""
        for i in range(self.count):
            yield f"daemon-{self.name}" + (f"-{i + 1}" if self.count > 1 else "")


# Why the conveyor runs in cycles on the local grid: in continuous mode Rucio's conveyor daemons mark each
# request they fetch (last_processed_by/at) and skip it for 600 s (request.get_and_mark_next's
# processed_at_delay, not configurable). Production learns that a transfer ended from FTS3's messages
# (conveyor-receiver, through a message broker) and polls as a fallback; the local grid has no broker, and
# a submitter that looked at a request too early (a multihop's second hop, a source not yet there) would
# come back to it ten minutes later. One cycle with once=True fetches without marking, so the cycle runner
# looks at every pending request each second, in its own process, with Rucio's heartbeats and partitions.
CYCLES_WHY = "conveyor: no message broker locally; continuous mode skips a fetched request for 600 s"
# The message path (FTS3 -> broker -> conveyor-receiver) is not built locally. Brokers at hand: Debian's
# rabbitmq-server (Erlang, STOMP plugin) and activemq (Java), PyPI's coilmq (pure Python); the transfer
# service would also have to publish FTS3's transfer-complete messages. It would shorten the tail (transfer
# done -> poller cycle -> finisher cycle) by about one poller cycle; on this 2-core machine shared by four
# grids, bench/replicate's time goes to the submitter instead (daemons.cycle_loop), so it was left out.

# In the order a file moves through them: rule -> locks and requests -> submitted -> polled -> finished
# (replica AVAILABLE, rule OK); then recovery, repair, cleanup and deletion.
DAEMONS: tuple[Daemon, ...] = (
    Daemon("judge-evaluator", "judgeEvaluator", 2, "--threads", 1, 30, (("--did-limit", "1000"),)),
    Daemon("conveyor-preparer", "conveyorPreparer", 1, "--threads", 1, 60, (("--bulk", "1000"),),
           local_runner="cycles"),
    Daemon("conveyor-submitter", "conveyorTransferSubmitter", 2, "--total-threads", 1, 600,
           (("--bulk", "1000"), ("--group-bulk", "200")), local_runner="cycles"),
    # --older-than 0: poll every submitted transfer each cycle; production keeps Rucio's 60 s (poll what
    # has not been updated for a minute) with FTS3's messages doing the rest.
    Daemon("conveyor-poller", "conveyorPoller", 1, "--total-threads", 1, 60,
           (("--db-bulk", "1000"), ("--older-than", "0")), local_runner="cycles"),
    Daemon("conveyor-finisher", "conveyorFinisher", 2, "--total-threads", 1, 60, (("--db-bulk", "1000"),),
           local_runner="cycles"),
    Daemon("replica-recoverer", "replicaRecoverer", 1, None, 5, 3600,
           (("--nattempts", str(RECOVERER_NATTEMPTS)), ("--younger-than", "10"),
            ("--limit-suspicious-files-on-rse", str(RECOVERER_LIMIT_PER_RSE)),
            ("--json-file-name", str(RECOVERER_POLICY)), ("--active-mode", None))),
    Daemon("necromancer", "necromancer", 1, "--threads", 5, 60, (("--bulk", "1000"),)),
    Daemon("judge-repairer", "judgeRepairer", 1, "--threads", 5, 60),
    Daemon("judge-cleaner", "judgeCleaner", 1, "--threads", 5, 60),
    Daemon("undertaker", "undertaker", 1, "--total-workers", 5, 60, (("--chunk-size", "100"),)),
    Daemon("reaper", "reaper", 2, "--threads", 5, 300, (("--greedy", None), ("--chunk-size", "100"))),
)

BY_NAME = {d.name: d for d in DAEMONS}


def get(name: str) -> Daemon:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown daemon {name!r}; known: {', '.join(BY_NAME)}") from None
