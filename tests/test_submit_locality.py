"""Locality (pure): files grouped by the set of permitted sites holding AVAILABLE disk replicas."""

from __future__ import annotations

import pytest

from juno_jobs.locality import LocalityError, group_by_sites, jobs_per_site
from juno_jobs.model import InputFile, RseInfo, SiteLists

RSES = {r.name: r for r in [
    RseInfo("IHEP-EOS", "IHEP", False), RseInfo("IHEP-TAPE", "IHEP", True), RseInfo("CNAF-DISK", "CNAF", False),
    RseInfo("CNAF-TAPE", "CNAF", True), RseInfo("JINR-DISK", "JINR", False), RseInfo("IN2P3-DISK", "IN2P3", False),
    RseInfo("CNAF-DISK2", "CNAF", False)]}


def f(name: str, *rses: str) -> InputFile:
    return InputFile("raw", name, 10, None, tuple(rses))


def test_files_group_by_their_set_of_sites() -> None:
    groups = group_by_sites([
        f("c1", "CNAF-DISK", "IHEP-TAPE"), f("j1", "JINR-DISK"), f("cj", "CNAF-DISK", "JINR-DISK"),
        f("c2", "CNAF-DISK2"), f("j2", "JINR-DISK", "CNAF-TAPE"), f("c0", "CNAF-DISK", "CNAF-DISK2")], RSES)
    assert [(g.sites, [x.name for x in g.files]) for g in groups] == [
        (("CNAF",), ["c0", "c1", "c2"]),  # two RSEs at one site are one site; tape does not count
        (("JINR",), ["j1", "j2"]),
        (("CNAF", "JINR"), ["cj"])]
    assert groups[0].bytes == 30


def test_allow_and_deny_lists_shape_the_groups() -> None:
    files = [f("a", "CNAF-DISK", "JINR-DISK"), f("b", "IN2P3-DISK", "JINR-DISK")]
    groups = group_by_sites(files, RSES, SiteLists(deny=("JINR",)))
    assert [(g.sites, [x.name for x in g.files]) for g in groups] == [(("CNAF",), ["a"]), (("IN2P3",), ["b"])]
    groups = group_by_sites(files, RSES, SiteLists(allow=("JINR", "IN2P3")))
    assert [(g.sites, [x.name for x in g.files]) for g in groups] == [
        (("IN2P3", "JINR"), ["b"]), (("JINR",), ["a"])]


def test_tape_only_denied_only_and_nowhere_are_reported_together() -> None:
    files = [f("ok", "CNAF-DISK"), f("t1", "IHEP-TAPE"), f("t2", "CNAF-TAPE", "IHEP-TAPE"), f("d", "IN2P3-DISK"),
             f("gone"), f("unknown-rse", "NOWHERE-DISK")]
    with pytest.raises(LocalityError) as err:
        group_by_sites(files, RSES, SiteLists(deny=("IN2P3",)))
    kinds = {p.kind: p for p in err.value.problems}
    assert kinds["tape_only"].files == ("raw:t1", "raw:t2")
    assert kinds["tape_only"].where == ("CNAF-TAPE", "IHEP-TAPE")
    assert kinds["denied_only"].files == ("raw:d",) and kinds["denied_only"].where == ("IN2P3",)
    assert kinds["nowhere"].files == ("raw:gone", "raw:unknown-rse")
    text = str(err.value)
    assert "2 input files only on tape (CNAF-TAPE, IHEP-TAPE): raw:t1, raw:t2. Jobs read from disk" in text
    assert "rucio rule add" in text
    assert "1 input file only at sites your task excludes (IN2P3): raw:d" in text
    assert "2 input files with no AVAILABLE replica anywhere" in text


def test_many_problem_files_are_summarised() -> None:
    with pytest.raises(LocalityError, match=r"raw:t000, raw:t001, raw:t002 and 7 more"):
        group_by_sites([f(f"t{i:03d}", "IHEP-TAPE") for i in range(10)], RSES)


def test_jobs_per_site_counts_every_candidate_site() -> None:
    assert jobs_per_site([("CNAF",), ("CNAF", "JINR"), ()]) == {"CNAF": 2, "JINR": 1}
