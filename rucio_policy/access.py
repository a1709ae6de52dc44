"""Who may do what with JUNO data: the decisions behind rucio_policy.permission, without Rucio.

Roles come from Rucio account attributes (set by `juno-policy sites apply` from etc/sites.yaml):

  root, or attribute `admin` (any value)   everything (same test as Rucio's generic policy)
  role=ingest       (juno_ingest)  add DIDs in raw, replicas at IHEP RSEs (RSE attribute site=IHEP),
                                   attach files to raw blocks and blocks to raw containers, close
                                   blocks, record placement metadata, add the replication policy's
                                   rules on raw. Nothing else.
  role=production   (juno_prod)    write rtraw, esd, mc; replicas anywhere; rules anywhere; never
                                   delete raw (no deleting, reducing or moving rules on raw)
  role=coordinator                 add, update, delete, approve rules on any scope; record placement
                                   metadata; otherwise an analyst
  role=analyst                     read everything; write only in user.<own account> (and group.*
                                   scopes Rucio says they own); rules only on their own DIDs, on
                                   disk RSEs, unlocked, priority <= 3, an analysis activity, sources
                                   on disk; change or delete only their own rules
  no role (or an unknown one)      log in and read: nothing else (fail closed)

Every action of Rucio's permission layer has a row in rucio_policy.permission_table (allow, deny,
Rucio's own check, or one of the checks below); an action the table does not list is denied to
everyone but admins.

For everyone, admins included, raw keeps its shape: files in blocks, blocks in containers, and a
raw file in exactly one block (a second block would count its bytes twice in the placement
decisions; Rucio itself lets a file join any number of datasets, silently). The ingester relies on
the last rule: a file it registers without looking it up first is refused if another block has it.

The decisions are pure functions of the request (Rucio's `kwargs`) and a few facts the adapter
looks up (account attributes, RSE type and site, the rule being changed, the blocks of files).
Returning `Decision(None)` hands the request to Rucio's generic policy: only where the table says
"rucio" (e.g. logging in), for admins, or when a rule to change does not exist (Rucio reports it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from rucio_policy import naming
from rucio_policy import permission_table as table
from rucio_policy.placement import PLACEMENT_META_PREFIX, SEAL_COLUMN

ROLE_ATTRIBUTE = "role"
ADMIN_ATTRIBUTE = "admin"
SITE_ATTRIBUTE = "site"
INGEST_SITE = "IHEP"


class Role(Enum):
    ROOT = "root"
    ADMIN = "admin"
    INGEST = "ingest"
    PRODUCTION = "production"
    COORDINATOR = "coordinator"
    ANALYST = "analyst"
    NONE = "none"


_ROLE_VALUES = {"ingest": Role.INGEST, "production": Role.PRODUCTION, "coordinator": Role.COORDINATOR,
                "analyst": Role.ANALYST}
_PRIVILEGED = (Role.ROOT, Role.ADMIN)
_SERVICE_ROLES = (Role.INGEST, Role.PRODUCTION)

# Rule options production may still change on a rule on raw: none of them removes a replica.
RAW_RULE_HARMLESS_OPTIONS = frozenset({"priority", "comment", "activity", "boost_rule", "meta",
                                       "source_replica_expression"})
# What an analyst may change on their own rules; the rest (account, locked, ...) is for coordinators.
ANALYST_RULE_OPTIONS = frozenset({"lifetime", "comment"})
# Analysts' rules queue behind the services' (Rucio's default priority is 3) and use analysis activities.
ANALYST_MAX_PRIORITY = 3
ANALYST_ACTIVITIES = frozenset({"User Subscriptions", "Analysis Input", "Analysis Output"})
# DID metadata that makes a DID expire (the undertaker then deletes it).
EXPIRING_META_KEYS = frozenset({"lifetime", "expired_at"})


def role_of(account: str, attributes: Mapping[str, Any]) -> Role:
    """The JUNO role of an account from its Rucio attributes; unknown roles get the least power."""
    if account == "root":
        return Role.ROOT
    if ADMIN_ATTRIBUTE in attributes:  # presence, like rucio.core.permission.generic
        return Role.ADMIN
    return _ROLE_VALUES.get(str(attributes.get(ROLE_ATTRIBUTE, "")).strip().lower(), Role.NONE)


@dataclass(frozen=True)
class RseFacts:
    name: str
    rse_type: str  # "DISK" or "TAPE"
    site: str | None

    @property
    def is_tape(self) -> bool:
        return self.rse_type.upper() == "TAPE"


@dataclass(frozen=True)
class RuleFacts:
    rule_id: str
    account: str
    scope: str
    name: str
    rse_expression: str
    locked: bool


class Facts(Protocol):
    """What a decision may need to know beyond the request; the server answers from its database."""

    def attributes(self, account: str) -> Mapping[str, Any]: ...

    def rse(self, rse_id: str) -> RseFacts | None: ...

    def resolve(self, expression: str) -> list[RseFacts]: ...

    def rule(self, rule_id: str) -> RuleFacts | None: ...

    def owns_scope(self, account: str, scope: str) -> bool: ...

    def did_meta(self, scope: str, name: str, key: str) -> str | None: ...

    def policy_rule_shapes(self, scope: str) -> frozenset[tuple[str, int]] | None:
        """(rse_expression, copies) of the replication policy's rules for DIDs of `scope`, or None
        when the server has no policy file configured."""
        ...

    def raw_blocks(self, files: list[str]) -> dict[str, str]:
        """Raw file name → the raw block (dataset) holding it, for those of `files` in one."""
        ...


# Set by the adapter when it could not read the content an add_did call writes: then only admins pass.
CONTENT_UNSEEN = "__juno_content_unseen__"
# The start of the denial when a raw file is already in another block: the ingester recognises it.
IN_ANOTHER_BLOCK = "a raw file belongs to exactly one block"


@dataclass(frozen=True)
class Decision:
    allowed: bool | None  # None: no JUNO opinion, Rucio's generic policy decides
    message: str = ""


ALLOW = Decision(True)
DEFER = Decision(None)


def deny(message: str) -> Decision:
    return Decision(False, message)


def ext(value: Any) -> str:
    """External name of a Rucio InternalAccount/InternalScope, or the string itself."""
    return str(getattr(value, "external", value))


def account_or_none(value: Any) -> str | None:
    """An optional account argument: Rucio's gateway wraps a missing one as InternalAccount(None)."""
    value = getattr(value, "external", value)
    return None if value is None else str(value)


