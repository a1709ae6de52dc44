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
from typing import Any, ClassVar

from juno_common.exit_codes import Exit


class JunoError(Exception):
    """An error for the person at the terminal: what went wrong, where, what to do; and its exit code.

    A kind is declared with its code and the label printed before its message:
        class Unavailable(JunoError, code=Exit.UNAVAILABLE, label="unavailable"): ...
    """

    exit_code: ClassVar[Exit] = Exit.ERROR
    label: ClassVar[str] = "error"

    def __init_subclass__(cls, code: Exit | None = None, label: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.exit_code = code
        if label is not None:
            cls.label = label


class UsageProblem(JunoError, code=Exit.USAGE, label="configuration error"):
    """A command-line or configuration value is wrong."""


class InvalidFile(JunoError, code=Exit.INVALID, label="invalid file"):
    """A policy, sites or task file is invalid; the message lists every problem as FILE:LINE."""


class Refused(JunoError, code=Exit.REFUSED, label="refused"):
    """Refused: by Rucio (permission, login), or because it cannot be done as asked."""


class Unavailable(JunoError, code=Exit.UNAVAILABLE, label="unavailable"):
    """A service (Rucio, its database, Kafka, HTCondor, storage) could not be reached or failed."""


class NotFound(JunoError, code=Exit.NOT_FOUND, label="not found"):
    """The DID or task named does not exist."""


class PartlyFailed(JunoError, code=Exit.FAILED, label="failed"):
    """It ran to the end, but parts failed (the message lists them)."""


class Stopped(JunoError, code=Exit.STOPPED, label="stopped"):
    """Stopped before doing harm: a safety limit, or a deletion not confirmed."""


class RucioRefused(Refused, label="Rucio refused"):
    """Rucio refused for a reason retrying will not fix; the message says what to check."""


class RucioUnavailable(Unavailable, label="Rucio unavailable"):
    """Rucio could not do it now (unreachable, overloaded, restarting): retry later."""


class RucioNotFound(NotFound):
    """Rucio does not have the DID."""


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


def from_rucio(err: BaseException, what: str = "", *, refused_hint: str = "",
               inside_call: bool = False) -> JunoError | None:
    """The one translation of a Rucio client's exception (or of the connection error under it).

    `inside_call`: the error came out of a Rucio call, so any OSError is the path to the server failing;
    outside one, only requests'/urllib3's errors and refused or timed-out connections are."""
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
                 ConnectionError, TimeoutError, *((OSError,) if inside_call else ()))
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
        translated = from_rucio(err, what, refused_hint=refused_hint, inside_call=True)
        if translated is None:
            raise
        raise translated from err
