"""`juno-grid`: the single-machine JUNO grid (PostgreSQL, Rucio + daemons, XRootD, transfers, Kafka, HTCondor)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from juno_common.cli import CONTEXT, Output, fail, shared_options
from juno_common.errors import Refused, Unavailable
from juno_common.exit_codes import Exit, help_epilog

from . import grid, netns
from .config import GridConfig, load

shared = shared_options("juno-grid")


def _cfg() -> GridConfig:
    if os.geteuid() != 0:
        raise Refused("juno-grid needs root: it makes a network namespace and runs PostgreSQL as postgres")
    return load()


def _enter_up() -> GridConfig:
    """Join the running grid's namespace; a grid that is not up is an error (nothing is created)."""
    cfg = _cfg()
    if not netns.exists(cfg.netns):
        raise Unavailable(f"the grid is not up (no network namespace {cfg.netns!r}): run juno-grid up first")
    grid.enter(cfg)
    return cfg


def _enter_up_or_fail() -> GridConfig:
    """_enter_up for the commands without --json (exec, daemons): the error line and its exit code."""
    try:
        return _enter_up()
    except (Refused, Unavailable) as err:
        fail(Output("juno-grid", False, 0, False), str(err), err.exit_code, err.label)


@click.group(context_settings=CONTEXT, epilog=help_epilog())
def main() -> None:
    """Run the local JUNO grid: every service on 127.0.0.1 inside a private network namespace.

    \b
      juno-grid up                 start everything (idempotent)
      juno-grid status             one line per component (each Rucio daemon process too); exit 8 if any is down
      juno-grid exec -- rucio list-rses
                                   run a command inside the grid (RUCIO_CONFIG etc. set)
      juno-grid down               stop exactly what `up` started
      juno-grid client-config      a rucio client config per local account (.grid/rucio/<account>.cfg)
      juno-grid tpc davs           Rucio's transfers over HTTP-TPC (davs) instead of XRootD (root)

    State lives in .grid/ of the checkout (JUNO_GRID_DIR to move it).
    """


@main.command()
@click.option("--daemons/--no-daemons", default=True, show_default=True,
              help="Run each Rucio daemon as its own process (daemon_set.py); a daemon that died is started again. "
                   "Without, tests step the daemons in-process.")
@click.option("--condor/--no-condor", default=True, show_default=True,
              help="Start the HTCondor mini-pool (builds its chroot on first use, about a minute).")
@shared
def up(out: Output, daemons: bool, condor: bool) -> int:
    """Start the grid (or whatever part of it is not running). Exit 5 if a component fails to start."""
    cfg = _cfg()
    grid.up(cfg, daemons=daemons, condor_pool=condor, log=out.note)
    return Exit.OK if _print_status(cfg, out) else Exit.DIFFERS


@main.command(name="build-chroot")
@shared
def build_chroot(out: Output) -> None:
    """Build the HTCondor chroot (Debian trixie minicondor) once per machine; needs the network."""
    from . import condor

    cfg = _cfg()
    condor.build_chroot(cfg.chroot, log=out.note)
    out.say(f"chroot ready: {cfg.chroot}")


@main.command()
@shared
def down(out: Output) -> None:
    """Stop every process `up` started (by recorded PID) and remove the network namespace."""
    grid.down(_cfg(), log=out.note)


def _print_status(cfg: GridConfig, out: Output) -> bool:
    rows = grid.status(cfg)
    healthy = all(r.ok for r in rows)
    if out.as_json:
        out.json({"ok": healthy, "components": [r.as_dict() for r in rows]})
        return healthy
    if out.quiet:
        return healthy
    color = sys.stdout.isatty()
    for r in rows:
        mark = click.style("up  ", fg="green") if r.ok and color else "up  " if r.ok else (
            click.style("DOWN", fg="red") if color else "DOWN")
        click.echo(f"{mark}  {r.name:<26} {r.address:<45} pid {r.pid or '-'}")
    return healthy


@main.command()
@shared
def status(out: Output) -> int:
    """Each component, its address, PID and health. Exit 8 if any is down."""
    return Exit.OK if _print_status(_cfg(), out) else Exit.DIFFERS


