"""The local grid's HTCondor pool, shaped like the grid: a central manager, a submit node, one
execute node per JUNO site.

Debian bookworm has no HTCondor daemons, so they come from trixie's `minicondor` in a
debootstrap chroot (`build_chroot`). The pool runs inside that chroot, in the grid's network
namespace, bound to 127.0.0.1; host code talks to it with the `htcondor2` bindings of the venv
(`client_env`, `configure_bindings`).

Six `condor_master`s, each a "machine" of its own with its own private mount namespace
(`unshare --mount`) and its own config (`<state>/condor/condor_config` for the submit node,
`<state>/condor/nodes/<node>/config` for the others):

* `cm`      - central manager: collector and negotiator;
* `submit`  - the submit node: the schedd (and its shadows). Only this node sees the grid's
              state directory (bind-mounted into the chroot at its own absolute path), because
              the submitter's task directories live there;
* `IHEP`, `CNAF`, `JINR`, `IN2P3` - execute nodes: one startd and one slot each, advertising
              `JUNO_Site`. An execute node sees no directory of the submitter and no grid state:
              its own scratch (its LOCAL_DIR, from `<state>/condor/nodes/<SITE>`, at
              /var/lib/juno-node), a private /tmp, the release directory read-only at RELEASE_MOUNT
              (the stand-in for CVMFS), and the storages over the network. Every other grid's
              state mount point in the shared chroot is hidden under an empty tmpfs. What a job
              needs comes with it by HTCondor's file transfer (each node has its own
              FILESYSTEM_DOMAIN, so HTCondor assumes nothing is shared).

Mounts made in a node's namespace are invisible to the host and vanish with its last process,
so `stop` can never leave a mount behind, `rm -rf` of a state directory can never reach through
a bind mount, and two grids (different state dirs and namespaces) can share one chroot.

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
SITES = ("IHEP", "CNAF", "JINR", "IN2P3")  # one execute node each
PROC_NAME = "condor"  # the central manager; the other nodes are condor-<node>
SUBMIT_NODE = "submit"
NODE_DIR = "/var/lib/juno-node"  # an execute node's LOCAL_DIR inside its own namespace
RELEASE_MOUNT = "/cvmfs/juno.ihep.ac.cn"  # the release directory, read-only on every execute node
_SYSTEM_DIRS = frozenset({"bin", "boot", "dev", "etc", "lib", "lib64", "proc", "run", "sbin", "sys", "usr", "var",
                          "cvmfs", "tmp"})
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
# Every node has a LOCAL_DIR of its own (see NODE_DIR in condor.py).
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
MASTER_ADDRESS_FILE = $(LOG)/.master_address
COLLECTOR_NAME = JUNO local grid

# Security: the pool is reachable only on loopback inside the grid's private network namespace.
# FS where two processes share a /tmp, else CLAIMTOBE (execute nodes have a /tmp of their own;
# production uses IDTOKENS between daemons: README). Host clients: CLAIMTOBE (JOB_USER in condor.py).
SEC_DEFAULT_AUTHENTICATION = REQUIRED
SEC_DEFAULT_AUTHENTICATION_METHODS = FS, CLAIMTOBE
SEC_CLIENT_AUTHENTICATION_METHODS = FS, CLAIMTOBE
SEC_READ_AUTHENTICATION = OPTIONAL
SEC_CLIENT_AUTHENTICATION = OPTIONAL
SEC_DEFAULT_INTEGRITY = OPTIONAL
SEC_DEFAULT_ENCRYPTION = OPTIONAL
# Several masters on one host: each node is its own "machine", not one family of daemons.
SEC_USE_FAMILY_SESSION = False
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

MASTER_NAME = {node}
{node_config}
"""

_CM = """\
DAEMON_LIST = MASTER, COLLECTOR, NEGOTIATOR
"""

_SUBMIT = """\
DAEMON_LIST = MASTER, SCHEDD
"""

