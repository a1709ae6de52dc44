"""The error classes every tool raises, and the one translation of Rucio's exceptions into them.

Each class carries its exit code (exit_codes.Exit). Rucio's client raises its server's classes
(rucio.common.exception) and, when the server does not answer, requests' ConnectionError; `from_rucio`
sorts both into:

  RucioUnavailable  server down, timeouts, 5xx, database trouble: retry later (exit 5)
  RucioRefused      permission, credentials, unknown RSE/scope/account: retrying will not help (exit 4)
  RucioNotFound     the DID does not exist (exit 6)

and returns None for Rucio's other, specific answers (DuplicateRule, FileAlreadyExists, ...), which the
caller decides on (often: already done).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from juno_common.exit_codes import Exit


class JunoError(Exception):
    """An error for the person at the terminal: what went wrong, where, what to do; and its exit code."""

    exit_code: ClassVar[Exit] = Exit.ERROR
    label: ClassVar[str] = "error"


class UsageProblem(JunoError):
    exit_code = Exit.USAGE
    label = "configuration error"


class InvalidFile(JunoError):
    exit_code = Exit.INVALID
    label = "invalid file"


class Refused(JunoError):
    exit_code = Exit.REFUSED
    label = "refused"


class Unavailable(JunoError):
    exit_code = Exit.UNAVAILABLE
    label = "unavailable"


class NotFound(JunoError):
    exit_code = Exit.NOT_FOUND
    label = "not found"


class PartlyFailed(JunoError):
    exit_code = Exit.FAILED
    label = "failed"


class Stopped(JunoError):
    exit_code = Exit.STOPPED
    label = "stopped"


class RucioRefused(Refused):
    """Rucio refused for a reason retrying will not fix; the message says what to check."""

    label = "Rucio refused"


class RucioUnavailable(Unavailable):
    """Rucio could not do it now (unreachable, overloaded, restarting): retry later."""

    label = "Rucio unavailable"


class RucioNotFound(NotFound):
    label = "not found"


def rucio_text(err: BaseException) -> str:
    """Rucio's message on one line, without its 'Details:' prefix."""
    return " ".join(str(err).replace("Details:", "").split()) or type(err).__name__


def _connection_text(err: BaseException) -> str:
    """requests' long repr of a refused connection → 'http://host:port/path: Connection refused'."""
    request = getattr(err, "request", None)
    url = getattr(request, "url", None) or ""
    reason = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(err))
    if reason:
        return f"{url.split('?')[0] or 'the server'}: {reason[1].strip()}"
    return f"{type(err).__name__}: {rucio_text(err)}"


def _config_hint() -> str:
    return f"is the server up and RUCIO_CONFIG ({os.environ.get('RUCIO_CONFIG', 'not set')}) right?"


def from_rucio(err: BaseException, what: str = "", *, refused_hint: str = "") -> JunoError | None:
    """The one translation of a Rucio client's exception (or of the connection error under it)."""
    from rucio.common import exception as rex

    during = f" during {what}" if what else ""
    kind = type(err).__name__
    if isinstance(err, JunoError):
        return err
    refused = (rex.AccessDenied, rex.CannotAuthenticate, rex.RSENotFound, rex.ScopeNotFound, rex.AccountNotFound,
               rex.RSEWriteBlocked, rex.InvalidRSEExpression, rex.MissingClientParameter, rex.ConfigNotFound)
    if isinstance(err, refused):
        hint = refused_hint or ("check the account (RUCIO_ACCOUNT / the client config's account and its role "
                                "attribute) and the names asked for")
        return RucioRefused(f"Rucio refused{' ' + what if what else ''}: {kind}: {rucio_text(err)}; {hint}")
    if isinstance(err, rex.DataIdentifierNotFound):
        return RucioNotFound(f"{rucio_text(err)}: check the DID (scope:name)")
    transient = (rex.ServerConnectionException, rex.ServiceUnavailable, rex.DatabaseException,
                 ConnectionError, TimeoutError, OSError)
    # requests' exceptions are OSErrors; the bare RucioException is what the client raises for an HTTP
    # error without Rucio's headers (a proxy's 502, gunicorn restarting): transient too.
    if isinstance(err, transient) or type(err) is rex.RucioException or \
            type(err).__module__.startswith(("requests.", "urllib3.")):
        text = _connection_text(err) if isinstance(err, OSError) else f"{kind}: {rucio_text(err)}"
        return RucioUnavailable(f"Rucio unavailable{during}: {text}; {_config_hint()}")
    return None


@contextmanager
def rucio_errors(what: str = "", *, refused_hint: str = "") -> Iterator[None]:
    """Translate the Rucio errors of the calls inside; let Rucio's specific answers through."""
    try:
        yield
    except JunoError:
        raise
    except Exception as err:
        translated = from_rucio(err, what, refused_hint=refused_hint)
        if translated is None:
            raise
        raise translated from err
