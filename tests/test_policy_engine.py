"""The replication engine and `juno-policy` against the live grid's Rucio.

Every test works on blocks of its own stream (raw:block.JUNODAQ.engine_<run>_<n>.<day>) and plans
with a name filter on it, so other data on the shared grid is neither read into nor changed by it.
The ingester's calls run as juno_ingest, plan/apply as the coordinator (jcoord) or, through the
CLI, as root.
"""

from __future__ import annotations

import json
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from juno_common.exit_codes import Exit
from rucio_policy import cli, engine
from rucio_policy.placement import PlacementRecord, meta_key
from rucio_policy.rule_diff import ADD, DECIDE, DELETE, UPDATE

pytestmark = pytest.mark.grid

RUN = uuid.uuid4().hex[:8]
IN2P3_KEY = meta_key("raw", "in2p3_third")
UNCONDITIONAL = {"ihep_tape", "ihep_disk", "cnaf_disk", "jinr_disk", "cnaf_tape"}
_streams = iter(range(10_000))


@pytest.fixture(scope="module")
def policy() -> Any:
    return engine.load_default_policy()


def new_stream() -> str:
    return f"engine_{RUN}_{next(_streams)}"


def blocks(client: Any, stream: str, days: int, *, close: bool = False) -> list[str]:
    names = [f"block.JUNODAQ.{stream}.202510{day + 1:02d}" for day in range(days)]
    for name in names:
        client.add_dataset("raw", name)
        if close:
            client.close("raw", name)
    return names


def with_files(client: Any, stream: str, block: str, n: int, size: int) -> None:
    """Real files on IHEP-EOS's storage, registered and attached the way the ingester does it."""
    from juno_grid import storage

    files = []
    with tempfile.TemporaryDirectory() as tmp:
        for seq in range(n):
            name = f"RUN.10554.JUNODAQ.Physics.ds-2.{stream}.20251001120000.{seq:03d}.dat"
            local = storage.make_file(Path(tmp) / name, size)
            storage.copy(str(local), storage.pfn(client, "IHEP-EOS", "raw", name))
            files.append({"scope": "raw", "name": name, "bytes": size, "adler32": storage.adler32_file(local)})
    client.attach_dids("raw", block, files, rse="IHEP-EOS")


def policy_rules(client: Any, block: str) -> dict[str, dict[str, Any]]:
    """The block's rules made by the policy, by rule id."""
    from rucio_policy.rules import parse_rule_comment

    out = {}
    for rule in client.list_did_rules("raw", block):
        tag = parse_rule_comment(rule.get("comments"))
        if tag:
            assert tag[1] not in out, f"two rules for {tag} on {block}"
            out[tag[1]] = rule
    return out


def pattern(stream: str) -> str:
    return f"block.JUNODAQ.{stream}.*"


# -- the ingester's two calls ---------------------------------------------------------------------


def test_ensure_block_rules_adds_once_and_is_idempotent(ingest: Any) -> None:
    [block] = blocks(ingest, new_stream(), 1)
    first = engine.ensure_block_rules(ingest, "raw", block)
    assert len(first.added) == 5 and first.existing == 0
    assert first.pending == ["in2p3_third"] and first.class_name == "raw"
    rules = policy_rules(ingest, block)
    assert set(rules) == UNCONDITIONAL
    assert {r["account"] for r in rules.values()} == {"juno_ingest"}
    assert rules["ihep_tape"]["locked"] is True and rules["ihep_disk"]["expires_at"] is not None
    again = engine.ensure_block_rules(ingest, "raw", block)
    assert again.added == [] and again.existing == 5