# One static slot (HTCondor 23 would make a partitionable one, whose dynamic children add slot
# ads), always willing to run. Memory is fixed, not measured, so matchmaking on RequestMemory is
# the same on every machine (it is not enforced).
_EXECUTE = """\
DAEMON_LIST = MASTER, STARTD
STARTD_NAME = {site}
FILESYSTEM_DOMAIN = {site_lower}.{uid_domain}
SPOOL = $(LOCAL_DIR)/spool
NUM_CPUS = 1
MEMORY = {memory}
SLOT_TYPE_1 = cpus=1, memory={memory}
SLOT_TYPE_1_PARTITIONABLE = False
NUM_SLOTS_TYPE_1 = 1
JUNO_Site = "{site}"
STARTD_ATTRS = $(STARTD_ATTRS) JUNO_Site
START = True
SUSPEND = False
PREEMPT = False
KILL = False
WANT_SUSPEND = False
WANT_VACATE = False
"""

SLOT_MEMORY_MB = 2048
NODES = ("cm", SUBMIT_NODE, *SITES)


def node_config_path(cfg: GridConfig, node: str) -> Path:
    return pool_config_path(cfg) if node == SUBMIT_NODE else node_dir(cfg, node) / "config"


def node_dir(cfg: GridConfig, node: str) -> Path:
    """A node's LOCAL_DIR on the host (the submit node's is the condor directory itself)."""
    return condor_dir(cfg) if node == SUBMIT_NODE else condor_dir(cfg) / "nodes" / node


def release_dir(cfg: GridConfig) -> Path:
    """The host directory every execute node mounts read-only at RELEASE_MOUNT."""
    return cfg.state_dir.resolve() / "release"


def _node_config(cfg: GridConfig, node: str) -> str:
    local = str(condor_dir(cfg)) if node == SUBMIT_NODE else NODE_DIR
    common = _COMMON.format(host=HOST, collector=collector_address(cfg), uid_domain=UID_DOMAIN, local=local)
    if node == "cm":
        tail = _CM
    elif node == SUBMIT_NODE:
        tail = _SUBMIT
    else:
        tail = _EXECUTE.format(site=node, site_lower=node.lower(), uid_domain=UID_DOMAIN, memory=SLOT_MEMORY_MB)
    return _POOL.format(local=local, common=common, job_user=JOB_USER, node=node, node_config=tail)


def _pool_config(cfg: GridConfig) -> str:
    return _node_config(cfg, SUBMIT_NODE)


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
    """Write every node's config and the client config; make each node's LOCAL_DIR tree."""
    condor_dir(cfg).mkdir(parents=True, exist_ok=True)
    client_config_path(cfg).write_text(_client_config(cfg))
    uid, gid = _condor_ids(cfg.chroot)
    for node in NODES:
        local = node_dir(cfg, node)
        local.mkdir(parents=True, exist_ok=True)
        node_config_path(cfg, node).write_text(_node_config(cfg, node))
        for sub in ("log", "spool", "execute", "lock", "run", "cred_dir"):
            d = local / sub
            d.mkdir(exist_ok=True)
            os.chown(d, uid, gid)
        for sub in ("passwords.d", "tokens.d"):
            d = local / sub
            d.mkdir(exist_ok=True)
            d.chmod(0o700)
    # The stand-in for CVMFS: a release with a setup script, the same on every execute node.
    release = release_dir(cfg) / "J25.1.0"
    release.mkdir(parents=True, exist_ok=True)
    (release / "setup.sh").write_text('export JUNO_RELEASE_VERSION=J25.1.0\n')


def client_env(cfg: GridConfig) -> dict[str, str]:
    """Environment for host processes that use htcondor2 against this grid's pool."""
    if not client_config_path(cfg).exists():
        condor_dir(cfg).mkdir(parents=True, exist_ok=True)
        client_config_path(cfg).write_text(_client_config(cfg))
    # juno-submit, run as root here, hands the directories the pool writes to over to the job user.
    return {"CONDOR_CONFIG": str(client_config_path(cfg)), "JUNO_SUBMIT_JOB_OWNER": f"{JOB_UID}:{JOB_GID}"}


