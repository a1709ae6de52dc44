"""juno-prod's pure decisions: output names (etc/naming.md), jobs from claimed files (locality, output
names in the job variables), what a failed job means per file (the step's retry policy), when a dataset
closes. Fast, no grid."""

from __future__ import annotations

import re
from typing import Any

import pytest

from juno_jobs.locality import LocalityError
from juno_jobs.model import Resources, RetryPolicy, RseInfo
from juno_prod import decide, naming
from juno_prod.model import FAILED, MC_SCOPE, PROBLEMATIC, PROCESSED, WAITING, Step
from rucio_policy import naming as policy_naming

RAW = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"
RSES = {"IHEP-EOS": RseInfo("IHEP-EOS", "IHEP", False), "IHEP-TAPE": RseInfo("IHEP-TAPE", "IHEP", True),
        "CNAF-DISK": RseInfo("CNAF-DISK", "CNAF", False), "JINR-DISK": RseInfo("JINR-DISK", "JINR", False)}


def step(name: str = "rtraw", scope: str = "rtraw", where: Any = "input", files_per_job: int = 1,
         retry: RetryPolicy | None = None) -> Step:
    return Step(index=0, name=name, release="J25.1.0", payload="bin/x", arguments="", environment={},
                files_per_job=files_per_job, where=where, scope=scope, ext=name, rse="site",
                resources=Resources(memory_mb=512), retry=retry or RetryPolicy(max_attempts=3,
                                                                               memory_ladder_mb=(512, 1024)))


def test_rtraw_and_esd_names_follow_naming_md_and_the_policy_schema() -> None:
    rtraw = naming.output_name(step(), RAW)
    assert rtraw == "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002_J25.1.0.rtraw"
    esd = naming.output_name(step("esd", "esd"), rtraw)
    assert esd == "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002_J25.1.0_J25.1.0.esd"
    for name in (rtraw, esd):  # the server's schema and the lfn2pfn algorithm recognise them as derived
        assert re.match(policy_naming.DERIVED_FILE_RE, name)


def test_mc_names_and_groups() -> None:
    first = naming.output_name(step("detsim", "mc"), naming.mc_input_name("mc-ibd", 7))
    assert first == "mc-ibd.000007_J25.1.0.detsim"
    assert naming.output_name(step("elecsim", "mc"), first) == "mc-ibd.000007_J25.1.0_J25.1.0.elecsim"
    assert re.match(policy_naming.GENERIC_NAME_RE, first)
    assert naming.mc_group(999) == "jobs0000" and naming.mc_group(1000) == "jobs0001"
    assert naming.dataset_name("mc", "mc-ibd", "detsim", "jobs0000") == "mc.mc-ibd.detsim.jobs0000"


def test_too_long_names_are_refused() -> None:
    with pytest.raises(naming.NamingError):
        naming.output_name(step(), "x" * 245 + ".dat")


def _row(i: int, name: str, rses: str, scope: str = "raw") -> dict[str, Any]:
    return {"id": i, "scope": scope, "name": name, "bytes": 10, "adler32": "00000001", "rses": rses}


def test_jobs_run_where_their_input_is_with_output_names_in_their_variables() -> None:
    rows = [_row(1, "a.001.dat", "CNAF-DISK"), _row(2, "a.002.dat", "CNAF-DISK,IHEP-TAPE"),
            _row(3, "a.003.dat", "JINR-DISK"), _row(4, "a.004.dat", "CNAF-DISK,JINR-DISK")]
    batch = decide.make_jobs("tf", step(files_per_job=2), rows, RSES)
    by_sites = {j.sites: j for j in batch.jobs}
    assert set(by_sites) == {("CNAF",), ("JINR",), ("CNAF", "JINR")}
    cnaf = by_sites[("CNAF",)]
    assert [f.name for f in cnaf.files] == ["a.001.dat", "a.002.dat"]
    assert cnaf.variables["outputs"] == "a.001_J25.1.0.rtraw a.002_J25.1.0.rtraw"
    assert set(batch.file_job) == {1, 2, 3, 4}
    assert batch.expected[3] == "a.003_J25.1.0.rtraw"


