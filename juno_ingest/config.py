"""The ingester's settings: etc/ingest.yaml, then environment overrides, checked once at start-up.

Every setting `<section>.<key>` can be overridden by the environment variable
JUNO_INGEST_<SECTION>_<KEY> (upper case), e.g. JUNO_INGEST_KAFKA_TOPIC, JUNO_INGEST_BATCH_MAX_MESSAGES,
JUNO_INGEST_RUCIO_PASSWORD; values are read like YAML scalars (5, 0.5, true, text) and lists are
comma-separated. librdkafka settings pass through: `kafka.settings` in the file, or
JUNO_INGEST_KAFKA_SETTING_<NAME> with `_` for `.` (JUNO_INGEST_KAFKA_SETTING_SASL_PASSWORD →
sasl.password), so production adds TLS/SASL without touching code.

Rucio authentication is Rucio's own: the rucio.cfg that RUCIO_CONFIG (or `rucio.config`) points to;
`rucio.account`, `rucio.auth_type`, `rucio.username`/`password` override its [client] section.
Errors name the file and line (or the variable) and what is expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node

from juno_common.etc import etc_file
from juno_common.yamlfile import Issue, Reader, compose, line_of, value_of

ENV_PREFIX = "JUNO_INGEST_"
KAFKA_SETTING_ENV = ENV_PREFIX + "KAFKA_SETTING_"
DEFAULT_FILE = etc_file("ingest.yaml")
CONFIG_ENV = ENV_PREFIX + "CONFIG"


class ConfigError(ValueError):
    """The configuration is wrong; the message lists every problem with where it is."""


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    topic: str = "spade.file-arrived"
    group_id: str = "juno-ingest"
    # librdkafka settings for the consumer and the dead-letter producer (security.protocol, sasl.*, ssl.*)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DlqSettings:
    topic: str = "spade.file-arrived.dlq"
    max_ratio: float = 0.5
    window: int = 1000
    min_messages: int = 100
    max_consecutive: int = 500
    max_value_bytes: int = 262144


@dataclass(frozen=True)
class EventSettings:
    enabled: bool = True
    topic: str = "juno.ingest.events"
    timeout_s: float = 30.0


@dataclass(frozen=True)
class BatchSettings:
    max_messages: int = 2000
    max_wait_s: float = 0.5
    linger_s: float = 0.05


@dataclass(frozen=True)
class RucioSettings:
    rse: str = "IHEP-EOS"
    config: str | None = None
    account: str | None = None
    auth_type: str | None = None
    username: str | None = None
    password: str | None = None
    bulk_size: int = 500
    parallel: int = 2
    timeout_s: float = 120.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 30.0
    file_metadata: bool = False


@dataclass(frozen=True)
class BlockSettings:
    grace_s: float = 21600.0
    future_tolerance_s: float = 3600.0
    streams: list[str] = field(default_factory=list)
    recover_days: float = 7.0
    close_check_s: float = 60.0


@dataclass(frozen=True)
class StorageCheckSettings:
    enabled: bool = True
    scheme: str = "root"
    parallel: int = 2
    chunk: int = 500
    timeout_s: float = 60.0
    listing_ttl_s: float = 60.0


@dataclass(frozen=True)
class RulesSettings:
    apply: bool = True
    policy: str | None = None


@dataclass(frozen=True)
class MetricsSettings:
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class RunSettings:
    once_idle_s: float = 5.0
    shutdown_timeout_s: float = 30.0
    log_level: str = "INFO"


@dataclass(frozen=True)
class IngestConfig:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    dlq: DlqSettings = field(default_factory=DlqSettings)
    events: EventSettings = field(default_factory=EventSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    rucio: RucioSettings = field(default_factory=RucioSettings)
    blocks: BlockSettings = field(default_factory=BlockSettings)
    storage_check: StorageCheckSettings = field(default_factory=StorageCheckSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    run: RunSettings = field(default_factory=RunSettings)
    source: str = "defaults"

    def with_overrides(self, **sections: Mapping[str, Any]) -> IngestConfig:
        """A copy with some settings changed, e.g. with_overrides(kafka={"topic": "t"}) (tests, CLI flags)."""
        changed = {name: dataclasses.replace(getattr(self, name), **dict(values)) for name, values in sections.items()}
        return dataclasses.replace(self, **changed)

    def as_dict(self, *, hide_secrets: bool = True) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if hide_secrets:
            if out["rucio"].get("password"):
                out["rucio"]["password"] = "***"
            out["kafka"]["settings"] = {k: ("***" if "password" in k or "secret" in k else v)
                                        for k, v in out["kafka"]["settings"].items()}
        return out


SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(IngestConfig)[f.name]
                             for f in dataclasses.fields(IngestConfig) if f.name != "source"}

# Limits checked after loading: (section, key) → (minimum, maximum or None)
_RANGES: dict[tuple[str, str], tuple[float, float | None]] = {
    ("dlq", "max_ratio"): (0.0, 1.0), ("dlq", "window"): (1, None), ("dlq", "min_messages"): (1, None),
    ("dlq", "max_consecutive"): (1, None), ("dlq", "max_value_bytes"): (1024, 900_000),
    ("events", "timeout_s"): (1.0, None), ("batch", "max_messages"): (1, 100_000),
    ("batch", "max_wait_s"): (0.0, None), ("batch", "linger_s"): (0.0, None),
    ("rucio", "bulk_size"): (1, 1000), ("rucio", "parallel"): (1, 32), ("rucio", "timeout_s"): (1.0, None),
    ("rucio", "retry_initial_s"): (0.01, None), ("rucio", "retry_max_s"): (0.01, None),
    ("blocks", "grace_s"): (0.0, None), ("blocks", "future_tolerance_s"): (0.0, None),
    ("blocks", "recover_days"): (0.0, None), ("blocks", "close_check_s"): (0.1, None),
    ("storage_check", "parallel"): (1, 64), ("storage_check", "chunk"): (1, 10_000),
    ("storage_check", "timeout_s"): (1.0, None), ("storage_check", "listing_ttl_s"): (0.0, 3600.0),
    ("metrics", "port"): (0, 65535), ("run", "once_idle_s"): (0.1, None),
    ("run", "shutdown_timeout_s"): (0.0, None),
}


def _type_name(kind: Any) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(kind, str(kind))


def _coerce(kind: Any, value: Any) -> tuple[bool, Any, str]:
    """(ok, value, expected) for a value read from YAML or the environment."""
    args = typing.get_args(kind)
    if args and type(None) in args:  # X | None
        if value is None:
            return True, None, ""
        kind = next(a for a in args if a is not type(None))
    origin = typing.get_origin(kind)
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return True, list(value), ""
        return False, value, "a list of text"
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(v, str | int | float | bool) for v in value.values()):
            return True, {str(k): v for k, v in value.items()}, ""
        return False, value, "a mapping of librdkafka settings to single values"
    if kind is bool:
        return (True, value, "") if isinstance(value, bool) else (False, value, "true or false")
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok, value, _type_name(int)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value, _type_name(float)
    if kind is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return True, str(value), ""
        return False, value, "text"
    return False, value, str(kind)


def _check_range(section: str, key: str, value: Any) -> str | None:
    limits = _RANGES.get((section, key))
    if limits is None or value is None:
        return None
    low, high = limits
    if value < low or (high is not None and value > high):
        upper = f" and at most {high:g}" if high is not None else ""
        return f"must be at least {low:g}{upper}, got {value}"
    return None


def load(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> IngestConfig:
    """Settings from `path` (default: $JUNO_INGEST_CONFIG or etc/ingest.yaml), then the environment."""
    env = os.environ if env is None else env
    if path is None:
        path = env.get(CONFIG_ENV) or DEFAULT_FILE
    path = Path(path)
    issues: list[Issue] = []
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    node, problems = compose(path, str(path))
    issues += problems
    if node is not None:
        _read_file(node, str(path), values, issues)
    env_issues: list[str] = []
    _read_env(env, values, env_issues)
    lines = [str(i) for i in issues] + env_issues
    if lines:
        raise ConfigError("the ingest configuration has problems:\n" + "\n".join(f"  {line}" for line in lines))
    sections = {name: kind(**values[name]) for name, kind in SECTIONS.items()}
    return IngestConfig(**sections, source=str(path))


def _read_file(node: Node, file: str, values: dict[str, dict[str, Any]], issues: list[Issue]) -> None:
    reader = Reader(file, issues)
    top = reader.mapping(node, "", allowed=list(SECTIONS))
    for section, (_, section_node) in top.items():
        kind = SECTIONS[section]
        hints = typing.get_type_hints(kind)
        if not isinstance(section_node, MappingNode):
            if value_of(section_node) is None:
                continue  # an empty section: all defaults
        entries = reader.mapping(section_node, section, allowed=list(hints))
        for key, (_, value_node) in entries.items():
            value = value_of(value_node)
            ok, coerced, expected = _coerce(hints[key], value)
            if not ok:
                issues.append(Issue(file, line_of(value_node), f"{section}.{key}", f"expected {expected}, found "
                                                                                    f"{value!r}"))
                continue
            problem = _check_range(section, key, coerced)
            if problem:
                issues.append(Issue(file, line_of(value_node), f"{section}.{key}", problem))
                continue
            values[section][key] = coerced


def _read_env(env: Mapping[str, str], values: dict[str, dict[str, Any]], issues: list[str]) -> None:
    known: dict[str, tuple[str, str, Any]] = {}
    for section, kind in SECTIONS.items():
        for key, hint in typing.get_type_hints(kind).items():
            known[f"{ENV_PREFIX}{section}_{key}".upper()] = (section, key, hint)
    for var, text in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        if var.startswith(KAFKA_SETTING_ENV):
            name = var[len(KAFKA_SETTING_ENV):].lower().replace("_", ".")
            settings = dict(values["kafka"].get("settings", {}))
            settings[name] = text
            values["kafka"]["settings"] = settings
            continue
        if var not in known:
            close = difflib.get_close_matches(var, list(known), n=1)
            hint = (f"did you mean {close[0]}?" if close
                    else f"settings are {ENV_PREFIX}<SECTION>_<KEY>, see etc/ingest.yaml")
            issues.append(f"environment {var}: unknown setting ({hint})")
            continue
        section, key, hint = known[var]
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        if typing.get_origin(hint) is list or hint == "list[str]":
            value = text
        ok, coerced, expected = _coerce(hint, value)
        if not ok and isinstance(value, int | float) and "text" in expected:
            ok, coerced = True, text
        if not ok:
            issues.append(f"environment {var}: expected {expected}, found {text!r}")
            continue
        problem = _check_range(section, key, coerced)
        if problem:
            issues.append(f"environment {var}: {problem}")
            continue
        values[section][key] = coerced


# librdkafka properties only a consumer knows: kept out of the producer's and admin client's settings
# (librdkafka warns about each one there).
CONSUMER_ONLY = frozenset({
    "session.timeout.ms", "heartbeat.interval.ms", "max.poll.interval.ms", "auto.offset.reset", "group.id",
    "group.instance.id", "group.protocol", "group.remote.assignor", "partition.assignment.strategy",
    "fetch.min.bytes", "fetch.max.bytes", "fetch.wait.max.ms", "fetch.error.backoff.ms", "max.partition.fetch.bytes",
    "isolation.level", "auto.commit.interval.ms", "queued.min.messages", "queued.max.messages.kbytes",
    "check.crcs", "enable.auto.commit", "enable.auto.offset.store", "enable.partition.eof",
})


def kafka_common(cfg: IngestConfig, *, consumer: bool = True) -> dict[str, Any]:
    """librdkafka settings: bootstrap plus the pass-through (for a producer: without consumer-only ones)."""
    conf: dict[str, Any] = {"bootstrap.servers": cfg.kafka.bootstrap_servers}
    conf.update({k: v for k, v in cfg.kafka.settings.items() if consumer or k not in CONSUMER_ONLY})
    return conf
