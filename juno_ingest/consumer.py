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
  4. ingest events (events.enabled) produced and confirmed: file_registered per file, block_created
     (publisher.py: at least once, in order per block);
  5. offsets committed: highest offset + 1 per partition (auto-commit is off).
A crash anywhere before 5 re-reads the batch after the restart; step 1 is idempotent, so the replay
registers nothing twice (duplicates are counted, not errors), and step 4 announces its files again.

When the consumer has read everything (idle) it closes the blocks whose day is over (plus
blocks.grace_s) and hands each to the policy engine (finalize_block). "Everything" means the whole
topic, not only the partitions this process owns: with several ingesters in one group, one that is
idle checks the group's committed offsets against every partition's end (group_lag.py) before
closing, so a day is never closed while another instance still holds that day's messages. Any
instance may close a block; closing twice is harmless (Rucio's set_status and the policy engine's
finalize are idempotent).

A message's path, forward: kafka_source (read, commit) → pipeline (edge.decode and messages.parse,
mapping, batching.classify: pure; registrar and storage_check: the adapters; narrowing when Rucio
refuses a chunk) → one Outcome per message → dlq (dead letters) → kafka_source.commit. This module only
orchestrates: retries with backoff, the dead-letter limit, closing blocks (closer), the summary.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from juno_common.clock import naive_utc
from juno_ingest.batching import Backoff, BatchPolicy, DlqLimit, commit_offsets
from juno_ingest.closer import Closer, naive
from juno_ingest.config import IngestConfig, kafka_common
from juno_ingest.dlq import DeadLetterError, DeadLetterProducer
from juno_ingest.events import IngestEvent
from juno_ingest.kafka_source import KafkaSetupError, KafkaSource
from juno_ingest.logs import RUCIO_CLIENT_LOGGER, fields
from juno_ingest.mapping import SCOPE
from juno_ingest.metrics import IngestMetrics
from juno_ingest.pipeline import BatchResult, Fate, Incoming, Pipeline
from juno_ingest.publisher import EventPublisher, EventPublishError, batch_events, duplicate_blocks
from juno_ingest.registrar import BlockState, PolicyRules, Registrar, RucioRefused, RucioUnavailable
from juno_ingest.storage_check import StorageChecker, StorageUnavailable
from juno_ingest.summary import RunSummary
from rucio_policy import naming

T = TypeVar("T")
log = logging.getLogger("juno_ingest.consumer")

