"""juno-submit on the live grid: both backends, the issue's acceptance.

Input: a raw container of this test session (its own stream, so nothing else touches it) with one block
at CNAF-DISK and one at JINR-DISK (both also on IHEP-TAPE, which jobs must not use), real bytes on the
grid's XRootD storage. Tasks run as analyst1, outputs go to user.analyst1. The same behaviour tests run
with the condor backend (the grid's HTCondor pool) and the local backend (processes here).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from juno_grid import condor, storage

from juno_jobs import control, outputs, taskfile
from juno_jobs import plan as plan_mod
from juno_jobs.cli import main
from juno_jobs.settings import Settings
from juno_jobs.store import Store

pytestmark = pytest.mark.grid

TIMEOUT = 300.0
SITE_OF = {"IHEP-EOS": "IHEP", "CNAF-DISK": "CNAF", "JINR-DISK": "JINR", "IN2P3-DISK": "IN2P3"}


@dataclass
class RawInput:
    container: str
    blocks: dict[str, str]  # block → RSE
    files: dict[str, dict[str, Any]]  # name → {"rse", "adler32", "bytes", "block"}


@pytest.fixture(scope="module")
def raw_input(grid: Any, tmp_path_factory: pytest.TempPathFactory) -> RawInput:
    """Two blocks of two small raw files each: one block at CNAF-DISK, one at JINR-DISK (+ IHEP-TAPE)."""
    client = grid.client()
    stream = f"t{uuid.uuid4().hex[:10]}"
    run = random.randrange(10_000_000, 99_999_999)
    tmp = tmp_path_factory.mktemp("raw")
    month = f"stream.JUNODAQ.{stream}.202503"
    client.add_container("raw", month)
    blocks = {f"block.JUNODAQ.{stream}.20250301": "CNAF-DISK", f"block.JUNODAQ.{stream}.20250302": "JINR-DISK"}
    files: dict[str, dict[str, Any]] = {}
    for b, (block, rse) in enumerate(blocks.items()):
        client.add_dataset("raw", block)
        items = []
        for seq in (1, 2):
            name = f"RUN.{run}.JUNODAQ.Physics.ds-2.{stream}.2025030{b + 1}120000.{seq:03d}.dat"
            local = storage.make_file(tmp / name, 20_000 + 1000 * seq)
            item = storage.put_replica(client, rse, "raw", name, local, register=False)
            items.append({k: item[k] for k in ("scope", "name", "bytes", "adler32")})
            files[name] = {"rse": rse, "adler32": item["adler32"], "bytes": item["bytes"], "block": block}
        client.attach_dids("raw", block, items, rse=rse)
        client.add_replicas(rse="IHEP-TAPE", files=items)  # no bytes: a job that read tape would fail
        client.attach_dids("raw", month, [{"scope": "raw", "name": block}])
    return RawInput(container=month, blocks=blocks, files=files)


@pytest.fixture(params=[pytest.param("condor", marks=pytest.mark.condor), "local"])
def backend(request: pytest.FixtureRequest, grid: Any) -> str:
    """The same behaviour tests on both backends."""
    if request.param == "condor":
        condor.configure_bindings(grid.cfg)
        ok, msg = condor.health(grid.cfg)
        assert ok, msg
    return str(request.param)


@pytest.fixture
def work_dir(grid: Any) -> Iterator[Path]:
    """A work directory under the grid's state (the pool sees it), removed afterwards unless
    JUNO_KEEP_TEST_DIRS is set (to look at task directories after a failure)."""
    path = condor.job_dir(grid.cfg, f"test-submit-{uuid.uuid4().hex[:12]}")
    yield path
    if not os.environ.get("JUNO_KEEP_TEST_DIRS"):
        shutil.rmtree(path, ignore_errors=True)


def _session(grid: Any, backend: str, work: Path, account: str = "analyst1") -> control.Session:
    cfg = Settings(work_dir=work, backend=backend, job_owner=(condor.JOB_UID, condor.JOB_GID), max_idle=100)
    client = grid.client(account)
    return control.Session(cfg=cfg, store=Store(cfg.db_path), rucio=lambda: client, log=print)


def _wait_runners_done(td: Any, timeout: float = 60) -> None:
    """The local backend's runners are detached: let them finish before the directory goes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {p.name.split(".")[1] for p in td.root.glob("local-runner.*.pid")}
        if all((td.root / f"local-runner.{r}.done").exists() for r in pids):
            return
        time.sleep(0.2)
    pytest.fail(f"local runners of {td.root} still running after {timeout:.0f} s")


def _job(sess: control.Session, task_id: int, job: int) -> Any:
    row = sess.store.job(task_id, job)
    assert row is not None
    return row