def configure_bindings(cfg: GridConfig) -> None:
    """Point this process's htcondor2 at the pool (e.g. so tests can call `htcondor2.Schedd()`)."""
    os.environ.update(client_env(cfg))
    import htcondor2

    htcondor2.reload_config()


# --------------------------------------------------------------------------- start / stop


def _mnt_ns_file(cfg: GridConfig) -> Path:
    return cfg.run_dir / "condor.mntns"


def _proc_name(node: str) -> str:
    return PROC_NAME if node == "cm" else f"{PROC_NAME}-{node}"


def _hidden_root(state: Path) -> Path:
    """What an execute node hides under an empty tmpfs so that no grid's state directory (nor its
    mount point in the shared chroot) is visible: the state path's top directory, unless that is a
    system directory of the chroot, then the state directory's parent."""
    top = Path("/", state.parts[1])
    return state.parent if state.parts[1] in _SYSTEM_DIRS else top


def _launch_script(cfg: GridConfig, state: Path, node: str) -> str:
    q = shlex.quote
    chroot = str(cfg.chroot)
    config = str(node_config_path(cfg, node)) if node == SUBMIT_NODE else f"{NODE_DIR}/config"
    env = " ".join(q(v) for v in (f"PATH={CHROOT_PATH}", "LANG=C.UTF-8", "HOME=/root", f"CONDOR_CONFIG={config}"))
    # Runs in a private mount namespace: these mounts exist only for this node's processes.
    lines = ["set -e"]
    if node == SUBMIT_NODE:
        lines.append(f"mount --bind {q(str(state))} {q(chroot + str(state))}")
    else:
        hidden = _hidden_root(state)
        lines += [
            f"mount -t tmpfs -o mode=755,size=1m tmpfs {q(chroot + str(hidden))}",
            f"mount --bind {q(str(node_dir(cfg, node)))} {q(chroot + NODE_DIR)}",
            f"mount -t tmpfs -o mode=1777,size=512m tmpfs {q(chroot + '/tmp')}",
        ]
        if node in SITES:
            lines += [
                f"mount --bind {q(str(release_dir(cfg)))} {q(chroot + RELEASE_MOUNT)}",
                f"mount -o remount,bind,ro {q(chroot + RELEASE_MOUNT)}",
            ]
    lines += [
        f"mount -t proc proc {q(chroot + '/proc')}",
        f"mount -t tmpfs -o mode=1777,size=256m tmpfs {q(chroot + '/dev/shm')}",
        f"exec chroot {q(chroot)} /usr/bin/env -i {env} /usr/sbin/condor_master -f",
    ]
    return "\n".join(lines)


def start(cfg: GridConfig) -> None:
    """Start the pool (caller is inside the grid's network namespace): the central manager, the
    submit node and one execute node per site; wait for the schedd and the 4 site slots."""
    if not netns.inside(cfg.netns):
        raise GridError(f"condor.start must run inside network namespace {cfg.netns}")
    if not (cfg.chroot / COMPLETE_MARKER).exists():
        raise GridError(f"HTCondor chroot {cfg.chroot} is not built: run build_chroot first")
    _ensure_job_user(cfg.chroot)
    state = cfg.state_dir.resolve()
    write_configs(cfg)
    (cfg.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
    # Mount points inside the shared chroot (empty directories; the mounts live in the nodes' namespaces).
    for point in (str(state), NODE_DIR, RELEASE_MOUNT):
        Path(str(cfg.chroot) + point).mkdir(parents=True, exist_ok=True)
    if not any(procs.alive(procs.read(cfg.run_dir, _proc_name(n))) for n in NODES):
        _kill_leftovers(cfg)  # e.g. daemons of a master that was SIGKILLed: they hold the ports
    namespaces = _recorded_namespaces(cfg)
    for node in NODES:
        name = _proc_name(node)
        if procs.alive(procs.read(cfg.run_dir, name)):
            continue
        script = _launch_script(cfg, state, node)
        rec = procs.spawn(
            cfg.run_dir,
            cfg.log_dir,
            name,
            ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script],
        )
        namespaces.add(os.stat(f"/proc/{rec.pid}/ns/mnt").st_ino)
        _mnt_ns_file(cfg).write_text("".join(f"{ino}\n" for ino in sorted(namespaces)))
    log = cfg.log_dir / f"{PROC_NAME}.log"
    procs.wait_for(lambda: health(cfg)[0], "HTCondor pool (collector, schedd, 4 site slots)", timeout=90, log=log)


