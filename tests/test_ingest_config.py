"""Settings: etc/ingest.yaml, environment overrides, errors that say where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from juno_ingest.config import DEFAULT_FILE, ConfigError, kafka_common, load


def test_shipped_file_loads() -> None:
    cfg = load(DEFAULT_FILE, env={})
    assert cfg.kafka.topic == "spade.file-arrived"
    assert cfg.rucio.rse == "IHEP-EOS" and cfg.rucio.account == "juno_ingest"
    assert cfg.storage_check.enabled and cfg.rules.apply
    assert cfg.metrics.host == "127.0.0.1"
    assert 1 <= cfg.rucio.bulk_size <= 1000


def test_environment_overrides() -> None:
    env = {"JUNO_INGEST_KAFKA_TOPIC": "t1", "JUNO_INGEST_BATCH_MAX_MESSAGES": "50",
           "JUNO_INGEST_STORAGE_CHECK_ENABLED": "false", "JUNO_INGEST_BLOCKS_STREAMS": "JUNODAQ.a, JUNODAQ.b",
           "JUNO_INGEST_KAFKA_SETTING_SASL_PASSWORD": "s3cret", "JUNO_INGEST_KAFKA_SETTING_SESSION_TIMEOUT_MS": "7000",
           "JUNO_INGEST_RUCIO_PASSWORD": "12345", "JUNO_INGEST_BATCH_MAX_WAIT_S": "2"}
    cfg = load(DEFAULT_FILE, env=env)
    assert cfg.kafka.topic == "t1" and cfg.batch.max_messages == 50 and cfg.batch.max_wait_s == 2.0
    assert cfg.storage_check.enabled is False
    assert cfg.blocks.streams == ["JUNODAQ.a", "JUNODAQ.b"]
    assert cfg.rucio.password == "12345"  # numbers-looking text stays text
    assert cfg.kafka.settings["sasl.password"] == "s3cret"
    assert kafka_common(cfg)["session.timeout.ms"] == "7000"
    assert "session.timeout.ms" not in kafka_common(cfg, consumer=False)  # consumer-only: not for producers
    assert kafka_common(cfg, consumer=False)["sasl.password"] == "s3cret"
    assert cfg.as_dict()["kafka"]["settings"]["sasl.password"] == "***"
    assert cfg.as_dict()["rucio"]["password"] == "***"


def test_file_errors_say_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text("kafka:\n  topik: x\nbatch:\n  max_messages: lots\n  max_wait_s: -1\nrucio:\n  bulk_size: 5000\n")
    with pytest.raises(ConfigError) as err:
        load(path, env={})
    text = str(err.value)
    assert f"{path}:2: kafka.topik: unknown key (did you mean 'topic'?" in text
    assert f"{path}:4: batch.max_messages: expected a whole number, found 'lots'" in text
    assert f"{path}:5: batch.max_wait_s: must be at least 0" in text
    assert f"{path}:7: rucio.bulk_size: must be at least 1 and at most 1000, got 5000" in text


def test_environment_errors() -> None:
    with pytest.raises(ConfigError, match="JUNO_INGEST_BATCH_MAX_MESAGES: unknown setting .did you mean "
                                          "JUNO_INGEST_BATCH_MAX_MESSAGES"):
        load(DEFAULT_FILE, env={"JUNO_INGEST_BATCH_MAX_MESAGES": "5"})
    with pytest.raises(ConfigError, match="JUNO_INGEST_RUCIO_PARALLEL: expected a whole number"):
        load(DEFAULT_FILE, env={"JUNO_INGEST_RUCIO_PARALLEL": "many"})


def test_missing_file_and_empty_sections(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load(tmp_path / "nope.yaml", env={})
    path = tmp_path / "min.yaml"
    path.write_text("kafka:\nrucio:\n  rse: X\n")
    cfg = load(path, env={})
    assert cfg.rucio.rse == "X" and cfg.kafka.topic == "spade.file-arrived"


def test_overrides_copy() -> None:
    cfg = load(DEFAULT_FILE, env={}).with_overrides(kafka={"topic": "x"}, run={"once_idle_s": 1.0})
    assert cfg.kafka.topic == "x" and cfg.run.once_idle_s == 1.0 and cfg.kafka.group_id == "juno-ingest"
