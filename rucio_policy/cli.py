"""`juno-policy`: the replication policy and the site topology as code, against Rucio.

Every command validates its files first: nothing is sent to Rucio when the policy (or sites file)
is invalid. Options, output and exit codes follow juno_common.cli (the table is in README and --help).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from juno_common.cli import CONTEXT, Output
from juno_common.cli import shared_options as _shared
from juno_common.errors import Refused, Stopped, from_rucio
from juno_common.exit_codes import Exit, help_epilog
from juno_common.yamlfile import Issue
from rucio_policy.replication import Policy, validate_file
from rucio_policy.rse_catalog import CatalogInvalid, RseCatalog, load_catalog

F = TypeVar("F", bound=Callable[..., Any])
_MAX_LINES = 50  # actions printed without -v
shared_options = _shared("juno-policy")


def _policy_option(func: F) -> F:
    func = click.option("--sites", "sites_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="Site topology with the known RSEs [default: sites.yaml next to the policy].")(func)
    return click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path),
                        envvar="JUNO_REPLICATION_POLICY", show_envvar=True,
                        help="The replication policy [default: etc/replication.yaml].")(func)


def _selection_options(func: F) -> F:
    func = click.option("--name", "name_filter", metavar="GLOB",
                        help="Only DIDs whose name matches, e.g. 'block.JUNODAQ.global_trigger.2025*'.")(func)
    return click.option("--scope", "scopes", multiple=True, metavar="SCOPE",
                        help="Only this scope (repeat for several; globs allowed) [default: every scope "
                             "the policy covers].")(func)


@click.group(context_settings=CONTEXT, epilog=help_epilog())
def main() -> None:
    """JUNO's replication policy and site topology as code.

    \b
    The replication policy (etc/replication.yaml) says which copies each kind of
    data gets; the ingester applies it to every new block. This tool checks the
    file and keeps Rucio in line with it:
      juno-policy validate                 check the file (every problem as FILE:LINE)
      juno-policy plan                     what differs between the policy and Rucio
      juno-policy apply                    add missing rules, fix deviating ones
      juno-policy apply --prune            ... and delete rules the policy does not want
      juno-policy explain raw:block.JUNODAQ.global_trigger.20251009
                                           why a DID has (or lacks) its rules
      juno-policy sites plan|apply         make Rucio's RSEs, accounts... match etc/sites.yaml

    Rucio is reached as the rucio CLI does (RUCIO_CONFIG, RUCIO_ACCOUNT); plan and
    explain only read, apply needs a computing coordinator or root. On the local
    grid: .venv/bin/juno-grid exec -- juno-policy plan
    """


# -- validate -------------------------------------------------------------------------------------


def _sites_for(policy_file: Path, sites_file: Path | None) -> Path:
    if sites_file is not None:
        return sites_file
    candidate = policy_file.parent / "sites.yaml"
    if candidate.is_file():
        return candidate
    raise click.UsageError(f"no sites.yaml next to {policy_file}: give the site topology with --sites PATH")


def _shown(path: Path) -> str:
    """A path as people typed it: relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _report(out: Output, file: str, issues: list[Issue], summary: str) -> None:
    if out.as_json:
        out.json({"file": file, "valid": not issues, "errors": [i.as_dict() for i in issues]})
        return
    for issue in issues:
        click.echo(str(issue))  # the problems are the result: shown even with --quiet
    out.note(summary)


def _load(out: Output, policy_file: Path | None, sites_file: Path | None) -> tuple[Policy, Path]:
    """The policy, validated against its sites file; exits 1 listing every problem if it is not valid."""
    from rucio_policy.engine import policy_path

    path = policy_file or policy_path()
    if not path.is_file():
        raise click.UsageError(f"no replication policy at {path}: give it with --policy PATH "
                               "(or JUNO_REPLICATION_POLICY)")
    sites = _sites_for(path, sites_file)
    try:
        catalog: RseCatalog = load_catalog(sites, _shown(sites))
    except CatalogInvalid as err:
        _report(out, _shown(sites), err.issues, f"{_shown(sites)}: {len(err.issues)} problem(s); cannot check {path} "
                                             "without its RSEs; nothing sent to Rucio")
        sys.exit(Exit.INVALID)
    policy, issues = validate_file(path, catalog, _shown(path))
    if issues or policy is None:
        _report(out, _shown(path), issues, f"{_shown(path)}: {len(issues)} problem(s), nothing sent to Rucio")
        sys.exit(Exit.INVALID)
    return policy, sites