@dataclass(frozen=True)
class Context:
    issuer: str
    role: Role
    facts: Facts

    @property
    def privileged(self) -> bool:
        return self.role in _PRIVILEGED


# Why a "deny" cell denies, where a plain "<role> may not <action>" says too little.
_DENY_REASONS = {
    "declare_suspicious_file_replicas": "declaring replicas suspicious makes Rucio's recoverer declare them bad "
                                        "and delete them: only admins do it (report a corrupted file to the "
                                        "juno-dci operators)",
    "declare_bad_file_replicas": "declaring replicas bad deletes them: only admins do it",
    "approve_rule": "only coordinators and admins approve rules",
}


def decide(issuer: Any, action: str, kwargs: Mapping[str, Any], facts: Facts) -> Decision:
    """Allow, deny (with a message for the client) or hand to Rucio's own check, as the table says."""
    account = ext(issuer)
    role = role_of(account, facts.attributes(account))
    ctx = Context(issuer=account, role=role, facts=facts)
    cell = table.cell(action, role.value)
    if cell is None:  # not in the table: fail closed
        if ctx.privileged:
            return DEFER
        return deny(f"{action} is not in JUNO's permission table (etc/permissions.md): only admins may")
    if cell.kind == table.ALLOW:
        return ALLOW
    if cell.kind == table.RUCIO:
        return DEFER
    if cell.kind == table.DENY:
        reason = _DENY_REASONS.get(action) or (
            f"{account} has no JUNO role (account attribute role): it may log in and read, nothing else"
            if role is Role.NONE else f"{action} is for admins only (etc/permissions.md)")
        return deny(reason)
    return _CHECKS[cell.check](ctx, kwargs)


# -- scopes ---------------------------------------------------------------------------------------


def write_error(ctx: Context, scope: str) -> str | None:
    """Why ctx may not create or change DIDs in `scope`, or None if it may."""
    if ctx.privileged:
        return None
    if ctx.role is Role.NONE:
        return f"{ctx.issuer} has no JUNO role (account attribute role): it may log in and read, nothing else"
    if scope == naming.RAW_SCOPE:
        if ctx.role is Role.INGEST:
            return None
        return "scope raw is written only by the ingest service (account attribute role=ingest)"
    if ctx.role is Role.INGEST:
        return f"the ingest service writes only in scope raw, not in {scope}"
    if scope in naming.PRODUCTION_SCOPES:
        if ctx.role is Role.PRODUCTION:
            return None
        return f"scope {scope} is written only by production (account attribute role=production)"
    if ctx.role is Role.PRODUCTION:
        return f"production writes only in rtraw, esd and mc, not in {scope}"
    if scope == naming.own_scope(ctx.issuer):
        return None
    if scope.startswith("group.") and ctx.facts.owns_scope(ctx.issuer, scope):
        return None
    return f"{ctx.issuer} writes only in scope {naming.own_scope(ctx.issuer)}, not in {scope}"