class _CountingRules:
    """The real client, with its add_replication_rule calls counted (each call still goes to Rucio)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.rule_calls: list[int] = []  # DIDs per call

    def add_replication_rule(self, **kwargs: Any) -> Any:
        self.rule_calls.append(len(kwargs["dids"]))
        return self._client.add_replication_rule(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_ensure_blocks_rules_sends_each_rule_once_for_all_blocks(ingest: Any) -> None:
    stream = new_stream()
    names = blocks(ingest, stream, 3)
    client = _CountingRules(ingest)
    new = {n: {"stream_name": stream, "datatype": "RAW"} for n in names}
    results = engine.ensure_blocks_rules(client, "raw", names, new=new)
    assert [r.name for r in results] == names
    assert all(len(r.added) == 5 and r.existing == 0 and r.pending == ["in2p3_third"] for r in results)
    assert client.rule_calls == [3] * 5  # one call per rule of the policy, for the three blocks
    for name, result in zip(names, results, strict=True):
        rules = policy_rules(ingest, name)
        assert set(rules) == UNCONDITIONAL and {r["id"] for r in rules.values()} == set(result.added)

    # One rule gone from the middle block: read back (not new), only the missing rule is sent.
    _purge_rule(policy_rules(ingest, names[1])["cnaf_disk"]["id"])
    client.rule_calls.clear()
    again = engine.ensure_blocks_rules(client, "raw", names)
    assert [len(r.added) for r in again] == [0, 1, 0] and [r.existing for r in again] == [5, 4, 5]
    assert client.rule_calls == [1]
    assert set(policy_rules(ingest, names[1])) == UNCONDITIONAL

    # Blocks said to be new that another process gave their rules meanwhile: each grouped call meets
    # DuplicateRule (one transaction: nothing added), and one by one counts them all as existing.
    client.rule_calls.clear()
    raced = engine.ensure_blocks_rules(client, "raw", names, new=new)
    assert [len(r.added) for r in raced] == [0, 0, 0] and [r.existing for r in raced] == [5, 5, 5]
    assert client.rule_calls == [3, 1, 1, 1] * 5
    assert all(set(policy_rules(ingest, n)) == UNCONDITIONAL for n in names)


def test_finalize_records_the_placement_and_explain_shows_it(ingest: Any, policy: Any) -> None:
    stream = new_stream()
    [block] = blocks(ingest, stream, 1)
    engine.ensure_block_rules(ingest, "raw", block)
    with_files(ingest, stream, block, 2, 1000)
    ingest.close("raw", block)

    result = engine.finalize_block(ingest, "raw", block)
    assert set(result.decided) == {IN2P3_KEY}
    stored = ingest.get_metadata("raw", block, plugin="JSON")[IN2P3_KEY]
    assert stored == result.decided[IN2P3_KEY]
    record = PlacementRecord.from_meta(stored)
    assert record.block_bytes == 2000 and record.fraction == policy.classes[0].rules[4].fraction
    assert ("in2p3_third" in policy_rules(ingest, block)) is record.placed
    assert ("in2p3_third" in result.skipped) is not record.placed

    again = engine.finalize_block(ingest, "raw", block)
    assert again.decided == {} and again.added == []
    assert ingest.get_metadata("raw", block, plugin="JSON")[IN2P3_KEY] == stored  # never re-decided

    explained = engine.explain(ingest, f"raw:{block}", policy)
    [placement] = explained.placement
    assert placement["status"] == ("placed" if record.placed else "not placed")
    assert placement["record"] == stored and "block of 2000 B" in placement["why"]
    assert explained.class_name == "raw" and explained.is_open is False and explained.bytes == 2000
    assert {r["rule"] for r in explained.rules if r["rucio_rule"]} == UNCONDITIONAL | (
        {"in2p3_third"} if record.placed else set())
    assert explained.replicas["IHEP-EOS"] == {"AVAILABLE": 2}
    text = explained.text()
    assert "placement (fraction rules):" in text and "in2p3_third" in text and "IHEP-EOS" in text


class _CountingTallyReads:
    """The ingest client, counting the listings of placement records (the tally reads)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.tally_reads = 0

    def list_dids(self, scope: str, filters: Any, **kwargs: Any) -> Any:
        groups = filters if isinstance(filters, list) else [filters]
        if any(str(key).startswith("juno_place_") for group in groups for key in group):
            self.tally_reads += 1
        return self._client.list_dids(scope, filters, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_finalize_blocks_reads_the_tallies_once_and_decides_as_one_by_one(ingest: Any, policy: Any) -> None:
    streams = [new_stream() for _ in range(4)]  # one block each (a file's name depends on its stream)
    names = [blocks(ingest, stream, 1)[0] for stream in streams]
    for i, (stream, name) in enumerate(zip(streams, names, strict=True)):
        with_files(ingest, stream, name, 1, 1000 * (i + 1))
        ingest.close("raw", name)
    client = _CountingTallyReads(ingest)
    results = engine.finalize_blocks(client, "raw", names, policy=policy)
    assert client.tally_reads == 1, "the tallies are read once for the round, not once per block"
    assert [set(r.decided) for r in results] == [{IN2P3_KEY}] * 4
    records = [PlacementRecord.from_meta(ingest.get_metadata("raw", n, plugin="JSON")[IN2P3_KEY]) for n in names]
    for before, record in zip(records, records[1:], strict=False):
        assert record.before == before.after, "each decision saw the one made before it in the round"
    assert [r.block_bytes for r in records] == [1000, 2000, 3000, 4000]


def test_finalize_refuses_an_open_block(ingest: Any) -> None:
    [block] = blocks(ingest, new_stream(), 1)
    with pytest.raises(engine.EngineError, match="is still open: close it"):
        engine.finalize_block(ingest, "raw", block)


def test_two_finalizers_of_one_block_agree(grid: Any, ingest: Any) -> None:
    stream = new_stream()
    [block] = blocks(ingest, stream, 1)
    with_files(ingest, stream, block, 1, 3000)
    ingest.close("raw", block)
    results: list[Any] = []
    errors: list[BaseException] = []

    def finalize() -> None:
        try:
            results.append(engine.finalize_block(grid.client("juno_ingest"), "raw", block))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=finalize) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    stored = PlacementRecord.from_meta(ingest.get_metadata("raw", block, plugin="JSON")[IN2P3_KEY])
    rules = policy_rules(ingest, block)  # also asserts: no rule twice
    assert set(rules) == UNCONDITIONAL | ({"in2p3_third"} if stored.placed else set())
    assert sum(len(r.added) for r in results) == len(rules)


