"""Task files: good ones load into a typed Task; bad ones fail with file:line, what is wrong and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from juno_jobs import taskfile
from juno_jobs.model import Did, Range
from juno_jobs.taskfile import TaskFileError

ETC_TASKS = Path(__file__).resolve().parents[1] / "etc" / "tasks"

GOOD = """\
name: good-task
script: "true"
arguments: "--job {job} {inputs}"
input:
  dids: [raw:stream.JUNODAQ.global_trigger.202510, raw:block.JUNODAQ.global_trigger.20251009]
  filter:
    run: {min: 10550, max: 10560}
    run_type: [Physics, Calib]
    events: 1000
splitting:
  files_per_job: 10
output:
  dataset: user.analyst1:my-out
  files: ["*.root", summary.txt]
  rse: CNAF-DISK
resources: {memory: 1.5GB, cpus: 2, disk: 10GB, wall_time: 1h30m}
retry:
  max_attempts: 4
  memory: [2GB, 4GB, 8GB]
  exit_codes: [1, 75]
sites:
  allow: [CNAF, JINR]
  deny: [IN2P3]
"""


def write(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def issues(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(TaskFileError) as err:
        taskfile.load(path)
    return [str(i).replace(str(path), "T") for i in err.value.issues]


def test_good_task_loads_typed(tmp_path: Path) -> None:
    task = taskfile.load(write(tmp_path, GOOD))
    assert task.name == "good-task"
    assert task.script == "true" and task.executable is None
    assert task.input is not None
    assert task.input.dids == (Did("raw", "stream.JUNODAQ.global_trigger.202510"),
                               Did("raw", "block.JUNODAQ.global_trigger.20251009"))
    assert task.input.filter == {"run": Range(10550, 10560), "run_type": ("Physics", "Calib"), "events": 1000}
    assert task.splitting.files_per_job == 10
    assert task.output is not None
    assert (task.output.scope, task.output.dataset, task.output.files, task.output.rse) == (
        "user.analyst1", "my-out", ("*.root", "summary.txt"), "CNAF-DISK")
    assert (task.resources.memory_mb, task.resources.cpus, task.resources.disk_mb, task.resources.wall_s) == (
        1536, 2, 10240, 5400)
    assert task.resources.copies == 4  # the wrapper's default
    more = GOOD.replace("wall_time: 1h30m}", "wall_time: 1h30m, copies: 8}")
    assert taskfile.load(write(tmp_path, more)).resources.copies == 8
    assert issues(tmp_path, GOOD.replace("wall_time: 1h30m}", "wall_time: 1h30m, copies: 0}"))
    assert task.retry.max_attempts == 4
    assert task.retry.memory_ladder_mb == (2048, 4096, 8192)
    assert task.retry.exit_codes == frozenset({1, 75})
    assert task.sites.allow == ("CNAF", "JINR") and task.sites.deny == ("IN2P3",)


@pytest.mark.parametrize("name", ["raw-checksum.yaml", "mc-jobvars.yaml"])
def test_example_tasks_load(name: str) -> None:
    task = taskfile.load(ETC_TASKS / name)
    assert task.name


def test_relative_executable_is_found_next_to_the_task_file(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    text = GOOD.replace('script: "true"', "executable: run.sh")
    task = taskfile.load(write(tmp_path, text))
    assert task.executable == (tmp_path / "run.sh").resolve()


def test_absolute_executable_is_a_site_path(tmp_path: Path) -> None:
    text = GOOD.replace('script: "true"', "executable: /cvmfs/juno.ihep.ac.cn/bin/analysis")
    task = taskfile.load(write(tmp_path, text))
    assert task.site_executable == "/cvmfs/juno.ihep.ac.cn/bin/analysis"


def test_unknown_key_has_line_and_suggestion(tmp_path: Path) -> None:
    text = GOOD.replace("  wall_time: 1h30m}", "  walltime: 1h30m}").replace(
        "resources: {memory: 1.5GB, cpus: 2, disk: 10GB,\n", "")
    text = GOOD.replace("resources: {memory: 1.5GB, cpus: 2, disk: 10GB, wall_time: 1h30m}",
                        "resources:\n  memory: 2GB\n  walltime: 1h")
    assert issues(tmp_path, text) == [
        "T:18: resources.walltime: unknown key (did you mean 'wall_time'? known keys: copies, cpus, disk, memory, "
        "wall_time)"]


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    out = issues(tmp_path, "name: x\nsplitting:\n  files_per_job: [1\nscript: a\n")
    assert len(out) == 1 and out[0].startswith("T:4:") and "YAML syntax error" in out[0]


def test_duplicate_key_has_both_lines(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD + "name: again\n")
    assert out == ["T:24: name: duplicate key (first at line 1) (keep one of them: YAML would silently use the last)"]


def test_bad_size_and_duration(tmp_path: Path) -> None:
    text = GOOD.replace("resources: {memory: 1.5GB, cpus: 2, disk: 10GB, wall_time: 1h30m}",
                        "resources:\n  memory: lots\n  wall_time: soon")
    out = issues(tmp_path, text)
    assert out == ["T:17: resources.memory: 'lots' is not valid here (write a size, e.g. 512MB or 2GB)",
                   "T:18: resources.wall_time: 'soon' is not valid here (write a duration, e.g. 30m, 2h or 1h30m)"]


def test_wrong_type(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD.replace("files_per_job: 10", "files_per_job: ten"))
    assert out == ["T:11: splitting.files_per_job: expected an integer, found str 'ten' "
                   "(quote the value if YAML reads it as something else)"]


def test_bad_did(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD.replace("raw:block.JUNODAQ.global_trigger.20251009", "block.JUNODAQ.x"))
    assert out == ["T:5: input.dids[1]: 'block.JUNODAQ.x' is not valid here "
                   "(write scope:name, e.g. raw:stream.JUNODAQ.global_trigger.202510)"]


def test_missing_payload(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD.replace('script: "true"\n', ""))
    assert out == ["T:1: missing key 'executable' (or 'script') (add executable: my_analysis.sh (next to the task "
                   "file) or script: | followed by shell lines)"]


def test_both_payloads(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD.replace('script: "true"', 'script: "true"\nexecutable: /bin/true'))
    assert out == ["T:2: script: both executable and script are given (keep one of them)"]


def test_missing_relative_executable(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD.replace('script: "true"', "executable: nothere.sh"))
    assert len(out) == 1 and out[0].startswith("T:2: executable: nothere.sh not found")


def test_unknown_placeholder(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD.replace("--job {job} {inputs}", "--job {jbo} {inputs}"))
    assert out == ["T:3: arguments: unknown placeholder {jbo} (did you mean {job}? known: {input}, {inputs}, {job}, "
                   "{nfiles})"]


def test_inputs_must_be_a_word(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD.replace("--job {job} {inputs}", "--files={inputs}"))
    assert out[0].startswith("T:3: arguments: {inputs} must be a word of its own")


def test_splitting_must_fit_the_input(tmp_path: Path) -> None:
    text = GOOD.replace("  files_per_job: 10", "  jobvars:\n    seed: {type: range, count: 3}")
    out = issues(tmp_path, text)
    assert out[0].startswith("T:10: splitting: the task has input but no files_per_job")
    assert out[1].startswith("T:11: splitting.jobvars: jobvars split tasks without input")


def test_open_ended_jobvars_need_an_end(tmp_path: Path) -> None:
    out = issues(tmp_path, 'name: mc\nscript: "true"\nsplitting:\n  jobvars:\n    seed: {type: range, first: 1}\n')
    assert out == ["T:4: splitting.jobvars: every job variable is an open-ended range: the task has no end "
                   "(give one of them last: or count:, or set splitting.max_jobs)"]


def test_jobvar_keys_must_fit_the_type(tmp_path: Path) -> None:
    out = issues(tmp_path, 'name: mc\nscript: "true"\nsplitting:\n  jobvars:\n'
                           '    seed: {type: enumerate, values: [1, 2], first: 3}\n')
    assert out == ["T:5: splitting.jobvars.seed.first: first does not apply to a enumerate variable "
                   "(a enumerate variable takes group, values)"]


def test_list_jobvar_reads_its_file(tmp_path: Path) -> None:
    (tmp_path / "seeds.txt").write_text("# seeds\n11\n12\n\n13\n")
    task = taskfile.load(write(tmp_path, 'name: mc\nscript: "true"\nsplitting:\n  jobvars:\n'
                                         '    seed: {type: list, file: seeds.txt}\n'))
    assert task.splitting.jobvars[0].values == ("11", "12", "13")


def test_memory_ladder_must_climb_above_the_request(tmp_path: Path) -> None:
    text = GOOD.replace("memory: [2GB, 4GB, 8GB]", "memory: [4GB, 2GB]")
    assert issues(tmp_path, text) == [
        "T:19: retry.memory[1]: the memory ladder must climb: 2GB after 4GB (list the steps from small to large)"]
    text = GOOD.replace("memory: [2GB, 4GB, 8GB]", "memory: [1GB]")
    assert issues(tmp_path, text)[0].startswith("T:19: retry.memory: every step of the ladder is at or below")


def test_allow_and_deny_must_not_contradict(tmp_path: Path) -> None:
    out = issues(tmp_path, GOOD.replace("deny: [IN2P3]", "deny: [CNAF]"))
    assert out == ["T:23: sites.deny: CNAF both allowed and denied (remove it from one list)"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("cpus: 2", "cpus: 0").replace("max_attempts: 4", "max_attempts: many")
    out = issues(tmp_path, text)
    assert [o.split(":")[1] for o in out] == ["16", "18"]


def test_release_expands_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUNO_TEST_ROOT", "/sw")
    task = taskfile.load(write(tmp_path, GOOD + "release: ${JUNO_TEST_ROOT}/J25.5.0\n"))
    assert task.release == "/sw/J25.5.0"
    monkeypatch.delenv("JUNO_TEST_ROOT")
    out = issues(tmp_path, GOOD + "release: ${JUNO_TEST_ROOT}/J25.5.0\n")
    assert out == ["T:24: release: ${JUNO_TEST_ROOT} is not set in the environment "
                   "(export JUNO_TEST_ROOT=... or write the path in full)"]


def test_empty_file(tmp_path: Path) -> None:
    out = issues(tmp_path, "")
    assert out[0].startswith("T:1:") and "empty" in out[0]
