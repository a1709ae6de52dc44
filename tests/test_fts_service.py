"""The local FTS3-API transfer service (juno_grid.fts) against two real XRootD servers.

The test starts its own two `xrootd` (ports 12094/12095, third-party copy and adler32 on) and the
service as a subprocess, and stops each of them by PID at the end. XRootD listens on every
interface, so this module runs only inside a private network namespace (tests/conftest.py puts the
pytest process into the grid's); outside one it fails rather than open ports to the world.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from juno_grid.config import FTS_PYTHON

pytestmark = pytest.mark.grid

REPO = Path(__file__).resolve().parents[1]
SRC_PORT, DST_PORT = 12094, 12095
SRC = f"root://127.0.0.1:{SRC_PORT}//"
DST = f"root://127.0.0.1:{DST_PORT}//"
# Exactly what Rucio's FTS3Transfertool.bulk_query asks for.
FILES_FIELDS = ("file_state,dest_surl,finish_time,start_time,staging_start,staging_finished,reason,source_surl,"
                "file_metadata")
FINAL = {"FINISHED", "FINISHEDDIRTY", "FAILED", "CANCELED"}
XRD_USER = "xrootd"  # XRootD refuses to run as root; Debian's package creates this user

XRD_CONFIG = """\
all.export /
oss.localroot {data}
xrootd.chksum max 16 adler32
ofs.tpc autorm pgm /usr/bin/xrdcp --server
all.adminpath {run}
all.pidpath {run}
"""


def _loopback_only() -> bool:
    """True inside a network namespace whose only interface is loopback (nothing else can reach us)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


# Never skipped: a missing precondition is a failure of the set-up, and says so.
if not _loopback_only():
    pytest.fail("XRootD listens on all interfaces: run inside a private network namespace "
                "(tests/conftest.py joins the grid's)", pytrace=False)
if not all(shutil.which(tool) for tool in ("xrootd", "xrdcp", "xrdfs")):
    pytest.fail("needs xrootd-server and xrootd-client (make install)", pytrace=False)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


@dataclass
class Storage:
    """Two XRootD servers: the source's data under src_dir, the destination's under dst_dir."""

    src_dir: Path
    dst_dir: Path
    owner: tuple[int, int] | None

    def put(self, name: str, size: int) -> bytes:
        data = os.urandom(size)
        path = self.src_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if self.owner:
            for p in (path, *[q for q in path.parents if self.src_dir in q.parents]):
                os.chown(p, *self.owner)
        return data


def _start_xrootd(base: Path, name: str, port: int,
                  owner: tuple[int, int] | None) -> tuple[subprocess.Popen[bytes], Path]:
    """An XRootD server exporting <base>/<name>/data on `port`; returns its process and data directory."""
    assert not _port_open(port), f"port {port} is taken: another XRootD left running?"
    data, run = base / name / "data", base / name / "run"
    data.mkdir(parents=True)
    run.mkdir(parents=True)
    cfg = base / name / "xrootd.cfg"
    cfg.write_text(XRD_CONFIG.format(data=data, run=run))
    if owner:
        for p in (base, base / name, data, run):
            os.chown(p, *owner)
    argv = ["xrootd", "-p", str(port), "-c", str(cfg), "-l", str(base / name / "xrootd.log"), "-n", f"ftstest{name}"]
    if owner:
        argv[1:1] = ["-R", XRD_USER]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    return proc, data


def _xrootd_owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    import pwd

    entry = pwd.getpwnam(XRD_USER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="module")
def storage() -> Iterator[Storage]:
    root = Path(tempfile.mkdtemp(prefix="fts-test-xrootd-"))
    owner = _xrootd_owner()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        dirs = {}
        for name, port in (("src", SRC_PORT), ("dst", DST_PORT)):
            proc, dirs[name] = _start_xrootd(root, name, port, owner)
            procs.append(proc)
        for port in (SRC_PORT, DST_PORT):
            _wait(lambda p=port: _port_open(p), f"xrootd on {port}")
        yield Storage(dirs["src"], dirs["dst"], owner)
    finally:
        for proc in procs:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


