"""One file's copy with gfal2, FTS3's own copy library, the way FTS3's url-copy drives it.

gfal2 does the checks itself, on the connection it copies over (XrdCl for root://, davix for davs://):
the transfer parameters carry FTS3's `verify_checksum` (both / source / target / none), the algorithm and
the checksum Rucio knows; gfal2 compares the source's checksum with it before copying and the
destination's after, refuses an existing destination unless overwrite is set, and reports what went
wrong in its own words. Those words reach Rucio verbatim, behind FTS3's "SCOPE [errno]" prefix.

Copy modes (FTS3's, per link in the service's configuration):
  tpc       third-party copy, storage to storage: XRootD TPC for root://, HTTP-TPC *pull* (the
            destination fetches) for davs://
  push      davs:// only: HTTP-TPC push (the source sends to the destination)
  stream    the bytes pass through the service: gfal2's own streamed copy for davs://; for root://
            (where gfal2 always does TPC) gfal2's POSIX reads and writes, then the same checks

This module imports gfal2, which Debian packages for its own Python (python3-gfal2): the transfer
service runs on /usr/bin/python3 when the engine is gfal2 (config.FTS_PYTHON).
"""

from __future__ import annotations

import errno
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .copier import StorageError, UnsupportedURL, checksums_equal
from .states import FileState
from .store import File, Job
from .transfer import EXISTS_MSG, Limits, Outcome

SCHEMES = ("root", "xroot", "davs", "https")
MODES = ("tpc", "push", "stream")
_HTTP_MODE = {"tpc": "3rd pull", "push": "3rd push", "stream": "streamed"}
_GFAL_CKSUM_MODE = {"both": "both", "source": "source", "target": "target"}
CHUNK = 4 << 20


def _gfal2() -> Any:
    import gfal2  # noqa: PLC0415 - Debian's python3-gfal2: only on the service's interpreter

    return gfal2


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise UnsupportedURL(url)
    return parts.scheme


def same_family(a: str, b: str) -> bool:
    http = ("davs", "https")
    return (a in http) == (b in http)


@dataclass
class Handle:
    """A running copy the service can stop (cancel, drain): gfal2's own cancel, or the stream loop's flag."""

    context: Any
    stopped: threading.Event

    def cancel(self) -> None:
        self.stopped.set()
        try:
            self.context.cancel()
        except Exception:  # noqa: BLE001 - nothing running to cancel
            pass


def _error(exc: Any) -> tuple[int, str]:
    """gfal2's GError: its errno and its message, untouched (one line)."""
    return int(getattr(exc, "code", errno.EIO) or errno.EIO), " ".join(str(getattr(exc, "message", exc)).split())


