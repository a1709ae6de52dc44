"""The HTTP side: the FTS3 REST subset Rucio's `fts3` transfertool calls, plain JSON over http://127.0.0.1.

| request                                   | answer                                                      |
|-------------------------------------------|-------------------------------------------------------------|
| POST /jobs {"files": [...], "params": {}} | 200 {"job_id": ...}; 400 bad body; 409 duplicate id; 503    |
| GET /jobs/ID[?files=f1,f2]                | 200 the job (404 with a job-shaped body if never known)     |
| GET /jobs/ID1,ID2[?files=...]             | 207 a list, each entry with its own http_status             |
| GET /jobs/ID/files                        | 200 every file of the job, all fields                       |
| DELETE /jobs/ID[,ID2]                     | cancel; the job(s) as GET returns them                      |
| POST /jobs/ID {"params": {"priority": N}} | 200 the job                                                 |
| GET /jobs[?state_in=A,B]                  | jobs in those states (default: not final)                   |
| GET /whoami, GET /, GET /health           | identity (deterministic ids), version, status               |

Rucio reads `http_status` literally ("200 Ok" / "404 Not Found"), calls `.get` on `job_metadata`, and
parses the four time fields with '%Y-%m-%dT%H:%M:%S', null allowed.
"""

from __future__ import annotations

import json
import logging
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .jsonlog import log
from .service import Service, Stopping
from .states import FINAL_JOB_STATES, JobState, fts_time
from .store import DuplicateJob, File, Job
from .submission import BadRequest, parse

HOST = "127.0.0.1"
OK = "200 Ok"
NOT_FOUND = "404 Not Found"
API_VERSION = {"major": 3, "minor": 12, "patch": 0}


def render_job(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "http_status": OK,
        "job_state": job.job_state.value,
        "job_type": job.job_type.value,
        "job_metadata": job.job_metadata,
        "submit_time": fts_time(job.submit_time),
        "job_finished": fts_time(job.job_finished),
        "reason": job.reason,
        "priority": job.priority,
        "vo_name": job.vo_name,
        "user_dn": "/CN=juno-grid-local",
        "cred_id": None,
        "verify_checksum": job.verify_checksum,
        "overwrite_flag": job.overwrite,
        "bring_online": job.bring_online,
        "copy_pin_lifetime": job.params.get("copy_pin_lifetime"),
        "source_space_token": job.params.get("source_spacetoken"),
        "space_token": job.params.get("spacetoken"),
        "retry": 0,
    }


def _se(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}"


def render_file(file: File) -> dict[str, Any]:
    metadata = file.file_metadata
    if file.dst_file and isinstance(metadata, dict):
        # FTS3 >= 3.12.12 reports the existing destination inside file_metadata (dst_file_report).
        metadata = {**metadata, "dst_file": file.dst_file}
    duration = (file.finish_time - file.start_time) if file.finish_time and file.start_time else None
    return {
        "file_id": file.file_id,
        "job_id": file.job_id,
        "file_index": file.file_index,
        "file_state": file.file_state.value,
        "source_surl": file.source_surl,
        "dest_surl": file.dest_surl,
        "source_se": _se(file.source_surl),
        "dest_se": _se(file.dest_surl),
        "reason": file.reason,
        "filesize": file.filesize,
        "user_filesize": file.filesize,
        "checksum": str(file.checksum) if file.checksum else None,
        "file_metadata": metadata,
        "activity": file.activity,
        "start_time": fts_time(file.start_time),
        "finish_time": fts_time(file.finish_time),
        "staging_start": fts_time(file.staging_start),
        "staging_finished": fts_time(file.staging_finished),
        "transferred": file.transferred,
        "tx_duration": duration,
        "throughput": (file.transferred / duration / 1e6) if duration else None,
        "retry": file.interruptions,
    }


def not_found(job_id: str) -> dict[str, Any]:
    # Job-shaped so that Rucio's bulk_query reads it as LOST rather than failing to parse it.
    message = f"No job with the id {job_id} has been found"
    return {"job_id": job_id, "http_status": NOT_FOUND, "http_message": message,
            "status": NOT_FOUND, "message": message}


