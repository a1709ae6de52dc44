"""The storage adapter: XRootD's own command-line clients (`xrdcp --tpc only`, `xrdfs`) in subprocesses.

gfal2's Python binding exists only for Debian's system Python, not the project's venv, and the
XRootD clients are what the storages' own third-party copy runs anyway. Every failure becomes a
`StorageError` carrying an errno and the client's own message, which ends up verbatim in the
reason Rucio records.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SUPPORTED_SCHEMES = ("root", "xroot")

# XRootD server error codes (XProtocol.hh) as the errno FTS3 would report.
_XRD_ERRNO = {
    3005: errno.EIO, 3007: errno.EIO, 3009: errno.ENOSPC, 3010: errno.EACCES, 3011: errno.ENOENT,
    3013: errno.ENOTSUP, 3015: errno.EISDIR, 3016: errno.EISDIR, 3018: errno.EEXIST, 3019: errno.EIO,
    3021: errno.EDQUOT, 3025: errno.EROFS, 3030: errno.EACCES, 3034: errno.ETIMEDOUT, 3035: errno.ETIMEDOUT,
}
_TEXT_ERRNO = (
    ("no such file or directory", errno.ENOENT),
    ("file exists", errno.EEXIST),
    ("connection error", errno.ECONNREFUSED),
    ("connection refused", errno.ECONNREFUSED),
    ("socket timeout", errno.ETIMEDOUT),
    ("operation expired", errno.ETIMEDOUT),
    ("permission denied", errno.EACCES),
    ("not authorized", errno.EACCES),
)


class StorageError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code
        self.message = message


class UnsupportedURL(StorageError):
    def __init__(self, url: str) -> None:
        scheme = urlsplit(url).scheme or "(none)"
        if scheme == "file":
            why = ("file:// URLs name files on the transfer service's own host; FTS3 does not copy them: "
                   "give the storage a root:// endpoint")
        else:
            why = f"scheme {scheme}:// is not supported by this transfer service (root:// only)"
        super().__init__(errno.EPROTONOSUPPORT, f"{url}: {why}")


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str  # host:port, as xrdfs wants it
    path: str  # absolute path on that server, query string dropped

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in SUPPORTED_SCHEMES or not parts.netloc:
            raise UnsupportedURL(url)
        # root://h:p//abs/path and root://h:p/abs/path both name /abs/path.
        return cls(url, parts.netloc, "/" + parts.path.lstrip("/"))


@dataclass(frozen=True)
class Stat:
    size: int
    online: bool
    is_dir: bool


def error_from_output(text: str, default: int = errno.EIO) -> int:
    """The errno that best describes an XRootD client's error message."""
    code = re.search(r"\[(3\d{3})\]", text)
    if code and int(code.group(1)) in _XRD_ERRNO:
        return _XRD_ERRNO[int(code.group(1))]
    lowered = text.lower()
    for needle, number in _TEXT_ERRNO:
        if needle in lowered:
            return number
    return default


def _clean(text: str) -> str:
    """One line: client messages come with '[ERROR] ' prefixes and trailing blanks."""
    return " ".join(text.replace("\x00", " ").replace("[ERROR]", "").replace("[FATAL]", "").split())


def checksums_equal(a: str, b: str) -> bool:
    """Compare hex checksums as numbers: some tools drop adler32's leading zeros."""
    try:
        return int(a, 16) == int(b, 16)
    except ValueError:
        return a.strip().lower() == b.strip().lower()


