"""The grid's private network namespace.

XRootD cannot be told to listen on 127.0.0.1 only, so the whole grid lives in a network
namespace of its own (named `juno-grid` by default), which has nothing but a loopback
interface: no grid port is reachable from outside, whatever a server binds to. A process joins it
with `enter()` before it starts threads; its children inherit it.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def ensure(name: str) -> None:
    """Create the namespace (loopback up) unless it exists."""
    if not exists(name):
        subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def current_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def inside(name: str) -> bool:
    return exists(name) and os.stat(path(name)).st_ino == current_inode()


def enter(name: str) -> None:
    """Move the calling thread (and so every child it starts) into the namespace."""
    if inside(name):
        return
    fd = os.open(path(name), os.O_RDONLY)
    try:
        _setns_fd(fd)
    finally:
        os.close(fd)


def delete(name: str) -> None:
    if exists(name):
        subprocess.run(["ip", "netns", "del", name], check=False)


def _setns_fd(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def returning() -> Iterator[None]:
    """Whatever namespace the block enters, come back to the current one afterwards."""
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        yield
    finally:
        _setns_fd(fd)
        os.close(fd)
