"""Where the local grid keeps its state and which loopback ports it uses.

Every service of the grid runs inside one network namespace that `juno-grid` makes itself
(see `netns.py`), and binds 127.0.0.1 there as well: nothing can be reached from outside the
machine, and the ports below cannot collide with anything on the host.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
ETC = REPO_ROOT / "etc"
VENV_BIN = Path(os.environ.get("JUNO_VENV_BIN", REPO_ROOT / ".venv" / "bin"))
# The HTCondor chroot is large and slow to build: it lives outside the checkout, once per machine.
DEFAULT_CHROOT = Path(os.environ.get("JUNO_CONDOR_CHROOT", "/var/cache/juno-dci/condor-trixie"))
HOST = "127.0.0.1"
# Copy workers of the grid's transfer service: each XRootD third-party copy has a ~2.5 s floor
# (the client's polling), so throughput grows almost linearly with parallel copies.
FTS_WORKERS = 8
# How the transfer service copies: "tpc" (third-party, as FTS3) or "stream" (through the service,
# FTS3's fallback). The grid streams: TPC's ~2.5 s floor per file makes thousands of small raw
# files crawl; bench/transfer.py measures both.
FTS_COPY_MODE = os.environ.get("JUNO_FTS_COPY_MODE", "stream")
# davs:// links copy by HTTP third-party copy, pulled by the destination (FTS3's default for HTTP): it has no
# per-file floor like XRootD's TPC.
FTS_DAVS_COPY_MODE = os.environ.get("JUNO_FTS_DAVS_COPY_MODE", "tpc")
# What copies: "gfal2", FTS3's own copy library (root:// and davs://, the checks on the copy's own
# connection), or "xrootd" (xrdcp/xrdfs processes, root:// only). gfal2's Python binding is Debian's
# python3-gfal2, built for Debian's /usr/bin/python3 (3.11, as the venv's): the service, which needs only
# the standard library besides, runs on that interpreter. The other way, gfal2-python from PyPI built into
# the venv, needs a C++ toolchain, Boost.Python and libgfal2-dev at every `make venv`, for the same
# library (gfal2 2.21.3 either way); a copy's time is gfal2's and the storages', not the binding's.
FTS_ENGINE = os.environ.get("JUNO_FTS_ENGINE", "gfal2")
FTS_PYTHON = os.environ.get("JUNO_FTS_PYTHON", "/usr/bin/python3")


@dataclass(frozen=True)
class Ports:
    postgres: int = 15432
    rucio: int = 18080
    fts: int = 18446
    kafka: int = 19092
    condor_collector: int = 19618
    # XRootD: one server per storage, numbered from here in etc/sites.yaml order.
    xrootd_base: int = 11094


def _traversable_by_all(path: Path) -> bool:
    """PostgreSQL, XRootD and HTCondor jobs run as unprivileged users: they must reach the state dir."""
    for parent in (path, *path.parents):
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        except FileNotFoundError:
            continue
    return True


def default_state_dir() -> Path:
    """`.grid/` in the checkout; where the checkout sits in a private directory (e.g. a 0700 temp
    dir), the state goes to /var/lib/juno-dci/grid-<hash> and `.grid` becomes a link to it."""
    if "JUNO_GRID_DIR" in os.environ:
        return Path(os.environ["JUNO_GRID_DIR"]).resolve()
    local = REPO_ROOT / ".grid"
    if local.is_symlink() or _traversable_by_all(REPO_ROOT):
        return local.resolve()
    elsewhere = Path("/var/lib/juno-dci") / f"grid-{hashlib.sha1(str(REPO_ROOT).encode()).hexdigest()[:10]}"
    elsewhere.mkdir(parents=True, exist_ok=True)
    if not local.exists():
        local.symlink_to(elsewhere)
    return elsewhere


@dataclass(frozen=True)
class GridConfig:
    state_dir: Path = field(default_factory=default_state_dir)
    netns: str = field(default_factory=lambda: os.environ.get("JUNO_GRID_NETNS", "juno-grid"))
    ports: Ports = field(default_factory=Ports)
    chroot: Path = DEFAULT_CHROOT

    @property
    def run_dir(self) -> Path:
        """PID files and sockets."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def rucio_cfg(self) -> Path:
        return self.state_dir / "rucio" / "rucio.cfg"

    @property
    def rucio_url(self) -> str:
        return f"http://{HOST}:{self.ports.rucio}"

    @property
    def fts_url(self) -> str:
        return f"http://{HOST}:{self.ports.fts}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.ports.kafka}"

    def storage_dir(self, rse: str) -> Path:
        return self.state_dir / "storage" / rse


def load() -> GridConfig:
    return GridConfig()