class XRootD:
    """xrdcp/xrdfs with short connection retries, so an unreachable server fails in seconds, not minutes."""

    MODES = ("tpc", "stream")

    def __init__(self, op_timeout: float = 60.0, mode: str = "tpc") -> None:
        """mode `tpc`: third-party copy, storage to storage, as FTS3 does by default. XRootD 5.5's client
        has a ~2.5 s floor per TPC (it polls the destination), which dominates for small files.
        mode `stream`: the bytes flow through this service (FTS3's streaming fallback when TPC is not
        possible); on one machine that is ~20 ms for a small file. Checks are the same in both modes."""
        if mode not in self.MODES:
            raise ValueError(f"copy mode {mode!r}: use one of {self.MODES}")
        self.mode = mode
        self.op_timeout = op_timeout
        # The client's defaults retry a dead server for 5 x 120 s before giving up.
        self.copy_env = {**os.environ, "XRD_CONNECTIONRETRY": "1", "XRD_CONNECTIONWINDOW": "10"}
        # Metadata requests get a short timeout; a copy does not (a large third-party copy is one
        # long kXR_sync request): copy() enforces the copy's own timeout instead.
        self.env = {**self.copy_env, "XRD_REQUESTTIMEOUT": str(int(op_timeout)),
                    "XRD_STREAMTIMEOUT": str(int(op_timeout))}
        # A copy must not outlive the service (SIGKILL included): the kernel kills it when the
        # thread that started it dies. A restarted service then redoes the copy from scratch.
        setpriv = shutil.which("setpriv")
        self._guard = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []

    def _xrdfs(self, host: str, *args: str) -> str:
        try:
            out = subprocess.run(["xrdfs", host, *args], capture_output=True, text=True, env=self.env,
                                 timeout=self.op_timeout + 10)
        except subprocess.TimeoutExpired:
            raise StorageError(errno.ETIMEDOUT, f"xrdfs {host} {args[0]}: no answer in "
                                                f"{self.op_timeout + 10:.0f} s") from None
        if out.returncode != 0:
            text = _clean(out.stderr or out.stdout) or f"xrdfs exited with code {out.returncode}"
            raise StorageError(error_from_output(text), text)
        return out.stdout

    def stat(self, ep: Endpoint) -> Stat:
        out = self._xrdfs(ep.host, "stat", ep.path)
        size = re.search(r"^Size:\s+(\d+)", out, re.M)
        flags = re.search(r"^Flags:\s+\d+\s+\(([^)]*)\)", out, re.M)
        names = set(flags.group(1).split("|")) if flags else set()
        return Stat(int(size.group(1)) if size else 0, "Offline" not in names, "IsDir" in names)

    def exists(self, ep: Endpoint) -> bool:
        try:
            self.stat(ep)
        except StorageError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def checksum(self, ep: Endpoint, algorithm: str) -> str:
        # XRootD 5.5 now and then answers "[3012] Program failed" for a file a third-party copy has just
        # closed; the same query a moment later succeeds. Asked again twice before it counts as a failure.
        for attempt in range(3):
            try:
                out = self._xrdfs(ep.host, "query", "checksum", ep.path).split()
                break
            except StorageError as exc:
                if "[3012]" not in str(exc) or attempt == 2:
                    raise
                time.sleep(0.5)
        # "adler32 0a1b2c3d"
        if len(out) < 2:
            raise StorageError(errno.EIO, f"unexpected checksum answer for {ep.url}: {' '.join(out)!r}")
        if out[0].lower() != algorithm.lower():
            raise StorageError(errno.ENOTSUP, f"{ep.host} computes {out[0]}, not {algorithm}")
        return out[1].lower()

    def remove(self, ep: Endpoint) -> None:
        self._xrdfs(ep.host, "rm", ep.path)

    def prepare(self, host: str, paths: list[str]) -> str:
        """Ask the server to bring the files online (kXR_prepare with the stage flag); returns its request id."""
        return self._xrdfs(host, "prepare", "-s", *paths).strip()

    def copy(self, src: Endpoint, dst: Endpoint, *, overwrite: bool, timeout: float,
             started: Callable[[subprocess.Popen[str]], None] | None = None) -> float:
        """Copy (third-party or streamed, per the mode); returns the seconds it took. Raises StorageError
        (ETIMEDOUT on timeout)."""
        argv = [*self._guard, "xrdcp", *(["--tpc", "only"] if self.mode == "tpc" else []), "--silent", "--nopbar"]
        if overwrite:
            argv.append("--force")
        argv += [src.url, dst.url]
        begin = time.monotonic()
        # Own session: a SIGTERM sent to the service's process group must not kill running copies,
        # the service decides their fate itself (drain, then requeue).
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=self.copy_env, start_new_session=True)
        if started:
            started(proc)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill(proc)
            proc.communicate()
            raise StorageError(errno.ETIMEDOUT, f"xrdcp did not finish within {timeout:.0f} s; killed") from None
        if proc.returncode < 0:
            raise StorageError(errno.EINTR, f"xrdcp killed by signal {-proc.returncode}")
        if proc.returncode != 0:
            text = _clean(output) or f"xrdcp exited with code {proc.returncode}"
            raise StorageError(error_from_output(text), f"xrdcp: {text}")
        return time.monotonic() - begin


def kill(proc: Any) -> None:
    """Stop a copy: an xrdcp process and anything it started (it leads its own process group), or a
    gfal2 copy in this process (its handle's cancel)."""
    if hasattr(proc, "cancel"):
        proc.cancel()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