# -- plan and apply -------------------------------------------------------------------------------


def test_apply_twice_second_run_changes_nothing(coord: Any, root: Any, policy: Any) -> None:
    stream = new_stream()
    names = blocks(root, stream, 3)
    first_plan = engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream))
    assert first_plan.count(ADD) == 15 and first_plan.dids == 3 and first_plan.pending == 3
    applied = engine.apply(coord, first_plan)
    assert len(applied.added) == 15 and not applied.failed
    for name in names:
        assert set(policy_rules(root, name)) == UNCONDITIONAL

    second_plan = engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream))
    assert second_plan.actions == [] and second_plan.in_sync == 15
    second = engine.apply(coord, second_plan)
    assert not second.changed and second.summary().startswith("no change")

    root.close("raw", names[0])  # closed: its placement is decided by the next apply, as finalize would
    closing = engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream))
    assert [(a.kind, a.name) for a in closing.actions] == [(DECIDE, names[0])]
    decided = engine.apply(coord, closing)
    assert decided.decided == {f"raw:{names[0]}": {IN2P3_KEY: decided.decided[f"raw:{names[0]}"][IN2P3_KEY]}}
    assert "skipped;bytes=0" in decided.decided[f"raw:{names[0]}"][IN2P3_KEY]  # an empty block is never placed
    assert engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)).actions == []


