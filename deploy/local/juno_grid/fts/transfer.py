"""One file's copy, checked the way FTS3's url-copy checks it, with FTS3's wording for the reasons.

Order: stat the source, compare its checksum when asked, make sure the destination may be written,
third-party copy, then compare size and checksum at the destination. FINISHED is returned only after
the destination was read back and matched; a destination that does not match is removed.

Reasons read "SCOPE [errno] text" like FTS3's. Checksum failures contain "CHECKSUM MISMATCH", which
Rucio's `[conveyor] suspicious_pattern` settings are usually written against.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .copier import Endpoint, StorageError, XRootD, checksums_equal
from .states import FileState
from .store import File, Job

# The reason FTS3 < 3.12.12 gives; Rucio checks for it (FTS_FILE_EXISTS_ERROR_MSG_LEGACY) to decide
# whether an existing, correct destination counts as success.
EXISTS_MSG = "Destination file exists and overwrite is not enabled"


@dataclass(frozen=True)
class Outcome:
    state: FileState
    reason: str | None = None
    transferred: int = 0
    dst_file: dict[str, Any] | None = None


@dataclass(frozen=True)
class Limits:
    base_timeout: float = 600.0  # seconds for any file
    min_rate: float = 1024 * 1024  # bytes/s the timeout allows on top of the base


def _failed(scope: str, code: int, text: str) -> Outcome:
    return Outcome(FileState.FAILED, f"{scope} [{code}] {text}")


def copy_file(xrd: XRootD, job: Job, file: File, limits: Limits, *,
              claim_destination: Callable[[], None],
              started: Callable[[subprocess.Popen[str]], None] | None = None) -> Outcome:
    """Copy `file` and verify it. `claim_destination` is called once the destination may be written."""
    try:
        src = Endpoint.parse(file.source_surl)
        dst = Endpoint.parse(file.dest_surl)
    except StorageError as exc:
        return _failed("TRANSFER", exc.errno, f"Protocol not supported: {exc.message}")

    mode = job.verify_checksum
    user = file.checksum
    algorithm = user.algorithm if user else "adler32"

    try:
        src_stat = xrd.stat(src)
    except StorageError as exc:
        return _failed("SOURCE", exc.errno, f"Failed to stat source file {src.url}: {exc.message}")
    if src_stat.is_dir:
        return _failed("SOURCE", errno.EISDIR, f"Source {src.url} is a directory")
    if not src_stat.online:
        return _failed("SOURCE", errno.EAGAIN, f"Source {src.url} is not online (on tape); "
                                               "submit with bring_online to stage it first")

    src_checksum: str | None = None
    if mode in ("both", "source"):
        try:
            src_checksum = xrd.checksum(src, algorithm)
        except StorageError as exc:
            return _failed("SOURCE", exc.errno, f"Failed to get the {algorithm} checksum of {src.url}: {exc.message}")
        if user and user.value and not checksums_equal(user.value, src_checksum):
            return _failed("TRANSFER", errno.EIO, "SOURCE CHECKSUM MISMATCH User defined checksum and source "
                                                  f"checksum do not match {user.value} != {src_checksum}")

    try:
        dst_exists = xrd.exists(dst)
    except StorageError as exc:
        return _failed("DESTINATION", exc.errno, f"Failed to stat destination {dst.url}: {exc.message}")
    if dst_exists and not (job.overwrite or file.dest_ours):
        report = _dst_report(xrd, dst, algorithm) if job.params.get("dst_file_report") else None
        return Outcome(FileState.FAILED, f"DESTINATION [{errno.EEXIST}] {EXISTS_MSG}", dst_file=report)
    # From here on whatever is at the destination is ours: after a crash it is removed and redone.
    claim_destination()

    timeout = limits.base_timeout + src_stat.size / limits.min_rate
    try:
        xrd.copy(src, dst, overwrite=dst_exists, timeout=timeout, started=started)
    except StorageError as exc:
        what = "Transfer timed out" if exc.errno == errno.ETIMEDOUT else "Transfer failed"
        return _with_cleanup(xrd, dst, _failed("TRANSFER", exc.errno, f"{what}: {exc.message}"))

    try:
        dst_size = xrd.stat(dst).size
    except StorageError as exc:
        return _with_cleanup(xrd, dst, _failed(
            "DESTINATION", exc.errno, f"Copy reported success but the destination cannot be read: {exc.message}"))
    if dst_size != src_stat.size:
        return _with_cleanup(xrd, dst, _failed(
            "TRANSFER", errno.EIO, f"DESTINATION SIZE MISMATCH Source and destination file size do not match "
                                   f"{src_stat.size} != {dst_size}"))

    if mode in ("both", "target") and (user and user.value or src_checksum):
        try:
            dst_checksum = xrd.checksum(dst, algorithm)
        except StorageError as exc:
            return _with_cleanup(xrd, dst, _failed(
                "DESTINATION", exc.errno, f"Failed to get the {algorithm} checksum of {dst.url}: {exc.message}"))
        if user and user.value and not checksums_equal(user.value, dst_checksum):
            return _with_cleanup(xrd, dst, _failed(
                "TRANSFER", errno.EIO, "DESTINATION CHECKSUM MISMATCH User defined checksum and destination "
                                       f"checksum do not match {user.value} != {dst_checksum}"))
        if mode == "both" and src_checksum and not checksums_equal(src_checksum, dst_checksum):
            return _with_cleanup(xrd, dst, _failed(
                "TRANSFER", errno.EIO, "DESTINATION CHECKSUM MISMATCH Source and destination checksums do not "
                                       f"match {src_checksum} != {dst_checksum}"))
    return Outcome(FileState.FINISHED, transferred=dst_size)


def _with_cleanup(xrd: XRootD, dst: Endpoint, outcome: Outcome) -> Outcome:
    """Remove a destination that must not stay (failed or unverified copy), saying so if that fails."""
    try:
        xrd.remove(dst)
    except StorageError as exc:
        if exc.errno != errno.ENOENT:
            return Outcome(outcome.state, f"{outcome.reason}; and the destination could not be removed: "
                                          f"{exc.message}", outcome.transferred, outcome.dst_file)
    return outcome


def remove_quietly(xrd: XRootD, url: str) -> str | None:
    """Best-effort removal after a cancel; returns the error text, if any."""
    try:
        xrd.remove(Endpoint.parse(url))
    except StorageError as exc:
        return None if exc.errno == errno.ENOENT else exc.message
    return None


def _dst_report(xrd: XRootD, dst: Endpoint, algorithm: str) -> dict[str, Any] | None:
    """FTS3's dst_file report (params.dst_file_report): lets Rucio accept an existing, correct file."""
    try:
        size = xrd.stat(dst).size
        value = xrd.checksum(dst, algorithm)
    except StorageError:
        return None
    return {"file_size": size, "checksum_type": algorithm, "checksum_value": value, "file_on_tape": False}
