"""The grid's transfer service moves the same files in every copy mode it offers, over root:// and davs://,
as FTS3 does per link: root streamed and third-party, davs HTTP-TPC pull and push and streamed. Bytes and
adler32 are checked at the destination; a wrong checksum fails in every mode with gfal2's reason."""

from __future__ import annotations

import json
import time
import uuid
import zlib
from pathlib import Path

import pytest
import requests
from juno_grid import xrootd
from juno_grid.config import FTS_COPY_MODE
from juno_grid.fts.links import set_link

pytestmark = pytest.mark.grid

MODES = [("root", "stream"), ("root", "tpc"), ("davs", "tpc"), ("davs", "push"), ("davs", "stream")]


def _adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def _endpoint(grid, rse: str, scheme: str) -> tuple[str, str]:  # noqa: ANN001
    """(host:port, base URL with the RSE's prefix) for the storage of `rse` in `scheme`."""
    r = grid.topo.rse(rse)
    proto = r.protocols["local"]
    url = proto.url if scheme == "root" else xrootd.davs_url(r)
    host = url.split("://", 1)[1]
    return host, f"{url}/{proto.prefix.strip('/')}" if scheme == "davs" else f"{url}//{proto.prefix.strip('/')}"


def _wait(url: str, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = requests.get(f"{url}/jobs/{job_id}", params={"files": "file_state,reason,dest_surl"}, timeout=10).json()
        if job["job_state"] in ("FINISHED", "FAILED", "FINISHEDDIRTY", "CANCELED") or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


@pytest.fixture
def links(grid):  # noqa: ANN001, ANN201
    path = grid.cfg.state_dir / "fts" / "links.json"
    before = path.read_text() if path.exists() else None
    yield lambda link, mode: set_link(path, link, mode, FTS_COPY_MODE)
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(before)


@pytest.mark.parametrize(("scheme", "mode"), MODES, ids=[f"{s}-{m}" for s, m in MODES])
def test_same_files_in_each_mode_bytes_and_checksums(grid, links, scheme: str, mode: str) -> None:  # noqa: ANN001
    src_host, src_base = _endpoint(grid, "IHEP-EOS", scheme)
    dst_host, dst_base = _endpoint(grid, "CNAF-DISK", scheme)
    links(f"{src_host}>{dst_host}", mode)
    tag = uuid.uuid4().hex[:10]
    # The same files for every mode: written once per run at IHEP-EOS (over root), read over `scheme`.
    src_dir = grid.storage_path("IHEP-EOS") / grid.topo.rse("IHEP-EOS").protocols["local"].prefix.strip("/")
    payloads = {f"f{i}.bin": (bytes(range(256)) * 4096 * (i + 1))[: 700_000 * (i + 1)] + tag.encode()
                for i in range(3)}
    for name, data in payloads.items():
        path = src_dir / "modes" / tag / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    files = [{"sources": [f"{src_base}/modes/{tag}/{n}"], "destinations": [f"{dst_base}/modes/{tag}/{mode}/{n}"],
              "checksum": f"ADLER32:{_adler32(d)}", "filesize": len(d), "metadata": {"request_id": uuid.uuid4().hex}}
             for n, d in payloads.items()]
    bad = {"sources": [f"{src_base}/modes/{tag}/f0.bin"], "destinations": [f"{dst_base}/modes/{tag}/{mode}/bad"],
           "checksum": "ADLER32:0badc0de", "filesize": len(payloads["f0.bin"]),
           "metadata": {"request_id": uuid.uuid4().hex}}
    url = grid.cfg.fts_url
    body = {"files": files, "params": {"verify_checksum": "both", "overwrite": False, "priority": 3}}
    job_id = requests.post(f"{url}/jobs", data=json.dumps(body), timeout=10).json()["job_id"]
    bad_id = requests.post(f"{url}/jobs", data=json.dumps({"files": [bad], "params": {"verify_checksum": "both"}}),
                           timeout=10).json()["job_id"]
    job = _wait(url, job_id)
    assert job["job_state"] == "FINISHED", job
    dst_dir = grid.storage_path("CNAF-DISK") / grid.topo.rse("CNAF-DISK").protocols["local"].prefix.strip("/")
    for name, data in payloads.items():
        assert (dst_dir / "modes" / tag / mode / name).read_bytes() == data
    failed = _wait(url, bad_id)
    assert failed["job_state"] == "FAILED", failed
    reason = failed["files"][0]["reason"]
    assert "SOURCE CHECKSUM MISMATCH" in reason and "0badc0de" in reason, reason
    assert not (dst_dir / "modes" / tag / mode / "bad").exists()
    log = (grid.cfg.log_dir / "fts.log").read_text().splitlines()
    assert any('"event": "link modes loaded"' in line and f'"{src_host}>{dst_host}": "{mode}"' in line for line in log)


def test_davs_is_tls_signed_by_the_grid_ca(grid) -> None:  # noqa: ANN001
    host, base = _endpoint(grid, "IHEP-EOS", "davs")
    ca = Path(grid.cfg.state_dir / "tls" / "ca.pem")
    resp = requests.request("PROPFIND", base.replace("davs://", "https://") + "/", headers={"Depth": "0"},
                            verify=str(ca), timeout=10)
    assert resp.status_code in (200, 207), resp.text[:300]
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(base.replace("davs://", "https://") + "/", timeout=10)  # not trusted without the grid's CA