def test_deleted_rule_shows_in_plan_and_apply_restores_it(coord: Any, root: Any, policy: Any) -> None:
    stream = new_stream()
    [block] = blocks(root, stream, 1)
    engine.ensure_block_rules(root, "raw", block)
    gone = policy_rules(root, block)["cnaf_disk"]["id"]
    root.delete_replication_rule(gone)

    # Rucio deletes softly (the rule expires within the hour, then the judge-cleaner removes it): apply
    # restores it by giving it back the policy's lifetime, with its locks and replicas.
    plan = engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream))
    [action] = plan.actions
    assert (action.kind, action.rule_id, action.rucio_rule) == (UPDATE, "cnaf_disk", gone)
    assert "deleted (Rucio removes it at" in action.reason and action.options == {"lifetime": None}
    result = engine.apply(coord, plan)
    assert result.updated == [gone] and not result.failed
    assert root.get_replication_rule(gone)["expires_at"] is None
    assert engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)).actions == []

    # Deleted for good (after the judge-cleaner): the rule is missing and apply adds it again.
    rules = root.list_did_rules("raw", block)
    before = {r["id"] for r in rules}
    jinr = policy_rules(root, block)["jinr_disk"]["id"]
    _purge_rule(jinr)
    [action] = engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)).actions
    assert (action.kind, action.rule_id, action.rse_expression) == (ADD, "jinr_disk", "JINR-DISK")
    assert action.reason.startswith("missing: rule jinr_disk")
    added = engine.apply(coord, engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)))
    assert len(added.added) == 1 and added.added[0] not in before
    assert engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)).actions == []


def _purge_rule(rule_id: str) -> None:
    """What Rucio's judge-cleaner does to a deleted rule once it has expired: remove it for good."""
    from rucio.core.rule import delete_rule

    delete_rule(rule_id, soft=False)


def test_deviating_rule_is_put_back_in_line(coord: Any, root: Any, policy: Any) -> None:
    stream = new_stream()
    [block] = blocks(root, stream, 1)
    engine.ensure_block_rules(root, "raw", block)
    rule_id = policy_rules(root, block)["jinr_disk"]["id"]
    root.update_replication_rule(rule_id, {"priority": 1, "activity": "Debug"})

    [action] = engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)).actions
    assert action.kind == UPDATE and action.rucio_rule == rule_id
    assert action.options == {"priority": 3, "activity": "T0 Export"}
    assert "priority 1 (policy: 3)" in action.reason
    engine.apply(coord, engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)))
    fixed = root.get_replication_rule(rule_id)
    assert (fixed["priority"], fixed["activity"]) == (3, "T0 Export")


def test_unwanted_rule_is_kept_without_prune_and_deleted_with_it(coord: Any, root: Any, policy: Any) -> None:
    stream = new_stream()
    [block] = blocks(root, stream, 1)
    engine.ensure_block_rules(root, "raw", block)
    [retired] = root.add_replication_rule([{"scope": "raw", "name": block}], 1, "IN2P3-DISK", account="juno_ingest",
                                          comment="juno-policy raw/retired_copy: from an older policy", locked=True)
    plan = engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream))
    [action] = plan.actions
    assert (action.kind, action.rucio_rule, action.unlock_first) == (DELETE, retired, True)
    assert "class raw has no rule retired_copy any more" in action.reason

    kept = engine.apply(coord, plan)
    assert [a.rucio_rule for a in kept.kept] == [retired] and not kept.changed
    assert root.get_replication_rule(retired)["id"] == retired
    pruned = engine.apply(coord, engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)),
                          prune=True)
    assert pruned.deleted == [retired] and not pruned.failed
    assert root.get_replication_rule(retired)["expires_at"] is not None  # Rucio's soft delete: gone within the hour
    assert engine.plan(coord, policy, scope_filter="raw", name_filter=pattern(stream)).actions == []


# -- the CLI (in-process, as root from the grid's RUCIO_CONFIG) -----------------------------------


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli.main, list(args), env=env, catch_exceptions=False)


