"""FTS3's own command-line client (the `fts3` package's fts-rest-* commands) against the grid's transfer service.

The same commands an operator runs against a real FTS3: whoami, submit (the client sends
verify_checksum as one letter, 'n' by default), status (also --json, which asks for the job's files and
data-management operations), list and cancel.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from juno_grid import storage
from juno_grid.config import VENV_BIN

pytestmark = pytest.mark.grid


def fts(grid, command: str, *args: str) -> str:
    run = subprocess.run([str(VENV_BIN / f"fts-rest-{command}"), "-s", grid.cfg.fts_url, *args],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"fts-rest-{command} {' '.join(args)}: {run.stdout}{run.stderr}"
    return run.stdout


def _base(grid, rse: str) -> str:
    proto = grid.topo.rse(rse).protocols["local"]
    return f"{proto.url}//{proto.prefix.strip('/')}"


def _status(grid, job_id: str) -> dict:
    return json.loads(fts(grid, "transfer-status", "--json", job_id))


def _wait_final(grid, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = _status(grid, job_id)
        if job["job_state"] in ("FINISHED", "FAILED", "FINISHEDDIRTY", "CANCELED") or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_whoami_submit_status_list_cancel(grid, tmp_path: Path) -> None:
    who = fts(grid, "whoami")
    assert "VO: juno" in who and "Base id:" in who

    tag = uuid.uuid4().hex[:10]
    src_base, dst_base = _base(grid, "IHEP-EOS"), _base(grid, "CNAF-DISK")
    local = storage.make_file(tmp_path / "a.bin", 2_000_000)
    src = f"{src_base}/ftscli/{tag}/a.bin"
    storage.copy(str(local), src)
    checksum = storage.adler32_file(local)

    # Submitted as FTS3's client does it: verify_checksum 'n' by default, then with -C both and a checksum.
    plain = fts(grid, "transfer-submit", src, f"{dst_base}/ftscli/{tag}/plain.bin").strip().splitlines()[-1]
    job_id = plain.split()[-1]
    job = _wait_final(grid, job_id)
    assert job["job_state"] == "FINISHED", job
    assert job["verify_checksum"] == "none"
    assert job["files"][0]["file_state"] == "FINISHED"
    assert storage.remote_adler32(f"{dst_base}/ftscli/{tag}/plain.bin") == checksum

    checked = fts(grid, "transfer-submit", "-C", "both", src, f"{dst_base}/ftscli/{tag}/checked.bin",
                  f"ADLER32:{checksum}").strip().splitlines()[-1].split()[-1]
    job = _wait_final(grid, checked)
    assert job["job_state"] == "FINISHED" and job["verify_checksum"] == "both", job
    wrong = fts(grid, "transfer-submit", "-C", "source", src, f"{dst_base}/ftscli/{tag}/wrong.bin",
                "ADLER32:0badc0de").strip().splitlines()[-1].split()[-1]
    job = _wait_final(grid, wrong)
    assert job["job_state"] == "FAILED" and "CHECKSUM MISMATCH" in job["files"][0]["reason"], job

    # Plain-text status, as an operator reads it.
    text = fts(grid, "transfer-status", job_id)
    assert f"Request ID: {job_id}" in text and "Status: FINISHED" in text

    # A job still running is listed, then canceled by the client. Its source is a server that accepts the
    # connection and never answers, so the copy cannot end by itself while the test looks.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        stuck = fts(grid, "transfer-submit", f"root://127.0.0.1:{port}//silent/{tag}",
                    f"{dst_base}/ftscli/{tag}/never.bin").strip().splitlines()[-1].split()[-1]
        deadline = time.monotonic() + 30
        while _status(grid, stuck)["job_state"] != "ACTIVE" and time.monotonic() < deadline:
            time.sleep(0.3)
        listed = json.loads(fts(grid, "transfer-list", "--json"))
        assert stuck in [j["job_id"] for j in listed]
        assert fts(grid, "transfer-cancel", stuck).strip().splitlines()[-1] == "CANCELED"
        assert _status(grid, stuck)["job_state"] == "CANCELED"
        assert stuck not in [j["job_id"] for j in json.loads(fts(grid, "transfer-list", "--json"))]
