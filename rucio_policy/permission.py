"""JUNO permissions for the Rucio server: `has_permission`, as Rucio 41 calls it.

rucio.core.permission imports this module (the package's `.permission`) and, for every API call,
runs has_permission(issuer, action, kwargs, session=...):
  - a PermissionResult (or bool) decides; its `message` is appended by the gateway to the
    AccessDenied it raises ("Account X can not add replication rule. <message>"), which the REST
    layer returns as the JSON body's ExceptionMessage and the client re-raises as AccessDenied;
  - None makes Rucio fall back to its generic policy: we return it only where the decision table
    (permission_table.py) says "rucio" on purpose, or for admins on an action the table does not
    list; every other account is denied an unlisted action (fail closed);
  - a TypeError raised in here is *also* taken as "no opinion" by Rucio and silently falls back to
    the generic policy. We therefore catch it ourselves and deny instead (fail closed).

The decisions live in access.py (pure, unit-tested); this module only looks facts up in the
database through Rucio's core API, inside the session the gateway passes.

Server configuration read here:
  [policy] juno_replication_policy = /path/to/etc/replication.yaml   (or env JUNO_REPLICATION_POLICY)
           the rules the ingest account may add on raw; without it the ingest account adds none.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rucio_policy import access, naming

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

LOG = logging.getLogger("rucio_policy.permission")
POLICY_OPTION = "juno_replication_policy"
POLICY_ENV = "JUNO_REPLICATION_POLICY"


def has_permission(issuer: Any, action: str, kwargs: dict[str, Any], *, session: Session | None = None) -> Any:
    """Rucio's entry point. Returns PermissionResult, or None for "ask the generic policy"."""
    # Imported here: rucio.core.permission is still being imported when it imports this module.
    from rucio.core.permission import PermissionResult

    try:
        decision = access.decide(issuer, action, _with_request_content(action, kwargs), DbFacts(issuer, session))
    except TypeError as err:
        LOG.exception("JUNO policy failed on %s", action)
        return PermissionResult(False, f"JUNO policy could not decide {action} ({err}); "
                                       "please report this to the juno-dci operators")
    if decision.allowed is None:
        return None
    return PermissionResult(decision.allowed, decision.message)


# Rucio 41 checks these actions without the content the call then writes (rucio/gateway/did.py add_did:
# `dids`, `rse`; rucio/gateway/replica.py add_replicas: `files`). We read it from the gateway function's
# own arguments, found on the call stack; set_status is checked without the status it sets (`open`).
# tests/test_permission_holes.py fails if a Rucio upgrade moves them.
_GATEWAY_CONTENT = {"add_did": ("rucio.gateway.did", "add_did"),
                    "add_replicas": ("rucio.gateway.replica", "add_replicas"),
                    "set_status": ("rucio.gateway.did", "set_status"),
                    # Unfollowing: the account whose follows change (Rucio's own rule expects it and fails).
                    "remove_did_from_followed": ("rucio.gateway.did", "remove_did_from_followed"),
                    "remove_dids_from_followed": ("rucio.gateway.did", "remove_dids_from_followed")}
_STACK_DEPTH = 12


def _gateway_arguments(module: str, function: str) -> dict[str, Any] | None:
    frame = sys._getframe(1)
    for _ in range(_STACK_DEPTH):
        frame = frame.f_back
        if frame is None:
            return None
        if frame.f_code.co_name == function and frame.f_globals.get("__name__") == module:
            return dict(frame.f_locals)
    return None