def test_cli_plan_apply_explain(root: Any) -> None:
    stream = new_stream()
    names = blocks(root, stream, 2)
    name = pattern(stream)

    planned = invoke("plan", "--name", name, "--json")
    assert planned.exit_code == Exit.DIFFERS, planned.output
    report = json.loads(planned.stdout)
    assert report["counts"]["add"] == 10 and report["dids"] == 2 and report["name_filter"] == name
    assert {a["did"] for a in report["actions"]} == {f"raw:{n}" for n in names}

    dry = invoke("apply", "--name", name, "--dry-run", "--json")
    assert dry.exit_code == Exit.DIFFERS and len(json.loads(dry.stdout)["would"]) == 10
    assert policy_rules(root, names[0]) == {}  # a dry run sends nothing

    applied = invoke("apply", "--name", name, "--json")
    assert applied.exit_code == Exit.OK, applied.output
    assert len(json.loads(applied.stdout)["added"]) == 10
    again = invoke("apply", "--name", name)
    assert again.exit_code == Exit.OK and "no change: Rucio already matches the policy" in again.stdout
    assert invoke("plan", "--name", name).exit_code == Exit.OK

    explained = invoke("explain", f"raw:{names[0]}", "--json")
    assert explained.exit_code == Exit.OK
    data = json.loads(explained.stdout)
    assert data["class"] == "raw" and {r["rule"] for r in data["rules"]} == UNCONDITIONAL
    assert [p["status"] for p in data["placement"]] == ["pending"]
    text = invoke("explain", names[1]).stdout  # scope from the name, as in the rucio CLI
    assert f"raw:{names[1]} (DATASET" in text and "rules the policy wants:" in text

    missing = invoke("explain", f"raw:block.JUNODAQ.{stream}.20251231", "--json")
    assert missing.exit_code == Exit.NOT_FOUND
    assert "does not exist" in json.loads(missing.stdout)["message"]


def test_cli_prune_needs_confirmation(root: Any) -> None:
    stream = new_stream()
    [block] = blocks(root, stream, 1)
    engine.ensure_block_rules(root, "raw", block)
    [retired] = root.add_replication_rule([{"scope": "raw", "name": block}], 1, "IN2P3-DISK", account="juno_ingest",
                                          comment="juno-policy raw/retired_copy")
    refused = invoke("apply", "--name", pattern(stream), "--prune")  # CliRunner's stdin is no terminal
    assert refused.exit_code == Exit.STOPPED
    assert "add --yes. Nothing was changed" in refused.output
    assert root.get_replication_rule(retired)["id"] == retired
    dry = invoke("apply", "--name", pattern(stream), "--prune", "--dry-run", "--json")
    assert dry.exit_code == Exit.DIFFERS and [a["rucio_rule"] for a in json.loads(dry.stdout)["would"]] == [retired]
    done = invoke("apply", "--name", pattern(stream), "--prune", "--yes", "--json")
    assert done.exit_code == Exit.OK and json.loads(done.stdout)["deleted"] == [retired]


def test_cli_invalid_policy_touches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Path(__file__).resolve().parents[1]
    bad = tmp_path / "replication.yaml"
    bad.write_text((repo / "etc" / "replication.yaml").read_text().replace("rse_expression: CNAF-DISK",
                                                                            "rse_expression: CNAF_DISK"))
    (tmp_path / "sites.yaml").write_text((repo / "etc" / "sites.yaml").read_text())
    monkeypatch.setattr(cli, "_client", lambda: pytest.fail("the CLI made a Rucio client for an invalid policy"))
    for command in (["plan"], ["apply", "--yes", "--prune"], ["explain", "raw:block.JUNODAQ.x.20251001"]):
        result = invoke(*command, "--policy", str(bad))
        assert result.exit_code == Exit.INVALID, (command, result.output)
        assert f"{bad}:" in result.output and "unknown RSE 'CNAF_DISK'" in result.output
        assert "did you mean CNAF-DISK?" in result.output


def test_cli_sites_plan(root: Any) -> None:
    result = invoke("sites", "plan", "--json")
    assert result.exit_code in (Exit.OK, Exit.DIFFERS), result.output
    changes = json.loads(result.stdout)["changes"]
    assert all(c["kind"] == "extra" for c in changes), changes  # the grid was set up from sites.yaml
    dry = invoke("sites", "apply", "--dry-run")
    assert dry.exit_code == Exit.OK and "would apply 0 change(s)" in dry.stdout