class Handler(BaseHTTPRequestHandler):
    server: FtsHTTPServer
    protocol_version = "HTTP/1.1"  # keep-alive: Rucio's bulk_query uses a requests.Session

    # --- plumbing -----------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log(logging.DEBUG, "http", client=self.client_address[0], request=format % args)

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, {"status": f"{status.value} {status.phrase}", "message": message})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        segments = [unquote(s) for s in parts.path.split("/") if s]
        return segments, parse_qs(parts.query)

    @property
    def service(self) -> Service:
        return self.server.service

    def _guard(self, method: str) -> None:
        try:
            getattr(self, f"_{method}")()
        except BadRequest as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception:  # noqa: BLE001 - answer 500 with the trace in our log, keep serving
            logging.getLogger(__name__).exception("request failed: %s %s", method, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error; see the transfer service's log")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._guard("get")

    def do_POST(self) -> None:  # noqa: N802
        self._guard("post")

    def do_DELETE(self) -> None:  # noqa: N802
        self._guard("delete")

    # --- routes -------------------------------------------------------------------------------

    def _get(self) -> None:
        segments, query = self._route()
        if not segments:
            self._send(HTTPStatus.OK, {"api": API_VERSION, "schema": API_VERSION, "delegation": API_VERSION,
                                       "implementation": "juno-grid local FTS3-API transfer service"})
        elif segments == ["health"]:
            self._send(HTTPStatus.OK, self.service.health())
        elif segments == ["whoami"]:
            self._send(HTTPStatus.OK, self._whoami())
        elif segments == ["jobs"]:
            self._list_jobs(query)
        elif segments[0] == "jobs" and len(segments) == 2:
            self._get_jobs(segments[1].split(","), query)
        elif segments[0] == "jobs" and len(segments) == 3 and segments[2] == "dm":
            # FTS3's data-management operations (deletions, staging-only) of a job: this service runs none.
            if self.service.store.job(segments[1]) is None:
                self._send(HTTPStatus.NOT_FOUND, not_found(segments[1]))
            else:
                self._send(HTTPStatus.OK, [])
        elif segments[0] == "jobs" and len(segments) == 3 and segments[2] == "files":
            files = self.service.store.files(segments[1]) if self.service.store.job(segments[1]) else None
            if files is None:
                self._send(HTTPStatus.NOT_FOUND, not_found(segments[1]))
            else:
                self._send(HTTPStatus.OK, [render_file(f) for f in files])
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such resource: {self.path}")

    def _whoami(self) -> dict[str, Any]:
        vo = self.service.settings.vo
        dn = "/CN=juno-grid-local"
        return {
            # Rucio's deterministic ids: uuid5(uuid5(base_id, vos[0]), sid).
            "base_id": self.service.base_id,
            "vos": [vo],
            "vos_id": [str(uuid.uuid5(uuid.UUID(self.service.base_id), vo))],
            "user_dn": dn,
            "dn": [dn],
            "delegation_id": "local",
            "voms_cred": [],
            "roles": [],
            "level": {"transfer": "all", "config": "all", "deleg": "all"},
            "is_root": True,
            "method": "unauthenticated (loopback only)",
        }

    def _job_view(self, job: Job, fields: list[str] | None) -> dict[str, Any]:
        view = render_job(job)
        if fields is not None:
            # FTS3 returns the files only when asked, restricted to the requested fields.
            files = [render_file(f) for f in self.service.store.files(job.job_id)]
            view["files"] = [{k: f[k] for k in fields if k in f} for f in files] if fields else files
        return view

    def _get_jobs(self, ids: list[str], query: dict[str, list[str]]) -> None:
        fields = None
        if "files" in query:
            fields = [f for f in ",".join(query["files"]).split(",") if f]
        views = []
        for job_id in ids:
            job = self.service.store.job(job_id)
            views.append(self._job_view(job, fields) if job else not_found(job_id))
        if len(ids) == 1:
            self._send(HTTPStatus.OK if views[0]["http_status"] == OK else HTTPStatus.NOT_FOUND, views[0])
        else:
            self._send(HTTPStatus.MULTI_STATUS, views)

    def _list_jobs(self, query: dict[str, list[str]]) -> None:
        wanted = {s for s in ",".join(query.get("state_in", [])).split(",") if s}
        states = [JobState(s) for s in wanted if s in JobState.__members__] if wanted else [
            s for s in JobState if s not in FINAL_JOB_STATES]
        self._send(HTTPStatus.OK, [render_job(j) for j in self.service.store.jobs_in(states)])

    def _post(self) -> None:
        segments, _ = self._route()
        if segments == ["jobs"]:
            sub = parse(self._body())
            try:
                job = self.service.submit(sub)
            except DuplicateJob as exc:
                self._error(HTTPStatus.CONFLICT, f"job {exc} was already submitted")
                return
            except Stopping as exc:
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc))
                return
            self._send(HTTPStatus.OK, {"job_id": job.job_id})
        elif len(segments) == 2 and segments[0] == "jobs":
            body = self._body()
            params = body.get("params") if isinstance(body, dict) else None
            priority = params.get("priority") if isinstance(params, dict) else None
            if not isinstance(priority, int) or isinstance(priority, bool):
                raise BadRequest('expected {"params": {"priority": N}} with an integer N')
            updated = self.service.set_priority(segments[1], priority)
            if updated is None:
                self._send(HTTPStatus.NOT_FOUND, not_found(segments[1]))
            else:
                self._send(HTTPStatus.OK, render_job(updated))
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such resource: {self.path}")

    def _delete(self) -> None:
        segments, _ = self._route()
        if len(segments) != 2 or segments[0] != "jobs":
            self._error(HTTPStatus.NOT_FOUND, f"no such resource: {self.path}")
            return
        ids = segments[1].split(",")
        views = []
        for job_id in ids:
            job = self.service.cancel(job_id)
            views.append(render_job(job) if job else not_found(job_id))
        if len(ids) == 1:
            self._send(HTTPStatus.OK if views[0]["http_status"] == OK else HTTPStatus.NOT_FOUND, views[0])
        else:
            self._send(HTTPStatus.MULTI_STATUS, views)


class FtsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, service: Service) -> None:
        # Loopback only, by construction: there is no option to bind anything else.
        super().__init__((HOST, port), Handler)
        self.service = service