@main.command(name="client-config")
@click.argument("accounts", nargs=-1)
@shared
def client_config(out: Output, accounts: tuple[str, ...]) -> None:
    """Write a rucio client config per local account, next to the grid's rucio.cfg (`up` does it too).

    Without ACCOUNTS: every local account of etc/sites.yaml. Then act as one with the
    stock rucio CLI, inside the grid:

    \b
      juno-grid client-config
      juno-grid exec -- rucio --config .grid/rucio/analyst1.cfg whoami
    """
    from rucio_policy import topology

    from .accounts import write_account_config

    cfg = load()
    known = [a.name for a in topology.load().accounts_for("local")]
    unknown = [a for a in accounts if a not in known]
    if unknown:
        raise click.UsageError(f"unknown account(s) {', '.join(unknown)}: the local grid has {', '.join(known)}")
    paths = [write_account_config(cfg.rucio_cfg, account) for account in (accounts or tuple(known))]
    shown = [os.path.relpath(p) if Path(p).resolve().is_relative_to(Path.cwd().resolve()) else str(p) for p in paths]
    if out.as_json:
        out.json({"written": shown})
    else:
        for path in shown:
            out.say(path)


@main.command()
@click.argument("protocol", required=False, type=click.Choice(["root", "davs"]))
@click.option("--dry-run", is_flag=True, help="Show the priority changes, change nothing.")
@shared
def tpc(out: Output, protocol: str | None, dry_run: bool) -> None:
    """Show or choose the protocol Rucio's transfers use between the grid's storages: root or davs.

    Rucio takes, for each transfer, the protocols the two RSEs rank first for third-party copy
    (`[conveyor] scheme = root,davs`, as production does); this re-ranks every RSE's root and davs
    protocols. etc/sites.yaml registers root first; `juno-grid up` leaves a choice made here as it is.

    \b
      juno-grid tpc                show what each RSE receives transfers over
      juno-grid tpc davs           HTTP third-party copy (tape recalls stay on root: see juno_grid/tpc.py)
      juno-grid tpc root --dry-run
    """
    _enter_up()  # before the imports: Rucio's client reads RUCIO_CONFIG when imported
    from rucio.client import Client

    from rucio_policy import topology

    from . import tpc as tpc_mod

    topo = topology.load()
    rses = [r.name for r in topo.rses]
    client = Client()
    if protocol is None:
        now = tpc_mod.current(client, rses)
        if out.as_json:
            out.json({"transfers_over": now})
        else:
            for rse, scheme in now.items():
                out.say(f"{rse:<12} {scheme or '-'}")
        return
    todo = tpc_mod.changes(client, rses, {r.name for r in topo.rses if r.is_tape}, protocol)
    if not dry_run:
        tpc_mod.apply(client, todo)
    if out.as_json:
        out.json({"protocol": protocol, "dry_run": dry_run, "changes": [r.as_dict() for r in todo]})
        return
    for r in todo:
        out.say(f"{'would set' if dry_run else 'set'} {r.rse} {r.scheme}: third_party_copy_read={r.read} "
                f"third_party_copy_write={r.write}")
    if not todo:
        out.say(f"Rucio already transfers over {protocol}")


@main.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(command: tuple[str, ...]) -> None:
    """Run COMMAND inside the grid's network namespace with the grid's environment.

    Example: juno-grid exec -- rucio list-rses
    """
    _enter_up_or_fail()
    try:
        os.execvp(command[0], list(command))
    except FileNotFoundError as exc:
        raise click.ClickException(f"{command[0]}: command not found") from exc


@main.command()
def env() -> None:
    """Print the environment variables the grid's clients need (shell syntax)."""
    for key, value in grid.client_env(_cfg()).items():
        click.echo(f"export {key}={value}")


@main.command()
@click.option("--cycles", default=1, show_default=True, help="How many cycles of all daemons.")
def daemons(cycles: int) -> None:
    """Run Rucio's replication daemons once, in this process (what tests do)."""
    _enter_up_or_fail()
    from . import daemons as d

    for _ in range(cycles):
        click.echo(json.dumps(d.run_once()))
