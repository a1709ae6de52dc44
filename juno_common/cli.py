"""The conventions every juno-dci command follows (as globus-cli does):

- `--json` prints the result as JSON on stdout (errors as {"error", "message", "exit_code"}); text is the
  default even in a pipe, so what README shows is what a script gets; JUNO_OUTPUT=json makes JSON the
  default for a whole environment (a service, a cron table). juno-ingest, a service whose stdout goes to
  a collector, defaults to JSON when stdout is not a terminal.
- `-v` says more (with an unexpected error: its traceback), `-q` prints only errors.
- Results on stdout, progress and errors on stderr, prefixed with the tool's name.
- One handler turns every error into its line and its exit code (exit_codes.Exit): JunoError subclasses
  carry theirs, Rucio's exceptions are translated by errors.from_rucio, the rest is a bug (exit 1).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import click

from juno_common.errors import JunoError, from_rucio
from juno_common.exit_codes import Exit
from juno_common.logs import mute_rucio_client

F = TypeVar("F", bound=Callable[..., Any])
OUTPUT_ENV = "JUNO_OUTPUT"


def json_default(auto: bool = False) -> bool:
    """Whether output is JSON when no --json/--text is given."""
    chosen = os.environ.get(OUTPUT_ENV, "").strip().lower()
    if chosen in ("json", "text"):
        return chosen == "json"
    return auto and not sys.stdout.isatty()


@dataclass
class Output:
    """The shared options of one command run: output format and verbosity."""

    tool: str = "juno"
    as_json: bool = False
    verbose: int = 0
    quiet: bool = False

    def say(self, text: str = "") -> None:
        """Results for people (stdout); nothing in --json or --quiet mode."""
        if not self.as_json and not self.quiet:
            click.echo(text)

    def note(self, text: str) -> None:
        """Side remarks (stderr), so stdout stays clean for pipes."""
        if not self.quiet:
            click.echo(text, err=True)

    def json(self, data: Any, indent: int | None = 2) -> None:
        click.echo(json.dumps(data, indent=indent, default=str))

    def emit(self, data: Any, text: str | Callable[[], str]) -> None:
        """The result, as JSON or as text."""
        if self.as_json:
            click.echo(json.dumps(data, default=str))
        elif not self.quiet or self.verbose:
            click.echo(text() if callable(text) else text)

    @property
    def interactive(self) -> bool:
        return not self.quiet and not self.as_json and sys.stderr.isatty()

    @property
    def log_level(self) -> str:
        if self.quiet:
            return "WARNING"
        return "DEBUG" if self.verbose else "INFO"


Extra = Callable[[BaseException], "tuple[Exit, str] | None"]  # a tool's own error classes → (code, label)


def classify(err: BaseException, extra: Extra | None = None) -> tuple[Exit, str, str]:
    """(exit code, label, message) of an error: the one mapping every command uses."""
    own = extra(err) if extra is not None and not isinstance(err, JunoError) else None
    if own is not None:
        return own[0], own[1], str(err) or type(err).__name__
    translated = err if isinstance(err, JunoError) else from_rucio(err)
    if translated is not None:
        return translated.exit_code, translated.label, str(translated)
    if type(err).__module__.startswith("rucio."):
        return Exit.UNAVAILABLE, "Rucio error", f"{type(err).__name__}: {err}"
    if isinstance(err, OSError):  # storage, a file, a socket: what could not be read or written
        return Exit.UNAVAILABLE, "I/O error", str(err) or type(err).__name__
    return Exit.ERROR, "unexpected error", str(err) or type(err).__name__


def fail(out: Output, message: str, code: int, label: str = "") -> NoReturn:
    """Print the error (stderr; with --json also as JSON on stdout) and exit with its code."""
    prefix = f"{out.tool}: " + (f"{label}: " if label and not message.startswith(label) else "")
    click.echo(prefix + message, err=True)
    if out.as_json:
        click.echo(json.dumps({"error": label or "error", "message": message, "exit_code": int(code)}))
    sys.exit(int(code))


def handle(out: Output, err: BaseException, extra: Extra | None = None) -> NoReturn:
    code, label, message = classify(err, extra)
    if code == Exit.ERROR and not out.verbose:
        message += " (-v shows where)"
    if out.verbose:
        traceback.print_exception(err)
    fail(out, message, code, label if code != Exit.INVALID else "")


def shared_options(tool: str, *, auto_json: bool = False, extra: Extra | None = None) -> Callable[[F], F]:
    """--json/--text, -v, -q on a command, gathered into its `out` argument; and the one error handler
    (`extra` maps a tool's own error classes that are not JunoErrors)."""

    def decorate(func: F) -> F:
        @click.option("--json/--text", "as_json", default=None,
                      help="Output format [default: text; JSON " + ("when stdout is not a terminal or " if auto_json
                                                                     else "if ") + f"{OUTPUT_ENV}=json]."
                      " Errors with --json: {\"error\", \"message\", \"exit_code\"}.")
        @click.option("-v", "--verbose", count=True, help="Say more (tracebacks of unexpected errors).")
        @click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors; the exit code tells the outcome.")
        @functools.wraps(func)
        def wrapper(*args: Any, as_json: bool | None, verbose: int, quiet: bool, **kwargs: Any) -> Any:
            out = Output(tool, json_default(auto_json) if as_json is None else as_json, verbose, quiet)
            click.get_current_context().meta["juno_output"] = out
            if not verbose:
                mute_rucio_client()
            try:
                code = func(*args, out=out, **kwargs)
            except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
                raise
            except KeyboardInterrupt:
                raise SystemExit(130) from None
            except Exception as err:  # noqa: BLE001 - the one place errors become exit codes
                handle(out, err, extra)
            if code is not None:
                sys.exit(int(code))
            return None

        return wrapper  # type: ignore[return-value]

    return decorate


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
