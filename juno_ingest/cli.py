"""`juno-ingest`: run the ingester, simulate SPADE, look at the configuration and the dead letters.

Every command takes --json/--text (default: JSON when stdout is not a terminal), -v and -q, and exits
with the codes of juno_common.exit_codes (one handler maps each error kind to its code):
  0 done   1 unexpected error   2 usage or configuration   4 Rucio refused (permission, credentials, RSE)
  5 Rucio, Kafka or storage unreachable or failing   9 dead-letter limit reached (nothing committed)
"""

from __future__ import annotations

import functools
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from juno_common.cli import Output, shared_options
from juno_common.exit_codes import Exit, help_epilog
from juno_common.units import UnitError, parse_size
from juno_ingest import __version__
from juno_ingest.config import ConfigError, IngestConfig, kafka_common
from juno_ingest.config import load as load_config

EXIT_OK = Exit.OK
State = Output  # the shared options of one command (juno_common.cli)


def _exit_code(err: BaseException) -> tuple[Exit, str] | None:
    """The ingester's own error classes → exit code and the label printed before the message."""
    from juno_ingest.consumer import DeadLetterLimitExceeded, KafkaSetupError
    from juno_ingest.dlq import DeadLetterError
    from juno_ingest.metrics import MetricsPortError
    from juno_ingest.storage_check import StorageUnavailable

    table: list[tuple[type[BaseException], Exit, str]] = [
        (ConfigError, Exit.USAGE, "configuration error"),
        (MetricsPortError, Exit.USAGE, "configuration error"),
        (DeadLetterLimitExceeded, Exit.STOPPED, "dead-letter limit"),
        (KafkaSetupError, Exit.UNAVAILABLE, "Kafka"),
        (DeadLetterError, Exit.UNAVAILABLE, "Kafka"),
        (StorageUnavailable, Exit.UNAVAILABLE, "storage"),
    ]
    for kind, code, label in table:
        if isinstance(err, kind):
            return code, label
    return None


