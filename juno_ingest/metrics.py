"""Every Prometheus metric of the ingester, declared in one place (arroyo's metric_defs).

Served on loopback by default (`metrics.host`/`metrics.port`, port 0 = off): scrape
http://127.0.0.1:9464/metrics. Each Ingester gets its own registry, so tests and several
ingesters in one process never share counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

NAMESPACE = "juno_ingest"
_BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class MetricsPortError(Exception):
    """The metrics endpoint cannot listen where the configuration says."""


@dataclass
class IngestMetrics:
    registry: CollectorRegistry
    consumed: Counter
    registered: Counter
    duplicates: Counter
    dead_lettered: Counter
    batches: Counter
    batch_seconds: Histogram
    batch_size: Histogram
    lag: Gauge
    retries: Counter
    blocks_created: Counter
    blocks_closed: Counter
    rules_added: Counter
    committed_offset: Gauge
    events_published: Counter
    _server: Any = None

    @classmethod
    def create(cls) -> IngestMetrics:
        reg = CollectorRegistry(auto_describe=True)
        return cls(
            registry=reg,
            consumed=Counter("messages_consumed", "Kafka messages read", namespace=NAMESPACE, registry=reg),
            registered=Counter("files_registered", "Files newly registered and attached in Rucio",
                               namespace=NAMESPACE, registry=reg),
            duplicates=Counter("duplicates", "Messages for files Rucio already had with the same size and adler32",
                               namespace=NAMESPACE, registry=reg),
            dead_lettered=Counter("dead_lettered", "Messages sent to the dead-letter topic, by reason code",
                                  ["reason"], namespace=NAMESPACE, registry=reg),
            batches=Counter("batches", "Batches committed", namespace=NAMESPACE, registry=reg),
            batch_seconds=Histogram("batch_seconds", "Time from a batch's first message read to its commit",
                                    namespace=NAMESPACE, registry=reg, buckets=_BATCH_BUCKETS),
            batch_size=Histogram("batch_messages", "Messages per batch", namespace=NAMESPACE, registry=reg,
                                 buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000)),
            lag=Gauge("consumer_lag", "Messages published but not yet read, per partition",
                      ["topic", "partition"], namespace=NAMESPACE, registry=reg),
            retries=Counter("retries", "Batch attempts that failed because a service was unavailable, by service",
                            ["service"], namespace=NAMESPACE, registry=reg),
            blocks_created=Counter("blocks_created", "Blocks (datasets) created", namespace=NAMESPACE, registry=reg),
            blocks_closed=Counter("blocks_closed", "Blocks closed", namespace=NAMESPACE, registry=reg),
            rules_added=Counter("rules_added", "Replication rules added by the policy engine",
                                namespace=NAMESPACE, registry=reg),
            committed_offset=Gauge("committed_offset", "Last committed offset, per partition",
                                   ["topic", "partition"], namespace=NAMESPACE, registry=reg),
            events_published=Counter("events_published", "Ingest events the broker confirmed, by kind "
                                     "(failed attempts count in retries{service=\"events\"})",
                                     ["kind"], namespace=NAMESPACE, registry=reg),
        )

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics on host:port (loopback by default); port 0 serves nothing."""
        if not port:
            return
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            raise MetricsPortError(f"cannot serve metrics on {host}:{port} ({err.strerror}): another process "
                                   "(an ingester already running?) has it; set metrics.port, 0 for none") from None

    def close(self) -> None:
        """Stop serving /metrics (the ingester is stopping)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