def _task_file(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(sess: control.Session, task_file: Path, backend: str) -> Any:
    task = taskfile.load(task_file)
    p = plan_mod.make_plan(task, sess.client, log=print)
    row = control.submit(sess, p, backend=backend)
    deadline = time.monotonic() + TIMEOUT
    while True:
        control.sync(sess, row)
        row = sess.store.task(row.id)
        if control.finished(sess, row):
            return row
        if time.monotonic() > deadline:
            jobs = [dict(j) for j in sess.store.jobs(row.id)]
            pytest.fail(f"task not finished after {TIMEOUT:.0f} s: {jobs}; see {row.task_dir}")
        time.sleep(1.0)


def _unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- locality and outputs


def test_jobs_run_where_their_input_is_and_outputs_reach_rucio(grid: Any, raw_input: RawInput, backend: str,
                                                                work_dir: Path, tmp_path: Path) -> None:
    sess = _session(grid, backend, work_dir)
    name = _unique("locality")
    exe = Path(__file__).resolve().parents[1] / "etc" / "tasks" / "raw_checksum.py"
    (tmp_path / "raw_checksum.py").write_bytes(exe.read_bytes())
    task_file = _task_file(tmp_path, f"""
name: {name}
executable: raw_checksum.py
arguments: "--job {{job}} {{inputs}}"
input:
  dids: raw:{raw_input.container}
splitting:
  files_per_job: 1
output:
  dataset: {name}
  files: summary.json
resources: {{memory: 256MB, wall_time: 10m}}
""")
    task = _run(sess, task_file, backend)

    jobs = sess.store.jobs(task.id)
    assert [j["state"] for j in jobs] == ["done"] * 4, [dict(j) for j in jobs]
    client = grid.client("analyst1")
    registered = {f["name"]: f for f in client.list_files(task.output_scope, task.output_dataset)}
    assert len(registered) == 4
    td = control.task_dir(task)
    for j in jobs:
        [attempt] = sess.store.attempts(task.id, j["job"])
        result = td.read_result(j["job"], 1)
        assert result is not None
        # The site the batch system recorded (MachineAttrJUNO_Site0) holds the job's input, and the job
        # read its input from that site's storage.
        [inp] = result["inputs"]
        name_only = inp["did"].split(":", 1)[1]
        holder = raw_input.files[name_only]["rse"]
        assert attempt["site"] == SITE_OF[holder] == j["sites"], (dict(attempt), holder)
        assert inp["rse"] == holder and inp["site"] == attempt["site"]
        assert inp["adler32"] == raw_input.files[name_only]["adler32"]
        # Its output is in Rucio, at a disk RSE of that site, with the right checksum on storage too: the
        # job put it there itself; nothing of it came back to the submitter.
        [out] = sess.store.outputs(task.id, j["job"])
        assert SITE_OF[out["rse"]] == attempt["site"]
        assert registered[out["name"]]["adler32"] == out["adler32"]
        [rec] = result["outputs"]
        assert rec["adler32"] == rec["storage_adler32"] == out["adler32"] and rec["rse"] == out["rse"]
        assert not list(td.root.rglob("summary.json")), "an output's bytes reached the submitter"
        pfn = storage.pfn(client, out["rse"], out["scope"], out["name"])
        assert storage.remote_adler32(pfn) == out["adler32"]
        # The payload saw the same bytes: its summary (read back from storage by the test) says so.
        copy = tmp_path / f"summary-{j['job']}.json"
        storage.copy(pfn, str(copy))
        summary = json.loads(copy.read_text())
        assert summary["files"][0]["adler32"] == raw_input.files[name_only]["adler32"]
        assert summary["site"] == attempt["site"]
    assert task.dataset_closed
    assert client.get_did(task.output_scope, task.output_dataset)["open"] is False


def _staged(grid: Any, client: Any, rse: str, scope: str, names_bytes: dict[str, bytes], tmp: Path) -> list[Any]:
    """Put files on storage as jobs leave them (the test plays the job); return what a sync expects."""
    from juno_jobs.pfns import PfnMaker

    maker = PfnMaker(client)
    wanted = []
    for i, (name, data) in enumerate(names_bytes.items()):
        local = tmp / f"staged-{i}"
        local.write_bytes(data)
        url = maker.write_url(rse, scope, name)
        storage.copy(str(local), url)
        item = outputs.Registered(scope, name, rse, len(data), storage.adler32_file(local))
        wanted.append(outputs.Expected(job=i, attempt=1, item=item, url=url))
    return wanted


def test_registering_twice_registers_each_output_once(grid: Any, tmp_path: Path) -> None:
    """Two passes over the same finished jobs, one after the other and two at once: one file per output,
    each verified on storage by checksum and registered in one bulk call."""
    client = grid.client("analyst1")
    scope = "user.analyst1"
    dataset = f"user.analyst1.{_unique('twice')}"
    outputs.ensure_dataset(client, scope, dataset)
    wanted = _staged(grid, client, "CNAF-DISK", scope, {f"{dataset}.0000{i}.a.txt": f"output {uuid.uuid4()} {i}\n"
                                                        .encode() for i in range(3)}, tmp_path)

    def once() -> tuple[list[Any], dict[int, Any]]:
        return outputs.verify_and_register(grid.client("analyst1"), (scope, dataset), wanted,
                                           outputs.StorageChecker())

    first, errors = once()
    assert errors == {} and first == wanted
    assert once() == (wanted, {})
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(once())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(wanted, {}), (wanted, {})]
    files = list(client.list_files(scope, dataset))
    assert {f["name"]: f["adler32"] for f in files} == {e.item.name: e.item.adler32 for e in wanted}


