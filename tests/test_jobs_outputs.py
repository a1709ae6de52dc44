"""The submit side of outputs without a grid: what a result record may claim, how checksum answers are
read, what travels with a job (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from juno_jobs import outputs, retry, submit, wrapper
from juno_jobs.model import OutputTarget, Resources, RetryPolicy
from juno_jobs.taskdir import TaskDir

TARGET = OutputTarget(scope="user.analyst1", name="user.analyst1.t", rse="site", patterns=("out.txt",))
BASES = {"CNAF-DISK": {"site": "CNAF", "base": "root://127.0.0.1:11096//storage/"},
         "JINR-DISK": {"site": "JINR", "base": "root://127.0.0.1:11098//pnfs/"}}


def _record(**over: object) -> dict[str, object]:
    rec: dict[str, object] = {"file": "out.txt", "name": "user.analyst1.t.00007.out.txt", "scope": "user.analyst1",
                              "rse": "CNAF-DISK", "bytes": 12, "adler32": "0a0b0c0d",
                              "url": "root://elsewhere//x"}
    rec.update(over)
    return rec


def test_the_pfn_is_computed_on_the_submit_side_not_taken_from_the_job() -> None:
    [e] = outputs.expected([_record()], job=7, attempt=2, target=TARGET, bases=BASES)
    assert e.url == "root://127.0.0.1:11096//storage/" + outputs.path_of("user.analyst1", e.item.name)
    assert (e.job, e.attempt, e.item.rse, e.item.bytes, e.item.adler32) == (7, 2, "CNAF-DISK", 12, "0a0b0c0d")


@pytest.mark.parametrize(("over", "message"), [
    ({"name": "user.analyst1.t.00008.out.txt"}, "the task expects"),
    ({"scope": "user.analyst2"}, "the task expects"),
    ({"rse": "IHEP-TAPE"}, "not an output RSE of this task"),
])
def test_a_result_record_cannot_register_anything_the_task_did_not_ask_for(over: dict[str, object],
                                                                           message: str) -> None:
    with pytest.raises(outputs.OutputError, match=message) as err:
        outputs.expected([_record(**over)], job=7, attempt=1, target=TARGET, bases=BASES)
    assert err.value.permanent


def test_a_fixed_output_rse_is_the_only_one_accepted() -> None:
    fixed = OutputTarget(scope=TARGET.scope, name=TARGET.name, rse="JINR-DISK", patterns=TARGET.patterns)
    with pytest.raises(outputs.OutputError):
        outputs.expected([_record()], job=7, attempt=1, target=fixed, bases=BASES)
    assert outputs.expected([_record(rse="JINR-DISK")], job=7, attempt=1, target=fixed, bases=BASES)


def test_checksum_session_answers_are_read_per_path() -> None:
    text = ("[127.0.0.1:11096] / > query checksum /s/a.txt\nadler32 84b021f\n"
            "[127.0.0.1:11096] / > query checksum /s/nope\n"
            "[ERROR] Server responded with an error: [3011] Unable to checksum /s/nope; no such file or directory\n\n"
            "[127.0.0.1:11096] / > query checksum /s/busy\n[ERROR] Server responded with an error: [3007] busy\n"
            "[127.0.0.1:11096] / > Goodbye.\n")
    paths = ["/s/a.txt", "/s/nope", "/s/busy"]
    assert wrapper.parse_checksum_session(text, paths) == {"/s/a.txt": "084b021f", "/s/nope": None}


def test_checksum_session_answers_pair_with_the_questions_not_with_the_echo() -> None:
    """xrdfs 5.8 (the worker nodes') echoes a long command as '<' and its tail: the answers, in order, count."""
    long = [f"/eos/juno/dci/rtraw/J25.1.0/2026/1206/RUN.4144940.JUNODAQ.Physics.ds-2.t.2026120600003{i}.001_J.rtraw"
            for i in range(3)]
    text = ("[127.0.0.1:11094] / > \n<ysics.ds-2.t.20261206000030.001_J.rtraw\nadler32 0a0b0c0d\n\n"
            "[127.0.0.1:11094] / > \n<ysics.ds-2.t.20261206000031.001_J.rtraw\n"
            f"[ERROR] Server responded with an error: [3011] Unable to checksum {long[1]}; no such file or directory"
            "\n\n"
            "[127.0.0.1:11094] / > \n<ysics.ds-2.t.20261206000032.001_J.rtraw\nadler32 1234abcd\n\n"
            "[127.0.0.1:11094] / > Goodbye.\n")
    assert wrapper.parse_checksum_session(text, long) == {long[0]: "0a0b0c0d", long[1]: None, long[2]: "1234abcd"}
    # Answers that do not pair up (one missing, or an error naming another path): only named errors count.
    assert wrapper.parse_checksum_session(text, long[1:]) == {long[1]: None}
    assert wrapper.parse_checksum_session(text, [long[0], long[2], long[1]]) == {long[1]: None}


def test_only_the_job_own_files_travel_and_only_the_result_comes_back(tmp_path: Path) -> None:
    td = TaskDir(tmp_path / "task")
    (td.root / "payload").mkdir(parents=True)
    (td.root / "payload" / "script.sh").write_text("true\n")
    desc = submit.description(td, uuid="u", name="t", task_id=1, resources=Resources(), max_idle=10, rnd=1)
    assert desc["should_transfer_files"] == "YES"
    assert desc["transfer_input_files"] == "task.json, jobs/$(job).json, payload/script.sh"
    assert desc["transfer_output_files"] == "result.json"
    assert desc["transfer_output_remaps"] == '"result.json = results/$(job).$(attempt).json"'
    assert str(td.root) not in desc["arguments"]  # the job is told nothing of the submitter's paths


def test_stage_out_failures_are_retried_conflicts_and_unsafe_jobs_are_not() -> None:
    policy = RetryPolicy(max_attempts=3, memory_ladder_mb=(), exit_codes=None)
    assert retry.decide("stageout", exit_code=206, attempt=1, memory_mb=512, policy=policy).retry
    for kind in ("conflict", "unsafe"):
        assert not retry.decide(kind, exit_code=207, attempt=1, memory_mb=512, policy=policy).retry
