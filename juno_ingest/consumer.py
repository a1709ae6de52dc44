"""The service: Kafka in, Rucio out, offsets committed only for what Rucio holds (arroyo's model).

    ingester = Ingester(config)
    summary = ingester.run(once=False)     # until request_stop() (SIGTERM in the CLI)

The loop, for each batch (max_messages, or max_wait_s after its first message):
  1. pipeline.process(batch) → every message registered, a duplicate, or a dead letter. Rucio or the
     storage unreachable: wait (exponential backoff, partitions paused so the group keeps us) and
     process the same batch again; nothing is committed meanwhile, so nothing can be lost.
  2. dead-letter limit: if this batch would push the dead-letter ratio over the limit, stop with an
     error instead (nothing produced, nothing committed): the configuration is probably wrong.
  3. dead letters produced and confirmed;
  4. offsets committed: highest offset + 1 per partition (auto-commit is off).
A crash anywhere before 4 re-reads the batch after the restart; step 1 is idempotent, so the replay
registers nothing twice (duplicates are counted, not errors).

When the consumer has read everything (idle) it closes the blocks whose day is over (plus
blocks.grace_s) and hands each to the policy engine (finalize_block). "Everything" means the whole
topic, not only the partitions this process owns: with several ingesters in one group, one that is
idle checks the group's committed offsets against every partition's end (group_lag.py) before
closing, so a day is never closed while another instance still holds that day's messages. Any
instance may close a block; closing twice is harmless (Rucio's set_status and the policy engine's
finalize are idempotent).
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from juno_ingest import group_lag
from juno_ingest.batching import Backoff, BatchPolicy, DlqLimit, OpenBlock, Position, blocks_due, commit_offsets
from juno_ingest.config import IngestConfig, kafka_common
from juno_ingest.dlq import DeadLetterError, DeadLetterProducer
from juno_ingest.logs import RUCIO_CLIENT_LOGGER, fields
from juno_ingest.mapping import BlockPlan
from juno_ingest.metrics import IngestMetrics
from juno_ingest.pipeline import BatchResult, Fate, Incoming, Pipeline
from juno_ingest.registrar import BlockState, PolicyRules, Registrar, RucioRefused, RucioUnavailable
from juno_ingest.storage_check import StorageChecker, StorageUnavailable
from rucio_policy import naming

log = logging.getLogger("juno_ingest.consumer")

# Kafka settings the ingester's guarantees depend on: users cannot override these.
_FORCED = {"enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": False}
_DEFAULTS = {"auto.offset.reset": "earliest",
             # DESIGN.md: with the default 45 s, the first assignment on Tansu takes ~23 s instead of ~3 s.
             "session.timeout.ms": 6000}


class DeadLetterLimitExceeded(Exception):
    """Too many dead letters: most likely a configuration problem, not bad messages."""


class KafkaSetupError(Exception):
    """Kafka is not set up as the configuration says (missing topic, no partitions assigned)."""


@dataclass
class RunSummary:
    messages: int = 0
    registered: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    blocks_created: int = 0
    blocks_closed: list[str] = field(default_factory=list)
    retries: int = 0
    stopped: str = ""
    dead_codes: Counter[str] = field(default_factory=Counter)
    first_read_at: float | None = None  # wall clock (time.time) when the first batch's first message was read
    last_commit_at: float | None = None  # wall clock of the last commit

    @property
    def busy_seconds(self) -> float:
        """From the first message read to the last commit: the time the work took, without start-up or idling."""
        if self.first_read_at is None or self.last_commit_at is None:
            return 0.0
        return self.last_commit_at - self.first_read_at

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "registered": self.registered, "duplicates": self.duplicates,
                "dead_lettered": self.dead_lettered, "dead_codes": dict(self.dead_codes), "batches": self.batches,
                "blocks_created": self.blocks_created, "blocks_closed": self.blocks_closed, "retries": self.retries,
                "busy_seconds": round(self.busy_seconds, 3), "stopped": self.stopped}


def default_client_factory(cfg: IngestConfig) -> Callable[[], Any]:
    """Rucio clients as the configured account: rucio.cfg, with the config's overrides."""
    def make() -> Any:
        from rucio.client import Client

        kwargs: dict[str, Any] = {"timeout": cfg.rucio.timeout_s, "logger": logging.getLogger(RUCIO_CLIENT_LOGGER)}
        if cfg.rucio.account:
            kwargs["account"] = cfg.rucio.account
        if cfg.rucio.auth_type:
            kwargs["auth_type"] = cfg.rucio.auth_type
        if cfg.rucio.username is not None or cfg.rucio.password is not None:
            kwargs["creds"] = {"username": cfg.rucio.username, "password": cfg.rucio.password}
        return Client(**kwargs)

    return make


