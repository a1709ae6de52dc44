"""The scheduler: a bounded pool of copy workers, a stager for bring-online, cancel and drain.

All state lives in the store; the threads only hold what is running right now (the xrdcp processes,
so that a cancel or a stop can end them). A file is claimed by moving it to ACTIVE in one
transaction, so two workers never copy the same file.
"""

from __future__ import annotations

import errno
import logging
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import copier
from .copier import Endpoint, StorageError, XRootD
from .gfal_pool import GfalWorkers, request_for
from .jsonlog import log
from .links import LinkModes
from .states import FileState
from .store import DuplicateJob, File, Job, Store
from .submission import Submission, deterministic_job_id
from .transfer import Limits, copy_file, remove_quietly


@dataclass(frozen=True)
class Settings:
    workers: int = 4
    vo: str = "juno"
    limits: Limits = field(default_factory=Limits)
    op_timeout: float = 60.0  # one xrdfs request
    stage_poll: float = 1.0  # seconds between looks at staging files
    drain_timeout: float = 10.0  # on stop, how long running copies may take to finish
    max_interruptions: int = 5  # restarts a copy may live through before it is failed
    copy_mode: str = "tpc"  # default for every link: tpc | stream (| push with gfal2): see links.py
    engine: str = "xrootd"  # xrootd: xrdcp/xrdfs processes (copier.XRootD); gfal2: gfal_copy.Gfal in-process
    links_file: Path | None = None  # per-link copy modes (links.py)
    scheme_modes: dict[str, str] = field(default_factory=dict)  # per source scheme, before copy_mode (links.py)


class Stopping(RuntimeError):
    """The service is draining and takes no new work (HTTP 503)."""