@main.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--sites", "sites_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Site topology with the known RSEs [default: sites.yaml next to FILE].")
@shared_options
def validate(file: Path | None, sites_file: Path | None, out: Output) -> None:
    """Check a replication policy file; list every problem as FILE:LINE: what (how to fix).

    FILE defaults to --policy's default (JUNO_REPLICATION_POLICY or etc/replication.yaml).
    RSE names and expressions are checked against the sites file. Nothing is sent to Rucio.
    """
    policy, sites = _load(out, file, sites_file)
    rules = sum(len(c.rules) for c in policy.classes)
    _report(out, policy.source, [], f"{policy.source}: valid ({len(policy.classes)} classes, {rules} rules, "
                                    f"RSEs from {_shown(sites)})")


# -- plan / apply / explain -----------------------------------------------------------------------


def _client() -> Any:
    from rucio.client import Client

    return Client()


@contextmanager
def _progress(out: Output, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for long work (only on a terminal: stdout stays clean for pipes)."""
    if not out.interactive:
        yield None
        return
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.length = max(total, 1)
        bar.update(done - bar.pos)

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _print_actions(out: Output, actions: list[Any]) -> None:
    limit = None if out.verbose else _MAX_LINES
    for action in actions[:limit]:
        out.say(str(action))
    if limit is not None and len(actions) > limit:
        out.say(f"... and {len(actions) - limit} more (-v lists them all, --json gives them to programs)")


def _plan(out: Output, policy: Policy, scopes: tuple[str, ...], name_filter: str | None) -> tuple[Any, Any]:
    from rucio_policy import engine

    client = _client()
    if out.interactive:
        click.echo(f"reading Rucio as {client.account} ...", err=True)
    with _progress(out, "scopes") as progress:
        result = engine.plan(client, policy, scope_filter=scopes or None, name_filter=name_filter, progress=progress)
    return client, result


@main.command()
@_policy_option
@_selection_options
@shared_options
def plan(policy_file: Path | None, sites_file: Path | None, scopes: tuple[str, ...], name_filter: str | None,
         out: Output) -> None:
    """Show what differs between the replication policy and Rucio's rules.

    Over every block and container the policy covers: missing rules (+), rules
    that deviate from the policy (~: copies, RSE expression, lifetime, activity,
    priority, lock, owner), closed blocks whose placement is still to decide (?),
    and rules the policy does not want (-). Only reads Rucio. Exit 0 when Rucio
    matches, 3 when apply would change something.

    \b
    Example:
      juno-policy plan --name 'block.JUNODAQ.global_trigger.202510*'
    """
    policy, _ = _load(out, policy_file, sites_file)
    _, result = _plan(out, policy, scopes, name_filter)
    if out.as_json:
        out.json(result.as_dict())
    else:
        _print_actions(out, result.actions)
        for problem in result.problems:
            click.echo(f"problem: {problem}", err=True)
        out.say(result.summary())
    return Exit.DIFFERS if result.actions else Exit.OK


def _confirm_prune(out: Output, deletions: list[Any], yes: bool) -> None:
    if not deletions or yes:
        return
    if out.as_json or not sys.stdin.isatty():
        raise Stopped(f"--prune would delete {len(deletions)} rule(s) and there is no terminal to confirm it: "
                      "check them with `juno-policy plan`, then add --yes. Nothing was changed.")
    click.echo(f"--prune deletes these {len(deletions)} rule(s) (their replicas may then be deleted):", err=True)
    for action in deletions[: None if out.verbose else _MAX_LINES]:
        click.echo(f"  {action}", err=True)
    if not click.confirm("Delete them?", default=False, err=True):
        raise Stopped("deletions not confirmed: nothing was changed")


@main.command()
@_policy_option
@_selection_options
@click.option("--prune", is_flag=True, help="Also delete the rules the policy does not want (asks first).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting (for cron, with --prune).")
@click.option("--dry-run", is_flag=True, help="Send nothing; print exactly what would be sent.")
@shared_options
def apply(policy_file: Path | None, sites_file: Path | None, scopes: tuple[str, ...], name_filter: str | None,
          prune: bool, yes: bool, dry_run: bool, out: Output) -> None:
    """Make Rucio's rules match the replication policy.

    Decides the placement of closed blocks that have none yet (recorded on the
    block, never changed afterwards), adds missing rules and fixes deviating ones,
    exactly as the ingester does. Rules the policy does not want are only listed,
    unless --prune: then they are deleted after a confirmation (--yes to skip it).
    Idempotent: a second run changes nothing. Safe from cron:

    \b
      juno-policy apply --quiet || mail -s "juno-policy apply: exit $?" ...

    Needs a computing coordinator or root: the rules belong to the data's service
    account (raw: juno_ingest; rtraw, esd, mc: juno_prod).
    """
    from rucio_policy import engine

    policy, _ = _load(out, policy_file, sites_file)
    client, result_plan = _plan(out, policy, scopes, name_filter)
    if prune and not dry_run:
        _confirm_prune(out, result_plan.deletions, yes)
    with _progress(out, "applying") as progress:
        result = engine.apply(client, result_plan, prune=prune, dry_run=dry_run, progress=progress, policy=policy)
    if out.as_json:
        out.json({"plan": {k: v for k, v in result_plan.as_dict().items() if k != "actions"},
                  **result.as_dict()})
    else:
        if dry_run:
            _print_actions(out, result.would)
        elif out.verbose:
            _print_actions(out, result_plan.actions)
        for action, error in result.failed:
            click.echo(f"FAILED {action}\n  {error}", err=True)
        out.say(result.summary())
    if result.failed:
        if all(error.startswith("AccessDenied") for _, error in result.failed):
            click.echo("juno-policy: Rucio refused every failed change: run it as a computing coordinator or root",
                       err=True)
            return Exit.REFUSED
        return Exit.FAILED
    return Exit.DIFFERS if dry_run and result.would else Exit.OK


@main.command()
@click.argument("did")
@_policy_option
@shared_options
def explain(did: str, policy_file: Path | None, sites_file: Path | None, out: Output) -> None:
    """Why DID has (or lacks) its rules.

    The data class it matched, the rules it should have and the ones Rucio has
    (with their state), why IN2P3 holds it or not (the placement recorded on the
    block), other accounts' rules, and its replicas per RSE and state.

    \b
    Example:
      juno-policy explain raw:block.JUNODAQ.global_trigger.20251009
      juno-policy explain block.JUNODAQ.global_trigger.20251009     (scope from the name)
    """
    from rucio_policy import engine

    policy, _ = _load(out, policy_file, sites_file)
    result = engine.explain(_client(), did, policy)
    if out.as_json:
        out.json(result.as_dict())
    else:
        out.say(result.text())


# -- sites ----------------------------------------------------------------------------------------


@main.group()
def sites() -> None:
    """Make Rucio's RSEs, attributes, protocols, distances, accounts and limits match etc/sites.yaml.

    Nothing is ever deleted: what Rucio has and the file does not name is listed as
    extra (?), for a person to decide.
    """


def _sites_options(func: F) -> F:
    func = click.option("--env", "environment", type=click.Choice(["local", "production"]), default="local",
                        show_default=True, help="Which protocols and accounts of the file to use.")(func)
    return click.option("--sites", "sites_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="The topology file [default: etc/sites.yaml].")(func)


def _sites_plan(sites_file: Path | None, environment: str) -> tuple[Any, list[Any]]:
    from rucio_policy import sites_sync, topology

    topo = topology.load(sites_file or topology.DEFAULT_SITES)  # TopologyError: exit 3, nothing sent
    client = _client()
    return client, sites_sync.plan(client, topo, environment)


@sites.command(name="plan")
@_sites_options
@shared_options
def sites_plan(sites_file: Path | None, environment: str, out: Output) -> None:
    """Show what differs between etc/sites.yaml and Rucio. Exit 3 if apply would change something."""
    _, changes = _sites_plan(sites_file, environment)
    todo = [c for c in changes if c.kind != "extra"]
    if out.as_json:
        out.json({"environment": environment, "changes": [c.as_dict() for c in changes]})
    else:
        for change in changes:
            out.say(str(change))
        out.say(f"{len(todo)} change(s) to apply, {len(changes) - len(todo)} extra in Rucio (never deleted)")
    return Exit.DIFFERS if todo else Exit.OK


@sites.command(name="apply")
@_sites_options
@click.option("--dry-run", is_flag=True, help="Send nothing; print what would be sent.")
@shared_options
def sites_apply(sites_file: Path | None, environment: str, dry_run: bool, out: Output) -> None:
    """Make Rucio match etc/sites.yaml (adds and updates only; needs root)."""
    from rucio_policy import sites_sync

    _, changes = _sites_plan(sites_file, environment)
    todo = [c for c in changes if c.kind != "extra"]
    if dry_run:
        if out.as_json:
            out.json({"environment": environment, "dry_run": True, "would": [c.as_dict() for c in todo]})
        else:
            for change in todo:
                out.say(str(change))
            out.say(f"dry run: would apply {len(todo)} change(s); nothing sent")
        return Exit.DIFFERS if todo else Exit.OK
    done: list[Any] = []
    try:
        sites_sync.apply(changes, on_change=done.append)
    except RuntimeError as err:
        cause = err.__cause__ if isinstance(err.__cause__, Exception) else err
        kind = type(from_rucio(cause) or Refused(""))
        raise kind(f"{err}; {len(done)} change(s) applied before it") from None
    if out.as_json:
        out.json({"environment": environment, "applied": [c.as_dict() for c in done]})
    else:
        for change in done:
            out.say(str(change))
        out.say(f"applied {len(done)} change(s)" if done else "no change: Rucio already matches the sites file")


if __name__ == "__main__":  # pragma: no cover
    main()
