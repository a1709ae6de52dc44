"""The service's side of the gfal2 engine: one url-copy worker process per copy slot (gfal_copy.main).

The service itself needs only the standard library; gfal2 lives in the workers. A worker is reused from
copy to copy (gfal2 keeps its connections to the storages), replaced when it dies. A copy that overruns
its timeout, is canceled or is stopped by a drain is ended by killing its worker's process group, as
FTS3 ends a url-copy process.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from . import copier
from .gfal_copy import CopyRequest
from .states import FileState
from .store import File, Job
from .transfer import Limits, Outcome


def request_for(job: Job, file: File, mode: str, limits: Limits) -> CopyRequest:
    user = file.checksum
    return CopyRequest(
        source=file.source_surl, dest=file.dest_surl, verify=job.verify_checksum,
        algorithm=(user.algorithm if user else "adler32").upper(), user_value=(user.value or "") if user else "",
        overwrite=bool(job.overwrite or file.dest_ours), dst_file_report=bool(job.params.get("dst_file_report")),
        mode=mode, timeout=limits.base_timeout + (file.filesize or 0) / limits.min_rate)


class _Died(Exception):
    pass


class _Worker:
    def __init__(self, python: str) -> None:
        setpriv = shutil.which("setpriv")
        guard = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        # Own session: killing a copy kills its worker and nothing else; pdeathsig: a worker never
        # outlives the service (SIGKILL included).
        self.proc = subprocess.Popen([*guard, python, "-m", "juno_grid.fts.gfal_copy"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=None, start_new_session=True)
        self.buffer = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(msg) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise _Died from None

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None when `deadline` (monotonic) passed first."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_READ)
                if not sel.select(left):
                    continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _Died
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return dict(json.loads(line))


class GfalWorkers:
    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self._local = threading.local()

    def _worker(self) -> _Worker:
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is None or not worker.alive():
            worker = self._local.worker = _Worker(self.python)
        return worker

    def copy(self, req: CopyRequest, *, claim: Callable[[], None],
             started: Callable[[Any], None] | None = None) -> Outcome:
        worker = self._worker()
        if started:
            started(worker.proc)
        deadline = time.monotonic() + req.timeout
        claimed = False
        try:
            worker.send(asdict(req))
            while True:
                msg = worker.receive(deadline)
                if msg is None:
                    copier.kill(worker.proc)
                    worker.proc.wait()
                    reason = (f"TRANSFER [{errno.ETIMEDOUT}] Transfer timed out: the copy did not finish within "
                              f"{req.timeout:.0f} s; killed")
                    problem = self.remove(req.dest, settle=1.0) if claimed else None
                    return Outcome(FileState.FAILED, reason + (f"; and the destination could not be removed: "
                                                               f"{problem}" if problem else ""))
                if msg.get("claim"):
                    claimed = True
                    claim()
                elif "outcome" in msg:
                    o = msg["outcome"]
                    return Outcome(FileState(o["state"]), o.get("reason"), int(o.get("transferred") or 0),
                                   o.get("dst_file"))
        except _Died:
            code = worker.proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            return Outcome(FileState.FAILED, f"TRANSFER [{errno.EINTR}] the copy's gfal2 worker {how}")

    def remove(self, url: str, settle: float = 0.0) -> str | None:
        """Remove a destination; with `settle`, look again after that many seconds: a third-party copy
        whose client was killed may still be finishing on the destination server."""
        problem = self._remove_once(url)
        if settle and problem is None:
            time.sleep(settle)
            problem = self._remove_once(url)
        return problem

    def _remove_once(self, url: str) -> str | None:
        worker = self._worker()
        try:
            worker.send({"remove": url})
            msg = worker.receive(time.monotonic() + 60)
        except _Died:
            return "the gfal2 worker died while removing"
        if msg is None:
            copier.kill(worker.proc)
            return "no answer from the gfal2 worker in 60 s"
        return msg.get("removed")