class Fts:
    """The service as a subprocess, and a thin client for its API."""

    def __init__(self, state: Path, workers: int = 4, extra: tuple[str, ...] = (), engine: str = "xrootd") -> None:
        self.state = state
        self.engine = engine
        self.workers = workers
        self.extra = extra
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = state.parent / f"{state.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "deploy" / "local"), env.get("PYTHONPATH", "")])
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [FTS_PYTHON if self.engine == "gfal2" else sys.executable, "-m", "juno_grid.fts", "--engine",
                 self.engine, "--port", str(self.port), "--state", str(self.state),
                 "--workers", str(self.workers), "--drain-timeout", "5", *self.extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        _wait(lambda: _port_open(self.port), "transfer service")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        return _stop(self.proc, sig)

    def submit(self, files: list[dict[str, Any]], **params: Any) -> str:
        body = {"files": files, "params": {"verify_checksum": "both", "overwrite": True, "priority": 3,
                                           "job_metadata": {"issuer": "rucio", "multi_sources": False},
                                           **params}}
        resp = self.http.post(f"{self.url}/jobs", data=json.dumps(body),
                              headers={"Content-Type": "application/json"})
        assert resp.status_code == 200, resp.text
        return str(resp.json()["job_id"])

    def job(self, *job_ids: str) -> Any:
        return self.http.get(f"{self.url}/jobs/{','.join(job_ids)}", params={"files": FILES_FIELDS}).json()

    def wait(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["job_state"] in FINAL:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not final after {timeout:.0f} s: {job}")

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


# Both copy engines: gfal2 (FTS3's library, the grid's default) and the xrdcp/xrdfs one.
@pytest.fixture(scope="module", params=["gfal2", "xrootd"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def fts(storage: Storage, engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fts]:
    service = Fts(tmp_path_factory.mktemp("fts") / "state", engine=engine)
    service.start()
    yield service
    assert service.stop() == 0, "SIGTERM must stop the service cleanly (exit 0)"


def entry(src: str, dst: str, *, data: bytes | None = None, checksum: str | None = None,
          request_id: str | None = None, sources: list[str] | None = None) -> dict[str, Any]:
    """A files[] entry shaped like Rucio's _file_from_transfer."""
    if checksum is None and data is not None:
        checksum = _adler32(data)
    return {
        "sources": sources or [SRC + src],
        "destinations": [DST + dst],
        "metadata": {"request_id": request_id or uuid.uuid4().hex, "scope": "raw", "name": src,
                     "src_rse": "SRC", "dst_rse": "DST", "src_type": "DISK", "dst_type": "DISK"},
        "filesize": len(data) if data is not None else None,
        "checksum": f"ADLER32:{checksum}" if checksum else None,
        "activity": "Raw Data Export",
        "selection_strategy": "orderly",
    }


def dst_checksum(path: str) -> str:
    out = subprocess.run(["xrdfs", f"127.0.0.1:{DST_PORT}", "query", "checksum", path],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


# --- the tests -------------------------------------------------------------------------------


def test_job_of_several_files_finishes_with_identical_bytes(storage: Storage, fts: Fts) -> None:
    data = {f"multi/f{i}": storage.put(f"multi/f{i}", 1_000_000 + i * 333_333) for i in range(4)}
    job_id = fts.submit([entry(name, f"copies/{name}", data=payload) for name, payload in data.items()])
    job = fts.wait(job_id)
    assert job["http_status"] == "200 Ok"
    assert job["job_state"] == "FINISHED", job
    assert job["job_type"] == "N" and job["job_metadata"]["issuer"] == "rucio"
    for file in job["files"]:
        assert file["file_state"] == "FINISHED" and file["reason"] is None
        assert file["start_time"] and file["finish_time"]
        assert set(file) == set(FILES_FIELDS.split(","))
    for name, payload in data.items():
        assert (storage.dst_dir / "copies" / name).read_bytes() == payload
        assert dst_checksum(f"/copies/{name}") == _adler32(payload)


@pytest.mark.parametrize("mode", ["target", "both"])
def test_wrong_announced_checksum_fails_and_leaves_no_file(storage: Storage, fts: Fts, mode: str) -> None:
    payload = storage.put(f"bad/{mode}", 500_000)
    wrong = f"{(int(_adler32(payload), 16) + 1) & 0xFFFFFFFF:08x}"
    job = fts.wait(fts.submit([entry(f"bad/{mode}", f"bad/{mode}", data=payload, checksum=wrong)],
                              verify_checksum=mode))
    assert job["job_state"] == "FAILED"
    reason = job["files"][0]["reason"]
    assert "CHECKSUM MISMATCH" in reason and wrong in reason, reason
    # "target" copies first and must remove what it wrote; "both" fails on the source before copying.
    assert ("DESTINATION" in reason) == (mode == "target")
    assert not (storage.dst_dir / "bad" / mode).exists()


def test_missing_source_fails_with_its_reason(fts: Fts) -> None:
    job = fts.wait(fts.submit([entry("does/not/exist", "never/here")]))
    assert job["job_state"] == "FAILED"
    reason = job["files"][0]["reason"]
    assert reason.startswith("SOURCE [2] ") and "no such file or directory" in reason.lower(), reason


def test_unreachable_destination_fails_with_its_reason(storage: Storage, fts: Fts) -> None:
    payload = storage.put("unreach", 1000)
    files = [entry("unreach", "x", data=payload)]
    files[0]["destinations"] = ["root://127.0.0.1:1//x"]
    started = time.monotonic()
    job = fts.wait(fts.submit(files), timeout=60)
    assert job["job_state"] == "FAILED"
    assert job["files"][0]["reason"].startswith("DESTINATION [111] "), job["files"][0]["reason"]
    assert time.monotonic() - started < 30  # not the XRootD client's default 10 minutes of retries


def test_storage_back_from_an_outage_takes_copies_at_once(storage: Storage, engine: str, tmp_path: Path) -> None:
    # One copy slot, so the copy after the outage runs in the very worker that saw the storage down: the
    # gfal2 engine's workers outlive their copies, and XRootD's client would otherwise repeat the old
    # connection error for half an hour without trying again (FTS3 runs each copy in a fresh process).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = Fts(tmp_path / "state", workers=1, engine=engine)
    service.start()
    server = None
    xrd_root = Path(tempfile.mkdtemp(prefix="fts-test-outage-"))  # XRootD's user must reach it (not tmp_path)
    try:
        payload = storage.put("outage/f", 10_000)

        def to_outage(dest: str) -> dict[str, Any]:
            files = entry("outage/f", dest, data=payload)
            files["destinations"] = [f"root://127.0.0.1:{port}//{dest}"]
            return files

        down = service.wait(service.submit([to_outage("down/a"), to_outage("down/b")]))
        assert [f["file_state"] for f in down["files"]] == ["FAILED", "FAILED"], down
        assert all("[111]" in f["reason"] for f in down["files"]), down
        server, data = _start_xrootd(xrd_root, "outage", port, _xrootd_owner())
        _wait(lambda: _port_open(port), f"xrootd on {port}")
        back = service.wait(service.submit([to_outage("up/a"), to_outage("up/b")]))
        assert back["job_state"] == "FINISHED", back
        assert (data / "up" / "a").read_bytes() == (data / "up" / "b").read_bytes() == payload
    finally:
        if server is not None:
            _stop(server)
        service.stop()
        shutil.rmtree(xrd_root, ignore_errors=True)


def test_copy_timeout_fails_with_its_reason_and_leaves_nothing(storage: Storage, engine: str, tmp_path: Path) -> None:
    # A third-party copy takes >= 2.5 s with this XRootD client, so a 1 s allowance always runs out.
    service = Fts(tmp_path / "state", workers=1, extra=("--copy-timeout", "1"), engine=engine)
    service.start()
    try:
        payload = storage.put("slow/f", 1000)
        job = service.wait(service.submit([entry("slow/f", "slow/f", data=payload)]))
        assert job["job_state"] == "FAILED"
        reason = job["files"][0]["reason"]
        assert reason.startswith("TRANSFER [110] Transfer timed out") and "within 1 s" in reason, reason
        assert not (storage.dst_dir / "slow" / "f").exists()
    finally:
        service.stop()


def test_file_scheme_is_rejected_like_fts3(storage: Storage, fts: Fts) -> None:
    local = storage.src_dir / "local-file"
    local.write_bytes(b"x" * 100)
    files = [entry("unused", "from-file")]
    files[0]["sources"] = [f"file://{local}"]
    job = fts.wait(fts.submit(files))
    assert job["job_state"] == "FAILED"
    reason = job["files"][0]["reason"]
    assert "Protocol not supported" in reason and "file://" in reason, reason
    assert not (storage.dst_dir / "from-file").exists()


def test_bulk_get_returns_a_list_and_unknown_ids_are_not_found(storage: Storage, fts: Fts) -> None:
    payload = storage.put("bulk/a", 1000)
    first = fts.submit([entry("bulk/a", "bulk/a1", data=payload)])
    second = fts.submit([entry("bulk/a", "bulk/a2", data=payload)])
    unknown = str(uuid.uuid4())
    fts.wait(first)
    fts.wait(second)
    resp = fts.http.get(f"{fts.url}/jobs/{first},{unknown},{second}", params={"files": FILES_FIELDS})
    assert resp.status_code == 207
    jobs = resp.json()
    assert isinstance(jobs, list) and [j["job_id"] for j in jobs] == [first, unknown, second]
    assert [j["http_status"] for j in jobs] == ["200 Ok", "404 Not Found", "200 Ok"]
    assert all(j["job_state"] == "FINISHED" for j in (jobs[0], jobs[2]))
    single = fts.http.get(f"{fts.url}/jobs/{unknown}")
    assert single.status_code == 404 and single.json()["http_status"] == "404 Not Found"
    # Without ?files= FTS3 leaves the files out; /files gives them all.
    assert "files" not in fts.http.get(f"{fts.url}/jobs/{first}").json()
    assert fts.http.get(f"{fts.url}/jobs/{first}/files").json()[0]["transferred"] == 1000


def test_overwrite_disabled_keeps_an_existing_destination(storage: Storage, fts: Fts) -> None:
    payload = storage.put("ow/src", 2000)
    fts.wait(fts.submit([entry("ow/src", "ow/dst", data=payload)]))
    before = (storage.dst_dir / "ow" / "dst").stat().st_mtime_ns
    job = fts.wait(fts.submit([entry("ow/src", "ow/dst", data=payload)], overwrite=False))
    assert job["job_state"] == "FAILED"
    assert "Destination file exists and overwrite is not enabled" in job["files"][0]["reason"]
    assert (storage.dst_dir / "ow" / "dst").stat().st_mtime_ns == before
    again = fts.wait(fts.submit([entry("ow/src", "ow/dst", data=payload)], overwrite=True))
    assert again["job_state"] == "FINISHED"


def test_staging_sets_staging_times(storage: Storage, fts: Fts) -> None:
    payloads = {f"tape/t{i}": storage.put(f"tape/t{i}", 300_000) for i in range(2)}
    job_id = fts.submit([entry(n, f"staged/{n}", data=p) for n, p in payloads.items()], bring_online=120)
    first = fts.job(job_id)
    assert first["job_state"] in {"STAGING", "SUBMITTED", "ACTIVE", "FINISHED"}
    job = fts.wait(job_id)
    assert job["job_state"] == "FINISHED", job
    for file in job["files"]:
        assert file["staging_start"] and file["staging_finished"], file
        assert file["staging_start"] <= file["staging_finished"] <= file["start_time"] <= file["finish_time"]
    events = [line["event"] for line in fts.log_lines()]
    assert "bring-online requested" in events and "staged" in events


def test_multiple_replica_job_falls_back_to_the_next_source(storage: Storage, fts: Fts) -> None:
    payload = storage.put("replica/ok", 4000)
    files = [entry("replica/ok", "replica/copy", data=payload,
                   sources=[SRC + "replica/missing", SRC + "replica/ok"])]
    job_id = fts.submit(files, job_metadata={"issuer": "rucio", "multi_sources": True})
    job = fts.wait(job_id)
    assert job["job_type"] == "R" and job["job_state"] == "FINISHED", job
    assert [f["file_state"] for f in job["files"]] == ["FAILED", "FINISHED"]
    assert (storage.dst_dir / "replica" / "copy").read_bytes() == payload


def test_multihop_job_runs_hops_in_order(storage: Storage, fts: Fts) -> None:
    payload = storage.put("hop/a", 5000)
    hop1 = entry("hop/a", "hop/relay", data=payload)
    hop2 = entry("unused", "unused", data=payload)
    hop2["sources"], hop2["destinations"] = [DST + "hop/relay"], [SRC + "hop/final"]
    job = fts.wait(fts.submit([hop1, hop2], multihop=True, job_metadata={"issuer": "rucio", "multihop": True}))
    assert job["job_type"] == "H" and job["job_state"] == "FINISHED", job
    assert (storage.src_dir / "hop" / "final").read_bytes() == payload


def test_cancel_stops_the_job_and_removes_partial_copies(storage: Storage, fts: Fts) -> None:
    payloads = {f"cancel/c{i}": storage.put(f"cancel/c{i}", 2_000_000) for i in range(8)}
    job_id = fts.submit([entry(n, n, data=p) for n, p in payloads.items()])
    _wait(lambda: fts.job(job_id)["job_state"] == "ACTIVE", "a copy running", timeout=10)
    resp = fts.http.delete(f"{fts.url}/jobs/{job_id}")
    assert resp.status_code == 200 and resp.json()["job_state"] == "CANCELED"
    # Stopped and cleaned up: no file ACTIVE, and no copy process left (a copy that was ending when the cancel
    # came removes what it wrote before its process is counted out).
    _wait(lambda: (h := fts.http.get(f"{fts.url}/health").json())["active"] == 0 and h["copies_running"] == 0,
          "running copies stopped", timeout=20)
    job = fts.job(job_id)
    assert job["job_state"] == "CANCELED"
    states = [f["file_state"] for f in job["files"]]
    assert "CANCELED" in states and set(states) <= {"CANCELED", "FINISHED"}
    for file in job["files"]:
        landed = storage.dst_dir / file["dest_surl"].split("//", 2)[2]
        assert landed.exists() == (file["file_state"] == "FINISHED"), (file, fts.log_lines()[-12:])
        if file["file_state"] == "CANCELED":
            assert file["reason"] == "Job canceled by the user"


def test_priority_update_and_whoami_deterministic_ids(storage: Storage, fts: Fts) -> None:
    payload = storage.put("prio/a", 100)
    job_id = fts.submit([entry("prio/a", "prio/a", data=payload)], priority=2)
    resp = fts.http.post(f"{fts.url}/jobs/{job_id}", data=json.dumps({"params": {"priority": 5}}))
    assert resp.status_code == 200 and resp.json()["priority"] == 5
    who = fts.http.get(f"{fts.url}/whoami").json()
    sid = uuid.uuid4().hex
    expected = str(uuid.uuid5(uuid.uuid5(uuid.UUID(who["base_id"]), who["vos"][0]), sid))
    body = [entry("prio/a", "prio/b", data=payload, request_id=sid)]
    assert fts.submit(body, id_generator="deterministic", sid=sid) == expected
    dup = fts.http.post(f"{fts.url}/jobs", data=json.dumps(
        {"files": body, "params": {"id_generator": "deterministic", "sid": sid}}))
    assert dup.status_code == 409  # Rucio raises DuplicateFileTransferSubmission
    fts.wait(expected)


def test_bad_submission_is_a_400_with_the_reason(fts: Fts) -> None:
    resp = fts.http.post(f"{fts.url}/jobs", data=json.dumps({"files": [{"sources": []}], "params": {}}))
    assert resp.status_code == 400 and "sources" in resp.json()["message"]


def test_sigkill_mid_job_then_restart_finishes_the_job(storage: Storage, engine: str, tmp_path: Path) -> None:
    service = Fts(tmp_path / "state", workers=1, engine=engine)
    service.start()
    try:
        payloads = {f"crash/k{i}": storage.put(f"crash/k{i}", 5_000_000) for i in range(4)}
        job_id = service.submit([entry(n, n, data=p) for n, p in payloads.items()])
        _wait(lambda: service.job(job_id)["job_state"] == "ACTIVE", "copying", timeout=10)
        assert service.stop(signal.SIGKILL) == -signal.SIGKILL
        # The copy died with the service (parent-death signal): no orphan keeps writing.
        # The kernel delivers that signal as the service exits; on a loaded machine the child may
        # need a moment to be scheduled and die, so allow a few seconds before calling it an orphan.
        def no_orphan() -> bool:
            found = subprocess.run(["pgrep", "-f", f"xrdcp --tpc only .*{SRC}crash/"], capture_output=True)
            return found.returncode == 1

        _wait(no_orphan, "the copy outlived the killed service (orphan xrdcp)", timeout=5)
        service.start()
        job = service.job(job_id)
        assert job["http_status"] == "200 Ok" and job["job_state"] not in {"FAILED", "CANCELED"}
        job = service.wait(job_id, timeout=90)
        assert job["job_state"] == "FINISHED", job
        for name, payload in payloads.items():
            assert (storage.dst_dir / name).read_bytes() == payload
        assert any(line["event"] == "resumed after restart" for line in service.log_lines())
    finally:
        if service.proc and service.proc.poll() is None:
            service.stop()


@pytest.mark.parametrize("drain", ["5", "0"])
def test_sigterm_drains_or_requeues_then_restart_resumes(storage: Storage, engine: str, tmp_path: Path,
                                                        drain: str) -> None:
    service = Fts(tmp_path / "state", workers=1, extra=("--drain-timeout", drain), engine=engine)
    service.start()
    try:
        payloads = {f"drain{drain}/d{i}": storage.put(f"drain{drain}/d{i}", 1_000_000) for i in range(3)}
        job_id = service.submit([entry(n, n, data=p) for n, p in payloads.items()])
        _wait(lambda: service.job(job_id)["job_state"] == "ACTIVE", "copying", timeout=10)
        assert service.stop(signal.SIGTERM) == 0
        events = [line["event"] for line in service.log_lines()]
        assert "transfer service stopped" in events
        # With time to drain the running copy ends normally; with none it is stopped and requeued.
        assert ("copy requeued" in events) == (drain == "0")
        assert ("copy finished" in events) == (drain != "0")
        service.start()
        assert service.wait(job_id, timeout=60)["job_state"] == "FINISHED"
        for name, payload in payloads.items():
            assert (storage.dst_dir / name).read_bytes() == payload
    finally:
        if service.proc and service.proc.poll() is None:
            service.stop()


# Rucio's own FTS3 client against the service: the wire format as the conveyor produces and parses it.
# It runs in a subprocess with a minimal client-side rucio.cfg, so it needs no Rucio server or database;
# the transfers are duck-typed stand-ins for rucio.core.transfer.DirectTransfer.
RUCIO_CLIENT_SCRIPT = r'''
import json, sys, time, uuid
from rucio.db.sqla.constants import RequestState
from rucio.transfertool.fts3 import FTS3Transfertool

url, src, dst, good, bad, size = json.loads(sys.argv[1])

class Rse:
    def __init__(self, name):
        self.name, self.id, self.attributes = name, uuid.uuid4().hex, {}
    def is_tape_or_staging_required(self): return False
    def is_tape(self): return False
    def __str__(self): return self.name

class End:
    def __init__(self, rse, url): self.rse, self.scheme, self.url = rse, "root", url

class Rws:
    def __init__(self, name, adler32):
        self.request_id, self.scope, self.name = uuid.uuid4().hex, "user.jcoord", name
        self.activity, self.request_type, self.byte_count = "User Subscriptions", "TRANSFER", size
        self.md5, self.adler32, self.attributes = None, adler32, {}
        self.account, self.priority, self.rule_id = "root", 3, "rule-1"

SRC_RSE, DST_RSE = Rse("SRC-DISK"), Rse("DST-DISK")

class Transfer:
    def __init__(self, name, dest, adler32):
        self.rws = Rws(name, adler32)
        self.src, self.dst = End(SRC_RSE, src + name), End(DST_RSE, dst + dest)
        self.sources = [self.src]
    def source_url(self, source): return source.url
    @property
    def dest_url(self): return self.dst.url
    def __str__(self): return self.rws.name

tool = FTS3Transfertool(external_host=url, group_bulk=200)
ok, wrong = Transfer("rucio/file", "rucio/ok", good), Transfer("rucio/file", "rucio/bad", bad)
jobs = tool.group_into_submit_jobs([[ok], [wrong]])
assert len(jobs) == 1, jobs
eid = tool.submit(jobs[0]["transfers"], jobs[0]["job_params"])
requests_by_eid = {eid: {t.rws.request_id: {"request_id": t.rws.request_id, "external_id": eid,
                                            "state": RequestState.SUBMITTED, "bytes": size,
                                            "adler32": t.rws.adler32, "md5": None, "attributes": {}}
                         for t in (ok, wrong)}}
lost = str(uuid.uuid4())
for _ in range(300):
    resps = tool.bulk_query({**requests_by_eid, lost: {}}, timeout=10)
    reports = resps[eid]
    final = ("FINISHED", "FAILED", "FINISHEDDIRTY")
    if reports and all(r.job_response["job_state"] in final for r in reports.values()):
        break
    time.sleep(0.2)
out = {"job_params": jobs[0]["job_params"], "lost": resps[lost], "reports": {}}
for name, t in (("ok", ok), ("wrong", wrong)):
    report = reports[t.rws.request_id]
    report.initialize(session=None)
    out["reports"][name] = {"state": report.state.name, "err_msg": report.err_msg,
                            "started_at": str(report.started_at), "transferred_at": str(report.transferred_at),
                            "job_state": report.job_response["job_state"]}
out["query"] = tool.query([eid])[0]["job_state"]
out["priority"] = tool.update_priority(eid, 5)["priority"]
out["whoami_vos"] = tool.whoami()["vos"]
second = tool.submit([Transfer("rucio/file", "rucio/cancel", good)], jobs[0]["job_params"])
out["cancel"] = tool.cancel([second])["job_state"]
print(json.dumps(out, default=str))
'''


def test_rucio_fts3_transfertool_speaks_to_the_service(storage: Storage, fts: Fts, tmp_path: Path) -> None:
    payload = storage.put("rucio/file", 700_000)
    good = _adler32(payload)
    bad = f"{(int(good, 16) ^ 0xFF) & 0xFFFFFFFF:08x}"
    cfg = tmp_path / "rucio.cfg"
    cfg.write_text(f"[common]\nloglevel = WARNING\n[database]\ndefault = sqlite:///{tmp_path / 'unused.db'}\n")
    script = tmp_path / "rucio_client.py"
    script.write_text(RUCIO_CLIENT_SCRIPT)
    env = {**os.environ, "RUCIO_CONFIG": str(cfg)}
    args = json.dumps([fts.url, SRC, DST, good, bad, len(payload)])
    run = subprocess.run([sys.executable, str(script), args], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["job_params"]["verify_checksum"] == "both"
    assert out["lost"] is None  # an id the service never gave out: Rucio marks the request LOST
    ok, wrong = out["reports"]["ok"], out["reports"]["wrong"]
    assert ok["state"] == "DONE" and ok["err_msg"] is None and ok["started_at"] != "None"
    assert wrong["state"] == "FAILED" and "CHECKSUM MISMATCH" in wrong["err_msg"]
    assert ok["job_state"] == "FINISHEDDIRTY"
    assert out["query"] == "FINISHEDDIRTY" and out["priority"] == 5 and out["whoami_vos"] == ["juno"]
    assert out["cancel"] in {"CANCELED", "FINISHED"}
    assert (storage.dst_dir / "rucio" / "ok").read_bytes() == payload
    assert not (storage.dst_dir / "rucio" / "bad").exists()