def shared(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--json/--text, -v, -q on a command, and the error handler around it (juno_common.cli)."""
    @shared_options("juno-ingest", auto_json=True, extra=_exit_code)
    @functools.wraps(fn)
    def wrapper(out: Output, **kwargs: Any) -> Any:
        return fn(out, **kwargs)

    return wrapper


def _config(path: Path | None) -> IngestConfig:
    return load_config(path)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
             epilog=help_epilog())
@click.version_option(__version__, prog_name="juno-ingest")
def main() -> None:
    """SPADE file-arrival messages (Kafka) become Rucio DIDs at IHEP, exactly once.

    \b
    Typical use on the local grid (inside it: `.venv/bin/juno-grid exec -- ...`):
      juno-ingest simulate --files 200 --days 3 --stream JUNODAQ.demo_a   # SPADE: files + messages
      juno-ingest run --once                                              # ingest until idle
      juno-ingest dlq                                                     # what was rejected, and why
      juno-ingest config                                                  # the settings in effect

    Settings: etc/ingest.yaml (or --config, or $JUNO_INGEST_CONFIG), each overridable by
    JUNO_INGEST_<SECTION>_<KEY>. Rucio credentials: rucio.cfg ($RUCIO_CONFIG) plus the rucio: section.
    """


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (default: $JUNO_INGEST_CONFIG or etc/ingest.yaml).")
@click.option("--once", is_flag=True, help="Consume until idle (run.once_idle_s without a message), close due "
                                           "blocks, then exit. For tests, demos and cron-style catch-up.")
@click.option("--topic", help="Override kafka.topic.")
@click.option("--group-id", help="Override kafka.group_id (a new group re-reads the topic from the start).")
@click.option("--dlq-topic", help="Override dlq.topic.")
@click.option("--stream", "streams", multiple=True, help="Accept only these streams (repeatable; blocks.streams).")
@click.option("--metrics-port", type=int, help="Override metrics.port (0: no metrics endpoint).")
@shared
def run(state: State, config_path: Path | None, once: bool, topic: str | None, group_id: str | None,
        dlq_topic: str | None, streams: tuple[str, ...], metrics_port: int | None) -> int:
    """Consume SPADE messages and register the files in Rucio.

    \b
    Per batch (batch.max_messages, or batch.max_wait_s after its first message): validate each
    message, look up what Rucio has, check new files on storage (xrdfs stat), create blocks and
    containers with the policy's rules, register and attach the files in bulk, dead-letter what
    cannot be used (with the reason), then commit the offsets. Rucio or storage down: the batch is
    retried with backoff and nothing is committed. SIGTERM/Ctrl-C: the batch in hand is finished and
    committed, then the ingester exits. Logs: JSON lines on stderr; at the end a summary on stdout.
    """
    from juno_ingest import logs
    from juno_ingest.consumer import Ingester

    cfg = _config(config_path)
    overrides: dict[str, dict[str, Any]] = {}
    if topic:
        overrides.setdefault("kafka", {})["topic"] = topic
    if group_id:
        overrides.setdefault("kafka", {})["group_id"] = group_id
    if dlq_topic:
        overrides.setdefault("dlq", {})["topic"] = dlq_topic
    if streams:
        overrides.setdefault("blocks", {})["streams"] = list(streams)
    if metrics_port is not None:
        overrides.setdefault("metrics", {})["port"] = metrics_port
    cfg = cfg.with_overrides(**overrides)
    logs.setup(state.log_level if state.log_level != "INFO" else cfg.run.log_level)
    if cfg.rucio.config:
        os.environ["RUCIO_CONFIG"] = cfg.rucio.config
    ingester = Ingester(cfg)
    # The handler only sets a flag: the loop finishes the batch, commits and closes.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: ingester.request_stop())
    summary = ingester.run(once=once)
    state.emit(summary.as_dict(), lambda: (
        f"{summary.messages} message(s): {summary.registered} registered, {summary.duplicates} duplicate(s), "
        f"{summary.dead_lettered} dead-lettered {dict(summary.dead_codes) or ''}; {summary.batches} batch(es), "
        f"{summary.blocks_created} block(s) created, {len(summary.blocks_closed)} closed; {summary.stopped}"))
    return EXIT_OK


def _parse_size(text: str) -> int:
    try:
        return parse_size(text)  # juno_common.units: 1k = 1000, 1KiB = 1024
    except UnitError:
        raise click.BadParameter(f"{text!r}: write a size like 1024, 1k, 1KiB, 10MB or 1GiB") from None


def _default_endpoint() -> str:
    from rucio_policy.topology import load as load_topology

    proto = load_topology().rse("IHEP-EOS").protocols["local"]
    return f"root://{proto.hostname}:{proto.port}/{proto.prefix.lstrip('/')}"


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the Kafka bootstrap, topic and settings from this file (default: etc/ingest.yaml).")
@click.option("--files", type=click.IntRange(0), default=10, show_default=True, help="Distinct raw files.")
@click.option("--size", default="1KiB", show_default=True, help="Bytes per file (1024, 1k, 1KiB, 10MB, 1GiB).")
@click.option("--days", type=click.IntRange(1), default=1, show_default=True,
              help="Receiving days, ending --last-day; files spread evenly (today's up to now).")
@click.option("--last-day", type=click.DateTime(["%Y-%m-%d"]), help="Last receiving day (default: today, UTC).")
@click.option("--stream", "streams", multiple=True, help="Stream key <DETECTOR>.<stream> (repeatable; default "
                                                         "JUNODAQ.global_trigger). Files are split evenly.")
@click.option("--run", "first_run", type=click.IntRange(0, 99_999_999), help="First run number (default: random).")
@click.option("--files-per-run", type=click.IntRange(1), default=100, show_default=True,
              help="A new run every N files of a stream.")
@click.option("--duplicates", type=click.IntRange(0), default=0, help="Extra exact copies of valid messages.")
@click.option("--conflicts", type=click.IntRange(0), default=0,
              help="Messages reusing a valid file's name with another adler32 (must be dead-lettered).")
@click.option("--malformed", type=click.IntRange(0), default=0,
              help="Broken messages of every kind (bad JSON, missing fields, bad names, file not on storage, "
                   "wrong size, ...), each must be dead-lettered.")
@click.option("--reorder", type=click.IntRange(0), default=0, help="Shuffle valid messages within windows of N.")
@click.option("--seed", type=int, help="Make names, times and contents reproducible.")
@click.option("--topic", help="Topic to publish to (default: kafka.topic of the config).")
@click.option("--partitions", type=click.IntRange(1), default=3, show_default=True,
              help="Partitions when the topic has to be created.")
@click.option("--rate", type=float, default=0.0, help="Messages per second (0: as fast as possible).")
@click.option("--storage", help="Where to write, root://host:port/prefix (default: IHEP-EOS from etc/sites.yaml).")
@click.option("--no-write", is_flag=True, help="Publish only (the files are already there: same --seed).")
@click.option("--no-publish", is_flag=True, help="Write the files only.")
@click.option("--dry-run", is_flag=True, help="Write and publish nothing; print the plan.")
@shared
def simulate(state: State, config_path: Path | None, files: int, size: str, days: int, last_day: Any,
             streams: tuple[str, ...], first_run: int | None, files_per_run: int, duplicates: int, conflicts: int,
             malformed: int, reorder: int, seed: int | None, topic: str | None, partitions: int, rate: float,
             storage: str | None, no_write: bool, no_publish: bool, dry_run: bool) -> int:
    """SPADE for the local grid: write raw files to IHEP-EOS, then publish their arrival messages.

    \b
    Files get JUNO raw names (RUN.<run>.JUNODAQ.Physics.ds-2.<stream>.<start>.<seq>.dat), pseudo-random
    contents (adler32 computed), receiving times spread over the chosen days, and land where Rucio
    expects them (raw/<YYYY>/<MMDD>/ below the storage prefix). Messages are keyed by file name.
    Prints a summary: messages by kind, and the blocks that should hold the files.

    \b
    Example: 600 messages over 3 days and 2 streams, with duplicates, reordering and junk:
      juno-ingest simulate --files 600 --days 3 --stream JUNODAQ.demo_a --stream JUNODAQ.demo_b \\
          --duplicates 20 --reorder 50 --malformed 15 --conflicts 5
    """
    from juno_ingest import simulate as sim
    from juno_ingest.storage_check import Endpoint

    cfg = _config(config_path)
    url = storage or _default_endpoint()
    if not url.startswith("root://"):
        raise click.BadParameter(f"{url!r}: expected root://host:port/prefix", param_hint="--storage")
    host, _, prefix = url[len("root://"):].partition("/")
    endpoint = Endpoint(host, "/" + prefix.strip("/"))
    spec = sim.SimSpec(files=files, size=_parse_size(size), days=days,
                       last_day=last_day.date() if last_day else None, streams=streams or sim.DEFAULT_STREAMS,
                       first_run=first_run, files_per_run=files_per_run, duplicates=duplicates, conflicts=conflicts,
                       malformed=malformed, reorder=reorder, seed=seed, prefix=endpoint.prefix)
    plan = sim.make_plan(spec)
    topic = topic or cfg.kafka.topic
    out: dict[str, Any] = {**plan.summary(), "topic": topic, "storage": endpoint.url, "dry_run": dry_run}
    if not dry_run and not no_write:
        out["files_written"] = sim.write_files(plan, endpoint)
    if not dry_run and not no_publish:
        bootstrap = cfg.kafka.bootstrap_servers
        producer_settings = {k: v for k, v in kafka_common(cfg, consumer=False).items() if k != "bootstrap.servers"}
        sim.ensure_topic(bootstrap, topic, partitions, producer_settings)
        out["publish_seconds"] = round(sim.publish(plan.messages, bootstrap, topic, rate=rate,
                                                   settings=producer_settings), 3)
    state.emit(out, lambda: _simulate_text(out))
    return EXIT_OK


def _simulate_text(out: dict[str, Any]) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(out["kinds"].items()))
    lines = [f"{out['messages']} message(s) ({kinds}) for {out['files']} file(s) of {out['bytes_per_file']} bytes",
             f"storage {out['storage']}: " + (f"{out['files_written']} file(s) written" if "files_written" in out
                                              else "nothing written"),
             f"topic {out['topic']}: " + (f"published in {out['publish_seconds']} s" if "publish_seconds" in out
                                          else "nothing published"),
             f"expected: {out['expect']['registered']} registered, {out['expect']['duplicate']} duplicate(s), "
             f"{out['expect']['dead']} dead-lettered; blocks:"]
    lines += [f"  raw:{block}  {n} file(s)" for block, n in out["blocks"].items()]
    return "\n".join(lines)


@main.command("config")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (default: $JUNO_INGEST_CONFIG or etc/ingest.yaml).")
@click.option("--show-secrets", is_flag=True, help="Print passwords instead of ***.")
@shared
def show_config(state: State, config_path: Path | None, show_secrets: bool) -> int:
    """Check the settings (file + JUNO_INGEST_* environment) and print what is in effect."""
    cfg = _config(config_path)
    data = cfg.as_dict(hide_secrets=not show_secrets)
    state.emit(data, lambda: f"# from {cfg.source} and the environment\n" + json.dumps(data, indent=2))
    return EXIT_OK


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Settings file (default: etc/ingest.yaml): Kafka bootstrap and dlq.topic.")
@click.option("--topic", help="Dead-letter topic (default: dlq.topic).")
@click.option("--max", "limit", type=click.IntRange(1), default=100, show_default=True, help="At most this many.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Stop after this long without one.")
@shared
def dlq(state: State, config_path: Path | None, topic: str | None, limit: int, timeout: float) -> int:
    """Print dead letters (oldest first): reason, code, where each came from, and the message.

    Reads with a throwaway consumer group, so the ingester's offsets are not touched.
    """
    import time
    import uuid

    from confluent_kafka import Consumer

    from juno_ingest.dlq import DeadLetter

    cfg = _config(config_path)
    topic = topic or cfg.dlq.topic
    consumer = Consumer({**kafka_common(cfg), "group.id": f"juno-ingest-dlq-reader-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000})
    letters: list[DeadLetter] = []
    try:
        consumer.subscribe([topic])
        last = time.monotonic()
        while len(letters) < limit and time.monotonic() - last < timeout:
            for msg in consumer.consume(num_messages=limit - len(letters), timeout=1.0):
                if msg.error() is None:
                    letters.append(DeadLetter.from_message(msg))
                    last = time.monotonic()
    finally:
        consumer.close()
    data = [d.as_dict() for d in letters]
    state.emit({"topic": topic, "dead_letters": data}, lambda: "\n".join(
        [f"{len(letters)} dead letter(s) in {topic}"]
        + [f"  {d.topic}/{d.partition}@{d.offset} [{d.code}] {d.reason}" for d in letters]))
    return EXIT_OK

