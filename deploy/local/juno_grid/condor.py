"""The local grid's HTCondor mini-pool: one machine, four slots, one per JUNO site.

Debian bookworm has no HTCondor daemons, so they come from trixie's `minicondor` in a
debootstrap chroot (`build_chroot`). The pool runs inside that chroot, in the grid's network
namespace, bound to 127.0.0.1; host code talks to it with the `htcondor2` bindings of the venv
(`client_env`, `configure_bindings`).

Layout (everything per grid lives under `<state>/condor`; in the shared chroot only the empty
mount point of the state directory, removed by `stop`):

* `condor_config` - the pool's config, read by the daemons inside the chroot;
* `client_config` - the config of host-side clients (`CONDOR_CONFIG` of `client_env`);
* `log/`, `spool/`, `execute/`, `lock/`, `run/` - the daemons' LOCAL_DIR.

The daemons run in a private mount namespace of their own (`unshare --mount`): the grid's
state directory is bind-mounted into the chroot at its own absolute path (job initialdirs, logs
and inputs under it resolve identically inside and outside), with a fresh /proc and /dev/shm.
Those mounts are invisible to the host and vanish with the last process of the pool, so `stop`
can never leave a mount behind, `rm -rf` of a state directory can never reach through a bind
mount, and two grids (different state dirs and namespaces) can share one chroot.

Job owner: the schedd refuses jobs owned by root ("Setting job owner to "root" is not
permitted"), so host clients claim to be the unprivileged chroot user `juno` (uid 6401), and
the shadow writes each job's log and output as that user: make job directories with `job_dir()`
(or chown them to JOB_UID:JOB_GID), or the job is held with "Permission denied".

Locality convention: slots advertise `JUNO_Site`; jobs carry `MY.DESIRED_Sites`,
`Requirements = stringListMember(TARGET.JUNO_Site, MY.DESIRED_Sites)` and
`job_machine_attrs = JUNO_Site` (the site a job ran at is then `MachineAttrJUNO_Site0`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from . import netns, procs
from .config import HOST, GridConfig
from .procs import GridError

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
# python3-cffi-backend is pulled in through a virtual package (python3-cffi-backend-api-*) that
# debootstrap's resolver does not follow: naming it avoids a half-configured minicondor.
PACKAGES = ("minicondor", "xrootd-client", "python3-cffi-backend", "python3")
COMPLETE_MARKER = ".juno-dci-complete"
SITES = ("IHEP", "CNAF", "JINR", "IN2P3")  # slot N+1 belongs to SITES[N]
PROC_NAME = "condor"
CHROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


# --------------------------------------------------------------------------- chroot


def _check_network() -> None:
    """Fail clearly when called from a loopback-only namespace (e.g. the grid's own).

    The build downloads from the Debian mirror; inside the grid's namespace it would only time out.
    """
    interfaces = [line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]]
    if all(name == "lo" for name in interfaces):
        raise GridError(
            "building the HTCondor chroot needs the network, but this process is in a namespace with "
            "loopback only: build it before entering the grid's namespace"
        )


def _run(argv: list[str], log: Callable[[str], None], *, check: bool = True, net: bool = False) -> int:
    if net:
        _check_network()
    log("+ " + " ".join(argv))
    env = {"PATH": CHROOT_PATH, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = done.stdout.strip().splitlines()[-15:]
    for line in tail:
        log("  " + line)
    if check and done.returncode != 0:
        raise GridError(f"{argv[0]} failed (exit {done.returncode}): {' '.join(argv)}")
    return done.returncode


def _unconfigured(chroot: Path) -> list[str]:
    """Packages dpkg has not fully installed (status other than 'ii')."""
    out = subprocess.run(
        ["chroot", str(chroot), "dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}\n"],
        env={"PATH": CHROOT_PATH, "LC_ALL": "C"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split()[-1] for line in out.splitlines() if line.strip() and not line.startswith("ii")]


def build_chroot(chroot: Path, *, log: Callable[[str], None] = print) -> None:
    """Make a trixie chroot with the HTCondor daemons and the XRootD client; idempotent.

    Needs root and network access to deb.debian.org (run it outside the grid's namespace).
    A half-finished chroot (debootstrap or its configure step interrupted) is completed; a
    finished one (marker file present) is left alone.
    """
    marker = chroot / COMPLETE_MARKER
    if marker.exists():
        return
    t0 = time.monotonic()
    if not (chroot / "usr/bin/apt-get").exists() or not (chroot / "var/lib/dpkg/status").exists():
        # Nothing usable there yet: start over, but never wipe a directory that is not ours.
        if chroot.exists() and any(chroot.iterdir()) and not (chroot / "debootstrap").is_dir():
            raise GridError(f"{chroot} exists, is not empty and is not a debootstrap target; remove it")
        shutil.rmtree(chroot, ignore_errors=True)
        chroot.parent.mkdir(parents=True, exist_ok=True)
        rc = _run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(PACKAGES),
                SUITE,
                str(chroot),
                MIRROR,
            ],
            log,
            check=False,
            net=True,
        )
        # A failed configure step still leaves an unpacked system that apt can finish below.
        if rc != 0 and not (chroot / "usr/bin/apt-get").exists():
            log_file = chroot / "debootstrap/debootstrap.log"
            raise GridError(f"debootstrap of {chroot} failed (exit {rc}); see {log_file}")
    # No service may start inside the chroot while packages are configured.
    policy = chroot / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    if _unconfigured(chroot) or (chroot / "debootstrap").is_dir():
        _run(["chroot", str(chroot), "dpkg", "--configure", "-a"], log, check=False)
        _run(["chroot", str(chroot), "apt-get", "update"], log, net=True)
        _run(["chroot", str(chroot), "apt-get", "-y", "-f", "install"], log, net=True)
        _run(["chroot", str(chroot), "apt-get", "-y", "install", *PACKAGES], log, net=True)
    _run(["chroot", str(chroot), "apt-get", "clean"], log)  # the .deb files: ~40 MB
    left = _unconfigured(chroot)
    if left:
        raise GridError(f"packages still not configured in {chroot}: {' '.join(left)}")
    for binary in ("usr/sbin/condor_master", "usr/bin/xrdcp", "usr/bin/xrdfs", "usr/bin/python3"):
        if not (chroot / binary).exists():
            raise GridError(f"{chroot}/{binary} missing after the build")
    for d in ("run/condor", "var/lock/condor", "var/log/condor", "var/lib/condor"):
        (chroot / d).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(chroot / "debootstrap", ignore_errors=True)
    marker.write_text(f"{SUITE} {' '.join(PACKAGES)}\n")
    log(f"chroot {chroot} ready in {time.monotonic() - t0:.0f} s")


# --------------------------------------------------------------------------- job owner

# HTCondor never runs a job as root (submission as uid 0 is refused), so every host client
# claims to be this unprivileged user (CLAIMTOBE on loopback, `SEC_CLAIMTOBE_USER`). It exists
# only in the chroot, with a fixed uid/gid; the shadow writes a job's log and output files into
# its initialdir as that user, so host code (running as root) makes job directories with
# `job_dir()`, which gives them to it.
JOB_USER = "juno"
JOB_UID = 6401
JOB_GID = 6401


def _ensure_job_user(chroot: Path) -> None:
    """Create `JOB_USER` in the chroot unless it is there (idempotent, no network)."""
    passwd = (chroot / "etc/passwd").read_text()
    if any(line.split(":", 1)[0] == JOB_USER for line in passwd.splitlines()):
        return
    env = {"PATH": CHROOT_PATH, "LC_ALL": "C"}
    group = (chroot / "etc/group").read_text()
    if not any(line.split(":", 1)[0] == JOB_USER for line in group.splitlines()):
        subprocess.run(["chroot", str(chroot), "groupadd", "-g", str(JOB_GID), JOB_USER], env=env, check=True)
    subprocess.run(
        [
            "chroot",
            str(chroot),
            "useradd",
            "-u",
            str(JOB_UID),
            "-g",
            str(JOB_GID),
            "-M",
            "-d",
            "/tmp",
            "-s",
            "/bin/sh",
            JOB_USER,
        ],
        env=env,
        check=True,
    )


def job_dir(cfg: GridConfig, name: str) -> Path:
    """`<state>/jobs/<name>`, created and owned by the job user so the pool can write there."""
    path = cfg.state_dir.resolve() / "jobs" / name
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, JOB_UID, JOB_GID)
    return path


# --------------------------------------------------------------------------- configuration


def condor_dir(cfg: GridConfig) -> Path:
    # Resolved: inside the chroot only the real path of the state directory exists.
    return cfg.state_dir.resolve() / "condor"


def pool_config_path(cfg: GridConfig) -> Path:
    return condor_dir(cfg) / "condor_config"


def client_config_path(cfg: GridConfig) -> Path:
    return condor_dir(cfg) / "client_config"


def collector_address(cfg: GridConfig) -> str:
    return f"{HOST}:{cfg.ports.condor_collector}"


UID_DOMAIN = "juno-grid.local"

# Shared by the daemons and the host clients: where the pool is and how to talk to it.
_COMMON = """\
CONDOR_HOST = {host}
COLLECTOR_HOST = {collector}
NETWORK_INTERFACE = {host}
BIND_ALL_INTERFACES = False
ENABLE_IPV6 = False
# One daemon, one port: no condor_shared_port, no socket files to share.
USE_SHARED_PORT = False
# No resolver in the namespace (and the chroot's /etc/hosts lacks the host name): without this,
# every daemon and client retries getaddrinfo(hostname) for a minute at startup.
NO_DNS = True
DEFAULT_DOMAIN_NAME = {uid_domain}
UID_DOMAIN = {uid_domain}
FILESYSTEM_DOMAIN = {uid_domain}
SPOOL = {local}/spool
SCHEDD_ADDRESS_FILE = $(SPOOL)/.schedd_address
USER_CONFIG_FILE =
"""

_POOL = """\
# Written by juno_grid.condor for the local grid; regenerated on every start.
RELEASE_DIR = /usr
BIN = $(RELEASE_DIR)/bin
SBIN = $(RELEASE_DIR)/sbin
LIB = $(RELEASE_DIR)/lib/condor
LIBEXEC = $(RELEASE_DIR)/libexec/condor
SHARE = $(RELEASE_DIR)/share/condor
ETC = /etc/condor
# Per-grid state lives in the grid's state directory, which is bind-mounted into the chroot.
LOCAL_DIR = {local}
LOG = $(LOCAL_DIR)/log
EXECUTE = $(LOCAL_DIR)/execute
LOCK = $(LOCAL_DIR)/lock
RUN = $(LOCAL_DIR)/run
CRED_STORE_DIR = $(LOCAL_DIR)/cred_dir
SEC_PASSWORD_DIRECTORY = $(LOCAL_DIR)/passwords.d
SEC_TOKEN_SYSTEM_DIRECTORY = $(LOCAL_DIR)/tokens.d
SEC_TOKEN_POOL_SIGNING_KEY_FILE = $(SEC_PASSWORD_DIRECTORY)/POOL
{common}
DAEMON_LIST = MASTER, COLLECTOR, NEGOTIATOR, SCHEDD, STARTD
MASTER_ADDRESS_FILE = $(LOG)/.master_address
COLLECTOR_NAME = JUNO local grid

# Security: the pool is reachable only on loopback inside the grid's private network namespace.
# FS for the daemons (same /tmp), CLAIMTOBE for host clients (see JOB_USER in condor.py).
SEC_DEFAULT_AUTHENTICATION = REQUIRED
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, CLAIMTOBE
SEC_CLIENT_AUTHENTICATION_METHODS = FS, CLAIMTOBE
SEC_READ_AUTHENTICATION = OPTIONAL
SEC_CLIENT_AUTHENTICATION = OPTIONAL
SEC_DEFAULT_INTEGRITY = OPTIONAL
SEC_DEFAULT_ENCRYPTION = OPTIONAL
ALLOW_READ = *
ALLOW_WRITE = *
ALLOW_DAEMON = *
ALLOW_NEGOTIATOR = *
ALLOW_ADMINISTRATOR = *
ALLOW_OWNER = *
QUEUE_SUPER_USERS = root, condor, {job_user}

# Chroot without cgroups, /sys or user namespaces: plain fork/exec of the job.
MOUNT_UNDER_SCRATCH =
USE_PID_NAMESPACES = False
BASE_CGROUP =
CGROUP_MEMORY_LIMIT_POLICY = none
DISCARD_SESSION_KEYRING_ON_STARTUP = False
ENABLE_KERNEL_TUNING = False
CREATE_CORE_FILES = False
MAIL = /bin/true
CONDOR_ADMIN =

# Fast cycles: one machine, a handful of jobs, tests that wait for them.
SCHEDD_INTERVAL = 5
SCHEDD_MIN_INTERVAL = 1
NEGOTIATOR_INTERVAL = 2
NEGOTIATOR_MIN_INTERVAL = 1
NEGOTIATOR_CYCLE_DELAY = 1
UPDATE_INTERVAL = 5
MASTER_UPDATE_INTERVAL = 5
STARTER_UPDATE_INTERVAL = 5
SHADOW_QUEUE_UPDATE_INTERVAL = 5
RUNBENCHMARKS = False

# The execute side: four static slots (HTCondor 23 would make partitionable ones, whose dynamic
# children add slot ads), one per JUNO site, always willing to run. Memory is fixed, not
# measured, so matchmaking on RequestMemory is the same on every machine (it is not enforced).
NUM_CPUS = 4
MEMORY = {memory}
SLOT_TYPE_1 = cpus=1, memory={slot_memory}
SLOT_TYPE_1_PARTITIONABLE = False
NUM_SLOTS_TYPE_1 = 4
STARTD_ATTRS = $(STARTD_ATTRS) JUNO_Site
{slot_sites}
START = True
SUSPEND = False
PREEMPT = False
KILL = False
WANT_SUSPEND = False
WANT_VACATE = False
"""

SLOT_MEMORY_MB = 2048


def _pool_config(cfg: GridConfig) -> str:
    local = condor_dir(cfg)
    common = _COMMON.format(host=HOST, collector=collector_address(cfg), uid_domain=UID_DOMAIN, local=local)
    slot_sites = "\n".join(f'SLOT{i}_JUNO_Site = "{site}"' for i, site in enumerate(SITES, 1))
    return _POOL.format(
        local=local,
        common=common,
        slot_sites=slot_sites,
        job_user=JOB_USER,
        memory=SLOT_MEMORY_MB * len(SITES),
        slot_memory=SLOT_MEMORY_MB,
    )


def _client_config(cfg: GridConfig) -> str:
    common = _COMMON.format(host=HOST, collector=collector_address(cfg), uid_domain=UID_DOMAIN, local=condor_dir(cfg))
    return (
        "# Written by juno_grid.condor: host-side clients (htcondor2) of the local grid's pool.\n"
        + common
        + "SEC_CLIENT_AUTHENTICATION_METHODS = CLAIMTOBE\n"
        + f"SEC_CLAIMTOBE_USER = {JOB_USER}\n"
        + "SEC_CLIENT_INTEGRITY = OPTIONAL\n"
        + "SEC_CLIENT_ENCRYPTION = OPTIONAL\n"
    )


def _condor_ids(chroot: Path) -> tuple[int, int]:
    for line in (chroot / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "condor":
            return int(fields[2]), int(fields[3])
    raise GridError(f"no condor user in {chroot}/etc/passwd: rebuild the chroot")


def write_configs(cfg: GridConfig) -> None:
    """Write the pool and client configs and make the pool's LOCAL_DIR tree."""
    local = condor_dir(cfg)
    local.mkdir(parents=True, exist_ok=True)
    pool_config_path(cfg).write_text(_pool_config(cfg))
    client_config_path(cfg).write_text(_client_config(cfg))
    uid, gid = _condor_ids(cfg.chroot)
    for sub in ("log", "spool", "execute", "lock", "run", "cred_dir"):
        d = local / sub
        d.mkdir(exist_ok=True)
        os.chown(d, uid, gid)
    for sub in ("passwords.d", "tokens.d"):
        d = local / sub
        d.mkdir(exist_ok=True)
        d.chmod(0o700)


def client_env(cfg: GridConfig) -> dict[str, str]:
    """Environment for host processes that use htcondor2 against this grid's pool."""
    if not client_config_path(cfg).exists():
        condor_dir(cfg).mkdir(parents=True, exist_ok=True)
        client_config_path(cfg).write_text(_client_config(cfg))
    return {"CONDOR_CONFIG": str(client_config_path(cfg))}


def configure_bindings(cfg: GridConfig) -> None:
    """Point this process's htcondor2 at the pool (e.g. so tests can call `htcondor2.Schedd()`)."""
    os.environ.update(client_env(cfg))
    import htcondor2

    htcondor2.reload_config()


# --------------------------------------------------------------------------- start / stop


def _mnt_ns_file(cfg: GridConfig) -> Path:
    return cfg.run_dir / "condor.mntns"


def _launch_script(cfg: GridConfig, state: Path) -> str:
    q = shlex.quote
    chroot = str(cfg.chroot)
    env = " ".join(
        q(v) for v in (f"PATH={CHROOT_PATH}", "LANG=C.UTF-8", "HOME=/root", f"CONDOR_CONFIG={pool_config_path(cfg)}")
    )
    # Runs in a private mount namespace: these mounts exist only for the pool's processes.
    return "\n".join(
        [
            "set -e",
            f"mount --bind {q(str(state))} {q(chroot + str(state))}",
            f"mount -t proc proc {q(chroot + '/proc')}",
            f"mount -t tmpfs -o mode=1777,size=256m tmpfs {q(chroot + '/dev/shm')}",
            f"exec chroot {q(chroot)} /usr/bin/env -i {env} /usr/sbin/condor_master -f",
        ]
    )


def start(cfg: GridConfig) -> None:
    """Start the pool (caller is inside the grid's network namespace) and wait for 4 slots."""
    if not netns.inside(cfg.netns):
        raise GridError(f"condor.start must run inside network namespace {cfg.netns}")
    if not (cfg.chroot / COMPLETE_MARKER).exists():
        raise GridError(f"HTCondor chroot {cfg.chroot} is not built: run build_chroot first")
    _ensure_job_user(cfg.chroot)
    state = cfg.state_dir.resolve()
    write_configs(cfg)
    (cfg.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
    # The mount point of the state directory, at the same absolute path inside the chroot.
    (Path(str(cfg.chroot) + str(state))).mkdir(parents=True, exist_ok=True)
    existing = procs.read(cfg.run_dir, PROC_NAME)
    if not procs.alive(existing):
        _kill_leftovers(cfg)  # e.g. daemons of a master that was SIGKILLed: they hold the ports
    rec = procs.spawn(
        cfg.run_dir,
        cfg.log_dir,
        PROC_NAME,
        ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _launch_script(cfg, state)],
    )
    if not procs.alive(existing):
        _mnt_ns_file(cfg).write_text(f"{os.stat(f'/proc/{rec.pid}/ns/mnt').st_ino}\n")
    log = cfg.log_dir / f"{PROC_NAME}.log"
    procs.wait_for(lambda: health(cfg)[0], "HTCondor pool (collector, schedd, 4 slots)", timeout=90, log=log)


def _ours(cfg: GridConfig) -> list[int]:
    """PIDs of processes in our pool: chrooted in our chroot and in our private mount namespace."""
    try:
        mnt_ns = int(_mnt_ns_file(cfg).read_text())
        root = os.stat(cfg.chroot)
    except (OSError, ValueError):
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns/mnt").st_ino != mnt_ns:
                continue
            r = os.stat(entry / "root")
        except OSError:
            continue
        if (r.st_dev, r.st_ino) == (root.st_dev, root.st_ino):
            found.append(int(entry.name))
    return found


def stop(cfg: GridConfig) -> None:
    """Stop the pool: master and daemons, every job process; its mounts vanish with them."""
    rec = procs.read(cfg.run_dir, PROC_NAME)
    if procs.alive(rec):
        assert rec is not None
        # SIGQUIT = fast shutdown: the master kills jobs and daemons at once instead of waiting.
        try:
            os.kill(rec.pid, signal.SIGQUIT)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not _exited(rec.pid):
            time.sleep(0.1)
        if _exited(rec.pid):
            # procs.stop would take an unreaped zombie for a live master and wait for it.
            procs.pidfile(cfg.run_dir, PROC_NAME).unlink(missing_ok=True)
    procs.stop(cfg.run_dir, PROC_NAME)
    _kill_leftovers(cfg)
    # The (empty) mount point in the chroot; the mount itself went with the pool's namespace.
    try:
        Path(str(cfg.chroot) + str(cfg.state_dir.resolve())).rmdir()
    except OSError:
        pass


def _exited(pid: int) -> bool:
    """The process is gone or a zombie (reaped here if it is our child, e.g. in a test session)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _kill_leftovers(cfg: GridConfig) -> None:
    """SIGKILL what is left of a previous pool of this grid (daemons and jobs have their own
    sessions, so a master killed hard leaves them behind), then forget its mount namespace."""
    for _ in range(50):
        left = _ours(cfg)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    else:
        raise GridError(f"HTCondor processes still running after stop: {_ours(cfg)}")
    _mnt_ns_file(cfg).unlink(missing_ok=True)


def health(cfg: GridConfig) -> tuple[bool, str]:
    """(ok, message): the collector answers, the schedd and the 4 site slots are advertised."""
    import htcondor2

    configure_bindings(cfg)
    try:
        coll = htcondor2.Collector(collector_address(cfg))
        slots = coll.query(
            htcondor2.AdTypes.Startd,
            constraint='SlotType =!= "Dynamic"',
            projection=["Name", "JUNO_Site", "State"],
        )
        schedds = coll.query(htcondor2.AdTypes.Schedd, projection=["Name"])
    except Exception as exc:  # the bindings raise plain HTCondorException/IOError variants
        return False, f"collector {collector_address(cfg)} does not answer: {exc}"
    sites = sorted(str(ad.get("JUNO_Site")) for ad in slots)
    if not schedds:
        return False, "no schedd advertised"
    if sites != sorted(SITES):
        return False, f"slots advertised for sites {sites}, want {sorted(SITES)}"
    return True, f"collector {collector_address(cfg)}: schedd up, slots {', '.join(sites)}"


def chroot_complete(chroot: Path) -> bool:
    """The chroot was built to the end (build_chroot's marker is there)."""
    return (chroot / COMPLETE_MARKER).exists()
