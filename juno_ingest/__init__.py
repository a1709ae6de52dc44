"""juno-ingest: SPADE file-arrival messages from Kafka become Rucio DIDs at IHEP, exactly once.

Modules: messages (the wire format), mapping (message → DIDs, pure), batching (the consumer's
decisions, pure), storage_check (xrdfs), registrar (Rucio), pipeline (one batch), dlq, consumer (the
service loop), metrics, config, logs, simulate (SPADE simulator), cli.
"""

__version__ = "0.1.0"
