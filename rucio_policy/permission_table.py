"""The decision table: every action of Rucio 41's permission layer x every JUNO role (pure, no Rucio).

Rucio's gateway asks `has_permission(issuer, action, kwargs)` before each change (and a few reads).
JUNO answers every action itself; nothing is left to Rucio's generic policy by accident:

  allow   the role may
  deny    the role may not (the reason goes back to the client)
  rucio   Rucio's own generic check decides, on purpose (named in REASONS: e.g. logging in needs an
          identity of that account; admins keep Rucio's own limits, like root-only actions)
  check   a named JUNO check in rucio_policy.access decides from the request (e.g. `scope_write`)

An action the table does not list is denied to everyone but admins (fail closed), and
tests/test_permission_table.py fails when the installed Rucio has an action missing here, so an
upgrade forces a review. etc/permissions.md is generated from this table (`python -m
rucio_policy.permission_table > etc/permissions.md`; a test keeps them equal).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

ALLOW, DENY, RUCIO, CHECK = "allow", "deny", "rucio", "check"

# The table's columns, in order. "none": an account without a JUNO role attribute (or an unknown one).
ROLES = ("root", "admin", "ingest", "production", "coordinator", "analyst", "none")
_NON_ADMIN = ROLES[2:]


@dataclass(frozen=True)
class Cell:
    kind: str  # allow | deny | rucio | check
    check: str = ""  # the name of the JUNO check (access._CHECKS), kind == check

    def text(self) -> str:
        return self.check if self.kind == CHECK else self.kind


A, D, R = Cell(ALLOW), Cell(DENY), Cell(RUCIO)


def C(name: str) -> Cell:  # noqa: N802 - reads as a table entry
    return Cell(CHECK, name)


def _row(admins: Cell, others: Cell | dict[str, Cell]) -> dict[str, Cell]:
    row = {"root": admins, "admin": admins}
    for role in _NON_ADMIN:
        row[role] = others if isinstance(others, Cell) else others.get(role, D)
    return row


def _same(cell: Cell) -> dict[str, Cell]:
    return {role: cell for role in ROLES}


def _own_rules(check: str) -> dict[str, Cell]:
    # The ingest service never changes rules; the check says so in its own words.
    return {"ingest": C(check), "production": C(check), "coordinator": A, "analyst": C(check)}


# Groups of actions that share a row: administration of Rucio itself is for admins only.
_ADMIN_ONLY = (
    # accounts, identities, attributes, scopes
    "add_account", "del_account", "update_account", "add_account_identity", "del_account_identity",
    "del_identity", "add_attribute", "del_attribute", "add_scope", "update_scope",
    # RSEs, protocols, distances, limits, usage, QoS, transfer limits
    "add_rse", "update_rse", "del_rse", "add_rse_attribute", "del_rse_attribute", "add_protocol",
    "del_protocol", "update_protocol", "add_distance", "update_distance", "delete_distance",
    "set_rse_usage", "set_rse_limits", "delete_rse_limits", "add_qos_policy", "delete_qos_policy",
    "list_transfer_limits", "set_transfer_limit", "delete_transfer_limit",
    "set_local_account_limit", "set_global_account_limit", "delete_local_account_limit",
    "delete_global_account_limit",
    # configuration, subscriptions, VOs, lifetime exceptions, heartbeats, import/export
    "config_sections", "config_add_section", "config_has_section", "config_options", "config_has_option",
    "config_get", "config_items", "config_set", "config_remove_section", "config_remove_option",
    "add_subscription", "update_subscription", "add_vo", "update_vo", "list_vos", "recover_vo_root_identity",
    "access_rule_vo", "update_lifetime_exceptions", "list_heartbeats", "send_heartbeats", "import", "export",
    "add_key", "add_value",
    # replicas and requests beyond registering: states, deletion, bad/suspicious, tombstones, requests
    "delete_replicas", "update_replicas_states", "skip_availability_check", "declare_bad_file_replicas",
    "declare_suspicious_file_replicas", "add_bad_pfns", "quarantine_file_replicas", "set_tombstone",
    "resurrect", "queue_requests", "list_requests", "list_requests_history", "get_request_history_by_did",
    "get_request_metrics", "cancel_request", "get_next",
    # Open Data
    "add_opendata_did", "update_opendata_did", "delete_opendata_did",
)

TABLE: dict[str, dict[str, Cell]] = {action: _row(R, D) for action in _ADMIN_ONLY}
TABLE.update({
    # Logging in: the identity must belong to the account (Rucio's check), for everyone.
    "get_auth_token_user_pass": _same(R), "get_auth_token_gss": _same(R), "get_auth_token_x509": _same(R),
    "get_auth_token_ssh": _same(R),
    # Reads Rucio guards: own usage (or admin), signed URLs (account attribute sign-url), request state.
    "get_local_account_usage": _same(R), "get_global_account_usage": _same(R),
    "get_signed_url": _same(R), "get_request_by_did": _same(A),
    # Following DIDs: one's own follows only (Rucio 41's own rule fails on these requests: a KeyError).
    "remove_did_from_followed": _same(C("own_follows")), "remove_dids_from_followed": _same(C("own_follows")),
    # DIDs: naming and raw's shape bind admins too; writes follow the scope table.
    "add_did": _same(C("did_add")), "add_dids": _same(C("did_add")),
    "attach_dids": _same(C("attach")), "attach_dids_to_dids": _same(C("attach")),
    "detach_dids": _row(A, C("detach")),
    "set_status": _row(A, C("set_status")),
    "create_did_sample": _row(A, C("scope_write")),
    "set_metadata": _row(A, C("metadata")), "set_metadata_bulk": _row(A, C("metadata")),
    # Replicas: the RSE and the scope of every file, new or not.
    "add_replicas": _row(A, {r: C("replicas_add") for r in ("ingest", "production", "coordinator", "analyst")}),
    # Rules.
    "add_rule": _row(A, {r: C("rule_add") for r in ("ingest", "production", "coordinator", "analyst")}),
    "update_rule": _row(A, _own_rules("rule_update")),
    "del_rule": _row(A, _own_rules("rule_delete")),
    "reduce_rule": _row(A, _own_rules("rule_reduce")),
    "move_rule": _row(A, _own_rules("rule_move")),
    "approve_rule": _row(A, {"coordinator": A}),
})

# What each named check and each "rucio" cell means, for operators (etc/permissions.md).
CHECKS: dict[str, str] = {
    "did_add": "names follow etc/naming.md (everyone, admins too); the scope table says who writes the "
               "scope; no DIDs owned by another account; raw DIDs never expire; rules given with the DID are "
               "checked as rule_add; content given with the DID (dids=, rse=) is checked as attach",
    "attach": "raw keeps its shape (files in blocks, blocks in containers) and a raw file is in one block only "
              "(everyone, admins too); the parent's scope must be writable; with rse= the files get replicas, "
              "so their scopes must be writable and the RSE allowed (as replicas_add)",
    "detach": "never in raw; otherwise the scope must be writable",
    "set_status": "a closed raw block is never reopened (its placement was decided on its content); reopening "
                  "anything is for admins; closing needs a writable scope",
    "scope_write": "the scope must be writable by the account (scope table)",
    "own_follows": "one's own follows only (admins: anyone's)",
    "metadata": "placement records (juno_place_*) and their seal: ingest on raw and coordinators, once; "
                "lifetime/expired_at never on raw; other keys need a writable scope",
    "replicas_add": "every file's scope must be writable (existing files too) and the RSE allowed: ingest "
                    "only at IHEP RSEs, analysts and coordinators only on disk",
    "rule_add": "rules belong to the account that adds them (coordinators may add them for the service "
                "accounts); ingest adds only the replication policy's rules on raw; analysts only on their own "
                "scope, on disk, unlocked, priority <= 3, an analysis activity, source replicas on disk only",
    "rule_update": "only one's own rules; production never changes what keeps raw copies; analysts change "
                   "only lifetime and comment",
    "rule_delete": "only one's own rules, never rules on raw",
    "rule_reduce": "only one's own rules, never rules on raw",
    "rule_move": "only one's own rules, never rules on raw; no owner change or lock; analysts to disk only",
}
RUCIO_MEANING = {
    "get_auth_token_user_pass": "the identity must belong to the account",
    "get_auth_token_gss": "the identity must belong to the account",
    "get_auth_token_x509": "the identity must belong to the account",
    "get_auth_token_ssh": "the identity must belong to the account (checked at login)",
    "get_local_account_usage": "one's own account (admins: any)",
    "get_global_account_usage": "one's own account (admins: any)",
    "get_signed_url": "root, or account attribute sign-url",
}
ADMIN_RUCIO_MEANING = "Rucio's own rule for admins (e.g. root only for accounts, bad replicas, requests)"


def cell(action: str, role: str) -> Cell | None:
    """The table's cell, or None when the action is not listed (then: admins ask Rucio, others are denied)."""
    row = TABLE.get(action)
    return None if row is None else row[role]


