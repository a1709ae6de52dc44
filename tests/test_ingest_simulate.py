"""The SPADE simulator's plan (pure) and the CLI driven with click's CliRunner (no services)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from click.testing import CliRunner

from juno_ingest import messages
from juno_ingest.cli import main
from juno_ingest.mapping import plan_file
from juno_ingest.simulate import MALFORMED, SimSpec, make_plan

NOW = datetime(2025, 10, 10, 12, 0, tzinfo=UTC)


def spec(**changes: object) -> SimSpec:
    values: dict[str, object] = {"files": 120, "size": 64, "days": 3, "streams": ("JUNODAQ.sa", "JUNODAQ.sb"),
                                 "seed": 7, "files_per_run": 25}
    values.update(changes)
    return SimSpec(**values)  # type: ignore[arg-type]


def test_plan_spreads_files_over_days_and_streams() -> None:
    plan = make_plan(spec(), now=NOW)
    blocks = plan.expected_blocks()
    assert sorted(blocks) == [f"block.JUNODAQ.{s}.202510{d:02d}" for s in ("sa", "sb") for d in (8, 9, 10)]
    assert all(len(v) == 20 for v in blocks.values())
    assert len({f.lfn for f in plan.files}) == 120
    assert max(f.received_at for f in plan.files) < NOW  # today's files arrived before now
    # A new run every 25 files of a stream; streams share run numbers, as the DAQ writes all streams of a run.
    assert len({f.run for f in plan.files}) == 3


def test_every_valid_message_parses_and_maps_to_its_block() -> None:
    plan = make_plan(spec(duplicates=10, reorder=8), now=NOW)
    for msg in plan.messages:
        parsed = messages.parse(msg.value)
        assert isinstance(parsed, messages.SpadeMessage)
        assert plan_file(parsed).block.name == msg.block
        assert parsed.path == f"/eos/juno/dci/{plan_file(parsed).path}"


def test_plan_is_reproducible() -> None:
    a, b = make_plan(spec(malformed=5), now=NOW), make_plan(spec(malformed=5), now=NOW)
    assert [m.value for m in a.messages] == [m.value for m in b.messages]
    assert make_plan(spec(seed=8), now=NOW).files[0].lfn != a.files[0].lfn


def test_duplicates_and_conflicts_come_after_their_original() -> None:
    plan = make_plan(spec(duplicates=30, conflicts=10, reorder=20), now=NOW)
    first_seen: dict[str, int] = {}
    for i, msg in enumerate(plan.messages):
        if msg.kind == "valid":
            first_seen[msg.lfn or ""] = i
        elif msg.kind in ("duplicate", "conflict"):
            assert msg.lfn in first_seen, f"{msg.kind} before its original"
    assert plan.counts() == {"valid": 120, "duplicate": 30, "conflict": 10}


def test_malformed_covers_every_kind_with_its_code() -> None:
    plan = make_plan(spec(malformed=2 * len(MALFORMED)), now=NOW)
    junk = [m for m in plan.messages if m.kind.startswith("malformed:")]
    assert {m.kind.split(":")[1] for m in junk} == set(MALFORMED)
    for msg in junk:
        parsed = messages.parse(msg.value)
        kind = msg.kind.split(":")[1]
        if kind in ("not_on_storage", "size_mismatch", "path_mismatch"):
            assert isinstance(parsed, messages.SpadeMessage)  # only Rucio/storage can tell
        else:
            assert isinstance(parsed, messages.InvalidMessage) and parsed.code == msg.code, (kind, parsed)
    assert len(plan.extra_files) == 2  # the size_mismatch files are written, never registered


def test_cli_help_teaches() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "juno-ingest simulate" in result.output and "juno-ingest run --once" in result.output
    for command in ("run", "simulate", "config", "dlq"):
        sub = CliRunner().invoke(main, [command, "--help"])
        assert sub.exit_code == 0, sub.output
    assert "SIGTERM" in CliRunner().invoke(main, ["run", "--help"]).output


def test_cli_simulate_dry_run_json() -> None:
    result = CliRunner().invoke(main, ["simulate", "--dry-run", "--json", "--files", "12", "--days", "2",
                                       "--last-day", "2025-10-09", "--stream", "JUNODAQ.cli", "--malformed", "3",
                                       "--seed", "1"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["dry_run"] and out["files"] == 12 and out["messages"] == 15
    assert out["blocks"] == {"block.JUNODAQ.cli.20251008": 6, "block.JUNODAQ.cli.20251009": 6}
    assert out["expect"] == {"registered": 12, "duplicate": 0, "dead": 3}
    assert out["days"] == [str(date(2025, 10, 8)), str(date(2025, 10, 9))]


def test_cli_errors_have_exit_codes(tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch:\n  max_messages: 0\n")
    result = CliRunner().invoke(main, ["config", "--config", str(bad), "--text"])
    assert result.exit_code == 2
    assert "bad.yaml:2: batch.max_messages: must be at least 1" in result.output
    result = CliRunner().invoke(main, ["simulate", "--dry-run", "--size", "lots"])
    assert result.exit_code == 2 and "write a size like" in result.output
    result = CliRunner().invoke(main, ["simulate", "--dry-run", "--stream", "nodot"])
    assert result.exit_code == 1 and "not a stream key" in result.output


def test_cli_config_json_hides_secrets() -> None:
    result = CliRunner().invoke(main, ["config", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["rucio"]["password"] == "***"
