"""python -m juno_grid.fts --port P --state DIR [--workers N]: the local grid's FTS3-API transfer service.

SIGTERM or SIGINT: stop taking submissions (503), let running copies finish for --drain-timeout
seconds, stop and requeue the rest (they resume at the next start), then exit 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from . import jsonlog
from .api import HOST, FtsHTTPServer
from .jsonlog import log
from .service import Service, Settings
from .store import Store
from .transfer import Limits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m juno_grid.fts",
                                     description="The local grid's FTS3-API transfer service.")
    parser.add_argument("--port", type=int, default=18446, help="port on 127.0.0.1 (default 18446)")
    parser.add_argument("--state", type=Path, required=True, help="directory for the job database")
    parser.add_argument("--workers", type=int, default=4, help="copies run at once (default 4)")
    parser.add_argument("--vo", default="juno", help="VO name reported by /whoami (default juno)")
    parser.add_argument("--copy-timeout", type=float, default=600.0,
                        help="seconds allowed per file, plus 1 s per MiB (default 600)")
    parser.add_argument("--drain-timeout", type=float, default=10.0,
                        help="on SIGTERM, seconds running copies get to finish before being requeued (default 10)")
    parser.add_argument("--copy-mode", default="tpc", choices=["tpc", "push", "stream"],
                        help="every link's mode unless --links says otherwise. tpc: storage to storage, as FTS3 "
                             "(default; HTTP-TPC pull for davs); push: HTTP-TPC push (davs, gfal2 engine); "
                             "stream: bytes through this service")
    parser.add_argument("--scheme-mode", action="append", default=[], metavar="SCHEME=MODE",
                        help="the mode of every link whose source speaks SCHEME, unless --links says otherwise "
                             "(e.g. davs=tpc: HTTP-TPC pull, FTS3's default for HTTP); repeatable")
    parser.add_argument("--engine", default="xrootd", choices=["xrootd", "gfal2"],
                        help="xrootd: xrdcp/xrdfs processes (root:// only); gfal2: FTS3's copy library, in this "
                             "process (root:// and davs://; needs Debian's python3-gfal2: run with /usr/bin/python3)")
    parser.add_argument("--links", type=Path, default=None,
                        help="JSON file of per-link copy modes, re-read when it changes (see links.py)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.copy_mode == "push" and args.engine != "gfal2":
        parser.error("--copy-mode push is HTTP-TPC push: it needs --engine gfal2")
    scheme_modes = dict(item.partition("=")[::2] for item in args.scheme_mode)
    if any(m not in ("tpc", "push", "stream") or not k for k, m in scheme_modes.items()):
        parser.error(f"--scheme-mode {args.scheme_mode}: expected SCHEME=tpc|push|stream")

    jsonlog.setup(args.log_level)
    args.state.mkdir(parents=True, exist_ok=True)
    store = Store(args.state / "jobs.sqlite")
    settings = Settings(workers=args.workers, vo=args.vo, drain_timeout=args.drain_timeout, copy_mode=args.copy_mode,
                        engine=args.engine, links_file=args.links, scheme_modes=scheme_modes,
                        limits=Limits(base_timeout=args.copy_timeout))
    service = Service(store, settings)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Only a flag: the main thread does the draining.
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    httpd = FtsHTTPServer(args.port, service)
    service.start()
    server = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    server.start()
    log(logging.INFO, "transfer service started", url=f"http://{HOST}:{args.port}", state=str(args.state),
        workers=args.workers, base_id=service.base_id)

    stop.wait()
    log(logging.INFO, "stopping: no new submissions, draining running copies", drain_timeout=args.drain_timeout)
    # The API keeps answering while copies drain, so pollers still see the jobs.
    service.stop()
    httpd.shutdown()
    httpd.server_close()
    store.close()
    log(logging.INFO, "transfer service stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
