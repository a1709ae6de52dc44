"""The ingester's storage check against the grid's real XRootD (IHEP-EOS): listings, their reuse, and
that a negative or different answer is never taken from an old listing.

`xrdfs` is the real client, behind a wrapper script that only records each invocation, so the test can
tell which answers came from a new request and which from a kept listing.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from juno_ingest.storage_check import LIST_MIN, Endpoint, StorageChecker

pytestmark = pytest.mark.grid


@pytest.fixture
def endpoint(grid: Any) -> Endpoint:
    proto = grid.topo.rse("IHEP-EOS").protocols["local"]
    return Endpoint(f"{proto.hostname}:{proto.port}", "/" + proto.prefix.strip("/"))


def _recording_xrdfs(tmp_path: Path) -> tuple[str, Path]:
    calls = tmp_path / "xrdfs-calls.txt"
    script = tmp_path / "xrdfs"
    script.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {shutil.which("xrdfs")} "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), calls


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _put(endpoint: Endpoint, local: Path, remote: str) -> None:
    subprocess.run(["xrdcp", "--nopbar", "--silent", "--force", "--path", str(local),
                    f"root://{endpoint.host}/{remote}"], check=True, timeout=60)


def test_a_kept_listing_confirms_only_exact_sizes_and_fresh_answers_the_rest(
        grid: Any, endpoint: Endpoint, tmp_path: Path) -> None:
    directory = f"{endpoint.prefix.rstrip('/')}/test/storage-{uuid.uuid4().hex[:8]}"
    files = [f"{directory}/f{i:03d}.dat" for i in range(LIST_MIN + 4)]
    local = tmp_path / "data"
    local.mkdir()
    for i, path in enumerate(files):
        (local / Path(path).name).write_bytes(os.urandom(100 + i))
    listing = local / "files.txt"
    listing.write_text("\n".join(str(local / Path(p).name) for p in files) + "\n")
    subprocess.run(["xrdcp", "--nopbar", "--silent", "--force", "--path", "--infiles", str(listing),
                    f"root://{endpoint.host}/{directory}/"], check=True, timeout=120)
    xrdfs, log = _recording_xrdfs(tmp_path)
    now = [1000.0]
    checker = StorageChecker(endpoint, xrdfs=xrdfs, listing_ttl_s=60.0, clock=lambda: now[0])
    try:
        expected = {p: 100 + i for i, p in enumerate(files)}
        # 1. Enough files of one directory: one listing answers them all.
        assert checker.sizes(files, expected) == expected
        assert [c.split()[1:3] for c in _calls(log)] == [["ls", "-l"]]

        # 2. The same files again, expected sizes: answered from the kept listing, no request at all.
        assert checker.sizes(files[:3], {p: expected[p] for p in files[:3]}) == {p: expected[p] for p in files[:3]}
        assert len(_calls(log)) == 1

        # 3. A file written after the listing, one announced with another size, and one asked without an
        #    expectation: each is asked afresh (a few files: stat), and the real answers come back.
        late = f"{directory}/late.dat"
        (local / "late.dat").write_bytes(b"x" * 7)
        _put(endpoint, local / "late.dat", late)
        answer = checker.sizes([late, files[0], files[1]], {late: 7, files[0]: 999})
        assert answer == {late: 7, files[0]: expected[files[0]], files[1]: expected[files[1]]}
        assert len(_calls(log)) == 2 and _calls(log)[1].split() == [endpoint.host]  # stat, on stdin

        # 4. A file removed after the listing: within the listing's lifetime an exact match still counts
        #    (the documented window); once the listing is older than its lifetime, it is asked afresh.
        gone = files[2]
        subprocess.run(["xrdfs", endpoint.host, "rm", gone], check=True, timeout=30)
        assert checker.sizes([gone], {gone: expected[gone]}) == {gone: expected[gone]}
        now[0] += 61
        assert checker.sizes([gone], {gone: expected[gone]}) == {gone: None}
        assert len(_calls(log)) == 3
    finally:
        checker.close()
        for path in [*files, f"{directory}/late.dat"]:
            subprocess.run(["xrdfs", endpoint.host, "rm", path], capture_output=True, timeout=30)
        subprocess.run(["xrdfs", endpoint.host, "rmdir", directory], capture_output=True, timeout=30)