def test_a_step_limited_to_ihep_refuses_files_held_elsewhere() -> None:
    rows = [_row(1, "a.001.dat", "CNAF-DISK")]
    with pytest.raises(LocalityError):
        decide.make_jobs("tf", step(where=("IHEP",)), rows, RSES)
    ok = decide.make_jobs("tf", step(where=("IHEP",)), [_row(1, "a.001.dat", "IHEP-EOS,CNAF-DISK")], RSES)
    assert [j.sites for j in ok.jobs] == [("IHEP",)]


def test_tape_only_input_makes_no_job() -> None:
    with pytest.raises(LocalityError):
        decide.make_jobs("tf", step(), [_row(1, "a.001.dat", "IHEP-TAPE")], RSES)


def test_monte_carlo_jobs_one_per_stand_in_anywhere_allowed() -> None:
    rows = [_row(i, naming.mc_input_name("mc-x", i), "", scope=MC_SCOPE) for i in range(3)]
    batch = decide.make_jobs("mc-x", step("detsim", "mc", where="anywhere"), rows, RSES)
    assert [j.sites for j in batch.jobs] == [("CNAF", "IHEP", "JINR")] * 3
    assert batch.jobs[1].variables == {"mc": "mc-x.000001.job", "outputs": "mc-x.000001_J25.1.0.detsim"}
    only = decide.make_jobs("mc-x", step("detsim", "mc", where=("JINR",)), rows, RSES)
    assert {j.sites for j in only.jobs} == {("JINR",)}


def test_failed_files_climb_the_memory_ladder_then_become_problematic() -> None:
    s = step(retry=RetryPolicy(max_attempts=3, memory_ladder_mb=(512, 1024)))
    first = decide.failed_file(s, attempts=1, memory_mb=512, failure="memory", exit_code=202, reason="rss")
    assert (first.state, first.memory_mb) == (FAILED, 1024)
    top = decide.failed_file(s, attempts=2, memory_mb=1024, failure="memory", exit_code=202, reason="rss")
    assert top.state == PROBLEMATIC and "ladder" in (top.reason or "")


def test_exit_codes_and_attempts_decide_like_juno_submit() -> None:
    s = step(retry=RetryPolicy(max_attempts=2, exit_codes=frozenset({3})))
    assert decide.failed_file(s, attempts=1, memory_mb=512, failure="payload", exit_code=3, reason="").state == FAILED
    assert decide.failed_file(s, attempts=2, memory_mb=512, failure="payload", exit_code=3,
                              reason="").state == PROBLEMATIC
    other = decide.failed_file(s, attempts=1, memory_mb=512, failure="payload", exit_code=9, reason="boom")
    assert other.state == PROBLEMATIC and "boom" in (other.reason or "")
    assert decide.failed_file(s, attempts=1, memory_mb=512, failure="conflict", exit_code=None,
                              reason="").state == PROBLEMATIC
    assert decide.failed_file(s, attempts=1, memory_mb=512, failure="input", exit_code=None, reason="").state == FAILED


def test_outputs_must_be_exactly_the_names_given() -> None:
    assert decide.outputs_ok(["a", "b"], ["b", "a"]) is None
    assert "missing a" in (decide.outputs_ok(["a", "b"], ["b"]) or "")
    assert "unexpected c" in (decide.outputs_ok(["a"], ["a", "c"]) or "")


def test_a_dataset_closes_only_when_its_input_is_closed_and_all_is_processed() -> None:
    assert decide.dataset_complete(True, {PROCESSED: 3})
    assert not decide.dataset_complete(False, {PROCESSED: 3})
    assert not decide.dataset_complete(True, {PROCESSED: 2, WAITING: 1})
    assert not decide.dataset_complete(True, {PROCESSED: 2, PROBLEMATIC: 1})
    assert not decide.dataset_complete(True, {})


def test_eta() -> None:
    assert decide.eta_s(100, 2.0) == 50.0
    assert decide.eta_s(100, 0.0) is None and decide.eta_s(0, 1.0) is None
