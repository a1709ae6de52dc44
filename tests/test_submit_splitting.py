"""Splitting (pure): files per job within site groups; JSUB-style job variables; arguments."""

from __future__ import annotations

import pytest

from juno_jobs.model import InputFile, JobVar, SiteGroup
from juno_jobs.splitting import SplitError, arguments_of, expand_jobvars, render, split_files, split_jobvars, tokenize


def files(prefix: str, n: int) -> tuple[InputFile, ...]:
    return tuple(InputFile("raw", f"{prefix}{i:03d}", 100 + i, None, ("CNAF-DISK",)) for i in range(n))


def test_files_are_chunked_within_each_group_never_across() -> None:
    groups = [SiteGroup(("CNAF",), files("a", 5)), SiteGroup(("CNAF", "JINR"), files("b", 3))]
    jobs = split_files(groups, 2)
    assert [(j.index, j.sites, [f.name for f in j.files]) for j in jobs] == [
        (0, ("CNAF",), ["a000", "a001"]), (1, ("CNAF",), ["a002", "a003"]), (2, ("CNAF",), ["a004"]),
        (3, ("CNAF", "JINR"), ["b000", "b001"]), (4, ("CNAF", "JINR"), ["b002"])]
    assert arguments_of(jobs[1], "--out o{job}.root {inputs}") == ("--out", "o1.root", "inputs/a002", "inputs/a003")
    assert jobs[2].bytes == 104


def test_max_jobs_caps_file_splitting() -> None:
    with pytest.raises(SplitError, match="10 jobs, more than max_jobs 5"):
        split_files([SiteGroup(("CNAF",), files("a", 10))], 1, max_jobs=5)


def var(name: str, kind: str = "range", group: str = "default", **kw: object) -> JobVar:
    return JobVar(name=name, kind=kind, group=group, **kw)  # type: ignore[arg-type]


def test_range_with_last_count_and_negative_step() -> None:
    assert expand_jobvars([var("s", first=1, step=2, last=7)]) == [{"s": 1}, {"s": 3}, {"s": 5}, {"s": 7}]
    assert expand_jobvars([var("s", first=10, step=-5, count=3)]) == [{"s": 10}, {"s": 5}, {"s": 0}]
    assert expand_jobvars([var("e", first=0.5, step=0.25, count=3)]) == [{"e": 0.5}, {"e": 0.75}, {"e": 1}]


def test_one_group_advances_together_and_the_shortest_decides() -> None:
    out = expand_jobvars([var("seed", first=1, count=5), var("tag", "enumerate", values=("a", "b", "c"))])
    assert out == [{"seed": 1, "tag": "a"}, {"seed": 2, "tag": "b"}, {"seed": 3, "tag": "c"}]


def test_named_groups_multiply_and_the_default_group_pairs_with_the_product() -> None:
    out = expand_jobvars([
        var("energy", "enumerate", group="e", values=(1, 8)),
        var("pos", "enumerate", group="p", values=("x0", "x1", "x2")),
        var("seed", first=100),  # open-ended default group: one seed per combination
    ])
    assert out == [
        {"energy": 1, "pos": "x0", "seed": 100}, {"energy": 1, "pos": "x1", "seed": 101},
        {"energy": 1, "pos": "x2", "seed": 102}, {"energy": 8, "pos": "x0", "seed": 103},
        {"energy": 8, "pos": "x1", "seed": 104}, {"energy": 8, "pos": "x2", "seed": 105}]


def test_max_jobs_caps_open_ended_ranges() -> None:
    assert len(expand_jobvars([var("seed", first=1)], max_jobs=7)) == 7


def test_no_values_is_an_error() -> None:
    with pytest.raises(SplitError, match="give no values"):
        expand_jobvars([var("s", first=5, last=1)])


def test_jobvar_jobs_render_arguments() -> None:
    jobs = split_jobvars([var("seed", first=7, count=2)], sites=("CNAF",))
    template = "--seed {seed} --job {job} '{{literal}}'"
    assert [arguments_of(j, template) for j in jobs] == [("--seed", "7", "--job", "0", "{literal}"),
                                                         ("--seed", "8", "--job", "1", "{literal}")]
    assert jobs[0].sites == ("CNAF",) and jobs[0].files == ()


def test_render_input_placeholders() -> None:
    fs = files("f", 2)
    out = render(tokenize("{input} n={nfiles} {inputs}"), 3, fs, {})
    assert out == ("inputs/f000", "n=2", "inputs/f000", "inputs/f001")
