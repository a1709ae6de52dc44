"""Bytes on the grid's XRootD storage: put files where Rucio expects them, read checksums back."""

from __future__ import annotations

import os
import subprocess
import zlib
from pathlib import Path
from typing import Any

CHUNK = 4 << 20


def adler32_file(path: Path) -> str:
    """adler32 as Rucio writes it: 8 lowercase hex digits."""
    value = 1
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def make_file(path: Path, size: int) -> Path:
    """A file of `size` random bytes (random, so no two test files share a checksum)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, CHUNK)
            fh.write(os.urandom(n))
            left -= n
    return path


def split_url(pfn: str) -> tuple[str, str]:
    """root://127.0.0.1:11094//eos/x → ("127.0.0.1:11094", "/eos/x")."""
    rest = pfn.split("://", 1)[1]
    host, path = rest.split("/", 1)
    return host, "/" + path.lstrip("/")


def remote_adler32(pfn: str, timeout: float = 60) -> str | None:
    """The checksum the storage itself computes, or None when the file is not there."""
    host, path = split_url(pfn)
    out = subprocess.run(["xrdfs", host, "query", "checksum", path], capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        return None
    return _adler32(out.stdout)


def _adler32(text: str) -> str | None:
    """The checksum in an `xrdfs query checksum` answer ("adler32 1a2b3c4d ..."), 8 hex digits."""
    parts = text.split()
    return parts[1].lower().rjust(8, "0") if len(parts) >= 2 and parts[0] == "adler32" else None


def remote_adler32_many(pfns: list[str]) -> dict[str, str | None]:
    """adler32 of each PFN as its XRootD server computes it: one `xrdfs` session per server, the queries
    on its standard input; anything it did not answer is asked again one by one."""
    out: dict[str, str | None] = {}
    by_host: dict[str, dict[str, str]] = {}
    for pfn in pfns:
        host, path = split_url(pfn)
        by_host.setdefault(host, {})[path] = pfn
    for host, paths in by_host.items():
        script = "".join(f"query checksum {p}\n" for p in paths)
        done = subprocess.run(["xrdfs", host], input=script, capture_output=True, text=True, timeout=600)
        current = None
        for line in done.stdout.splitlines():
            if "> query checksum " in line:
                current = line.split("> query checksum ", 1)[1].strip()
            elif current in paths and line.startswith("adler32 "):
                out[paths[current]] = _adler32(line)
                current = None
    for pfn in pfns:
        if pfn not in out:
            out[pfn] = remote_adler32(pfn)
    return out


def copy(src: str, dst: str, *, tpc: bool = False, force: bool = True, timeout: float = 600) -> None:
    argv = ["xrdcp", "--nopbar", "--path"]  # --path: create the destination's directories
    if force:
        argv.append("--force")
    if tpc:
        argv += ["--tpc", "only"]
    out = subprocess.run([*argv, src, dst], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise OSError(f"xrdcp {src} -> {dst} failed ({out.returncode}): {out.stderr.strip()}")


def pfn(client: Any, rse: str, scope: str, name: str) -> str:
    """The deterministic PFN Rucio expects for scope:name at rse (its own lfn2pfn)."""
    from rucio.rse import rsemanager

    info = rsemanager.get_rse_info(rse, vo=client.vo)
    return next(iter(rsemanager.lfns2pfns(info, [{"scope": scope, "name": name}], operation="write").values()))


def put_replica(client: Any, rse: str, scope: str, name: str, path: Path, *, adler32: str | None = None,
                register: bool = True) -> dict[str, Any]:
    """Copy a local file to its PFN at `rse` and register it there (with the given adler32 if any)."""
    url = pfn(client, rse, scope, name)
    copy(str(path), url)
    item = {"scope": scope, "name": name, "bytes": path.stat().st_size, "adler32": adler32 or adler32_file(path),
            "pfn": url}
    if register:
        client.add_replicas(rse=rse, files=[{k: item[k] for k in ("scope", "name", "bytes", "adler32")}])
    return item
