"""Helpers the live ingest tests share (test_ingest_live, _scaleout, _hostile_live, test_events_live):
unique names, the ingester's configuration for a test, the ingester as a subprocess, reading topics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from juno_ingest import simulate as sim
from juno_ingest.config import DEFAULT_FILE, IngestConfig
from juno_ingest.config import load as load_config
from juno_ingest.storage_check import Endpoint

REPO = Path(__file__).resolve().parents[1]


def unique_tag() -> str:
    return uuid.uuid4().hex[:8]


def unique_streams(n: int) -> tuple[str, ...]:
    return tuple(f"JUNODAQ.t{uuid.uuid4().hex[:7]}" for _ in range(n))


def endpoint_of(grid: Any) -> Endpoint:
    """The IHEP-EOS storage as the ingester's storage check sees it."""
    proto = grid.topo.rse("IHEP-EOS").protocols["local"]
    return Endpoint(f"{proto.hostname}:{proto.port}", "/" + proto.prefix.strip("/"))


def ingest_config(grid: Any, topic: str, streams: tuple[str, ...], **sections: dict[str, Any]) -> IngestConfig:
    cfg = load_config(DEFAULT_FILE, env={})
    base: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": grid.cfg.kafka_bootstrap, "topic": topic, "group_id": f"g-{topic}"},
        "dlq": {"topic": f"{topic}.dlq"},
        "events": {"topic": f"{topic}.events"},
        "blocks": {"streams": list(streams), "grace_s": 0.0, "close_check_s": 1.0},
        "metrics": {"port": 0},
        "run": {"once_idle_s": 2.0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return cfg.with_overrides(**base)


def child_env(cfg: IngestConfig) -> dict[str, str]:
    """The same settings for a `python -m juno_ingest` child, through JUNO_INGEST_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUNO_INGEST_")}
    for section, values in cfg.as_dict(hide_secrets=False).items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if key == "settings" or value is None:
                continue
            text = ",".join(value) if isinstance(value, list) else str(value).lower() if isinstance(value, bool) \
                else str(value)
            env[f"JUNO_INGEST_{section}_{key}".upper()] = text
    return env


def publish_plan(grid: Any, plan: sim.SimPlan, topic: str, messages: list[sim.SimMessage] | None = None) -> None:
    sim.ensure_topic(grid.cfg.kafka_bootstrap, topic, partitions=3)
    sim.publish(plan.messages if messages is None else messages, grid.cfg.kafka_bootstrap, topic)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def utc_today() -> Any:
    return datetime.now(UTC).date()


def read_topic(bootstrap: str, topic: str, idle_s: float = 4.0) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """(partition, offset, key, value) of every message in a topic, read until nothing came for idle_s."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{unique_tag()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000})
    out: list[tuple[int, int, bytes | None, bytes | None]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
                    last = time.monotonic()
            if not consumer.assignment() and time.monotonic() < deadline:  # joining the group takes seconds
                last = time.monotonic()
    finally:
        consumer.close()
    return sorted(out, key=lambda m: (m[0], m[1]))


def read_originals(bootstrap: str, topic: str) -> dict[tuple[int, int], bytes | None]:
    """(partition, offset) → value of every message in a topic."""
    return {(partition, offset): value for partition, offset, _key, value in read_topic(bootstrap, topic)}


def read_events(bootstrap: str, topic: str, idle_s: float = 4.0) -> list[tuple[int, bytes | None, Any]]:
    """(partition, key, parsed IngestEvent) of an ingest-event topic, in each partition's order; every
    message must pass the contract (events.parse raises otherwise)."""
    from juno_ingest import events

    return [(partition, key, events.parse(value or b"")) for partition, _offset, key, value
            in read_topic(bootstrap, topic, idle_s)]


class Child:
    """`python -m juno_ingest run` in a subprocess (the grid's namespace is inherited), logs to a file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self.start = log.stat().st_size if log.exists() else 0
        self.fh = open(log, "ab")  # noqa: SIM115 - closed in wait/kill
        self.proc = subprocess.Popen([sys.executable, "-m", "juno_ingest", "run", "--json", *args], env=env,
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=self.fh)

    def events(self) -> list[dict[str, Any]]:
        with open(self.log, "rb") as fh:
            fh.seek(self.start)
            out = []
            for line in fh.read().decode(errors="replace").splitlines():
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
            return out

    def wait_for(self, msg: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("msg") == msg for e in self.events()):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.fh.close()

    def finish(self, timeout: float) -> tuple[int, dict[str, Any]]:
        out, _ = self.proc.communicate(timeout=timeout)
        self.fh.close()
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        return self.proc.returncode, (json.loads(lines[-1]) if lines else {})