def test_a_name_rucio_has_with_another_checksum_is_an_error_that_overwrites_nothing(grid: Any, tmp_path: Path
                                                                                    ) -> None:
    """Security (issue 10, hole 8), submit side: Rucio refuses a name it has (the call is rolled back),
    is asked what it has, and nothing is registered or overwritten."""
    client = grid.client("analyst1")
    scope = "user.analyst1"
    dataset = f"user.analyst1.{_unique('clash')}"
    outputs.ensure_dataset(client, scope, dataset)
    name = f"{dataset}.00000.a.txt"
    [earlier] = _staged(grid, client, "CNAF-DISK", scope, {name: b"the first, registered output\n"}, tmp_path)
    assert outputs.verify_and_register(client, (scope, dataset), [earlier], outputs.StorageChecker())[1] == {}
    # Another file under the same name on another RSE (its own PFN there): Rucio has the name already.
    (tmp_path / "other").mkdir()
    [other] = _staged(grid, client, "JINR-DISK", scope, {name: b"other bytes, same name\n"}, tmp_path / "other")
    registered, errors = outputs.verify_and_register(client, (scope, dataset), [other], outputs.StorageChecker())
    assert registered == [] and set(errors) == {0} and errors[0].permanent
    assert "already in Rucio with adler32 " + earlier.item.adler32 in str(errors[0])
    did = client.get_did(scope, name)
    assert did["adler32"] == earlier.item.adler32
    replicas = list(client.list_replicas([{"scope": scope, "name": name}]))
    assert set(replicas[0]["rses"]) == {"CNAF-DISK"}  # no replica registered for the other bytes
    assert storage.remote_adler32(earlier.url) == earlier.item.adler32


def test_a_job_never_overwrites_bytes_on_storage(grid: Any, tmp_path: Path) -> None:
    """Security (issue 10, hole 8), worker side: the wrapper's stage-out never uses --force. The same
    bytes already there = done; other bytes there = a conflict, and the file on storage is unchanged."""
    from juno_jobs import wrapper
    from juno_jobs.pfns import NAMING, PfnMaker

    client = grid.client("analyst1")
    scope = "user.analyst1"
    dataset = f"user.analyst1.{_unique('noforce')}"
    base_url = PfnMaker(client).write_url("CNAF-DISK", scope, f"{dataset}.00000.sample")
    base = base_url[: -len(outputs.path_of(scope, f"{dataset}.00000.sample"))]
    task = {"naming": NAMING, "output": {"scope": scope, "dataset": dataset, "rse": "site",
                                         "bases": {"CNAF-DISK": {"site": "CNAF", "base": base}}}}
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    (outdir / "a.txt").write_bytes(b"the job's bytes\n")
    rec = {"file": "a.txt", "bytes": 16, "adler32": storage.adler32_file(outdir / "a.txt")}
    url = base + outputs.path_of(scope, f"{dataset}.00000.a.txt")
    first = wrapper.stage_out([rec], outdir, task, 0, "CNAF", [])
    assert first[0]["url"] == url and storage.remote_adler32(url) == rec["adler32"]
    assert wrapper.stage_out([rec], outdir, task, 0, "CNAF", [])[0]["storage_adler32"] == rec["adler32"]
    (outdir / "a.txt").write_bytes(b"different bytes!\n")
    other = {"file": "a.txt", "bytes": 17, "adler32": storage.adler32_file(outdir / "a.txt")}
    with pytest.raises(wrapper.Failure) as err:
        wrapper.stage_out([other], outdir, task, 0, "CNAF", [])
    assert err.value.kind == "conflict" and "nothing was overwritten" in str(err.value)
    assert storage.remote_adler32(url) == rec["adler32"]


