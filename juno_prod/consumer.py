"""Keep-up's trigger: juno-ingest's events on Kafka (juno_ingest.events, version 1).

A thread polls the topic; a `file_registered` (or `block_closed`) event of a stream some keep-up
transformation reads wakes the daemon, whose next cycle looks at that block in Rucio (named by the event;
the stream containers are walked only every few minutes, engine.KEEPUP_WALK_S) and creates the jobs within
seconds. Events are hints, never the record: offsets are committed only after the cycle that followed them
committed its work (at-least-once), and the periodic walk of the streams catches anything an event missed.
Messages this contract cannot read are counted and skipped (they hold no work to lose).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from juno_common.logs import fields
from juno_ingest import events as ievents
from juno_prod import metrics

log = logging.getLogger("juno_prod.consumer")


def wanted(event: ievents.IngestEvent, streams: set[str]) -> bool:
    """Does an event concern a keep-up stream? (pure)"""
    if event.kind not in ("file_registered", "block_closed"):
        return False
    return event.stream in streams if event.stream else False


class EventConsumer:
    def __init__(self, bootstrap: str, topic: str, streams: Callable[[], set[str]], wake: threading.Event,
                 group: str = "juno-prod", hint: Callable[[str], None] = lambda did: None) -> None:
        from confluent_kafka import Consumer

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "session.timeout.ms": 6000})
        self.consumer.subscribe([topic])
        self.streams = streams
        self.wake = wake
        self.hint = hint  # the block an event named (the engine looks at it without walking the streams)
        self.pending = False
        self.last_event_at: float | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="juno-prod-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        import time

        while not self._stop.is_set():
            with self._lock:
                msg: Any = self.consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                log.warning("kafka", extra=fields(error=str(msg.error())))
                continue
            try:
                event = ievents.parse(msg.value())
            except ievents.InvalidEvent as err:
                metrics.EVENTS.labels("invalid").inc()
                log.warning("event skipped", extra=fields(error=str(err), offset=msg.offset()))
                self.pending = True
                continue
            metrics.EVENTS.labels(event.kind).inc()
            self.pending = True
            if wanted(event, self.streams()):
                self.last_event_at = time.time()
                log.info("event", extra=fields(kind=event.kind, did=event.did, dataset=event.dataset))
                self.hint(event.block)
                self.wake.set()

    def commit(self) -> None:
        """After a cycle committed its work: everything consumed so far is done."""
        if not self.pending:
            return
        with self._lock:
            try:
                self.consumer.commit(asynchronous=False)
                self.pending = False
            except Exception as err:  # noqa: BLE001 - nothing consumed yet, or a rebalance: next time
                log.debug("commit", extra=fields(error=str(err)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.commit()
        self.consumer.close()