class Service:
    def __init__(self, store: Store, settings: Settings, xrd: XRootD | None = None) -> None:
        self.store = store
        self.settings = settings
        self.xrd = xrd or XRootD(settings.op_timeout, mode="stream" if settings.copy_mode == "stream" else "tpc")
        self.links = LinkModes(settings.links_file, settings.copy_mode, settings.scheme_modes)
        self.gfal: GfalWorkers | None = None
        if settings.engine == "gfal2":
            self.gfal = GfalWorkers()
        elif settings.engine != "xrootd":
            raise ValueError(f"engine {settings.engine!r}: use xrootd or gfal2")
        self.base_id = store.base_id()
        self._stopping = threading.Event()
        self._wake = threading.Condition()
        self._procs: dict[int, Any] = {}  # xrdcp processes, or gfal2 copies' handles
        self._procs_lock = threading.Lock()
        self._canceled: set[int] = set()
        self._abandoned: set[int] = set()  # copies stopped by the drain: requeue, not fail
        self._abandon_all = False
        self._threads: list[threading.Thread] = []

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for file in self.store.recover(self.settings.max_interruptions):
            log(logging.WARNING, "resumed after restart", job_id=file.job_id, file_id=file.file_id,
                state=file.file_state.value, dest=file.dest_surl)
        for n in range(self.settings.workers):
            self._threads.append(threading.Thread(target=self._worker, name=f"copy-{n}", daemon=True))
        self._threads.append(threading.Thread(target=self._stager, name="stager", daemon=True))
        for thread in self._threads:
            thread.start()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Take no more work; give running copies `drain_timeout` to end, then stop and requeue them."""
        self._stopping.set()
        self._notify()
        deadline = time.monotonic() + self.settings.drain_timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        with self._procs_lock:
            self._abandon_all = True
            running = dict(self._procs)
            self._abandoned.update(running)
        for file_id, proc in running.items():
            log(logging.WARNING, "stopping copy for shutdown, it will resume at the next start", file_id=file_id)
            copier.kill(proc)
        for thread in self._threads:
            thread.join(30)

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # --- requests from the API ----------------------------------------------------------------

    def submit(self, sub: Submission) -> Job:
        if self.stopping:
            raise Stopping("the transfer service is shutting down; submit again later")
        sid = sub.deterministic_sid
        job_id = deterministic_job_id(self.base_id, self.settings.vo, sid) if sid else None
        job = self.store.add_job(sub, self.settings.vo, job_id)  # DuplicateJob propagates (409)
        log(logging.INFO, "job submitted", job_id=job.job_id, job_type=job.job_type.value, files=len(sub.files),
            priority=job.priority, bring_online=sub.bring_online, verify_checksum=job.verify_checksum,
            overwrite=job.overwrite)
        self._notify()
        return job

    def cancel(self, job_id: str) -> Job | None:
        if self.store.job(job_id) is None:
            return None
        active = self.store.cancel(job_id)
        with self._procs_lock:
            self._canceled.update(active)
            procs = [self._procs[f] for f in active if f in self._procs]
        for proc in procs:
            copier.kill(proc)
        # Copies still in their pre-checks have no process yet: _started() stops them when they do.
        log(logging.INFO, "job canceled", job_id=job_id, active_files=len(active), copies_killed=len(procs))
        return self.store.job(job_id)

    def set_priority(self, job_id: str, priority: int) -> Job | None:
        if self.store.job(job_id) is None:
            return None
        self.store.set_priority(job_id, priority)
        log(logging.INFO, "priority changed", job_id=job_id, priority=priority)
        return self.store.job(job_id)

    def health(self) -> dict[str, Any]:
        counts = self.store.counts()
        with self._procs_lock:
            running = len(self._procs)  # copy processes not yet ended and cleaned up (a canceled file is no
            # longer ACTIVE at once, but its copy may still be ending and its partial destination removed)
        return {
            "status": "stopping" if self.stopping else "ok",
            "workers": self.settings.workers,
            "active": counts.get(FileState.ACTIVE, 0),
            "copies_running": running,
            "queued": counts.get(FileState.SUBMITTED, 0),
            "staging": counts.get(FileState.STAGING, 0) + counts.get(FileState.STARTED, 0),
        }

    # --- copy workers -------------------------------------------------------------------------

    def _worker(self) -> None:
        while not self.stopping:
            claimed = self.store.claim_next()
            if claimed is None:
                with self._wake:
                    self._wake.wait(timeout=0.5)
                continue
            job, file = claimed
            try:
                self._run(job, file)
            except Exception:  # noqa: BLE001 - a bug must fail this file, not kill the worker thread
                logging.getLogger(__name__).exception("copy crashed")
                self.store.finish(file.file_id, FileState.FAILED,
                                  "TRANSFER [5] internal error of the transfer service (see its log)")
            finally:
                with self._procs_lock:
                    self._procs.pop(file.file_id, None)
                    self._canceled.discard(file.file_id)
                    self._abandoned.discard(file.file_id)
            self._notify()  # a finished hop or a failed replica may have released the next file

    def _started(self, file_id: int, proc: subprocess.Popen[str]) -> None:
        with self._procs_lock:
            self._procs[file_id] = proc
            if self._abandon_all:
                self._abandoned.add(file_id)
            stop_now = file_id in self._canceled or file_id in self._abandoned
        if stop_now:
            copier.kill(proc)

    def _run(self, job: Job, file: File) -> None:
        log(logging.INFO, "copy started", job_id=job.job_id, file_id=file.file_id, source=file.source_surl,
            dest=file.dest_surl, resumed=file.interruptions > 0)
        began = time.monotonic()
        claim = lambda: self.store.mark_dest_ours(file.file_id)  # noqa: E731
        started = lambda handle: self._started(file.file_id, handle)  # noqa: E731
        if self.gfal is not None:
            mode = self.links.get().mode_for(file.source_surl, file.dest_surl)
            outcome = self.gfal.copy(request_for(job, file, mode, self.settings.limits), claim=claim, started=started)
        else:
            outcome = copy_file(self.xrd, job, file, self.settings.limits, claim_destination=claim, started=started)
        seconds = time.monotonic() - began
        with self._procs_lock:
            abandoned = file.file_id in self._abandoned
        if abandoned and outcome.state is not FileState.FINISHED:
            # It may have failed only because the drain killed it: run it again after the restart.
            self.store.requeue(file.file_id, "interrupted by a stop of the transfer service; will resume")
            log(logging.WARNING, "copy requeued", job_id=job.job_id, file_id=file.file_id)
            return
        if self.store.finish(file.file_id, outcome.state, outcome.reason, transferred=outcome.transferred,
                             dst_file=outcome.dst_file):
            level = logging.INFO if outcome.state is FileState.FINISHED else logging.WARNING
            log(level, "copy " + outcome.state.value.lower(), job_id=job.job_id, file_id=file.file_id,
                seconds=round(seconds, 3), bytes=outcome.transferred, reason=outcome.reason,
                mb_per_s=round(outcome.transferred / seconds / 1e6, 2) if seconds > 0 else None)
            return
        # Canceled while it ran: nothing it wrote may stay.
        current = self.store.file(file.file_id)
        if current.dest_ours and current.file_state is FileState.CANCELED:
            problem = (self.gfal.remove(file.dest_surl) if self.gfal is not None
                       else remove_quietly(self.xrd, file.dest_surl))
            log(logging.INFO, "canceled copy cleaned up", job_id=job.job_id, file_id=file.file_id,
                removal_error=problem)

    # --- bring-online -------------------------------------------------------------------------

    def _stager(self) -> None:
        while not self._stopping.wait(self.settings.stage_poll):
            try:
                self._request_staging()
                self._poll_staging()
            except Exception:  # noqa: BLE001 - keep staging alive; the failure is logged with its trace
                logging.getLogger(__name__).exception("staging cycle failed")

    def _request_staging(self) -> None:
        by_host: dict[str, list[tuple[File, Endpoint]]] = defaultdict(list)
        for _, file in self.store.files_in([FileState.STAGING]):
            try:
                ep = Endpoint.parse(file.source_surl)
            except StorageError as exc:
                self.store.fail_staging(file.file_id, f"STAGING [{exc.errno}] Protocol not supported: {exc.message}")
                continue
            by_host[ep.host].append((file, ep))
        for host, group in by_host.items():
            # One prepare request per storage, as FTS3 batches its bring-online requests.
            try:
                request_id = self.xrd.prepare(host, [ep.path for _, ep in group])
            except StorageError as exc:
                for file, _ in group:
                    self.store.fail_staging(file.file_id, f"STAGING [{exc.errno}] Bring-online request to {host} "
                                                          f"failed: {exc.message}")
                continue
            for file, _ in group:
                self.store.staging_requested(file.file_id)
            log(logging.INFO, "bring-online requested", host=host, files=len(group), request_id=request_id)

    def _poll_staging(self) -> None:
        now = time.time()
        for job, file in self.store.files_in([FileState.STARTED]):
            ep = Endpoint.parse(file.source_surl)
            try:
                online = self.xrd.stat(ep).online
            except StorageError as exc:
                if exc.errno == errno.ENOENT:
                    self.store.fail_staging(file.file_id, f"STAGING [{exc.errno}] Source {ep.url} cannot be "
                                                          f"staged: {exc.message}")
                    continue
                online = False
                log(logging.WARNING, "staging poll failed", file_id=file.file_id, error=exc.message)
            if online:
                self.store.staged(file.file_id)
                log(logging.INFO, "staged", job_id=job.job_id, file_id=file.file_id, source=file.source_surl)
                self._notify()
            elif file.staging_start is not None and now - file.staging_start > job.bring_online:
                self.store.fail_staging(file.file_id, f"STAGING [{errno.ETIMEDOUT}] bring-online timeout of "
                                                      f"{job.bring_online} s exceeded for {ep.url}")


__all__ = ["DuplicateJob", "Service", "Settings", "Stopping"]