def test_a_job_copies_many_files_at_once_and_each_keeps_its_checks(grid: Any, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper moves files in bulk (one xrdcp for the inputs, one per output directory, `copies` at a time)
    and still checks each one: every output lands with its adler32, a second run copies only what is new,
    an output whose PFN holds other bytes stops the job before anything is copied, and an input whose bytes
    differ from Rucio's adler32 fails the job naming that file."""
    from juno_jobs import wrapper
    from juno_jobs.pfns import NAMING, PfnMaker

    client = grid.client("analyst1")
    scope = "user.analyst1"
    dataset = f"user.analyst1.{_unique('bulk')}"
    monkeypatch.delenv("HOME", raising=False)  # as in an HTCondor job: xrdfs's session mode needs one
    base_url = PfnMaker(client).write_url("CNAF-DISK", scope, f"{dataset}.00000.sample")
    base = base_url[: -len(outputs.path_of(scope, f"{dataset}.00000.sample"))]
    bases = {"CNAF-DISK": {"site": "CNAF", "base": base}}
    task = {"naming": NAMING, "copies": 3, "rse_bases": bases,
            "output": {"scope": scope, "dataset": dataset, "rse": "site", "bases": bases}}
    outdir = tmp_path / "outputs"
    outdir.mkdir()

    def made(n: int) -> list[dict[str, Any]]:
        recs = []
        for i in range(n):
            (outdir / f"o{i}.txt").write_bytes(f"output {i} of {dataset}\n".encode())
            recs.append({"file": f"o{i}.txt", "bytes": (outdir / f"o{i}.txt").stat().st_size,
                         "adler32": storage.adler32_file(outdir / f"o{i}.txt")})
        return recs

    six = made(6)  # six hashed paths: six directories
    done = wrapper.stage_out(six, outdir, task, 0, "CNAF", [])
    assert [d["storage_adler32"] for d in done] == [r["adler32"] for r in six]
    assert all(storage.remote_adler32(d["url"]) == d["adler32"] for d in done)
    seven = made(7)
    again = wrapper.stage_out(seven, outdir, task, 0, "CNAF", [])
    assert [d["url"] for d in again[:6]] == [d["url"] for d in done]
    assert storage.remote_adler32(again[6]["url"]) == seven[6]["adler32"]
    # Other bytes at one PFN: a conflict, and the other new output is not copied either.
    (outdir / "o1.txt").write_bytes(b"not what is on storage\n")
    (outdir / "o8.txt").write_bytes(b"a new one\n")
    clash = [{"file": "o8.txt", "bytes": 10, "adler32": storage.adler32_file(outdir / "o8.txt")},
             {"file": "o1.txt", "bytes": 23, "adler32": storage.adler32_file(outdir / "o1.txt")}]
    with pytest.raises(wrapper.Failure) as err:
        wrapper.stage_out(clash, outdir, task, 0, "CNAF", [])
    assert err.value.kind == "conflict" and done[1]["url"] in str(err.value)
    assert storage.remote_adler32(done[1]["url"]) == six[1]["adler32"]
    assert storage.remote_adler32(base + outputs.path_of(scope, f"{dataset}.00000.o8.txt")) is None
    # The seven back as inputs, in one go; then with one adler32 that is not the file's.
    inputs = [[scope, d["name"], d["bytes"], d["adler32"]] for d in again]
    spec = {"rses": ["CNAF-DISK"], "sites": ["CNAF"], "inputs": inputs}
    got = wrapper.stage_in(spec, task, "CNAF", tmp_path / "in1")
    assert [g["adler32"] for g in got] == [r["adler32"] for r in seven]
    assert [(tmp_path / "in1" / i[1]).read_bytes() for i in inputs] == [
        f"output {i} of {dataset}\n".encode() for i in range(7)]
    inputs[4] = [*inputs[4][:3], "0badc0de"]
    with pytest.raises(wrapper.Failure) as err:
        wrapper.stage_in(spec, task, "CNAF", tmp_path / "in2")
    assert err.value.kind == "input" and f"{scope}:{inputs[4][1]}" in str(err.value)
    assert "Rucio says 0badc0de" in str(err.value)


def test_jobs_never_carry_rucio_credentials(grid: Any, backend: str, work_dir: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The submitter has a Rucio config (with a password) in its environment; the job sees none of it."""
    monkeypatch.setenv("RUCIO_CONFIG", str(grid.cfg.state_dir / "rucio" / "analyst1.cfg"))
    monkeypatch.setenv("RUCIO_ACCOUNT", "analyst1")
    sess = _session(grid, backend, work_dir)
    name = _unique("nocreds")
    task_file = _task_file(tmp_path, f"""
name: {name}
script: |
  env | sort > env.txt
  for f in {grid.cfg.state_dir.resolve() / "rucio"} /root/.rucio; do
    if [ -e "$f" ]; then echo "SEES $f" >> env.txt; fi
  done
  true
splitting:
  jobvars:
    n: {{type: range, first: 0, count: 1}}
output:
  dataset: {name}
  files: env.txt
  rse: CNAF-DISK
resources: {{memory: 128MB, wall_time: 5m}}
""")
    task = _run(sess, task_file, backend)
    [out] = sess.store.outputs(task.id)
    copy = tmp_path / "env.txt"
    storage.copy(storage.pfn(grid.client("analyst1"), out["rse"], out["scope"], out["name"]), str(copy))
    seen = copy.read_text()
    assert "JUNO_SITE=" in seen  # the file is the job's environment
    assert not [line for line in seen.splitlines() if line.startswith(("RUCIO_", "X509_", "BEARER_TOKEN"))], seen
    if backend == "condor":  # an execute node sees nothing of the submitter's disk
        assert "SEES" not in seen, seen


def _read_bytes() -> int:
    """Bytes this process has read so far, through any file or socket (/proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


@pytest.mark.condor
def test_output_bytes_never_pass_through_the_submitter(grid: Any, work_dir: Path, tmp_path: Path) -> None:
    """Two jobs write 8 MB outputs; the submitting process (this one: plan, submit, every sync, the
    registration) reads fewer bytes in all than one output holds: it never touched them."""
    sess = _session(grid, "condor", work_dir)
    name = _unique("nobytes")
    size = 8 << 20
    task_file = _task_file(tmp_path, f"""
name: {name}
script: |
  head -c {size} /dev/urandom > big.dat
splitting:
  jobvars:
    n: {{type: range, first: 0, count: 2}}
output:
  dataset: {name}
  files: big.dat
  rse: site
resources: {{memory: 256MB, wall_time: 5m}}
""")
    before = _read_bytes()
    task = _run(sess, task_file, "condor")
    read = _read_bytes() - before
    print(f"the submitting process read {read} bytes while 2 outputs of {size} bytes were made and registered")
    assert [j["state"] for j in sess.store.jobs(task.id)] == ["done", "done"]
    outs = sess.store.outputs(task.id)
    assert len(outs) == 2 and all(o["bytes"] == size for o in outs)
    assert read < size, f"the submitting process read {read} bytes: as much as an output"


@pytest.mark.condor
def test_the_schedd_restarted_mid_task_the_task_completes_and_nothing_is_registered_twice(
        grid: Any, work_dir: Path, tmp_path: Path) -> None:
    sess = _session(grid, "condor", work_dir)
    name = _unique("restart")
    task_file = _task_file(tmp_path, f"""
name: {name}
script: |
  sleep 6
  echo "job $JUNO_JOB" > out.txt
splitting:
  jobvars:
    n: {{type: range, first: 0, count: 6}}
output:
  dataset: {name}
  files: out.txt
  rse: site
resources: {{memory: 128MB, wall_time: 5m}}
""")
    p = plan_mod.make_plan(taskfile.load(task_file), sess.client, log=print)
    row = control.submit(sess, p, backend="condor")
    deadline = time.monotonic() + TIMEOUT
    while not any(j["state"] == "running" for j in sess.store.jobs(row.id)):
        assert time.monotonic() < deadline, "no job started"
        control.sync(sess, row)
        time.sleep(0.5)
    control.sync(sess, row)
    condor.restart_node(grid.cfg, condor.SUBMIT_NODE)  # the schedd goes away and comes back
    sess = _session(grid, "condor", work_dir)  # a new session: no htcondor2 handle survives a restart
    row = sess.store.task(row.id)
    while not control.finished(sess, row):
        assert time.monotonic() < deadline, [dict(j) for j in sess.store.jobs(row.id)]
        control.sync(sess, row)
        row = sess.store.task(row.id)
        time.sleep(1.0)
    jobs = sess.store.jobs(row.id)
    assert [j["state"] for j in jobs] == ["done"] * 6, [dict(j) for j in jobs]
    names = [o["name"] for o in sess.store.outputs(row.id)]
    assert len(names) == len(set(names)) == 6
    files = list(grid.client("analyst1").list_files(row.output_scope, row.output_dataset))
    assert sorted(f["name"] for f in files) == sorted(names)
    assert row.dataset_closed


# --------------------------------------------------------------------------- retries and memory


def test_failing_jobs_are_retried_per_policy_and_every_attempt_has_logs(grid: Any, backend: str, work_dir: Path,
                                                                         tmp_path: Path) -> None:
    sess = _session(grid, backend, work_dir)
    name = _unique("retry")
    # job 0 fails once (exit 3) then works; job 1 always exits 3 (retried to the cap);
    # job 2 exits 9, which the policy does not retry.
    task_file = _task_file(tmp_path, f"""
name: {name}
script: |
  echo "job $JUNO_JOB attempt $JUNO_ATTEMPT at $JUNO_SITE"
  echo "stderr of attempt $JUNO_ATTEMPT" >&2
  case "$1" in
    flaky) [ "$JUNO_ATTEMPT" -ge 2 ] || exit 3 ;;
    broken) exit 3 ;;
    fatal) exit 9 ;;
  esac
  echo done > out.txt
arguments: "{{mode}}"
splitting:
  jobvars:
    mode: {{type: enumerate, values: [flaky, broken, fatal]}}
output:
  dataset: {name}
  files: out.txt
  rse: JINR-DISK
resources: {{memory: 128MB, wall_time: 5m}}
retry:
  max_attempts: 3
  exit_codes: [3]
sites:
  allow: [CNAF, JINR]
""")
    task = _run(sess, task_file, backend)

    jobs = {j["job"]: j for j in sess.store.jobs(task.id)}
    assert (jobs[0]["state"], jobs[0]["attempts"]) == ("done", 2)
    assert (jobs[1]["state"], jobs[1]["attempts"]) == ("failed", 3)
    assert "no attempts left" in jobs[1]["reason"]
    assert (jobs[2]["state"], jobs[2]["attempts"]) == ("failed", 1)
    assert "not in retry.exit_codes" in jobs[2]["reason"]
    assert not task.dataset_closed  # two jobs failed: the task is not complete
    # Every attempt's logs, through the CLI.
    runner = CliRunner()
    out = runner.invoke(main, ["--dir", str(sess.cfg.work_dir), "-q", "logs", str(task.id), "-j", "1"])
    assert out.exit_code == 0, out.output
    for n in (1, 2, 3):
        assert f"==== job 1 attempt {n}: failed" in out.output
        assert f"job 1 attempt {n} at " in out.output
        assert f"stderr of attempt {n}" in out.output
    assert "payload exit code 3" in out.output or "exited with code 3" in out.output
    if backend == "condor":
        assert "Job executing on host" in out.output and "Job terminated" in out.output
        _same_events_from_both_readers(control.task_dir(task).events_log)
    # resubmit brings the failed jobs back (here: still failing, but as new attempts).
    out = runner.invoke(main, ["--dir", str(sess.cfg.work_dir), "-q", "resubmit", str(task.id), "--jobs", "2"])
    assert out.exit_code == 0, out.output
    assert _job(sess, task.id, 2)["attempts"] == 2
    out = runner.invoke(main, ["--dir", str(sess.cfg.work_dir), "-q", "resubmit", str(task.id), "--jobs", "0"])
    assert out.exit_code == 4 and "not failed or killed" in out.output
    # kill takes it out of the batch system again; it ends as killed.
    out = runner.invoke(main, ["--dir", str(sess.cfg.work_dir), "-q", "kill", str(task.id)])
    assert out.exit_code == 0, out.output
    assert _job(sess, task.id, 2)["state"] in ("killed", "failed")  # it may have failed before the kill
    _wait_runners_done(control.task_dir(task))


def test_a_job_that_needs_more_memory_succeeds_after_escalation(grid: Any, backend: str, work_dir: Path,
                                                                tmp_path: Path) -> None:
    """The payload holds 700 MB: over the 512MB request (the wrapper measures and stops it), then 1GB works."""
    sess = _session(grid, backend, work_dir)
    name = _unique("memory")
    task_file = _task_file(tmp_path, f"""
name: {name}
script: |
  python3 -c "import time; block = b'x' * (700 << 20); time.sleep(2); open('ok.txt', 'w').write('ok')"
splitting:
  jobvars:
    n: {{type: range, count: 1}}
output:
  dataset: {name}
  files: ok.txt
  rse: CNAF-DISK
resources: {{memory: 512MB, wall_time: 5m}}
retry:
  max_attempts: 3
  memory: [512MB, 1GB, 2GB]
""")
    task = _run(sess, task_file, backend)

    attempts = sess.store.attempts(task.id, 0)
    assert [(a["memory"], a["state"], a["failure"]) for a in attempts] == [
        (512, "failed", "memory"), (1024, "succeeded", None)], [dict(a) for a in attempts]
    assert attempts[0]["max_rss_mb"] > 512
    assert _job(sess, task.id, 0)["state"] == "done"
    assert task.dataset_closed


def _same_events_from_both_readers(log: Path) -> None:
    """The user-log text parser (used for speed) and htcondor2's JobEventLog agree on a real log."""
    import htcondor2

    from juno_jobs.monitor import from_condor, parse_text

    def key(e: Any) -> tuple[Any, ...]:
        return (e.cluster, e.proc, e.kind, e.site, e.exit_code, e.signal, e.hold_code, e.memory_mb)

    reference = [e for e in (from_condor(ev) for ev in htcondor2.JobEventLog(str(log)).events(stop_after=0)) if e]
    parsed, _ = parse_text(log.read_text())
    assert [key(e) for e in parsed] == [key(e) for e in reference]
    assert any(e.kind == "terminated" and e.exit_code == 3 for e in parsed)
    assert any(e.kind == "info" and e.site in ("CNAF", "JINR") for e in parsed)


# --------------------------------------------------------------------------- nothing submitted


def _no_jobs_named(name: str) -> bool:
    import htcondor2

    return not htcondor2.Schedd().query(f'JunoTaskName == "{name}"', projection=["ClusterId"])


def _cli(grid: Any, work: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--dir", str(work), "-q", *args])


@pytest.mark.condor
def test_bad_task_file_is_reported_with_file_and_line_and_nothing_is_submitted(grid: Any, work_dir: Path,
                                                                                 tmp_path: Path) -> None:
    condor.configure_bindings(grid.cfg)
    work = work_dir
    name = _unique("bad")
    task_file = _task_file(tmp_path, f"""name: {name}
script: "true"
splitting:
  jobvars:
    seed: {{type: range, count: 2}}
resources:
  memory: lots
  walltime: 1h
""")
    out = _cli(grid, work, "submit", str(task_file))
    assert out.exit_code == 3, out.output
    assert f"{task_file}:7: resources.memory:" in out.output
    assert f"{task_file}:8: resources.walltime: unknown key (did you mean 'wall_time'?" in out.output
    assert "nothing was submitted" in out.output
    assert not Store(work / "tasks.sqlite").tasks()
    assert _no_jobs_named(name)


@pytest.mark.condor
def test_missing_input_did_is_a_clear_error_and_nothing_is_submitted(grid: Any, raw_input: RawInput,
                                                                       work_dir: Path, tmp_path: Path) -> None:
    condor.configure_bindings(grid.cfg)
    work = work_dir
    name = _unique("missing")
    missing = raw_input.container.replace(".202503", ".202504")
    task_file = _task_file(tmp_path, f"""name: {name}
script: "true"
input:
  dids: [raw:{raw_input.container}, raw:{missing}]
splitting:
  files_per_job: 2
""")
    out = _cli(grid, work, "submit", str(task_file))
    assert out.exit_code == 4, out.output
    assert f"raw:{missing} not found in Rucio" in out.output
    assert "Nothing was submitted" in out.output
    assert not Store(work / "tasks.sqlite").tasks()
    assert _no_jobs_named(name)


def test_input_only_on_tape_is_a_clear_error(grid: Any, raw_input: RawInput, work_dir: Path, tmp_path: Path) -> None:
    work = work_dir
    client = grid.client()
    block = next(iter(raw_input.blocks)).replace("20250301", "20250303")
    name = f"RUN.12345.JUNODAQ.Physics.ds-2.{block.split('.')[2]}.20250303120000.001.dat"
    client.add_dataset("raw", block)
    client.attach_dids("raw", block, [{"scope": "raw", "name": name, "bytes": 10, "adler32": "0000000b"}],
                       rse="IHEP-TAPE")
    task_file = _task_file(tmp_path, f"""name: {_unique('tape')}
script: "true"
input:
  dids: raw:{block}
splitting:
  files_per_job: 2
""")
    out = _cli(grid, work, "plan", str(task_file))
    assert out.exit_code == 4, out.output
    assert "1 input file only on tape (IHEP-TAPE)" in out.output
    assert "rucio rule add" in out.output


@pytest.fixture(autouse=True)
def _cleanup_schedd(grid: Any) -> Iterator[None]:
    """Remove whatever jobs a test left in the schedd (only ours: named test-submit task dirs)."""
    yield
    try:
        import htcondor2

        condor.configure_bindings(grid.cfg)
        htcondor2.Schedd().act(htcondor2.JobAction.Remove,
                               f'regexp("{grid.cfg.state_dir.resolve()}/jobs/test-submit-", Iwd)')
    except Exception:  # noqa: BLE001 - cleanup only
        pass


# --------------------------------------------------------------------------- the command line


def test_cli_plan_submit_wait_status_list_logs(grid: Any, raw_input: RawInput, work_dir: Path,
                                               tmp_path: Path) -> None:
    """The commands as a person runs them (Rucio account root, so the output scope is written out)."""
    name = _unique("cli")
    raw_task = _task_file(tmp_path, f"""name: {name}-raw
script: "true"
input:
  dids: raw:{raw_input.container}
splitting:
  files_per_job: 2
""", "raw.yaml")
    out = _cli(grid, work_dir, "plan", str(raw_task), "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert (doc["jobs"], doc["files"]) == (2, 4)
    assert sorted((g["sites"], g["jobs"], g["files"]) for g in doc["groups"]) == [("CNAF", 1, 2), ("JINR", 1, 2)]
    assert doc["jobs_per_site"] == {"CNAF": 1, "JINR": 1}
    assert "requirements = stringListMember(TARGET.JUNO_Site, MY.DESIRED_Sites)" in doc["submit_description"]
    assert "queue job,attempt,memory,sites from " in doc["submit_description"]
    assert not Store(work_dir / "tasks.sqlite").tasks()  # plan submits nothing

    task_file = _task_file(tmp_path, f"""name: {name}
script: 'echo "seed $1" > out-$1.txt'
arguments: "{{seed}}"
splitting:
  jobvars:
    seed: {{type: range, first: 5, count: 2}}
output:
  dataset: user.jcoord:{name}
  files: "out-*.txt"
  rse: JINR-DISK
resources: {{memory: 64MB, wall_time: 2m}}
""")
    out = _cli(grid, work_dir, "--backend", "local", "submit", str(task_file), "--wait")
    assert out.exit_code == 0, out.output
    assert "task 1 (" in out.output and "completed" in out.output
    out = _cli(grid, work_dir, "status", "1", "--json", "--jobs")
    doc = json.loads(out.output)
    assert (doc["state"], doc["counts"]["done"], doc["outputs_registered"], doc["dataset_closed"]) == (
        "completed", 2, 2, True)
    assert doc["output_dataset"] == f"user.jcoord:user.jcoord.{name}"
    assert [j["state"] for j in doc["job_list"]] == ["done", "done"]
    files = {f["name"] for f in grid.client().list_files("user.jcoord", f"user.jcoord.{name}")}
    assert files == {f"user.jcoord.{name}.00000.out-5.txt", f"user.jcoord.{name}.00001.out-6.txt"}
    out = _cli(grid, work_dir, "list", "--json")
    assert [t["name"] for t in json.loads(out.output)] == [name]
    out = _cli(grid, work_dir, "logs", name, "-j", "1", "--only", "result")
    assert out.exit_code == 0 and '"exit_code": 0' in out.output
    out = _cli(grid, work_dir, "logs", "1", "-j", "7")
    assert out.exit_code == 4 and "jobs 0..1" in out.output
    out = _cli(grid, work_dir, "status", "42")
    assert out.exit_code == 6 and "no task '42'" in out.output

    failing = _task_file(tmp_path, f"""name: {name}-fails
script: "exit 1"
splitting:
  jobvars:
    n: {{type: range, count: 1}}
retry: {{max_attempts: 1}}
""", "fails.yaml")
    out = _cli(grid, work_dir, "--backend", "local", "submit", str(failing), "--wait")
    assert out.exit_code == 7, out.output
    assert "resubmit 2 --failed" in out.output


@pytest.mark.condor
def test_a_refused_submission_leaves_no_task(grid: Any, work_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    condor.configure_bindings(grid.cfg)
    monkeypatch.setenv("JUNO_SUBMIT_SCHEDD", f"no-such-schedd-{uuid.uuid4().hex[:6]}")
    task_file = _task_file(tmp_path, f"""name: {_unique('refused')}
script: "true"
splitting:
  jobvars:
    n: {{type: range, count: 2}}
""")
    out = _cli(grid, work_dir, "submit", str(task_file))
    assert out.exit_code == 5, out.output
    assert "cannot reach the schedd no-such-schedd-" in out.output
    assert not Store(work_dir / "tasks.sqlite").tasks()
    assert not list((work_dir / "tasks").glob("*"))


def test_input_filter_on_name_fields_and_rucio_metadata(grid: Any, raw_input: RawInput, work_dir: Path,
                                                        tmp_path: Path) -> None:
    """seq comes from the raw names; bytes is Rucio DID metadata (get_metadata_bulk)."""
    def planned(filt: str) -> list[str]:
        task_file = _task_file(tmp_path, f"""name: {_unique('filter')}
script: "true"
input:
  dids: raw:{raw_input.container}
  filter: {filt}
splitting:
  files_per_job: 10
""")
        out = _cli(grid, work_dir, "plan", str(task_file), "--json", "--jobs")
        assert out.exit_code == 0, out.output
        return sorted(f.split(":", 1)[1] for j in json.loads(out.output)["job_list"] for f in j["files"])

    seq2 = sorted(n for n in raw_input.files if n.endswith(".002.dat"))
    assert planned("{seq: 2}") == seq2
    assert planned("{bytes: {min: 21500}}") == seq2  # 22,000-byte files; the .001 ones have 21,000
    assert planned("{seq: [1, 2], run_type: Physics}") == sorted(raw_input.files)
    task_file = _task_file(tmp_path, f"""name: {_unique('filter')}
script: "true"
input:
  dids: raw:{raw_input.container}
  filter: {{run_type: Calib}}
splitting:
  files_per_job: 10
""")
    out = _cli(grid, work_dir, "plan", str(task_file))
    assert out.exit_code == 4 and "passes input.filter (4 files looked at)" in out.output


def test_pfn_maker_asks_rucio_for_a_write_base_once_per_rse_and_scope(grid: Any) -> None:
    """juno-prod keeps one PfnMaker for all its claims: the write base of an RSE and scope is Rucio's PFN
    minus the juno path, asked once, and gives the very URL Rucio gives for any other name."""
    from juno_jobs.pfns import PfnMaker, path_of

    client = grid.client("analyst1")
    asked: list[str] = []
    real = client.lfns2pfns

    def counting(rse: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(rse)
        return real(rse, *args, **kwargs)

    client.lfns2pfns = counting
    maker = PfnMaker(client)
    scope = "user.analyst1"
    names = [f"user.analyst1.{_unique('base')}.0000{i}.a.txt" for i in range(3)]
    bases = {maker.write_base("CNAF-DISK", scope, n) for n in names}
    assert asked == ["CNAF-DISK"] and len(bases) == 1
    base = bases.pop()
    assert base is not None
    for n in names:
        assert real("CNAF-DISK", [f"{scope}:{n}"], protocol_domain="wan", operation="write",
                    scheme="root")[f"{scope}:{n}"] == base + path_of(scope, n)


def test_dataset_files_asks_file_by_file_only_without_a_complete_disk_copy(grid: Any) -> None:
    """Resolver.dataset_files (juno-prod's discovery): with a complete disk copy, a copy in progress is not
    listed file by file (list_replicas builds a PFN per file); `resolve` (juno-submit) still does; without a
    complete disk copy, dataset_files asks too."""
    from juno_jobs.model import Did
    from juno_jobs.resolve import Resolver, rse_infos

    client = grid.client()
    block = f"block.JUNODAQ.{_unique('partial').replace('-', '')}.20250304"
    names = [f"RUN.12346.JUNODAQ.Physics.ds-2.{block.split('.')[2]}.20250304120000.00{i}.dat" for i in (1, 2)]
    items = [{"scope": "raw", "name": n, "bytes": 10 + i, "adler32": f"0000000{i}"} for i, n in enumerate(names)]
    client.add_dataset("raw", block)
    client.attach_dids("raw", block, items, rse="CNAF-DISK")
    client.add_replicas(rse="JINR-DISK", files=items[:1])  # a copy in progress: one file of two
    rses = rse_infos(client)
    did = Did("raw", block)
    assert {f.name: f.rses for f in Resolver(client).dataset_files(did, {}, rses)} == \
        {names[0]: ("CNAF-DISK",), names[1]: ("CNAF-DISK",)}
    assert {f.name: f.rses for f in Resolver(client).resolve([did], rses=rses).files} == \
        {names[0]: ("CNAF-DISK", "JINR-DISK"), names[1]: ("CNAF-DISK",)}
    tape_block = block.replace("20250304", "20250305")
    client.add_dataset("raw", tape_block)
    tape_items = [{**it, "name": it["name"].replace("20250304", "20250305")} for it in items]
    client.attach_dids("raw", tape_block, tape_items, rse="IHEP-TAPE")  # complete, but on tape
    client.add_replicas(rse="JINR-DISK", files=tape_items[:1])
    files = {f.name: f.rses for f in Resolver(client).dataset_files(Did("raw", tape_block), {}, rses)}
    assert files == {tape_items[0]["name"]: ("IHEP-TAPE", "JINR-DISK"), tape_items[1]["name"]: ("IHEP-TAPE",)}