# -- DIDs -----------------------------------------------------------------------------------------


def _did_error(ctx: Context, did: Mapping[str, Any], default_type: str | None) -> str | None:
    scope, name = ext(did.get("scope")), str(did.get("name", ""))
    did_type = did.get("type") or did.get("did_type") or default_type
    problem = naming.did_name_error(scope, name, did_type)
    if problem:
        return problem  # naming binds everyone, admins included, like the schema does
    problem = write_error(ctx, scope)
    if problem:
        return f"{scope}:{name}: {problem}"
    if ctx.privileged:
        return None
    owner = account_or_none(did.get("account"))
    if owner is not None and owner != ctx.issuer:
        return f"{scope}:{name}: only admins create DIDs owned by another account ({owner})"
    if scope == naming.RAW_SCOPE and did.get("lifetime"):
        return f"{scope}:{name}: raw DIDs never expire: register them without a lifetime"
    for rule in did.get("rules") or []:
        problem = rule_add_error(ctx, [{"scope": scope, "name": name}], rule)
        if problem:
            return problem
    content = did.get("dids")
    if content:
        return _attach_error(ctx, scope, name, content, did.get("rse_id"))
    return None


def _add_did(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    # Rucio checks add_did without the content it then registers (dids=, rse=); the adapter adds it
    # from the gateway's call, or marks it unseen: then only admins pass.
    if kwargs.get(CONTENT_UNSEEN) and not ctx.privileged:
        return deny("JUNO's policy could not see this add_did's content (dids/rse): refused; "
                    "please report this to the juno-dci operators")
    problem = _did_error(ctx, kwargs, None)
    return deny(problem) if problem else ALLOW


def _add_dids(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    # From add_replicas (new files) the call carries the RSE and file dicts without a type.
    default_type = "FILE" if "rse_id" in kwargs else None
    for did in kwargs.get("dids") or []:
        problem = _did_error(ctx, did, default_type)
        if problem:
            return deny(problem)
    return ALLOW


def _replica_rse_error(ctx: Context, rse_id: Any) -> str | None:
    """Why ctx may not register replicas on this RSE, or None."""
    if ctx.privileged or ctx.role is Role.PRODUCTION:
        return None
    rse = ctx.facts.rse(str(rse_id)) if rse_id else None
    if rse is None:
        return None  # Rucio itself reports an unknown RSE
    if ctx.role is Role.INGEST:
        if rse.site == INGEST_SITE:
            return None
        return (f"the ingest service registers replicas only at {INGEST_SITE} RSEs (RSE attribute "
                f"{SITE_ATTRIBUTE}={INGEST_SITE}); {rse.name} has {SITE_ATTRIBUTE}={rse.site}")
    if rse.is_tape:
        return f"{ctx.issuer} may register replicas on disk RSEs only; {rse.name} is a tape RSE"
    return None


def _add_replicas(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    # Rucio 41 passes only the RSE here and checks the scopes of *new* files only (add_dids): a replica of
    # an existing raw file would pass. The adapter adds the request's files; without them, only admins pass.
    problem = _replica_rse_error(ctx, kwargs.get("rse_id"))
    if problem:
        return deny(problem)
    if ctx.privileged:
        return ALLOW
    files = kwargs.get("files")
    if files is None:
        return deny("JUNO's policy could not see the files of this add_replicas call: refused; "
                    "please report this to the juno-dci operators")
    for scope in sorted({ext(f.get("scope")) for f in files}):
        problem = write_error(ctx, scope)
        if problem:
            return deny(f"replicas of files in scope {scope}: {problem}")
    return ALLOW


def _attach_error(ctx: Context, scope: str, name: str, children: Iterable[Mapping[str, Any]],
                  rse_id: Any) -> str | None:
    children = list(children)
    if scope == naming.RAW_SCOPE:
        problem = _raw_structure_error(name, children) or _second_block_error(ctx, name, children)
        if problem:
            return problem
    if rse_id:
        # Attaching with an RSE registers the files and their replicas: their names must be right.
        for child in children:
            problem = naming.did_name_error(ext(child.get("scope")), str(child.get("name", "")), "FILE")
            if problem:
                return problem
    if ctx.privileged:
        return None
    problem = write_error(ctx, scope)
    if problem:
        return f"{scope}:{name}: {problem}"
    if ctx.role is Role.INGEST:
        foreign = sorted({ext(c.get("scope")) for c in children} - {naming.RAW_SCOPE})
        if foreign:
            return f"the ingest service attaches only raw DIDs, not DIDs of scope {', '.join(foreign)}"
    if rse_id:
        problem = _replica_rse_error(ctx, rse_id)
        if problem:
            return problem
        for child_scope in sorted({ext(c.get("scope")) for c in children}):
            problem = write_error(ctx, child_scope)
            if problem:
                return f"registering new files: {problem}"
    return None


def _second_block_error(ctx: Context, parent: str, children: list[Mapping[str, Any]]) -> str | None:
    """Files going into a raw block that another raw block already holds."""
    if naming.raw_name_error(parent, "DATASET"):
        return None
    files = [str(c.get("name", "")) for c in children if ext(c.get("scope")) == naming.RAW_SCOPE]
    elsewhere = {f: b for f, b in ctx.facts.raw_blocks(files).items() if b != parent} if files else {}
    if not elsewhere:
        return None
    first = sorted(elsewhere)[0]
    return (f"{IN_ANOTHER_BLOCK}: raw:{first} is in raw:{elsewhere[first]}, not raw:{parent}"
            + (f" (and {len(elsewhere) - 1} more file(s) of this request are in other blocks)"
               if len(elsewhere) > 1 else "")
            + "; detach it there first to move it")


def _raw_structure_error(parent: str, children: list[Mapping[str, Any]]) -> str | None:
    """raw keeps one shape: files in blocks, blocks in month containers, and so on up."""
    names = [str(c.get("name", "")) for c in children if ext(c.get("scope")) == naming.RAW_SCOPE]
    try:
        naming.parse_block(parent)
        wrong = [n for n in names if naming.raw_name_error(n, "FILE")]
        if wrong:
            return f"raw block {parent} holds raw files only; {wrong[0]} is not a raw file name"
        return None
    except naming.NamingError:
        pass
    try:
        naming.parse_container(parent)
    except naming.NamingError:
        return f"raw:{parent} is not a block or container: expected {naming.BLOCK_HELP} or {naming.CONTAINER_HELP}"
    wrong = [n for n in names if naming.raw_name_error(n, "DATASET") and naming.raw_name_error(n, "CONTAINER")]
    if wrong:
        return f"raw container {parent} holds blocks and containers only; {wrong[0]} is neither"
    return None


def _attach_dids(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    attachment = kwargs.get("attachment") or {}
    problem = _attach_error(ctx, ext(kwargs.get("scope")), str(kwargs.get("name", "")),
                            attachment.get("dids") or [], attachment.get("rse_id"))
    return deny(problem) if problem else ALLOW


def _attach_dids_to_dids(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    for attachment in kwargs.get("attachments") or []:
        problem = _attach_error(ctx, ext(attachment.get("scope")), str(attachment.get("name", "")),
                                attachment.get("dids") or [], attachment.get("rse_id"))
        if problem:
            return deny(problem)
    return ALLOW


def _detach_dids(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    if ctx.privileged:
        return ALLOW
    scope = ext(kwargs.get("scope"))
    if scope == naming.RAW_SCOPE:
        return deny("raw blocks and containers are never rearranged: ask a Rucio admin")
    problem = write_error(ctx, scope)
    return deny(problem) if problem else ALLOW


def _set_status(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    scope, name = ext(kwargs.get("scope")), str(kwargs.get("name", ""))
    if kwargs.get("open") and not ctx.privileged:
        if scope == naming.RAW_SCOPE:
            return deny(f"{scope}:{name} is closed for good: a closed raw block is never reopened (its placement "
                        "was decided on its content); ask a Rucio admin")
        return deny("reopening a closed collection is for admins only (Rucio's rule)")
    return _scope_write(ctx, kwargs)


def _own_follows(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    account = account_or_none(kwargs.get("account"))
    if ctx.privileged or account == ctx.issuer:
        return ALLOW
    return deny(f"{ctx.issuer} may stop following DIDs for itself only, not for {account}")


def _scope_write(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    problem = write_error(ctx, ext(kwargs.get("scope")))
    return deny(problem) if problem else ALLOW


def _metadata(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    if ctx.privileged:
        return ALLOW
    scope, name = ext(kwargs.get("scope")), str(kwargs.get("name", ""))
    meta = kwargs.get("meta") if "meta" in kwargs else {kwargs.get("key"): kwargs.get("value")}
    for key, value in (meta or {}).items():
        key = str(key)
        if key.startswith(PLACEMENT_META_PREFIX) or key == SEAL_COLUMN:
            if not (ctx.role is Role.COORDINATOR or (ctx.role is Role.INGEST and scope == naming.RAW_SCOPE)):
                return deny(f"placement metadata ({key}) is recorded only by the ingest service and coordinators")
            recorded = ctx.facts.did_meta(scope, name, key)
            if recorded is not None and recorded != str(value):
                return deny(f"{scope}:{name}: placement decisions are final; {key} is already {recorded!r}")
            continue
        if scope == naming.RAW_SCOPE and key in EXPIRING_META_KEYS:
            return deny(f"raw DIDs never expire: {key} cannot be set on {scope}:{name}")
        problem = write_error(ctx, scope)
        if problem:
            return deny(problem)
    return ALLOW


# -- rules ----------------------------------------------------------------------------------------


def rule_add_error(ctx: Context, dids: Iterable[Mapping[str, Any]], rule: Mapping[str, Any]) -> str | None:
    """Why ctx may not add `rule` (Rucio's add_rule kwargs) on `dids`, or None."""
    if ctx.privileged:
        return None
    dids = list(dids)
    owner = account_or_none(rule.get("account")) or ctx.issuer
    if owner != ctx.issuer:
        owner_role = role_of(owner, ctx.facts.attributes(owner))
        if not (ctx.role is Role.COORDINATOR and owner_role in _SERVICE_ROLES):
            return (f"rules belong to the account that adds them: {ctx.issuer} cannot add a rule for {owner} "
                    "(coordinators may, for the ingest and production accounts)")
    expression = str(rule.get("rse_expression", ""))
    copies = int(rule.get("copies") or 1)
    if ctx.role is Role.INGEST:
        scopes = sorted({ext(d.get("scope")) for d in dids} - {naming.RAW_SCOPE})
        if scopes:
            return f"the ingest service adds rules only on raw, not on scope {', '.join(scopes)}"
        shapes = ctx.facts.policy_rule_shapes(naming.RAW_SCOPE)
        if shapes is None:
            return ("the server has no replication policy to check the ingest service's rules against: "
                    "set [policy] juno_replication_policy in the server's rucio.cfg")
        if (expression, copies) not in shapes:
            allowed = ", ".join(f"{e} x{c}" for e, c in sorted(shapes))
            return (f"the ingest service adds only the replication policy's rules on raw; {expression} x{copies} "
                    f"is not one of them ({allowed})")
        return None
    if ctx.role in (Role.PRODUCTION, Role.COORDINATOR):
        return None
    own = naming.own_scope(ctx.issuer)
    foreign = [f"{ext(d.get('scope'))}:{d.get('name')}" for d in dids if ext(d.get("scope")) != own]
    if foreign:
        return f"{ctx.issuer} adds rules only on DIDs of scope {own}; {foreign[0]} is not one of them"
    if rule.get("locked"):
        return "analysts' rules cannot be locked: add it unlocked"
    tape = [r.name for r in ctx.facts.resolve(expression) if r.is_tape]
    if tape:
        return f"{ctx.issuer} adds rules on disk RSEs only; {expression} includes tape RSE(s) {', '.join(tape)}"
    priority = rule.get("priority")
    if priority is not None and int(priority) > ANALYST_MAX_PRIORITY:
        return (f"analysts' rules have priority {ANALYST_MAX_PRIORITY} at most (the services' transfers go first); "
                f"not {priority}")
    activity = rule.get("activity")
    if activity is not None and str(activity) not in ANALYST_ACTIVITIES:
        return (f"analysts' rules use an analysis activity ({', '.join(sorted(ANALYST_ACTIVITIES))}), "
                f"not {activity!r}")
    source = rule.get("source_replica_expression")
    if source:
        tape = [r.name for r in ctx.facts.resolve(str(source)) if r.is_tape]
        if tape:
            return (f"analysts' rules read from disk only: source_replica_expression {source} includes tape "
                    f"RSE(s) {', '.join(tape)} (a recall is for coordinators to ask)")
    return None


def _add_rule(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    problem = rule_add_error(ctx, kwargs.get("dids") or [], kwargs)
    return deny(problem) if problem else ALLOW


def _existing_rule(ctx: Context, kwargs: Mapping[str, Any], verb: str) -> tuple[RuleFacts | None, Decision | None]:
    """Common part of changing a rule: who may touch which rule at all."""
    if ctx.privileged or ctx.role is Role.COORDINATOR:
        return None, ALLOW
    if ctx.role is Role.INGEST:
        return None, deny(f"the ingest service never {verb}s rules: ask a computing coordinator")
    rule = ctx.facts.rule(str(kwargs.get("rule_id")))
    if rule is None:
        return None, DEFER  # Rucio reports RuleNotFound
    if rule.account != ctx.issuer:
        return rule, deny(f"only the rule's owner ({rule.account}), coordinators and admins may {verb} rule "
                          f"{rule.rule_id}")
    return rule, None


def _owned_rule_not_raw(verb: str, done: str) -> Callable[[Context, Mapping[str, Any]], Decision]:
    """Delete or reduce a rule: its owner may, except on raw, which only coordinators and admins touch."""
    def check(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
        rule, decision = _existing_rule(ctx, kwargs, verb)
        if decision is not None:
            return decision
        assert rule is not None
        if rule.scope == naming.RAW_SCOPE:
            return deny(f"rules on raw ({rule.scope}:{rule.name}) are {done} only by coordinators and admins")
        return ALLOW
    return check


def _update_rule(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    rule, decision = _existing_rule(ctx, kwargs, "change")
    if decision is not None:
        return decision
    assert rule is not None
    options = set((kwargs.get("options") or {}).keys())
    if ctx.role is Role.PRODUCTION:
        if "account" in options:
            return deny("production cannot give its rules to another account: ask a coordinator")
        if rule.scope == naming.RAW_SCOPE and options - RAW_RULE_HARMLESS_OPTIONS:
            return deny(f"on rules on raw, production may change only {', '.join(sorted(RAW_RULE_HARMLESS_OPTIONS))}"
                        f"; not {', '.join(sorted(options - RAW_RULE_HARMLESS_OPTIONS))}")
        return ALLOW
    if options - ANALYST_RULE_OPTIONS:
        return deny(f"analysts may change only {' and '.join(sorted(ANALYST_RULE_OPTIONS))} of their rules; "
                    f"ask a coordinator for {', '.join(sorted(options - ANALYST_RULE_OPTIONS))}")
    return ALLOW


def _move_rule(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    rule, decision = _existing_rule(ctx, kwargs, "move")
    if decision is not None:
        return decision
    assert rule is not None
    if rule.scope == naming.RAW_SCOPE:
        return deny(f"rules on raw ({rule.scope}:{rule.name}) are moved only by coordinators and admins")
    override = kwargs.get("override") or {}
    if "account" in override or override.get("locked"):
        return deny("moving a rule cannot change its owner or lock it: ask a coordinator")
    if ctx.role is Role.ANALYST:
        expression = str(kwargs.get("rse_expression", ""))
        tape = [r.name for r in ctx.facts.resolve(expression) if r.is_tape]
        if tape:
            return deny(f"{ctx.issuer} keeps rules on disk RSEs only; {expression} includes tape RSE(s) "
                        f"{', '.join(tape)}")
    return ALLOW


def _add_did_or_dids(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    return _add_dids(ctx, kwargs) if "dids" in kwargs and "name" not in kwargs else _add_did(ctx, kwargs)


def _attach(ctx: Context, kwargs: Mapping[str, Any]) -> Decision:
    return _attach_dids_to_dids(ctx, kwargs) if "attachments" in kwargs else _attach_dids(ctx, kwargs)


# The named checks of the decision table (permission_table.CHECKS describes each for operators).
_CHECKS: dict[str, Callable[[Context, Mapping[str, Any]], Decision]] = {
    "did_add": _add_did_or_dids,
    "attach": _attach,
    "detach": _detach_dids,
    "set_status": _set_status,
    "scope_write": _scope_write,
    "own_follows": _own_follows,
    "metadata": _metadata,
    "replicas_add": _add_replicas,
    "rule_add": _add_rule,
    "rule_update": _update_rule,
    "rule_delete": _owned_rule_not_raw("delete", "deleted"),
    "rule_reduce": _owned_rule_not_raw("reduce", "reduced"),
    "rule_move": _move_rule,
}
