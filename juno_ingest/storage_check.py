"""Is the file really on IHEP's storage, with the announced size? One `xrdfs` per chunk of files.

`xrdfs HOST stat PATH` per file costs a process each (~20 ms); xrdfs also reads commands from stdin,
so one process stats hundreds of files over one connection (measured: 1,000 stats in 0.22 s on the
local grid). Chunks run in parallel processes.

Outcomes per path: its size, or None (not there, or not a file). Anything else xrdfs reports (server
down, timeout, permission) raises StorageUnavailable: the batch is retried later, never dead-lettered
because the storage had a bad minute.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# XRootD's "not found" (kXR_NotFound = 3011) and the text the client prints for it.
_NOT_FOUND = re.compile(r"\[3011\]|no such file or directory", re.IGNORECASE)
_PATH = re.compile(r"^Path:\s+(.*\S)\s*$")
_SIZE = re.compile(r"^Size:\s+(\d+)\s*$")
_FLAGS = re.compile(r"^Flags:\s+\d+\s+\((.*)\)\s*$")


class StorageUnavailable(Exception):
    """The storage could not answer; retry later."""


@dataclass(frozen=True)
class Endpoint:
    """An XRootD endpoint: host:port and the protocol prefix (e.g. 127.0.0.1:11094, //eos/juno/dci)."""

    host: str
    prefix: str

    @property
    def url(self) -> str:
        return f"root://{self.host}/{self.prefix.lstrip('/')}" if self.prefix else f"root://{self.host}"


def _norm(path: str) -> str:
    return "/" + "/".join(p for p in path.split("/") if p)


def parse_stat_output(text: str, paths: Sequence[str]) -> dict[str, int | None]:
    """Sizes from `xrdfs` interactive output (stdout and stderr) for `stat` of each path.

    None for a path that is not there (or is a directory). Raises StorageUnavailable for any other
    error, and when fewer answers than questions came back (xrdfs prints "[FATAL] Connection error"
    on stderr and nothing per path when the server is down: silence must not read as "missing").
    """
    sizes: dict[str, int | None] = {_norm(p): None for p in paths}
    answers = 0
    current: str | None = None
    for line in text.splitlines():
        if "[ERROR]" in line or "[FATAL]" in line:
            if "[FATAL]" in line or not _NOT_FOUND.search(line):
                raise StorageUnavailable(f"xrdfs: {line.strip()}")
            answers += 1
            current = None
            continue
        m = _PATH.match(line)
        if m:
            answers += 1
            current = _norm(m.group(1))
            continue
        if current is None or current not in sizes:
            continue
        m = _SIZE.match(line)
        if m:
            sizes[current] = int(m.group(1))
            continue
        m = _FLAGS.match(line)
        if m and "IsDir" in m.group(1):  # Flags come after Size: a directory is not the file
            sizes[current] = None
    if answers < len(sizes):
        raise StorageUnavailable(f"xrdfs answered {answers} of {len(sizes)} stat requests")
    return sizes


class StorageChecker:
    """Stats files on one XRootD endpoint, `parallel` xrdfs processes at a time, `chunk` files each."""

    def __init__(self, endpoint: Endpoint, *, parallel: int = 2, chunk: int = 500, timeout_s: float = 60.0,
                 xrdfs: str = "xrdfs") -> None:
        found = shutil.which(xrdfs)
        if found is None:
            raise FileNotFoundError(f"{xrdfs} not found on PATH: install the XRootD client (Debian: xrootd-client) "
                                    "or set storage_check.enabled: false in the ingest configuration")
        self.endpoint = endpoint
        self.parallel = max(1, parallel)
        self.chunk = max(1, chunk)
        self.timeout_s = timeout_s
        self._xrdfs = found
        self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="xrdfs")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def sizes(self, paths: Sequence[str]) -> dict[str, int | None]:
        """Absolute path → size in bytes, or None when the file is not there."""
        unique = list(dict.fromkeys(_norm(p) for p in paths))
        if not unique:
            return {}
        chunks = [unique[i:i + self.chunk] for i in range(0, len(unique), self.chunk)]
        out: dict[str, int | None] = {}
        for part in self._pool.map(self._stat_chunk, chunks):
            out.update(part)
        return out

    def _stat_chunk(self, paths: list[str]) -> dict[str, int | None]:
        commands = "".join(f"stat {p}\n" for p in paths) + "exit\n"
        try:
            proc = subprocess.run([self._xrdfs, self.endpoint.host], input=commands, capture_output=True,
                                  text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise StorageUnavailable(f"xrdfs {self.endpoint.host}: no answer for {len(paths)} stats within "
                                     f"{self.timeout_s:.0f} s") from None
        return parse_stat_output(proc.stdout + "\n" + proc.stderr, paths)
