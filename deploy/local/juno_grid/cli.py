"""`juno-grid`: the single-machine JUNO grid (PostgreSQL, Rucio + daemons, XRootD, transfers, Kafka, HTCondor)."""

from __future__ import annotations

import json
import os
import sys

import click

from . import grid, procs
from .config import GridConfig, load


def _cfg() -> GridConfig:
    if os.geteuid() != 0:
        raise click.ClickException("juno-grid needs root: it makes a network namespace and runs PostgreSQL as postgres")
    return load()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Run the local JUNO grid: every service on 127.0.0.1 inside a private network namespace.

    \b
      juno-grid up                 start everything (idempotent)
      juno-grid status             one line per component (each Rucio daemon process too); exit 1 if any is down
      juno-grid exec -- rucio list-rses
                                   run a command inside the grid (RUCIO_CONFIG etc. set)
      juno-grid down               stop exactly what `up` started

    State lives in .grid/ of the checkout (JUNO_GRID_DIR to move it).
    """


@main.command()
@click.option("--daemons/--no-daemons", default=True, show_default=True,
              help="Run each Rucio daemon as its own process (daemon_set.py); a daemon that died is started again. "
                   "Without, tests step the daemons in-process.")
@click.option("--condor/--no-condor", default=True, show_default=True,
              help="Start the HTCondor mini-pool (builds its chroot on first use, about a minute).")
def up(daemons: bool, condor: bool) -> None:
    """Start the grid (or whatever part of it is not running)."""
    cfg = _cfg()
    try:
        grid.up(cfg, daemons=daemons, condor_pool=condor, log=lambda m: click.echo(m, err=True))
    except procs.GridError as exc:
        raise click.ClickException(str(exc)) from exc
    _print_status(cfg, as_json=False)


@main.command(name="build-chroot")
def build_chroot() -> None:
    """Build the HTCondor chroot (Debian trixie minicondor) once per machine; needs the network."""
    from . import condor

    cfg = _cfg()
    try:
        condor.build_chroot(cfg.chroot, log=lambda m: click.echo(m, err=True))
    except procs.GridError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"chroot ready: {cfg.chroot}")


@main.command()
def down() -> None:
    """Stop every process `up` started (by recorded PID) and remove the network namespace."""
    cfg = _cfg()
    try:
        grid.down(cfg, log=lambda m: click.echo(m, err=True))
    except procs.GridError as exc:
        raise click.ClickException(str(exc)) from exc


def _print_status(cfg: GridConfig, as_json: bool) -> bool:
    rows = grid.status(cfg)
    healthy = all(r.ok for r in rows)
    if as_json:
        click.echo(json.dumps({"ok": healthy, "components": [r.as_dict() for r in rows]}, indent=2))
        return healthy
    color = sys.stdout.isatty()
    for r in rows:
        mark = click.style("up  ", fg="green") if r.ok and color else "up  " if r.ok else (
            click.style("DOWN", fg="red") if color else "DOWN")
        click.echo(f"{mark}  {r.name:<26} {r.address:<45} pid {r.pid or '-'}")
    return healthy


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Each component, its address, PID and health. Exit 1 if any is down."""
    if not _print_status(_cfg(), as_json):
        sys.exit(1)


@main.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(command: tuple[str, ...]) -> None:
    """Run COMMAND inside the grid's network namespace with the grid's environment.

    Example: juno-grid exec -- rucio list-rses
    """
    cfg = _cfg()
    grid.enter(cfg)
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
    cfg = _cfg()
    grid.enter(cfg)
    from . import daemons as d

    for _ in range(cycles):
        click.echo(json.dumps(d.run_once()))