def _naive(when: datetime | str) -> datetime:
    """A Rucio date (datetime, ISO text or the REST layer's RFC 1123 text) as naive UTC; now if unreadable."""
    if isinstance(when, str):
        text = when
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                return datetime.now(UTC).replace(tzinfo=None)
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


class Closer:
    """Open blocks this ingester knows, and which of them are due to close."""

    def __init__(self, grace: timedelta, check_every_s: float) -> None:
        self.grace = grace
        self.check_every_s = check_every_s
        self.open: dict[str, OpenBlock] = {}
        self._last = float("-inf")

    def observe(self, blocks: dict[str, BlockPlan]) -> None:
        for name, plan in blocks.items():
            self.open.setdefault(name, OpenBlock(name, plan.day_end))

    def add(self, name: str) -> None:
        day = naming.parse_block(name).day
        self.open.setdefault(name, OpenBlock(name, datetime.combine(day + timedelta(days=1), datetime.min.time(),
                                                                    tzinfo=UTC)))

    def due(self, now: datetime, caught_up: bool, *, force: bool = False) -> list[str]:
        mono = time.monotonic()
        if not force and mono - self._last < self.check_every_s:
            return []
        self._last = mono
        return blocks_due(self.open.values(), now, self.grace, caught_up)


class Ingester:
    def __init__(self, cfg: IngestConfig, *, client_factory: Callable[[], Any] | None = None,
                 metrics: IngestMetrics | None = None, now: Callable[[], datetime] | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or IngestMetrics.create()
        self._factory = client_factory or default_client_factory(cfg)
        self._now = now or (lambda: datetime.now(UTC))
        self._stop = threading.Event()
        self._stop_at: float | None = None
        self.summary = RunSummary()
        self.policy = BatchPolicy(cfg.batch.max_messages, cfg.batch.max_wait_s, cfg.batch.linger_s)
        self.limit = DlqLimit(cfg.dlq.max_ratio, cfg.dlq.window, cfg.dlq.min_messages, cfg.dlq.max_consecutive)
        self.closer = Closer(timedelta(seconds=cfg.blocks.grace_s), cfg.blocks.close_check_s)
        self._carry: list[Incoming] = []
        self._assigned: set[tuple[str, int]] = set()
        self._ever_assigned = False
        self._lag: dict[tuple[str, int], int] = {}
        self._group_conf: dict[str, Any] = {}
        self.registrar: Registrar | None = None
        self.pipeline: Pipeline | None = None
        self.checker: StorageChecker | None = None
        self.consumer: Any = None
        self.dlq: DeadLetterProducer | None = None

    # -- control ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in hand, commit, close (what SIGTERM does). Safe from a signal handler."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- setup ------------------------------------------------------------------------------------

    def _connect_rucio(self) -> None:
        """Reach Rucio, waiting (with backoff) while it is down; refusals are fatal at once."""
        rules = PolicyRules(self.cfg.rules.policy) if self.cfg.rules.apply else None
        self.registrar = Registrar(self._factory, rse=self.cfg.rucio.rse, bulk_size=self.cfg.rucio.bulk_size,
                                   parallel=self.cfg.rucio.parallel, rules=rules)
        backoff = Backoff(self.cfg.rucio.retry_initial_s, self.cfg.rucio.retry_max_s)
        while True:
            try:
                account = self.registrar.connect()
                endpoint = self.registrar.storage_endpoint(self.cfg.storage_check.scheme)
                break
            except RucioUnavailable as err:
                if self.stopping:
                    raise
                delay = backoff.next()
                log.warning("Rucio not reachable at start-up; retrying", extra=fields(error=str(err),
                                                                                     retry_in_s=round(delay, 1)))
                self._stop.wait(delay)
        if self.cfg.rucio.account and account != self.cfg.rucio.account:
            raise RucioRefused(f"Rucio authenticated us as {account}, not {self.cfg.rucio.account}: check the "
                               "credentials in rucio.cfg / rucio.username")
        if self.cfg.storage_check.enabled:
            check = self.cfg.storage_check
            self.checker = StorageChecker(endpoint, parallel=check.parallel, chunk=check.chunk,
                                          timeout_s=check.timeout_s, listing_ttl_s=check.listing_ttl_s)
        self.pipeline = Pipeline(self.registrar, self.checker, prefix=endpoint.prefix,
                                 streams=frozenset(self.cfg.blocks.streams), file_metadata=self.cfg.rucio.file_metadata)
        log.info("connected to Rucio", extra=fields(account=account, rse=self.cfg.rucio.rse, storage=endpoint.url,
                                                    storage_check=self.cfg.storage_check.enabled,
                                                    rules=self.cfg.rules.apply))

    def _connect_kafka(self) -> None:
        common = kafka_common(self.cfg, consumer=False)
        conf = {**_DEFAULTS, **kafka_common(self.cfg), "group.id": self.cfg.kafka.group_id, **_FORCED}
        self._group_conf = conf
        self.consumer = Consumer(conf)
        try:
            topics = self.consumer.list_topics(timeout=15).topics
        except KafkaException as err:
            raise KafkaSetupError(f"cannot reach Kafka at {self.cfg.kafka.bootstrap_servers} ({err}): check "
                                  "kafka.bootstrap_servers and kafka.settings (security)") from None
        if self.cfg.kafka.topic not in topics:
            raise KafkaSetupError(f"topic {self.cfg.kafka.topic!r} does not exist on "
                                  f"{self.cfg.kafka.bootstrap_servers}: create it (SPADE publishes there, keyed by "
                                  "file name) or fix kafka.topic")
        if self.cfg.dlq.topic not in topics:
            self._create_topic(common, self.cfg.dlq.topic)
        self.dlq = DeadLetterProducer(common, self.cfg.dlq.topic)
        self.consumer.subscribe([self.cfg.kafka.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        log.info("subscribed", extra=fields(topic=self.cfg.kafka.topic, group=self.cfg.kafka.group_id,
                                            dlq=self.cfg.dlq.topic, bootstrap=self.cfg.kafka.bootstrap_servers))

    @staticmethod
    def _create_topic(conf: dict[str, Any], topic: str) -> None:
        admin = AdminClient(conf)  # kept referenced until the answer: a collected client cancels its requests
        futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        try:
            futures[topic].result(15)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(f"dead-letter topic {topic!r} does not exist and cannot be created ({err}): "
                                      "create it or fix dlq.topic") from err

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self._ever_assigned = True
        log.info("partitions assigned", extra=fields(partitions=sorted(p.partition for p in partitions)))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self._assigned -= gone
        # Messages read from them but not handled yet go back to Kafka (the next owner reads them
        # from the committed offset): keeping them would only mean committing for a partition we lost.
        self._carry = [m for m in self._carry if (m.position.topic, m.position.partition) not in gone]
        for key in gone:
            self._lag.pop(key, None)
        log.info("partitions revoked", extra=fields(partitions=sorted(p.partition for p in partitions)))

    def _recover_blocks(self) -> None:
        """Blocks of our streams a previous run left open (to close in time) or closed without finalizing.

        Only for the streams listed in blocks.streams: without a list the ingester cannot tell its
        blocks from anybody else's (on a shared Rucio: other services' or tests' raw blocks), and
        closing or finalizing those is not its business. Then only blocks seen in messages are closed,
        and `juno-policy apply` (which decides pending placements of closed blocks) is the safety net.
        """
        assert self.registrar is not None
        if not self.cfg.blocks.streams:
            log.info("no blocks.streams configured: skipping the start-up scan of recent blocks")
            return
        since = self._now() - timedelta(days=self.cfg.blocks.recover_days)
        try:
            states = self.registrar.list_blocks(self.cfg.blocks.streams, since)
        except RucioUnavailable as err:
            log.warning("could not list recent blocks; blocks seen in messages are still closed in time",
                        extra=fields(error=str(err)))
            return
        finalized = 0
        naive_since = since.astimezone(UTC).replace(tzinfo=None)  # Rucio's dates are naive UTC
        for name, state in states.items():
            if state.is_open:
                self.closer.add(name)
            elif state.closed_at is None or _naive(state.closed_at) >= naive_since:
                try:
                    self.registrar.finalize(name)
                    finalized += 1
                except RucioUnavailable as err:
                    log.warning("could not finalize a closed block", extra=fields(block=name, error=str(err)))
        log.info("recent blocks", extra=fields(open=len(self.closer.open), finalized=finalized))

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, once: bool = False) -> RunSummary:
        """Consume until stopped (or, with once, until idle); the summary of what was done."""
        self.metrics.serve(self.cfg.metrics.host, self.cfg.metrics.port)
        try:
            self._connect_rucio()
            self._connect_kafka()
            self._recover_blocks()
            self._loop(once)
        finally:
            self._shutdown()
        return self.summary

    def _loop(self, once: bool) -> None:
        idle_since: float | None = None
        started = time.monotonic()
        while not self.stopping:
            batch, first_at = self._accumulate()
            if batch:
                self._handle(batch, first_at)
                idle_since = None
                continue
            if self.stopping:
                break
            # Idle: nothing came within a poll. Close what is due (if everything published was read).
            caught_up = self._caught_up()
            self._close_due(caught_up, force=once)
            if once:
                if not self._ever_assigned:
                    if time.monotonic() - started > 60:
                        raise KafkaSetupError(f"no partition of {self.cfg.kafka.topic!r} assigned after 60 s: is "
                                              "another consumer of the group holding them all?")
                    continue
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= self.cfg.run.once_idle_s:
                    self._close_due(caught_up, force=True)
                    self.summary.stopped = "idle"
                    return
        self.summary.stopped = self.summary.stopped or "stop requested"

    def _accumulate(self) -> tuple[list[Incoming], float | None]:
        """A batch: until full, or max_wait_s after its first message, or the stop flag. ([] when idle.)"""
        batch, self._carry = self._carry, []
        first_at = time.monotonic() if batch else None
        while not self.stopping and not self.policy.full(len(batch)):
            msgs = self._read(self.policy.max_messages - len(batch), first_at)
            for msg in msgs:
                item = self._incoming(msg)
                if item is not None:
                    batch.append(item)
                    first_at = first_at or time.monotonic()
            self._update_lag()
            if not batch:
                return [], None
            if not msgs or self.policy.due(len(batch), first_at, time.monotonic()):
                break  # nothing more came within linger_s (or the batch is full or old): it goes
        return batch, first_at

    def _read(self, want: int, first_at: float | None) -> list[Message]:
        """Up to `want` messages: what is already fetched at once; else, for an empty batch, wait up to 0.5 s
        for the first one, and for a started batch up to linger_s for more. (librdkafka's consume() with a
        timeout returns only when it has `want` messages or the timeout is over: a lone message would
        always wait the whole timeout.)"""
        msgs = self.consumer.consume(num_messages=want, timeout=0)
        if msgs:
            return msgs
        if first_at is not None:
            return self.consumer.consume(num_messages=want, timeout=self.policy.wait_left(first_at, time.monotonic()))
        first = self.consumer.poll(0.5)  # returns as soon as a message (or an error event) is there
        if first is None:
            return []
        return [first, *self.consumer.consume(num_messages=want - 1, timeout=0)] if want > 1 else [first]

    def _incoming(self, msg: Message) -> Incoming | None:
        err = msg.error()
        if err is not None:
            if err.fatal():
                raise KafkaSetupError(f"Kafka consumer error (fatal): {err}")
            log.warning("Kafka consumer error", extra=fields(error=str(err)))
            return None
        ts_type, ts = msg.timestamp()
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        assert topic is not None and partition is not None and offset is not None  # a message without error has them
        return Incoming(Position(topic, partition, offset), msg.key(), msg.value(), ts if ts_type else None)

    def _handle(self, batch: list[Incoming], first_at: float | None) -> None:
        if self.summary.first_read_at is None:
            self.summary.first_read_at = time.time() - (time.monotonic() - first_at if first_at is not None else 0.0)
        self.summary.messages += len(batch)
        self.metrics.consumed.inc(len(batch))
        result = self._process(batch)
        if result is None:
            return  # stopping while a service is down: nothing committed, the batch is read again next time
        dead = [o.fate is Fate.DEAD for o in result.outcomes]
        problem = self.limit.check(dead)
        if problem:
            codes = Counter(o.code for o in result.outcomes if o.fate is Fate.DEAD)
            example = next(o.reason for o in result.outcomes if o.fate is Fate.DEAD)
            raise DeadLetterLimitExceeded(
                f"stopping: {problem}. Reasons in this batch: "
                f"{', '.join(f'{c} x{n}' for c, n in codes.most_common())}; e.g. {example}. This usually means a "
                f"configuration problem (wrong rucio.rse or storage, a new message format, the wrong topic), not "
                f"bad messages. Nothing of this batch was dead-lettered or committed: fix the cause and restart, "
                f"or raise dlq.max_ratio / dlq.max_consecutive if these messages really are bad.")
        letters = [(batch[i], o) for i, o in enumerate(result.outcomes) if o.fate is Fate.DEAD]
        self._send_dead_letters(letters)
        self._commit(batch)
        self.summary.last_commit_at = time.time()
        self.limit.record(dead)
        self._account(batch, result, first_at)

    def _process(self, batch: list[Incoming]) -> BatchResult | None:
        assert self.pipeline is not None
        backoff = Backoff(self.cfg.rucio.retry_initial_s, self.cfg.rucio.retry_max_s)
        while True:
            try:
                return self.pipeline.process(batch)
            except (RucioUnavailable, StorageUnavailable) as err:
                service = "rucio" if isinstance(err, RucioUnavailable) else "storage"
                self.metrics.retries.labels(service).inc()
                self.summary.retries += 1
                if self._past_shutdown_deadline():
                    log.error("stopping with a batch not done: nothing of it was committed, it will be read again",
                              extra=fields(messages=len(batch), error=str(err)))
                    self.summary.stopped = f"stop requested while {service} was unavailable"
                    return None
                delay = backoff.next()
                log.warning(f"{service} unavailable; batch will be retried, nothing committed",
                            extra=fields(service=service, error=str(err), retry_in_s=round(delay, 1),
                                         messages=len(batch), attempt=backoff.attempt))
                self._wait_paused(delay)

    def _past_shutdown_deadline(self) -> bool:
        return self._stop_at is not None and time.monotonic() - self._stop_at >= self.cfg.run.shutdown_timeout_s

    def _wait_paused(self, seconds: float) -> None:
        """Wait without reading further but still polling, so the group does not evict us."""
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                if self._past_shutdown_deadline():
                    break
                msg = self.consumer.poll(min(left, 0.5))
                if msg is not None:
                    item = self._incoming(msg)
                    if item is not None:
                        self._carry.append(item)  # never drop what was read: it goes first in the next batch
        finally:
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)

    def _send_dead_letters(self, letters: list[tuple[Incoming, Any]]) -> None:
        assert self.dlq is not None
        backoff = Backoff(self.cfg.rucio.retry_initial_s, self.cfg.rucio.retry_max_s)
        while True:
            try:
                self.dlq.send(letters)
                return
            except DeadLetterError as err:
                self.metrics.retries.labels("kafka").inc()
                if self._past_shutdown_deadline():
                    raise
                delay = backoff.next()
                log.warning("dead letters not stored; retrying, nothing committed",
                            extra=fields(error=str(err), retry_in_s=round(delay, 1)))
                self._wait_paused(delay)

    def _commit(self, batch: list[Incoming]) -> None:
        offsets = commit_offsets(m.position for m in batch)
        # Only partitions we still own: after a rebalance the new owner re-reads from its committed offset.
        tps = [TopicPartition(t, p, off) for (t, p), off in sorted(offsets.items()) if (t, p) in self._assigned]
        if not tps:
            return
        for attempt in range(3):
            try:
                self.consumer.commit(offsets=tps, asynchronous=False)
                for tp in tps:
                    self.metrics.committed_offset.labels(tp.topic, str(tp.partition)).set(tp.offset)
                return
            except KafkaException as err:
                log.warning("offset commit failed; Rucio holds the batch, so a replay only finds duplicates",
                            extra=fields(error=str(err), attempt=attempt + 1))
                time.sleep(0.5 * (attempt + 1))

    def _account(self, batch: list[Incoming], result: BatchResult, first_at: float | None) -> None:
        registered = result.count(Fate.REGISTERED)
        duplicates = result.count(Fate.DUPLICATE)
        dead = result.count(Fate.DEAD)
        self.summary.registered += registered
        self.summary.duplicates += duplicates
        self.summary.dead_lettered += dead
        self.summary.batches += 1
        self.summary.blocks_created += len(result.created_blocks)
        self.metrics.registered.inc(registered)
        self.metrics.duplicates.inc(duplicates)
        self.metrics.batches.inc()
        self.metrics.batch_size.observe(len(batch))
        self.metrics.blocks_created.inc(len(result.created_blocks))
        self.metrics.rules_added.inc(len(result.rules_added))
        for outcome in result.outcomes:
            if outcome.fate is Fate.DEAD:
                self.summary.dead_codes[outcome.code] += 1
                self.metrics.dead_lettered.labels(outcome.code).inc()
        seconds = time.monotonic() - first_at if first_at is not None else 0.0
        self.metrics.batch_seconds.observe(seconds)
        self.closer.observe(result.open_blocks)
        offsets = commit_offsets(m.position for m in batch)
        log.info("batch committed", extra=fields(
            messages=len(batch), registered=registered, duplicates=duplicates, dead_lettered=dead,
            blocks_created=result.created_blocks, rules_added=len(result.rules_added), seconds=round(seconds, 3),
            phases={k: round(v, 3) for k, v in result.seconds.items()},
            offsets={f"{t}/{p}": o for (t, p), o in offsets.items()}))
        for i, outcome in enumerate(result.outcomes):
            if outcome.fate is Fate.DEAD:
                pos = batch[i].position
                log.warning("dead-lettered", extra=fields(code=outcome.code, reason=outcome.reason, topic=pos.topic,
                                                          partition=pos.partition, offset=pos.offset))

    # -- state of the consumer --------------------------------------------------------------------

    def _partition_lag(self, tp: TopicPartition) -> int | None:
        """Messages published but not yet read in one partition; None when that cannot be known yet."""
        try:
            low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high is None or high < 0:  # no fetch answered yet (just assigned): ask the broker
                low, high = self.consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            [pos] = self.consumer.position([tp])
            offset = pos.offset
            if offset < 0:  # nothing read yet: we start from the committed offset, or the beginning
                [committed] = self.consumer.committed([tp], timeout=5)
                offset = committed.offset if committed.offset >= 0 else low
        except KafkaException:
            return None
        if high is None or high < 0 or offset < 0:
            return None
        return high - offset

    def _update_lag(self) -> bool:
        """Refresh the lag of every assigned partition; whether all of them are known."""
        known = True
        for topic, partition in list(self._assigned):
            lag = self._partition_lag(TopicPartition(topic, partition))
            if lag is None:
                known = False
                continue
            self._lag[(topic, partition)] = lag
            self.metrics.lag.labels(topic, str(partition)).set(lag)
        return known

    def _caught_up(self) -> bool:
        """Everything published so far was read: every assigned partition's lag is known and none is left.
        (Right after an assignment nothing is known yet: that is not caught up, or a restart would close
        a day's blocks before reading that day's remaining messages.)"""
        known = self._update_lag()
        return bool(self._ever_assigned) and known and all(
            self._lag.get(tp, 1) <= 0 for tp in self._assigned)

    def _close_due(self, caught_up: bool, *, force: bool = False) -> None:
        assert self.registrar is not None and self.pipeline is not None
        due = self.closer.due(self._now(), caught_up, force=force)
        # This instance has read its own partitions; others of the group may still hold these days' messages.
        if due and not group_lag.group_caught_up(self._group_conf, self.cfg.kafka.topic):
            log.info("blocks due, but the group has unread messages: not closing yet", extra=fields(blocks=len(due)))
            return
        for name in due:
            try:
                result = self.registrar.close_block(name)
            except RucioUnavailable as err:
                log.warning("could not close block; will try again", extra=fields(block=name, error=str(err)))
                continue
            self.closer.open.pop(name, None)
            self.pipeline.blocks[name] = BlockState(exists=True, is_open=False)
            self.summary.blocks_closed.append(name)
            self.metrics.blocks_closed.inc()
            added = list(getattr(result, "added", None) or [])
            self.metrics.rules_added.inc(len(added))
            log.info("block closed", extra=fields(block=name, rules_added=len(added),
                                                  decided=getattr(result, "decided", None)))

    def _shutdown(self) -> None:
        if self.consumer is not None:
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as err:
                log.warning("closing the Kafka consumer", extra=fields(error=str(err)))
        if self.dlq is not None:
            self.dlq.close()
        for part in (self.pipeline, self.checker, self.registrar):
            if part is not None:
                part.close()
        self.metrics.close()
        log.info("stopped", extra=fields(**self.summary.as_dict()))
