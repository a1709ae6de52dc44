"""Which messages of a chunk Rucio objects to (pure): split the chunk until the culprits are alone.

    result = narrow(files, attempt, first=verdict_of_the_whole_chunk)

A bulk call is one transaction: one file the server refuses fails the other 499. `narrow` halves a
failing part and tries each half again, so k culprits among n files cost about 2·k·log2(n/k) calls
(3 culprits in 500: ~40), and every other file is registered. `attempt(part)` performs the call and
says what happened (`Verdict`); failures that say nothing about the messages (Rucio unreachable) are
exceptions and end the narrowing: the caller retries the whole batch later.

`classify` sorts Rucio's exceptions: which mean "these files" (narrow them), which mean "someone
registered these names meanwhile" (look again), which mean "not now" (retry), and which mean "the
server or its database failed and we cannot tell why" (AMBIGUOUS: narrowed too, but a file is blamed
only if Rucio demonstrably works; the registrar checks that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

from rucio.common import exception as rex

T = TypeVar("T")
REASON_MAX = 500


class Verdict(Enum):
    OK = "ok"
    RECHECK = "recheck"  # a name Rucio already has (here or in another block): look again, decide per file
    CLOSED = "closed"  # the block was closed meanwhile: its files are late
    REJECTED = "rejected"  # the request's content was refused: some file of it is to blame
    AMBIGUOUS = "ambiguous"  # the server failed on it (database error, 500): a file, or the server
    UNAVAILABLE = "unavailable"  # nothing to do with the files: retry the batch later
    REFUSED = "refused"  # nothing to do with the files, and retrying will not help: configuration


@dataclass(frozen=True)
class Attempt:
    verdict: Verdict
    reason: str = ""


OK = Attempt(Verdict.OK)

# Message-independent refusals: the account, the RSE, the scope, the client's setup.
_REFUSED = (rex.CannotAuthenticate, rex.RSENotFound, rex.ScopeNotFound, rex.AccountNotFound, rex.RSEWriteBlocked,
            rex.InvalidRSEExpression, rex.MissingClientParameter, rex.ConfigNotFound)
_UNAVAILABLE = (rex.ServerConnectionException, rex.ServiceUnavailable, ConnectionError, TimeoutError, OSError)
_ALREADY = (rex.FileAlreadyExists, rex.FileConsistencyMismatch, rex.DataIdentifierAlreadyExists, rex.Duplicate)


def reason_of(err: BaseException) -> str:
    """The server's own words (class and message), one line, bounded."""
    text = " ".join(str(err).replace("Details:", "").split()) or type(err).__name__
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= REASON_MAX else text[:REASON_MAX] + "..."


def classify(err: BaseException) -> Attempt:
    """What an exception from a registration call means for the files in it."""
    import requests  # the Rucio client's transport: its errors are the network's

    if isinstance(err, _ALREADY):
        return Attempt(Verdict.RECHECK, reason_of(err))
    if isinstance(err, rex.UnsupportedOperation) and "closed" in str(err):
        return Attempt(Verdict.CLOSED, reason_of(err))
    if isinstance(err, _REFUSED):
        return Attempt(Verdict.REFUSED, reason_of(err))
    if isinstance(err, (*_UNAVAILABLE, requests.exceptions.RequestException)):
        return Attempt(Verdict.UNAVAILABLE, reason_of(err))
    if isinstance(err, rex.DatabaseException) or type(err) is rex.RucioException:
        # The bare base class is an HTTP error without Rucio's headers (a 5xx from a proxy, a crashed
        # worker); a database error may be the database's trouble or a value it cannot store.
        return Attempt(Verdict.AMBIGUOUS, reason_of(err))
    if isinstance(err, rex.RucioException):
        # InvalidObject, InputValidationError, AccessDenied, InvalidMetadata, UnsupportedOperation, ...:
        # the server read the request and refused its content.
        return Attempt(Verdict.REJECTED, reason_of(err))
    raise err  # not Rucio's: a bug of ours, let it show


@dataclass
class Narrowed(Generic[T]):
    ok: list[T] = field(default_factory=list)
    recheck: list[T] = field(default_factory=list)
    closed: list[T] = field(default_factory=list)
    rejected: list[tuple[T, Attempt]] = field(default_factory=list)  # alone and still refused (or ambiguous)
    calls: int = 0  # calls made while narrowing (the first, whole-chunk call not counted)


def narrow(items: Sequence[T], attempt: Callable[[Sequence[T]], Attempt], *, first: Attempt) -> Narrowed[T]:
    """Split a refused chunk (its verdict: `first`) until every refused or ambiguous item is alone.

    UNAVAILABLE and REFUSED are raised by `attempt` itself (as the caller's exceptions): they end the
    narrowing, since they are about the service, not the items."""
    out: Narrowed[T] = Narrowed()
    todo: list[tuple[Sequence[T], Attempt | None]] = [(items, first)]
    while todo:
        part, verdict = todo.pop()
        if verdict is None:
            verdict = attempt(part)
            out.calls += 1
        if verdict.verdict is Verdict.OK:
            out.ok += part
        elif verdict.verdict is Verdict.RECHECK:
            out.recheck += part
        elif verdict.verdict is Verdict.CLOSED:
            out.closed += part
        elif len(part) == 1:
            out.rejected.append((part[0], verdict))
        else:
            half = len(part) // 2
            todo.append((part[half:], None))
            todo.append((part[:half], None))  # popped first: items come out in order
    return out
