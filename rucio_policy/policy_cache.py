"""The replication policy the engine works with: which file (JUNO_REPLICATION_POLICY or the shipped
etc/replication.yaml), loaded once per change of it or its sites.yaml; the engine's errors and shared types."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from juno_common.errors import Refused
from juno_common.etc import etc_file
from juno_common.exit_codes import Exit
from rucio_policy.replication import Policy, load_policy
from rucio_policy.rse_catalog import load_catalog
from rucio_policy.sites_sync import SCOPE_OWNERS

POLICY_ENV = "JUNO_REPLICATION_POLICY"


DEFAULT_POLICY = etc_file("replication.yaml")


Progress = Callable[[int, int], None]  # (done, total)


# map_calls(fn, items) -> [fn(client, item) for each item], in order: how a caller lends its clients (threads)
CallMap = Callable[[Callable[[Any, Any], Any], list[Any]], list[Any]]


class EngineError(Refused):
    """The engine cannot do what was asked; the message says what, where and what to do (exit 4)."""


class DidNotFound(EngineError, code=Exit.NOT_FOUND, label="not found"):
    """The DID the engine was asked about is not in Rucio (exit 6)."""


def policy_path() -> Path:
    return Path(os.environ.get(POLICY_ENV) or DEFAULT_POLICY)


_POLICY_CACHE: dict[tuple[str, int, int], Policy] = {}


def load_default_policy(path: Path | None = None) -> Policy:
    """The replication policy (JUNO_REPLICATION_POLICY or etc/replication.yaml), checked against the
    sites.yaml next to it; raises replication.PolicyInvalid. Reloaded when either file changes."""
    path = Path(path or policy_path())
    sites = path.parent / "sites.yaml"
    try:
        key = (str(path), path.stat().st_mtime_ns, sites.stat().st_mtime_ns if sites.is_file() else 0)
    except OSError as err:
        raise EngineError(f"cannot read the replication policy {path}: {err.strerror}; "
                          f"set {POLICY_ENV} to its path") from None
    if key not in _POLICY_CACHE:
        catalog = load_catalog(sites, str(sites)) if sites.is_file() else None
        _POLICY_CACHE.clear()  # one policy file per process in practice: keep only the newest
        _POLICY_CACHE[key] = load_policy(path, catalog, str(path))
    return _POLICY_CACHE[key]


def rule_owner(scope: str) -> str | None:
    """The account the policy's rules on `scope` belong to (None: whoever runs the engine)."""
    return SCOPE_OWNERS.get(scope)
