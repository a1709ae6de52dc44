"""`juno-dci`: where JUNO's raw data is, against where the replication policy wants it.

    juno-dci status                  terminal report; --json for machines; --watch 10 to follow it
    juno-dci serve --port 18500      the same as a web page on 127.0.0.1 (+ /api/status JSON)
    juno-dci report --html FILE      a static, self-contained HTML report (open it anywhere)

Runs next to the Rucio server: it reads Rucio's database read-only (RUCIO_CONFIG's [database]); on
the local grid: .venv/bin/juno-grid exec -- juno-dci status
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from juno_common.cli import CONTEXT, Output, shared_options
from juno_common.exit_codes import Exit, help_epilog
from juno_common.units import parse_duration
from juno_status.collect import Selection
from juno_status.db import StatusError

EXIT_CODES = help_epilog((Exit.OK, Exit.USAGE, Exit.INVALID, Exit.UNAVAILABLE, Exit.DIFFERS)) + """
  (status: 0 complete: every file the policy expects is present where it expects it, no rule pending;
   8 incomplete: files missing somewhere, or rules REPLICATING/STUCK/SUSPENDED, listed at the end;
   5 the Rucio database could not be read; 3 the policy file is invalid)
"""
shared = shared_options("juno-dci")


def _duration(_ctx: click.Context, param: click.Parameter, value: str) -> Any:
    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError as err:
        raise click.BadParameter(str(err), param=param) from None


def selection_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command shares: what the status looks at."""
    options = [
        click.option("--blocks", "blocks", default=None, metavar="GLOB",
                     help="Only raw blocks whose name matches (* and ?), e.g. 'block.JUNODAQ.global_trigger.*'. "
                          "Also restricts transfers to those blocks' files. Default: every raw block, "
                          "transfers of every scope."),
        click.option("--failed-since", default="24h", show_default=True, callback=_duration, metavar="DURATION",
                     help="Failed transfer attempts this recent (90m, 24h, 7d)."),
        click.option("--history", "history", default="7d", show_default=True, callback=_duration,
                     metavar="DURATION", help="Window of the bytes-replicated-over-time series."),
        click.option("--max-blocks", default=200, show_default=True, type=click.IntRange(0),
                     help="Per-block rows in --json and the page (incomplete blocks first)."),
        click.option("--require-verified", is_flag=True,
                     help="Count present files whose adler32 was not verified as incomplete."),
        click.option("--no-ingest", is_flag=True, help="Do not ask Kafka for the ingest lag."),
        click.option("--no-production", is_flag=True,
                     help="Leave out juno-prod's figures (its database: JUNO_PROD_DIR or JUNO_PROD_DB)."),
        click.option("--policy", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                      help="Replication policy to compare with (its sites.yaml beside it). Default: "
                           "$JUNO_REPLICATION_POLICY or etc/replication.yaml."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _selection(blocks: str | None, failed_since: Any, history: Any, max_blocks: int, require_verified: bool,
               no_ingest: bool, no_production: bool, policy: Path | None) -> Selection:
    try:
        return Selection(blocks=blocks or "block.*", transfers="blocks" if blocks else "all",
                         failed_since=failed_since, history=history, block_rows=max_blocks,
                         ingest=not no_ingest, production=not no_production,
                         require_verified=require_verified, policy=policy)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--blocks") from None


def _collect(selection: Selection) -> dict[str, Any]:
    from juno_status.collect import collect

    return collect(selection)


@click.group(context_settings=CONTEXT, epilog=help_epilog())
def cli() -> None:
    """Where JUNO's raw data is, against where the replication policy (etc/replication.yaml) wants it.

    Reads Rucio's database read-only, so it runs next to the Rucio server; on the local grid prefix
    every command with `.venv/bin/juno-grid exec --`.
    """


@cli.command(epilog=EXIT_CODES)
@selection_options
@click.option("--watch", type=click.FloatRange(min=1), default=None, metavar="SECONDS",
              help="Redraw every SECONDS until Ctrl-C (with --json: one JSON object per line).")
@shared
def status(out: Output, watch: float | None, **options: Any) -> int:
    """Per site: files and bytes expected by the policy vs present vs verified; rules by state;
    transfers in flight and failed with their reasons; ingest lag; incomplete blocks.

    \b
    expected  files of the selected raw blocks at each RSE the policy wants them at now
              (IN2P3: blocks whose recorded placement says placed; undecided blocks: pending)
    present   of those, files with an AVAILABLE replica there
    verified  of those, files whose adler32 was checked: a transfer into that RSE reached DONE
              (checked at the destination), or at the landing RSE (IHEP-EOS) SPADE's adler32
    """
    selection = _selection(**options)
    code = Exit.OK
    try:
        while True:
            try:
                result = _collect(selection)
            except StatusError as err:
                if watch is None:
                    raise
                click.echo(f"juno-dci status: {err} (retrying in {watch:g} s)", err=True)
                time.sleep(watch)
                continue
            code = int(result["exit_code"])
            if out.as_json:
                click.echo(json.dumps(result, indent=None if watch else 1, sort_keys=False))
            else:
                from juno_status.text import render

                if watch and sys.stdout.isatty():
                    click.echo("\033[H\033[2J", nl=False)  # clear the screen, cursor home
                click.echo(render(result))
                if watch:
                    click.echo(f"\n(every {watch:g} s; Ctrl-C to stop)")
            if watch is None:
                break
            time.sleep(watch)
    except KeyboardInterrupt:
        pass
    return code


@cli.command()
@selection_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Loopback address to listen on (the page is never served beyond this machine).")
@click.option("--port", default=18500, show_default=True, type=click.IntRange(1, 65535))
@click.option("--refresh", default=10.0, show_default=True, type=click.FloatRange(min=1),
              help="Seconds between page refreshes; the status is collected at most this often.")
@shared
def serve(out: Output, host: str, port: int, refresh: float, **options: Any) -> None:
    """Serve the status page on http://HOST:PORT/ (JSON: /api/status) until SIGTERM or Ctrl-C.

    The page is one self-contained HTML file (inline CSS, JS and SVG; it fetches nothing but
    /api/status from this server). Exit 0 after a clean stop, 2 if the address or port cannot be used.
    """
    from juno_status.server import serve_forever

    serve_forever(host, port, _selection(**options), refresh, log=out.note)


@cli.command(epilog=EXIT_CODES)
@selection_options
@click.option("--html", "html_file", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="Write the status page, with the data inside it, to this file.")
@click.option("--json-file", "json_file", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Write the status JSON to this file.")
@shared
def report(out: Output, html_file: Path | None, json_file: Path | None, **options: Any) -> int:
    """Write a static report: the status page as one HTML file (no server, no network: open it in any
    browser, e.g. after copying it out of the grid's namespace) and/or the JSON."""
    if html_file is None and json_file is None:
        raise click.UsageError("say where to write: --html FILE and/or --json-file FILE")
    from juno_status.page import render_page

    result = _collect(_selection(**options))
    written: list[str] = []
    try:
        if html_file is not None:
            html_file.write_text(render_page(result, live=False), encoding="utf-8")
            written.append(str(html_file))
            out.say(f"wrote {html_file} ({'complete' if result['complete'] else 'incomplete'})")
        if json_file is not None:
            json_file.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
            written.append(str(json_file))
            out.say(f"wrote {json_file}")
    except OSError as err:
        raise click.FileError(str(err.filename), err.strerror) from None
    if out.as_json:
        out.json({"written": written, "complete": result["complete"], "exit_code": result["exit_code"]})
    return int(result["exit_code"])


def main() -> None:
    cli(prog_name="juno-dci")


if __name__ == "__main__":
    main()