def restart_node(cfg: GridConfig, node: str, *, graceful: bool = True, timeout: float = 60) -> None:
    """Stop one node's master and start it again (e.g. the submit node: the schedd restarts). Graceful:
    SIGTERM, so that running jobs go on and their shadows reconnect when the schedd is back."""
    name = _proc_name(node)
    rec = procs.read(cfg.run_dir, name)
    if procs.alive(rec):
        assert rec is not None
        os.kill(rec.pid, signal.SIGTERM if graceful else signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not _exited(rec.pid):
            time.sleep(0.1)
        if not _exited(rec.pid):
            raise GridError(f"the {node} node's master (pid {rec.pid}) did not stop within {timeout:.0f} s")
        procs.pidfile(cfg.run_dir, name).unlink(missing_ok=True)
    rec = procs.spawn(cfg.run_dir, cfg.log_dir, name, ["unshare", "--mount", "--propagation", "private", "--",
                                                        "/bin/sh", "-c", _launch_script(cfg, cfg.state_dir.resolve(),
                                                                                        node)])
    namespaces = _recorded_namespaces(cfg) | {os.stat(f"/proc/{rec.pid}/ns/mnt").st_ino}
    _mnt_ns_file(cfg).write_text("".join(f"{ino}\n" for ino in sorted(namespaces)))
    procs.wait_for(lambda: health(cfg)[0], f"HTCondor pool after restarting {node}", timeout=90,
                   log=cfg.log_dir / f"{name}.log")


def _recorded_namespaces(cfg: GridConfig) -> set[int]:
    try:
        return {int(line) for line in _mnt_ns_file(cfg).read_text().split()}
    except (OSError, ValueError):
        return set()


def _ours(cfg: GridConfig) -> list[int]:
    """PIDs of processes in our pool: chrooted in our chroot and in one of our nodes' mount namespaces."""
    namespaces = _recorded_namespaces(cfg)
    try:
        root = os.stat(cfg.chroot)
    except OSError:
        return []
    if not namespaces:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns/mnt").st_ino not in namespaces:
                continue
            r = os.stat(entry / "root")
        except OSError:
            continue
        if (r.st_dev, r.st_ino) == (root.st_dev, root.st_ino):
            found.append(int(entry.name))
    return found


def stop(cfg: GridConfig) -> None:
    """Stop every node: masters and daemons, every job process; their mounts vanish with them."""
    masters = [(node, procs.read(cfg.run_dir, _proc_name(node))) for node in NODES]
    for _node, rec in masters:
        if procs.alive(rec):
            assert rec is not None
            # SIGQUIT = fast shutdown: the master kills jobs and daemons at once instead of waiting.
            try:
                os.kill(rec.pid, signal.SIGQUIT)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 20
    for node, rec in masters:
        if rec is None:
            continue
        while time.monotonic() < deadline and not _exited(rec.pid):
            time.sleep(0.1)
        if _exited(rec.pid):
            # procs.stop would take an unreaped zombie for a live master and wait for it.
            procs.pidfile(cfg.run_dir, _proc_name(node)).unlink(missing_ok=True)
        procs.stop(cfg.run_dir, _proc_name(node))
    _kill_leftovers(cfg)
    # The (empty) mount point of our state directory in the chroot; the mounts went with the namespaces.
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
    """(ok, message): the collector answers, the schedd and one slot per site are advertised."""
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