def _with_request_content(action: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    where = _GATEWAY_CONTENT.get(action)
    if where is None or (action == "add_replicas" and "dids" in kwargs):
        return kwargs
    arguments = _gateway_arguments(*where)
    if action.endswith("_from_followed"):
        return {**kwargs, "account": kwargs.get("account") if arguments is None else arguments.get("account")}
    if arguments is None:
        if action == "set_status":
            return {**kwargs, "open": True}  # unseen: assume the worst (reopening is for admins)
        return {**kwargs, access.CONTENT_UNSEEN: True} if action == "add_did" else kwargs
    if action == "set_status":
        statuses = arguments.get("kwargs") or {}
        return {**kwargs, "open": bool(statuses.get("open", False))}
    if action == "add_did":
        rse = arguments.get("rse")
        rse_id = arguments.get("rse_id")
        if rse is not None and rse_id is None:
            rse_id = _rse_id(str(rse), arguments.get("vo", "def"))
        return {**kwargs, "dids": list(arguments.get("dids") or []), "rse_id": rse_id}
    files = arguments.get("files")
    return {**kwargs, "files": None if files is None else list(files)}


def _rse_id(rse: str, vo: str) -> str | None:
    from rucio.common.exception import RSENotFound
    from rucio.core.rse import get_rse_id

    try:
        return str(get_rse_id(rse=rse, vo=vo))
    except RSENotFound:
        return None  # Rucio reports the unknown RSE itself


class DbFacts:
    """access.Facts answered from Rucio's database, cached for one permission check."""

    def __init__(self, issuer: Any, session: Session | None) -> None:
        self._vo = getattr(issuer, "vo", "def")
        self._session = session
        self._attributes: dict[str, Mapping[str, Any]] = {}

    def _account(self, account: str) -> Any:
        from rucio.common.types import InternalAccount

        return InternalAccount(account, vo=self._vo)

    def _scope(self, scope: str) -> Any:
        from rucio.common.types import InternalScope

        return InternalScope(scope, vo=self._vo)

    def attributes(self, account: str) -> Mapping[str, Any]:
        if account not in self._attributes:
            from rucio.core.account import list_account_attributes

            rows = list_account_attributes(account=self._account(account), session=self._session)
            self._attributes[account] = {row["key"]: row["value"] for row in rows}
        return self._attributes[account]

    def rse(self, rse_id: str) -> access.RseFacts | None:
        from rucio.common.exception import RSENotFound
        from rucio.core.rse import get_rse, list_rse_attributes

        try:
            row = get_rse(rse_id, session=self._session)
        except RSENotFound:
            return None
        attributes = list_rse_attributes(rse_id=rse_id, session=self._session)
        return _rse_facts(row, attributes)

    def resolve(self, expression: str) -> list[access.RseFacts]:
        # Errors (bad syntax, empty set) propagate: Rucio reports them to the client as it would anyway.
        from rucio.core.rse import list_rse_attributes
        from rucio.core.rse_expression_parser import parse_expression

        rows = parse_expression(expression, filter_={"vo": self._vo}, session=self._session)
        return [_rse_facts(row, list_rse_attributes(rse_id=row["id"], session=self._session)) for row in rows]

    def rule(self, rule_id: str) -> access.RuleFacts | None:
        from rucio.common.exception import RucioException, RuleNotFound
        from rucio.core.rule import get_rule

        try:
            row = get_rule(rule_id, session=self._session)
        except (RuleNotFound, RucioException):
            return None  # Rucio raises the proper error right after
        return access.RuleFacts(rule_id=str(row["id"]), account=access.ext(row["account"]),
                                scope=access.ext(row["scope"]), name=row["name"],
                                rse_expression=row["rse_expression"], locked=bool(row["locked"]))

    def owns_scope(self, account: str, scope: str) -> bool:
        from rucio.core.scope import is_scope_owner

        return bool(is_scope_owner(scope=self._scope(scope), account=self._account(account), session=self._session))

    def did_meta(self, scope: str, name: str, key: str) -> str | None:
        from rucio.common.exception import DataIdentifierNotFound
        from rucio.core.did import get_metadata

        try:
            meta = get_metadata(scope=self._scope(scope), name=name, plugin="ALL", session=self._session)
        except DataIdentifierNotFound:
            return None
        value = meta.get(key)
        return None if value is None else str(value)

    def raw_blocks(self, files: list[str]) -> dict[str, str]:
        if self._session is None:
            from rucio.db.sqla.session import DatabaseOperationType, db_session

            with db_session(DatabaseOperationType.READ) as session:
                return _raw_blocks(self._scope(naming.RAW_SCOPE), files, session)
        return _raw_blocks(self._scope(naming.RAW_SCOPE), files, self._session)

    def policy_rule_shapes(self, scope: str) -> frozenset[tuple[str, int]] | None:
        path = _policy_path()
        if path is None:
            return None
        return _policy_shapes(path, scope)


def _raw_blocks(scope: Any, files: list[str], session: Session) -> dict[str, str]:
    """File → the raw dataset holding it: one query per 1,000 names, on contents' child index."""
    from rucio.db.sqla import models
    from rucio.db.sqla.constants import DIDType
    from sqlalchemy import select

    assoc = models.DataIdentifierAssociation
    out: dict[str, str] = {}
    unique = list(dict.fromkeys(files))
    for start in range(0, len(unique), 1000):
        stmt = select(assoc.child_name, assoc.name).where(
            assoc.child_scope == scope, assoc.child_name.in_(unique[start:start + 1000]),
            assoc.scope == scope, assoc.did_type == DIDType.DATASET)
        out.update({str(child): str(parent) for child, parent in session.execute(stmt)})
    return out


def _rse_facts(row: Mapping[str, Any], attributes: Mapping[str, Any]) -> access.RseFacts:
    rse_type = row.get("rse_type")
    return access.RseFacts(name=str(row.get("rse")), rse_type=str(getattr(rse_type, "value", rse_type)),
                           site=None if attributes.get(access.SITE_ATTRIBUTE) is None
                           else str(attributes[access.SITE_ATTRIBUTE]))


def _policy_path() -> Path | None:
    value = os.environ.get(POLICY_ENV)
    if not value:
        from rucio.common.config import config_get

        value = config_get("policy", POLICY_OPTION, raise_exception=False, default=None,
                           check_config_table=False)
    return Path(value) if value else None


def _policy_shapes(path: Path, scope: str) -> frozenset[tuple[str, int]]:
    """The policy's (rse_expression, copies) for `scope`; empty (and logged) if unreadable or invalid."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        LOG.error("replication policy %s is missing: the ingest account may add no rules", path)
        return frozenset()
    return _load_shapes(str(path), mtime, scope)


@functools.lru_cache(maxsize=8)
def _load_shapes(path: str, mtime_ns: int, scope: str) -> frozenset[tuple[str, int]]:
    # Keyed by modification time: a policy edit takes effect without restarting the server.
    from rucio_policy.replication import PolicyInvalid, load_policy

    del mtime_ns
    try:
        return load_policy(Path(path), catalog=None).rule_shapes(scope)
    except PolicyInvalid as err:
        LOG.error("replication policy %s is invalid: the ingest account may add no rules:\n%s", path, err)
        return frozenset()
