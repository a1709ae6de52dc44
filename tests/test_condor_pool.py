"""The HTCondor mini-pool: a job runs at the site it asks for and reads its input from that site's storage.

Jobs follow the locality convention (`MY.DESIRED_Sites`, `stringListMember`, `job_machine_attrs`); their
files live under `<state>/jobs/<unique>` (bind-mounted into the pool's chroot at the same path) and the
payload reads its input over XRootD from CNAF-DISK, as grid jobs do.
"""

from __future__ import annotations

import subprocess
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from juno_grid import condor

pytestmark = [pytest.mark.grid, pytest.mark.condor]

JOB_TIMEOUT = 120.0

PAYLOAD = """\
#!/bin/sh
# Runs inside the pool's chroot: print the file, then the storage's own adler32 of it.
set -e
xrdcp --nopbar "$1" -
echo "@@"
xrdfs "$2" query checksum "$3"
"""


def _place_input(grid: Any, tmp_path: Path) -> tuple[str, str, bytes]:
    """Put a fresh file on CNAF-DISK from the host; return (url, path, content)."""
    content = f"JUNO condor test {uuid.uuid4()}\n".encode()
    src = tmp_path / "input.txt"
    src.write_bytes(content)
    server = grid.xrootd_url("CNAF-DISK")
    path = f"/test-condor/{uuid.uuid4().hex}.txt"
    subprocess.run(["xrdcp", "--nopbar", "--force", str(src), f"{server}/{path}"], check=True)
    assert (grid.storage_path("CNAF-DISK") / path.lstrip("/")).read_bytes() == content
    return server, path, content


def _run_job(grid: Any, desired_sites: str, server: str, path: str) -> tuple[Any, Path]:
    """Submit one job with the locality convention; wait for it to leave the queue; return its
    history ad and its directory."""
    import htcondor2

    condor.configure_bindings(grid.cfg)
    job_dir = condor.job_dir(grid.cfg, f"test-condor-{uuid.uuid4().hex[:12]}")
    script = job_dir / "read_input.sh"
    script.write_text(PAYLOAD)
    script.chmod(0o755)
    sub = htcondor2.Submit(
        {
            "executable": str(script),
            "arguments": f"{server}/{path} {server} {path}",
            "initialdir": str(job_dir),
            "output": "job.out",
            "error": "job.err",
            "log": "job.log",
            "request_memory": "64",
            "MY.DESIRED_Sites": f'"{desired_sites}"',
            "requirements": "stringListMember(TARGET.JUNO_Site, MY.DESIRED_Sites)",
            "job_machine_attrs": "JUNO_Site",
        }
    )
    schedd = htcondor2.Schedd()
    cluster = schedd.submit(sub).cluster()
    constraint = f"ClusterId == {cluster}"
    deadline = time.monotonic() + JOB_TIMEOUT
    try:
        while True:
            queued = schedd.query(constraint, projection=["JobStatus", "HoldReason"])
            if not queued:
                break
            if queued[0].get("JobStatus") == 5:
                pytest.fail(f"job {cluster} held: {queued[0].get('HoldReason')}; see {job_dir}")
            if time.monotonic() > deadline:
                pytest.fail(f"job {cluster} not done after {JOB_TIMEOUT:.0f} s: {queued[0]}; see {job_dir}")
            time.sleep(0.3)
        # A job leaves the queue just before its ad reaches the history file.
        while True:
            ads = list(
                schedd.history(constraint, projection=["JobStatus", "ExitCode", "MachineAttrJUNO_Site0"], match=1)
            )
            if ads or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        schedd.act(htcondor2.JobAction.Remove, constraint)
    assert ads, f"job {cluster} left the queue but is not in the history"
    return ads[0], job_dir


@pytest.mark.parametrize(
    ("desired", "allowed"),
    [("CNAF", {"CNAF"}), ("IN2P3,IHEP", {"IN2P3", "IHEP"})],
)
def test_job_runs_at_desired_site_and_reads_cnaf_disk(
    grid: Any, tmp_path: Path, desired: str, allowed: set[str]
) -> None:
    ok, msg = condor.health(grid.cfg)
    assert ok, msg
    server, path, content = _place_input(grid, tmp_path)

    ad, job_dir = _run_job(grid, desired, server, path)

    assert job_dir.is_relative_to(grid.cfg.state_dir.resolve() / "jobs")
    assert ad["JobStatus"] == 4, ad
    assert ad["ExitCode"] == 0, f"{ad}; stderr: {(job_dir / 'job.err').read_text()}"
    assert ad["MachineAttrJUNO_Site0"] in allowed, ad
    out = (job_dir / "job.out").read_bytes()
    data, _, checksum_line = out.partition(b"@@\n")
    assert data == content
    assert checksum_line.split() == [b"adler32", f"{zlib.adler32(content):08x}".encode()]
    assert (job_dir / "job.log").stat().st_size > 0
