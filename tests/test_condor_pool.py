"""The HTCondor pool: a job runs at the site it asks for, reads its input from that site's storage, and
sees nothing of the submitter.

Jobs follow the locality convention (`MY.DESIRED_Sites`, `stringListMember`, `job_machine_attrs`); their
files live under `<state>/jobs/<unique>` on the submit node and travel to the execute node by HTCondor's
file transfer; the payload reads its input over XRootD from CNAF-DISK, as grid jobs do.
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


def _run_job(grid: Any, desired_sites: str, arguments: str, payload: str = PAYLOAD) -> tuple[Any, Path]:
    """Submit one job with the locality convention; wait for it to leave the queue; return its
    history ad and its directory."""
    import htcondor2

    condor.configure_bindings(grid.cfg)
    job_dir = condor.job_dir(grid.cfg, f"test-condor-{uuid.uuid4().hex[:12]}")
    script = job_dir / "read_input.sh"
    script.write_text(payload)
    script.chmod(0o755)
    sub = htcondor2.Submit(
        {
            "executable": str(script),
            "arguments": arguments,
            "should_transfer_files": "YES",
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

    ad, job_dir = _run_job(grid, desired, f"{server}/{path} {server} {path}")

    assert job_dir.is_relative_to(grid.cfg.state_dir.resolve() / "jobs")
    assert ad["JobStatus"] == 4, ad
    assert ad["ExitCode"] == 0, f"{ad}; stderr: {(job_dir / 'job.err').read_text()}"
    assert ad["MachineAttrJUNO_Site0"] in allowed, ad
    out = (job_dir / "job.out").read_bytes()
    data, _, checksum_line = out.partition(b"@@\n")
    assert data == content
    assert checksum_line.split() == [b"adler32", f"{zlib.adler32(content):08x}".encode()]
    assert (job_dir / "job.log").stat().st_size > 0


ISOLATION = """\
#!/bin/sh
# What an execute node lets a job see: each line 'what yes|no'.
for p in "$@"; do
  if [ -e "$p" ]; then echo "exists $p yes"; else echo "exists $p no"; fi
done
if touch "$JUNO_RELEASE_PROBE/probe" 2>/dev/null; then echo "release-writable yes"; else echo "release-writable no"; fi
if [ -r "$JUNO_RELEASE_PROBE/J25.1.0/setup.sh" ]; then echo "release-readable yes"; else echo "release-readable no"; fi
echo "cwd $(pwd)"
"""


@pytest.mark.parametrize("site", ["IHEP", "CNAF"])
def test_a_job_sees_no_path_of_the_submitter_only_scratch_and_the_release(grid: Any, site: str) -> None:
    """Execute nodes share nothing with the submitter: its task directory, the grid's state and its
    storage directories do not exist for a job; the release is there, read-only."""
    state = grid.cfg.state_dir.resolve()
    submitter_paths = [str(state), str(state / "jobs"), str(condor.condor_dir(grid.cfg)),
                       str(grid.storage_path("CNAF-DISK"))]
    payload = ISOLATION.replace("$JUNO_RELEASE_PROBE", condor.RELEASE_MOUNT)
    ad, job_dir = _run_job(grid, site, " ".join(submitter_paths), payload)
    for p in submitter_paths:
        assert Path(p).exists(), f"{p} should exist for the submitter (the test would prove nothing)"
    assert ad["JobStatus"] == 4 and ad["ExitCode"] == 0, ad
    assert ad["MachineAttrJUNO_Site0"] == site
    lines = (job_dir / "job.out").read_text().splitlines()
    for p in submitter_paths:
        assert f"exists {p} no" in lines, lines
    assert "release-readable yes" in lines, lines
    assert "release-writable no" in lines, lines
    cwd = next(line.split(" ", 1)[1] for line in lines if line.startswith("cwd "))
    assert cwd.startswith(condor.NODE_DIR + "/execute/"), cwd  # the node's own scratch