def markdown() -> str:
    """etc/permissions.md: the table in words operators can check against what the server does."""
    out = [
        "# Who may do what: every Rucio action x every JUNO role",
        "",
        "Generated from `rucio_policy/permission_table.py` (`python -m rucio_policy.permission_table >"
        " etc/permissions.md`);",
        "a test keeps this file equal to the table the server uses, and another fails when the installed Rucio",
        "has an action the table does not list.",
        "",
        "Roles come from Rucio account attributes: `root` and accounts with the attribute `admin` are admins;",
        "`role=ingest`, `role=production`, `role=coordinator`, `role=analyst` name the others; **none** is an",
        "account without a role attribute (or with an unknown one). Cells:",
        "",
        "- **allow** / **deny**: always (a denial says who, what and why);",
        "- **rucio**: Rucio's own generic check decides, on purpose (see the notes below the table);",
        "- a *check name*: a JUNO check decides from the request (described below the table).",
        "",
        "Any action not in this table is denied to everyone but admins.",
        "",
        "| action | " + " | ".join(ROLES) + " |",
        "|---|" + "---|" * len(ROLES),
    ]
    for action in sorted(TABLE):
        out.append(f"| `{action}` | " + " | ".join(TABLE[action][r].text() for r in ROLES) + " |")
    out += ["", f"{len(TABLE)} actions x {len(ROLES)} roles = {len(TABLE) * len(ROLES)} cells; "
            "`tests/test_permission_table_live.py` tries each one as that role against the live server.", "",
            "## The JUNO checks", ""]
    out += [f"- `{name}`: {text}." for name, text in sorted(CHECKS.items())]
    out += ["", "## Where Rucio decides", "",
            f"- admins, on every action marked rucio: {ADMIN_RUCIO_MEANING}."]
    out += [f"- `{action}`: {text}." for action, text in sorted(RUCIO_MEANING.items())]
    out += ["", "## What Rucio never asks about", "",
            "Rucio 41 has no permission check on deleting DID metadata (`DELETE /dids/<scope>/<name>/meta`):",
            "anyone can delete a placement record `juno_place_*`. The decision survives it: when it is",
            "recorded, its verdict is also sealed in the block's `prod_step` column (`juno_place:<class>_<rule>=",
            "placed|skipped`), which only the ingest service and coordinators can write and which Rucio cannot",
            "delete. A block whose record is missing is never decided again: `juno-policy plan` lists it as a",
            "problem and `juno-policy explain` shows the verdict recovered from the seal (or from the",
            "policy's rule on the block).", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(markdown())