class DeadLetterLimitExceeded(Exception):
    """Too many dead letters: most likely a configuration problem, not bad messages."""


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
        self.source = KafkaSource(cfg, self.metrics, self.policy, stopping=lambda: self.stopping,
                                  past_deadline=self._past_shutdown_deadline)
        self.registrar: Registrar | None = None
        self.pipeline: Pipeline | None = None
        self.checker: StorageChecker | None = None
        self.dlq: DeadLetterProducer | None = None
        self.events: EventPublisher | None = None
        self._closed_unannounced: list[str] = []  # closed blocks whose block_closed event is not out yet

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
                                 streams=frozenset(self.cfg.blocks.streams), file_metadata=self.cfg.rucio.file_metadata,
                                 future_tolerance_s=self.cfg.blocks.future_tolerance_s, now=self._now)
        log.info("connected to Rucio", extra=fields(account=account, rse=self.cfg.rucio.rse, storage=endpoint.url,
                                                    storage_check=self.cfg.storage_check.enabled,
                                                    rules=self.cfg.rules.apply))



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
        naive_since = naive_utc(since)  # Rucio's dates are naive UTC
        for name, state in states.items():
            if state.is_open:
                self.closer.add(name)
            elif state.closed_at is None or naive(state.closed_at) >= naive_since:
                try:
                    self.registrar.finalize(name)
                    finalized += 1
                    self._closed_unannounced.append(name)  # a crash may have come before its event
                except RucioUnavailable as err:
                    log.warning("could not finalize a closed block", extra=fields(block=name, error=str(err)))
        log.info("recent blocks", extra=fields(open=len(self.closer.open), finalized=finalized))

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, once: bool = False) -> RunSummary:
        """Consume until stopped (or, with once, until idle); the summary of what was done."""
        self.metrics.serve(self.cfg.metrics.host, self.cfg.metrics.port)
        try:
            self._connect_rucio()
            self.source.connect()
            self.dlq = DeadLetterProducer(kafka_common(self.cfg, consumer=False), self.cfg.dlq.topic,
                                          max_value_bytes=self.cfg.dlq.max_value_bytes)
            if self.cfg.events.enabled:
                self.events = EventPublisher(kafka_common(self.cfg, consumer=False), self.cfg.events.topic,
                                             timeout_s=self.cfg.events.timeout_s)
            self._recover_blocks()
            self._loop(once)
        finally:
            self._shutdown()
        return self.summary

    def _loop(self, once: bool) -> None:
        idle_since: float | None = None
        started = time.monotonic()
        while not self.stopping:
            batch, first_at = self.source.accumulate()
            if batch:
                self._handle(batch, first_at)
                idle_since = None
                continue
            if self.stopping:
                break
            # Idle: nothing came within a poll. Close what is due (if everything published was read).
            caught_up = self.source.caught_up()
            self._close_due(caught_up, force=once)
            if once:
                if not self.source.ever_assigned:
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
        dlq = self.dlq
        assert dlq is not None
        self._retrying("kafka", lambda: dlq.send(letters), DeadLetterError, "dead letters not stored")
        try:
            self._publish_batch_events(result)
        except (EventPublishError, RucioUnavailable) as err:
            log.error("stopping with a batch whose events are not out: nothing of it was committed, it will be "
                      "read and announced again", extra=fields(messages=len(batch), error=str(err)))
            self.summary.stopped = "stop requested while the event topic was unavailable"
            return
        self.source.commit(batch)
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
                self.source.wait_paused(delay)

    def _past_shutdown_deadline(self) -> bool:
        return self._stop_at is not None and time.monotonic() - self._stop_at >= self.cfg.run.shutdown_timeout_s

    def _retrying(self, service: str, call: Callable[[], T], errors: type[Exception] | tuple[type[Exception], ...],
                  what: str) -> T:
        """call() until it works, with backoff while the partitions are paused (nothing is committed
        meanwhile); past the shutdown deadline its error is raised."""
        backoff = Backoff(self.cfg.rucio.retry_initial_s, self.cfg.rucio.retry_max_s)
        while True:
            try:
                return call()
            except errors as err:
                self.metrics.retries.labels(service).inc()
                if self._past_shutdown_deadline():
                    raise
                delay = backoff.next()
                log.warning(f"{what}; retrying, nothing committed",
                            extra=fields(service=service, error=str(err), retry_in_s=round(delay, 1)))
                self.source.wait_paused(delay)

    def _publish_batch_events(self, result: BatchResult) -> None:
        """The batch's ingest events, confirmed by the broker (before its commit: at least once)."""
        if self.events is None:
            return
        assert self.registrar is not None
        registrar, publisher = self.registrar, self.events
        wanted = duplicate_blocks(result)
        confirmed = (self._retrying("rucio", lambda: registrar.attached(wanted), RucioUnavailable,
                                    "cannot confirm duplicates in Rucio for their events") if wanted else {})
        events = batch_events(result, rse=self.cfg.rucio.rse, at=self._now(), confirmed=confirmed)
        self._retrying("events", lambda: publisher.publish(events), EventPublishError, "ingest events not stored")
        self._count_events(events)

    def _count_events(self, events: list[IngestEvent]) -> None:
        self.summary.events_published += len(events)
        for kind in {e.kind for e in events}:
            self.metrics.events_published.labels(kind).inc(sum(1 for e in events if e.kind == kind))

    def _announce_closed(self) -> None:
        """block_closed for the blocks closed since the last call; a failure leaves them for the next one
        (logged and counted; closing itself is done and is not held up by the event topic)."""
        if self.events is None or not self._closed_unannounced:
            self._closed_unannounced.clear()
            return
        assert self.registrar is not None
        events = []
        try:
            for name in dict.fromkeys(self._closed_unannounced):
                files, size = self.registrar.block_totals(name)
                events.append(IngestEvent(kind="block_closed", scope=SCOPE, name=name, at=self._now(),
                                          rse=self.cfg.rucio.rse, stream=naming.parse_block(name).stream_key,
                                          bytes=size, files=files))
            self.events.publish(events)
        except (RucioUnavailable, EventPublishError) as err:
            self.metrics.retries.labels("events").inc()
            log.warning("block_closed events not out yet; trying again later",
                        extra=fields(blocks=len(self._closed_unannounced), error=str(err)))
            return
        self._closed_unannounced.clear()
        self._count_events(events)

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
            narrowed_chunks=result.narrowed, narrowing_calls=result.narrowing_calls,
            phases={k: round(v, 3) for k, v in result.seconds.items()},
            offsets={f"{t}/{p}": o for (t, p), o in offsets.items()}))
        for i, outcome in enumerate(result.outcomes):
            if outcome.fate is Fate.DEAD:
                pos = batch[i].position
                log.warning("dead-lettered", extra=fields(code=outcome.code, reason=outcome.reason, topic=pos.topic,
                                                          partition=pos.partition, offset=pos.offset))

    # -- state of the consumer --------------------------------------------------------------------

    def _close_due(self, caught_up: bool, *, force: bool = False) -> None:
        assert self.registrar is not None and self.pipeline is not None
        due = self.closer.due(self._now(), caught_up, force=force)
        # This instance has read its own partitions; others of the group may still hold these days' messages.
        if due and not self.source.group_caught_up():
            log.info("blocks due, but the group has unread messages: not closing yet", extra=fields(blocks=len(due)))
            return
        if not due:
            return self._announce_closed()
        try:
            results = self.registrar.close_blocks(due)
        except RucioUnavailable as err:
            log.warning("could not close blocks; will try again", extra=fields(blocks=due, error=str(err)))
            return self._announce_closed()
        for name, result in zip(due, results, strict=True):
            self.closer.open.pop(name, None)
            self._closed_unannounced.append(name)
            self.pipeline.blocks[name] = BlockState(exists=True, is_open=False)
            self.summary.blocks_closed.append(name)
            self.metrics.blocks_closed.inc()
            added = list(getattr(result, "added", None) or [])
            self.metrics.rules_added.inc(len(added))
            log.info("block closed", extra=fields(block=name, rules_added=len(added),
                                                  decided=getattr(result, "decided", None)))
        self._announce_closed()

    def _shutdown(self) -> None:
        self.source.close()
        if self.events is not None:
            if self.registrar is not None:
                self._announce_closed()
            self.events.close()
        if self.dlq is not None:
            self.dlq.close()
        for part in (self.pipeline, self.checker, self.registrar):
            if part is not None:
                part.close()
        self.metrics.close()
        log.info("stopped", extra=fields(**self.summary.as_dict()))
