"""`juno-dci serve`: the status page and /api/status on loopback, with the standard library's http.server.

No web framework: four routes (the page, /api/status, /metrics, /healthz) do not earn a dependency.
Collection is serialised and cached for `refresh` seconds, so any number of open pages (and scrapes) costs
one status per period. SIGTERM and SIGINT only ask the server loop to stop (from another thread, as
http.server requires); the loop finishes the request in hand and the process exits 0.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from juno_common.errors import UsageProblem
from juno_status.collect import Selection, collect
from juno_status.db import StatusError
from juno_status.metrics import StatusCollector
from juno_status.page import render_page


class ServeError(UsageProblem):
    """The server cannot start; the message says why and what to do."""


class StatusCache:
    """The newest status, collected again when older than `ttl` seconds (one collection at a time)."""

    def __init__(self, selection: Selection, ttl: float, collector: Callable[[Selection], dict[str, Any]] = collect
                 ) -> None:
        self.selection = selection
        self.ttl = ttl
        self.collector = collector
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._error: str | None = None
        self._at = 0.0

    def get(self) -> tuple[dict[str, Any] | None, str | None]:
        """(status, None) or (last good status or None, error text)."""
        with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                try:
                    self._value = self.collector(self.selection)
                    self._error = None
                except StatusError as err:
                    self._error = str(err)
                except Exception as err:  # noqa: BLE001 - shown on the page and in /api/status, not swallowed
                    self._error = f"collecting the status failed: {type(err).__name__}: {err}"
                self._at = time.monotonic()
            return self._value, self._error


def _handler(cache: StatusCache, refresh: float, log: Callable[[str], None]) -> type[BaseHTTPRequestHandler]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(cache.get))

    class Handler(BaseHTTPRequestHandler):
        server_version = "juno-dci"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                value, error = cache.get()
                body = render_page(value, live=True, refresh_s=refresh, error=error).encode("utf-8")
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", body)
            elif path == "/api/status":
                value, error = cache.get()
                if value is None or error is not None:
                    payload = {"error": error or "no status yet", "last": value}
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, "application/json", json.dumps(payload).encode())
                else:
                    self._send(HTTPStatus.OK, "application/json", json.dumps(value).encode())
            elif path == "/metrics":
                self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif path == "/healthz":
                self._send(HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n")
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8",
                           b"not found: the page is at /, the data at /api/status, metrics at /metrics\n")

        def _send(self, code: HTTPStatus, kind: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            # The page is self-contained: forbid anything but this origin (no CDN, no outside fetch).
            self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; "
                                                       "style-src 'unsafe-inline'; img-src 'self' data:")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            log(f"{self.address_string()} {format % args}")

    return Handler


def _check_loopback(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ServeError(f"--host {host}: the status page is served on loopback only (127.0.0.1 or ::1); "
                         "to look from elsewhere, use `juno-dci report --html FILE` or an SSH tunnel")


def serve_forever(host: str, port: int, selection: Selection, refresh: float,
                  log: Callable[[str], None] = print) -> None:
    _check_loopback(host)
    cache = StatusCache(selection, refresh)
    try:
        server = ThreadingHTTPServer((host, port), _handler(cache, refresh, log))
    except OSError as err:
        raise ServeError(f"cannot listen on {host}:{port}: {err.strerror}; pick another --port") from None
    server.daemon_threads = True
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log(f"{signal.Signals(signum).name}: stopping")
            # shutdown() waits for serve_forever() to return: call it from another thread.
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    # Collect once in the background now, so the first visitor does not wait for a cold status.
    threading.Thread(target=cache.get, daemon=True).start()
    log(f"juno-dci status page on http://{host}:{port}/ (JSON: /api/status), refresh {refresh:g} s")
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log("stopped")
