"""`juno-policy validate`: every problem of a replication policy, each with file:line and a fix."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from rucio_policy.cli import main
from rucio_policy.replication import PolicyInvalid, globs_may_intersect, load_policy, validate_file
from rucio_policy.rse_catalog import CatalogInvalid, load_catalog
from rucio_policy.rules import Did, plan_rules

REPO = Path(__file__).resolve().parents[1]

SITES = """\
version: 1
sites:
  IHEP:
    country: CN
    tier: 0
    rses:
      IHEP-EOS: {type: disk}
      IHEP-TAPE: {type: tape}
  CNAF:
    country: IT
    tier: 1
    rses:
      CNAF-DISK: {type: disk, attributes: {available_for_multihop: true}}
      CNAF-TAPE: {type: tape}
  IN2P3:
    country: FR
    tier: 1
    rses:
      IN2P3-DISK: {type: disk}
"""

GOOD = """\
version: 1
defaults:
  activity: T0 Export
classes:
  raw:
    match: {scope: raw, did_type: DATASET, name: "block.*"}
    rules:
      - id: ihep_tape
        rse_expression: IHEP-TAPE
        activity: T0 Tape
      - id: cnaf_disk
        rse_expression: CNAF-DISK
      - id: in2p3_third
        rse_expression: IN2P3-DISK
        fraction: 1/3
"""


@pytest.fixture()
def sites(tmp_path: Path) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(SITES)
    return path


def problems(tmp_path: Path, sites: Path, text: str) -> list[tuple[int, str, str]]:
    policy_file = tmp_path / "replication.yaml"
    policy_file.write_text(textwrap.dedent(text))
    policy, issues = validate_file(policy_file, load_catalog(sites), "replication.yaml")
    assert (policy is None) == bool(issues)
    for issue in issues:
        assert str(issue).startswith(f"replication.yaml:{issue.line}:")
        assert issue.fix or "YAML" in issue.message, f"no advice in {issue}"
    return [(i.line, i.where, f"{i.message} ({i.fix})") for i in issues]


def only(found: list[tuple[int, str, str]]) -> tuple[int, str, str]:
    assert len(found) == 1, found
    return found[0]


def test_shipped_policy_is_valid_against_shipped_sites() -> None:
    catalog = load_catalog(REPO / "etc" / "sites.yaml")
    policy = load_policy(REPO / "etc" / "replication.yaml", catalog)
    raw = policy.class_for("raw", "block.JUNODAQ.global_trigger.20251009", "DATASET")
    assert raw is not None
    targets = {r.rse_expression: r for r in raw.rules}
    assert {"IHEP-TAPE", "CNAF-DISK", "JINR-DISK", "IN2P3-DISK", "CNAF-TAPE"} <= set(targets)
    assert str(targets["IN2P3-DISK"].fraction) == "1/3"
    assert all(r.fraction is None for e, r in targets.items() if e != "IN2P3-DISK")
    # Containers and files of raw get no rules of their own: the blocks carry them.
    assert policy.class_for("raw", "stream.JUNODAQ.global_trigger.202510", "CONTAINER") is None
    for scope in ("rtraw", "esd", "mc"):
        assert policy.class_for(scope, "anything", "DATASET") is not None


def test_good_file(tmp_path: Path, sites: Path) -> None:
    assert problems(tmp_path, sites, GOOD) == []


def test_unknown_rse_with_suggestion(tmp_path: Path, sites: Path) -> None:
    line, where, text = only(problems(tmp_path, sites, GOOD.replace("rse_expression: CNAF-DISK",
                                                                    "rse_expression: CNAF_DISK")))
    assert (line, where) == (12, "classes.raw.rules[1].rse_expression")
    assert "unknown RSE 'CNAF_DISK'" in text and "did you mean CNAF-DISK?" in text


@pytest.mark.parametrize("value", ["0", "1.5", "-1/3", "a third", "true"])
def test_fraction_outside_0_1(tmp_path: Path, sites: Path, value: str) -> None:
    line, where, text = only(problems(tmp_path, sites, GOOD.replace("fraction: 1/3", f"fraction: {value}")))
    assert (line, where) == (15, "classes.raw.rules[2].fraction")
    assert "(0, 1]" in text


def test_overlapping_classes(tmp_path: Path, sites: Path) -> None:
    text = GOOD + """\
  late_raw:
    match: {scope: raw, name: "block.JUNODAQ.*"}
    rules:
      - {id: cnaf, rse_expression: CNAF-DISK}