class Gfal:
    """Copies with gfal2; one gfal2 context per copy (contexts are not shared between threads)."""

    def __init__(self, mode: str = "tpc", *, ca_dir: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"copy mode {mode!r}: use one of {MODES}")
        self.mode = mode
        self.ca_dir = ca_dir

    def context(self, mode: str) -> Any:
        gfal2 = _gfal2()
        ctx = gfal2.creat_context()
        ctx.set_opt_string("HTTP PLUGIN", "DEFAULT_COPY_MODE", _HTTP_MODE[mode])
        # FTS3 tracks the mode it was asked for: no silent fallback to another one.
        ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_FALLBACK_TPC_COPY", False)
        ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_STREAM_COPY", mode == "stream")
        ctx.set_opt_boolean("HTTP PLUGIN", "ENABLE_REMOTE_COPY", mode != "stream")
        if self.ca_dir:
            ctx.set_opt_string("X509", "CA_PATH", self.ca_dir)
        return ctx

    def copy_file(self, job: Job, file: File, limits: Limits, *, claim_destination: Any,
                  started: Any = None, mode: str | None = None) -> Outcome:
        gfal2 = _gfal2()
        mode = mode or self.mode
        try:
            s_scheme, d_scheme = check_url(file.source_surl), check_url(file.dest_surl)
        except StorageError as exc:
            return _failed("TRANSFER", exc.errno, f"Protocol not supported: {exc.message}")
        if not same_family(s_scheme, d_scheme):
            return _failed("TRANSFER", errno.EPROTONOSUPPORT, f"Protocol not supported: {file.source_surl} -> "
                                                              f"{file.dest_surl} (one protocol on both ends)")
        if mode == "push" and s_scheme not in ("davs", "https"):
            mode = "tpc"  # XRootD's TPC has one direction only: the destination pulls
        ctx = self.context(mode)
        handle = Handle(ctx, threading.Event())
        if started:
            started(handle)
        verify = job.verify_checksum
        user = file.checksum
        algorithm = (user.algorithm if user else "adler32").upper()
        overwrite = bool(job.overwrite or file.dest_ours)
        timeout = limits.base_timeout + (file.filesize or 0) / limits.min_rate
        claim_destination()
        try:
            if mode == "stream" and s_scheme in ("root", "xroot"):
                transferred = self._stream_root(ctx, handle, file, verify, algorithm, user.value if user else "",
                                                overwrite)
            else:
                params = ctx.transfer_parameters()
                params.overwrite = overwrite
                params.create_parent = True
                params.timeout = int(timeout)
                if verify in _GFAL_CKSUM_MODE:
                    params.set_checksum(getattr(gfal2.checksum_mode, _GFAL_CKSUM_MODE[verify]), algorithm,
                                        user.value if user and user.value else "")
                ctx.filecopy(params, file.source_surl, file.dest_surl)
                transferred = int(ctx.stat(file.dest_surl).st_size)
        except gfal2.GError as exc:
            code, text = _error(exc)
            return self._failure(ctx, job, file, code, text, algorithm, user.value if user else "", verify)
        except _Refused as exc:
            return self._failure(ctx, job, file, exc.code, exc.text, algorithm, user.value if user else "", verify)
        except _Mismatch as m:
            outcome = _failed("TRANSFER", errno.EIO, m.reason)
            return self._cleanup(ctx, file.dest_surl, outcome) if m.destination_written else outcome
        return Outcome(FileState.FINISHED, transferred=transferred)

    # -- root:// streamed through the service ----------------------------------------------------

    def _stream_root(self, ctx: Any, handle: Handle, file: File, verify: str, algorithm: str, user_value: str,
                     overwrite: bool) -> int:
        gfal2 = _gfal2()
        src, dst = file.source_surl, file.dest_surl
        src_sum = None
        if verify in ("both", "source") and user_value:
            src_sum = ctx.checksum(src, algorithm)
            if not checksums_equal(user_value, src_sum):
                raise _Mismatch(f"SOURCE CHECKSUM MISMATCH Source checksum and user-specified checksum do not "
                                f"match: {src_sum} != {user_value}", destination_written=False)
        if not overwrite:
            try:
                ctx.stat(dst)
            except gfal2.GError as exc:
                if exc.code != errno.ENOENT:
                    raise
            else:
                raise _Refused(errno.EEXIST, f"Destination {dst} exists and overwrite is not set")
        size = 0
        reader = ctx.open(src, "r")
        writer = ctx.open(dst, "w")
        while not handle.stopped.is_set():
            chunk = reader.read_bytes(CHUNK)
            if not chunk:
                break
            writer.write(chunk)
            size += len(chunk)
        del writer, reader  # closes both (the destination is complete on the server once closed)
        if handle.stopped.is_set():
            raise _Refused(errno.ECANCELED, "Transfer canceled")
        if verify in ("both", "target"):
            dst_sum = ctx.checksum(dst, algorithm)
            want = user_value or (src_sum if verify == "both" else "") or ""
            if verify == "both" and not want:
                want = ctx.checksum(src, algorithm)
            if want and not checksums_equal(want, dst_sum):
                raise _Mismatch(f"DESTINATION CHECKSUM MISMATCH {'User-specified' if user_value else 'Source'} "
                                f"and destination checksums do not match: {want} != {dst_sum}")
        return size

    # -- failures --------------------------------------------------------------------------------

    def _failure(self, ctx: Any, job: Job, file: File, code: int, text: str, algorithm: str, user_value: str,
                 verify: str) -> Outcome:
        if code == errno.EEXIST and "exist" in text.lower():
            report = self._dst_report(ctx, file.dest_surl, algorithm) if job.params.get("dst_file_report") else None
            return Outcome(FileState.FAILED, f"DESTINATION [{code}] {EXISTS_MSG}: {text}", dst_file=report)
        if "checksum" in text.lower():
            # XRootD's TPC says only "CheckSum error": tell a bad source (Rucio's suspicious_pattern, the
            # recovery path) from a bad copy by asking the source once, here, after the failure.
            scope = "DESTINATION"
            if user_value and verify in ("both", "source"):
                try:
                    if not checksums_equal(user_value, self.context(self.mode).checksum(file.source_surl,
                                                                                        algorithm)):
                        scope = "SOURCE"
                except Exception:  # noqa: BLE001 - the source cannot be read: keep gfal2's words only
                    pass
            return self._cleanup(ctx, file.dest_surl, _failed("TRANSFER", code, f"{scope} CHECKSUM MISMATCH {text}"))
        scope = "SOURCE" if code in (errno.ENOENT,) and "source" in text.lower() else "TRANSFER"
        what = "Transfer timed out" if code == errno.ETIMEDOUT else "Transfer failed"
        return self._cleanup(ctx, file.dest_surl, _failed(scope, code, f"{what}: {text}"))

    def _cleanup(self, ctx: Any, url: str, outcome: Outcome) -> Outcome:
        problem = self.remove(url, ctx)
        if problem:
            return Outcome(outcome.state, f"{outcome.reason}; and the destination could not be removed: {problem}",
                           outcome.transferred, outcome.dst_file)
        return outcome

    def remove(self, url: str, ctx: Any = None) -> str | None:
        """Remove quietly; the error text if it failed for another reason than not being there."""
        gfal2 = _gfal2()
        try:
            (ctx or self.context(self.mode)).unlink(url)
        except gfal2.GError as exc:
            return None if exc.code == errno.ENOENT else _error(exc)[1]
        return None

    def _dst_report(self, ctx: Any, url: str, algorithm: str) -> dict[str, Any] | None:
        gfal2 = _gfal2()
        try:
            size = int(ctx.stat(url).st_size)
            value = ctx.checksum(url, algorithm)
        except gfal2.GError:
            return None
        return {"file_size": size, "checksum_type": algorithm.lower(), "checksum_value": value, "file_on_tape": False}


class _Refused(Exception):
    """A failure this module finds itself (gfal2's own are GError)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _Mismatch(Exception):
    def __init__(self, reason: str, destination_written: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.destination_written = destination_written


def _failed(scope: str, code: int, text: str) -> Outcome:
    return Outcome(FileState.FAILED, f"{scope} [{code}] {text}")