"""
    line, where, message = only(problems(tmp_path, sites, text))
    assert (line, where) == (16, "classes.late_raw")
    assert "overlaps class 'raw' (line 5)" in message


@pytest.mark.parametrize("second_match", [
    '{scope: raw, name: "stream.*"}',                        # names cannot both match
    "{scope: esd}",                                          # other scope
    '{scope: raw, did_type: CONTAINER}',                     # other type
])
def test_disjoint_classes_are_fine(tmp_path: Path, sites: Path, second_match: str) -> None:
    text = GOOD + f"""\
  other:
    match: {second_match}
    rules:
      - {{id: cnaf, rse_expression: CNAF-DISK}}
"""
    assert problems(tmp_path, sites, text) == []


def test_classes_split_by_metadata(tmp_path: Path, sites: Path) -> None:
    text = """\
    version: 1
    classes:
      physics:
        match: {scope: raw, meta: {run_type: Physics}}
        rules: [{id: cnaf, rse_expression: CNAF-DISK}]
      calib:
        match: {scope: raw, meta: {run_type: [Calib, Test]}}
        rules: [{id: ihep, rse_expression: IHEP-EOS}]
      physics_again:
        match: {scope: raw, meta: {run_type: Physics, stream: x}}
        rules: [{id: ihep, rse_expression: IHEP-EOS}]
    """
    found = problems(tmp_path, sites, text)
    assert [(line, where) for line, where, _ in found] == [(9, "classes.physics_again")]


def test_unknown_keys_everywhere(tmp_path: Path, sites: Path) -> None:
    text = """\
    version: 1
    defualts: {copies: 1}
    classes:
      raw:
        descripton: x
        match: {scope: raw, nmae: "block.*"}
        rules:
          - id: a
            rse_expression: CNAF-DISK
            lifetme: 30d
    """
    found = problems(tmp_path, sites, text)
    assert [(line, where) for line, where, _ in found] == [
        (2, "defualts"), (5, "classes.raw.descripton"), (6, "classes.raw.match.nmae"),
        (10, "classes.raw.rules[0].lifetme")]
    assert "did you mean 'defaults'?" in found[0][2]
    assert "did you mean 'lifetime'?" in found[3][2]


def test_every_field_checked(tmp_path: Path, sites: Path) -> None:
    text = """\
    version: 2
    classes:
      Raw-Data:
        match: {scope: RAW, did_type: blob}
        rules:
          - id: 1st
            rse_expression: CNAF-DISK
            copies: 0
            lifetime: forever
            activity: Raw Export
            grouping: FILES
            priority: 9
            locked: "yes"
          - id: tapes
            rse_expression: rse_type=TAPE
            copies: 3
          - id: attr
            rse_expression: colour=blue
          - id: expr
            rse_expression: CNAF-DISK|(IHEP-EOS
    """
    found = problems(tmp_path, sites, text)
    by_line = {(line, where.rsplit(".", 1)[-1]): message for line, where, message in found}
    assert "unsupported version 2" in by_line[(1, "version")]
    assert "invalid class name" in by_line[(3, "Raw-Data")]
    assert "not a JUNO scope" in by_line[(4, "scope")]
    assert "unknown DID type 'blob'" in by_line[(4, "did_type")]
    assert "invalid rule id '1st'" in by_line[(6, "id")]
    assert "copies must be a whole number >= 1" in by_line[(8, "copies")]
    assert "not a duration" in by_line[(9, "lifetime")]
    assert "unknown activity 'Raw Export'" in by_line[(10, "activity")]
    assert "unknown grouping 'FILES'" in by_line[(11, "grouping")]
    assert "priority must be a whole number from 1 to 5" in by_line[(12, "priority")]
    assert "locked must be true or false" in by_line[(13, "locked")]
    assert "3 copies but 'rse_type=TAPE' selects only 2 RSE(s) (CNAF-TAPE, IHEP-TAPE)" in \
        by_line[(15, "rse_expression")]
    assert "unknown RSE attribute 'colour'" in by_line[(18, "rse_expression")]
    assert "missing ')'" in by_line[(20, "rse_expression")]
    assert len(found) == 14


def test_duplicates(tmp_path: Path, sites: Path) -> None:
    text = """\
    version: 1
    classes:
      raw:
        match: {scope: raw}
        rules:
          - {id: a, rse_expression: CNAF-DISK}
          - {id: a, rse_expression: IHEP-EOS}
          - {id: b, rse_expression: CNAF-DISK, copies: 1}
      raw:
        match: {scope: esd}
        rules: [{id: a, rse_expression: CNAF-DISK}]
    """
    found = problems(tmp_path, sites, text)
    assert [(line, where) for line, where, _ in found] == [
        (7, "classes.raw.rules"), (8, "classes.raw.rules"), (9, "classes.raw")]
    assert "rule id 'a' used twice (first at line 6)" in found[0][2]
    assert "rules 'a' and 'b' both target 'CNAF-DISK'" in found[1][2]
    assert "duplicate key (first at line 3)" in found[2][2]


def test_structure_errors(tmp_path: Path, sites: Path) -> None:
    text = """\
    version: 1
    classes:
      raw:
        match: {}
        rules: []
      esd:
        match: {scope: esd}
        rules:
          rse_expression: CNAF-DISK
      mc:
        rules:
          - rse_expression: CNAF-DISK
    """
    found = problems(tmp_path, sites, text)
    assert [(line, where) for line, where, _ in found] == [
        (4, "classes.raw.match"), (5, "classes.raw.rules"), (9, "classes.esd.rules"), (10, "classes.mc"),
        (12, "classes.mc.rules[0]")]
    assert "expected a list" in found[2][2]
    assert "missing key 'match'" in found[3][2]
    assert "missing key 'id'" in found[4][2]


def test_yaml_syntax_error_has_its_line(tmp_path: Path, sites: Path) -> None:
    line, where, message = only(problems(tmp_path, sites, "version: 1\nclasses:\n  raw: [a\n  b: c\n"))
    assert line == 4 and "YAML syntax error" in message


def test_empty_file(tmp_path: Path, sites: Path) -> None:
    line, _, message = only(problems(tmp_path, sites, ""))
    assert "empty" in message


def test_load_policy_refuses_invalid_file(tmp_path: Path, sites: Path) -> None:
    bad = tmp_path / "replication.yaml"
    bad.write_text(GOOD.replace("IN2P3-DISK", "IN2P3"))
    with pytest.raises(PolicyInvalid) as err:
        load_policy(bad, load_catalog(sites))
    assert len(err.value.issues) == 1 and "unknown RSE 'IN2P3'" in str(err.value)


def test_without_catalog_rses_are_not_checked(tmp_path: Path) -> None:
    path = tmp_path / "replication.yaml"
    path.write_text(GOOD.replace("IN2P3-DISK", "ANYWHERE"))
    policy = load_policy(path, catalog=None)  # what the server does for the ingest account's rules
    assert ("ANYWHERE", 1) in policy.rule_shapes("raw")
    assert policy.rule_shapes("esd") == frozenset()


def test_bad_sites_file(tmp_path: Path) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n  X:\n    rses:\n      X-DISK: {type: floppy}\n")
    with pytest.raises(CatalogInvalid) as err:
        load_catalog(path, "sites.yaml")
    assert str(err.value.issues[0]).startswith("sites.yaml:4: sites.X.rses.X-DISK.type: RSE type must be disk or tape")


@pytest.mark.parametrize(("a", "b", "overlap"), [
    ("block.*", "stream.*", False), ("block.*", "block.JUNODAQ.*", True), ("*.dat", "*.root", False),
    ("block.*", "*", True), ("block.X", "block.*", True), ("block.X", "block.Y", False), ("a*z", "ab*", True),
])
def test_glob_overlap(a: str, b: str, overlap: bool) -> None:
    assert globs_may_intersect(a, b) is overlap
    assert globs_may_intersect(b, a) is overlap


# -- the command ----------------------------------------------------------------------------------


def test_cli_valid_invalid_usage(tmp_path: Path, sites: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "replication.yaml"  # next to sites.yaml: found without --sites
    good.write_text(GOOD)
    result = runner.invoke(main, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "valid (1 classes, 3 rules" in result.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("fraction: 1/3", "fraction: 3").replace("IHEP-TAPE", "IHEP_TAPE"))
    result = runner.invoke(main, ["validate", str(bad)])
    assert result.exit_code == 3
    lines = [line for line in result.output.splitlines() if line.startswith(str(bad))]
    assert lines[0].startswith(f"{bad}:9: classes.raw.rules[0].rse_expression: unknown RSE 'IHEP_TAPE'")
    assert lines[1].startswith(f"{bad}:15: classes.raw.rules[2].fraction: fraction 3 is outside (0, 1]")

    result = runner.invoke(main, ["validate", str(bad), "--json"])
    assert result.exit_code == 3
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert [(e["line"], e["where"]) for e in report["errors"]] == [
        (9, "classes.raw.rules[0].rse_expression"), (15, "classes.raw.rules[2].fraction")]

    assert runner.invoke(main, ["validate", str(tmp_path / "missing.yaml")]).exit_code == 2
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    (elsewhere / "replication.yaml").write_text(GOOD)
    result = runner.invoke(main, ["validate", str(elsewhere / "replication.yaml")])
    assert result.exit_code == 2 and "--sites" in result.output
    result = runner.invoke(main, ["validate", str(elsewhere / "replication.yaml"), "--sites", str(sites)])
    assert result.exit_code == 0


# -- rules from the policy ------------------------------------------------------------------------


def test_rules_for_a_block(tmp_path: Path, sites: Path) -> None:
    path = tmp_path / "replication.yaml"
    path.write_text(GOOD)
    policy = load_policy(path, load_catalog(sites), "replication.yaml")
    from rucio_policy.rules import parse_rule_comment, resolve_pending, tallies_from_metas

    block = Did("raw", "block.JUNODAQ.global_trigger.20251009", "DATASET", bytes=6 * 10**12, is_open=False)
    plan = plan_rules(policy, block)
    assert [r.rse_expression for r in plan.rules] == ["IHEP-TAPE", "CNAF-DISK"]
    assert [p.rse_expression for p in plan.pending] == ["IN2P3-DISK"]
    assert plan.rules[0].activity == "T0 Tape" and plan.rules[1].activity == "T0 Export"
    assert parse_rule_comment(plan.rules[0].comment) == ("raw", "ihep_tape")
    assert plan.rules[0].add_rule_kwargs(block)["dids"] == [{"scope": "raw", "name": block.name}]

    # Earlier blocks: 10 TB decided, 2 TB of it at IN2P3 -> this one goes there.
    history = [{"juno_place_raw_in2p3_third": "v1;placed;bytes=2000000000000;total_before=0;placed_before=0;"
                                              "fraction=1/3"},
               {"juno_place_raw_in2p3_third": "v1;skipped;bytes=8000000000000;total_before=2000000000000;"
                                              "placed_before=2000000000000;fraction=1/3"}]
    decided, record = resolve_pending(plan, policy, tallies_from_metas(history))
    assert [r.rse_expression for r in decided.rules] == ["IHEP-TAPE", "CNAF-DISK", "IN2P3-DISK"]
    assert record == {"juno_place_raw_in2p3_third": "v1;placed;bytes=6000000000000;total_before=10000000000000;"
                                                    "placed_before=2000000000000;fraction=1/3",
                      "prod_step": "juno_place:raw_in2p3_third=placed"}  # the seal (rucio_policy.placement)
    # A record deleted later (anyone can, in Rucio 41): the seal keeps the verdict, nothing is pending.
    sealed = plan_rules(policy, Did(block.scope, block.name, "DATASET", is_open=False,
                                    meta={"prod_step": record["prod_step"]}))
    assert not sealed.pending and [r.rse_expression for r in sealed.rules][-1] == "IN2P3-DISK"
    assert any("is missing" in p for p in sealed.problems)
    # Once recorded, the decision is read back, never re-made.
    again = plan_rules(policy, Did(block.scope, block.name, "DATASET", meta=record))
    assert [r.rse_expression for r in again.rules] == ["IHEP-TAPE", "CNAF-DISK", "IN2P3-DISK"]
    assert "placed: block of 6.00 TB" in again.explain()

    nothing = plan_rules(policy, Did("user.jdoe", "my.dataset", "DATASET"))
    assert nothing.class_name is None and not nothing.rules


def test_one_reader_of_the_sites_file_says_file_and_line(tmp_path: Path) -> None:
    """topology.load is the one reader of etc/sites.yaml: the catalog is its view, and every problem names
    its line (an unknown key, a port that is not a number, a link to an unknown site, a bad role)."""
    from rucio_policy import topology

    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n"
                    "  X:\n"
                    "    rses:\n"
                    "      X-DISK:\n"
                    "        type: disk\n"
                    "        protocls: {}\n"
                    "        protocols:\n"
                    "          local: {scheme: root, hostname: h, port: many, prefix: /p}\n"
                    "links:\n"
                    "  - {between: [X, Y]}\n"
                    "accounts:\n"
                    "  a: {role: boss}\n")
    with pytest.raises(topology.TopologyError) as err:
        topology.load(path, "sites.yaml")
    lines = [str(i) for i in err.value.issues]
    assert lines[0].startswith("sites.yaml:6: sites.X.rses.X-DISK.protocls: unknown key (did you mean 'protocols'?")
    assert lines[1].startswith("sites.yaml:8: sites.X.rses.X-DISK.protocols.local.port: expected int, found 'many'")
    assert lines[2].startswith("sites.yaml:10: links[0].between: needs two known sites")
    assert lines[3].startswith("sites.yaml:12: accounts.a.role: 'boss' is not one of")
    with pytest.raises(CatalogInvalid) as same:
        load_catalog(path, "sites.yaml")
    assert same.value.issues == err.value.issues
    topo = topology.load(REPO / "etc" / "sites.yaml")
    catalog = load_catalog(REPO / "etc" / "sites.yaml")
    assert catalog.rses["IN2P3-DISK"].attributes == {**topology.rse_attributes(topo, topo.rse("IN2P3-DISK")),
                                                      "rse_type": "DISK", "IN2P3-DISK": True}
