"""Finished jobs' outputs → files in the task's output dataset, exactly once, without moving a byte.

The job itself copied each output from the worker to the output RSE and compared the storage's adler32
with its own (wrapper.stage_out). Here, on the submit side, for the outputs of one `sync` pass:
  1. `expected`: what the job's result record claims is checked against the task (the DID name is
     `<dataset>.<job:05d>.<file>`, the RSE one the task allows) and the PFN is computed here, from the
     RSE's write base: a job cannot point the registration at another file (pure);
  2. `StorageChecker`: the storage's adler32 of every file, by checksum query (no bytes; a few `xrdfs`
     batch sessions per storage, in parallel), must equal the job's;
  3. `register`: bulk `attach_dids(..., rse=RSE)` calls of at most 1,000 files, each registering files,
     replicas and attachments in one server transaction. Names are new in the common case, so they are
     attached at once; if Rucio already has one of a call's names the whole call is refused and rolled
     back (FileAlreadyExists, FileConsistencyMismatch: verified on Rucio 41), and only then is Rucio asked
     which names of that call it has (`get_metadata_bulk`): the same adler32 and size = done (an earlier
     pass got that far), another = an error that overwrites nothing; the rest is attached again.
     (Asking first for every batch cost 7 % of the registration time and did not make it safer.)
Running this twice (two `status` at once, a crash in the middle, a schedd restarted) cannot register a
file twice; the store's outputs table records what is done (INSERT OR IGNORE). The replicas are
protected by one rule on the output dataset (`protect`), not one rule per file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from juno_jobs.model import OutputTarget
from juno_jobs.pfns import path_of
from juno_jobs.wrapper import checksum_session  # one xrdfs session, as the job's stage-out asks

__all__ = ["BULK", "Expected", "OutputError", "Registered", "StorageChecker", "close_dataset", "ensure_dataset",
           "expected", "known", "path_of", "protect", "register", "register_verified", "verify", "verify_and_register"]

BULK = 1000  # Rucio's generic schema caps every bulk call at 1,000 items
# Parallel xrdfs sessions per storage: XRootD computes at most 2 checksums at once by default
# (`xrootd.chksum max`) and answers a third with "wait" (seconds): more sessions are slower.
CHECK_SESSIONS = 2


class OutputError(RuntimeError):
    """An output cannot be registered; `permanent` says whether trying again can help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Registered:
    scope: str
    name: str
    rse: str
    bytes: int
    adler32: str


@dataclass(frozen=True)
class Expected:
    """One output a job says it staged out, and where it must be."""

    job: int
    attempt: int
    item: Registered
    url: str


def expected(records: Iterable[dict[str, Any]], *, job: int, attempt: int, target: OutputTarget,
             bases: dict[str, dict[str, Any]]) -> list[Expected]:
    """The outputs of one job's result record, checked against the task (pure)."""
    out = []
    for rec in records:
        name = target.file_name(job, str(rec.get("file", "")))
        if rec.get("name") != name or rec.get("scope") != target.scope:
            raise OutputError(f"job {job}: the result names output {rec.get('scope')}:{rec.get('name')}, the task "
                              f"expects {target.scope}:{name}", permanent=True)
        rse = str(rec.get("rse"))
        if rse not in bases or (target.rse != "site" and rse != target.rse):
            raise OutputError(f"job {job}: output {name} is at {rse}, which is not an output RSE of this task",
                              permanent=True)
        url = bases[rse]["base"] + path_of(target.scope, name)
        out.append(Expected(job, attempt, Registered(target.scope, name, rse, int(rec["bytes"]), str(rec["adler32"])),
                            url))
    return out


def _server(url: str) -> tuple[str, str]:
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}", "/" + path.lstrip("/")


class StorageChecker:
    """The storage's own adler32 of many files, by checksum query: no bytes move."""

    def __init__(self, sessions: int = CHECK_SESSIONS, timeout_s: float = 600.0) -> None:
        self.sessions = sessions
        self.timeout_s = timeout_s

    def _session(self, server: str, paths: Sequence[str]) -> dict[str, str | None]:
        return checksum_session(server, list(paths), self.timeout_s)[0]

    def checksums(self, urls: Iterable[str]) -> dict[str, str | None]:
        """url → adler32, None when the file is not there; urls the storage did not answer are missing."""
        by_server: dict[str, dict[str, str]] = {}  # server → path → the url as given
        for url in urls:
            server, path = _server(url)
            by_server.setdefault(server, {})[path] = url
        batches: list[tuple[str, list[str]]] = []
        for server, paths in by_server.items():
            n = max(1, min(self.sessions, len(paths) // 50 or 1))
            ordered = list(paths)
            batches += [(server, ordered[i::n]) for i in range(n)]
        out: dict[str, str | None] = {}
        with ThreadPoolExecutor(max(1, len(batches))) as pool:
            for (server, _paths), found in zip(batches, pool.map(lambda b: self._session(*b), batches), strict=True):
                for path, value in found.items():
                    url = by_server[server].get(path)
                    if url is not None:
                        out[url] = value
        return out


def _chunks(items: Sequence[Any], size: int = BULK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def known(client: Any, items: Sequence[Registered]) -> dict[str, dict[str, Any]]:
    """name → Rucio's record of the names it already has (bulk, at most 1,000 a call)."""
    from rucio.common.exception import DataIdentifierNotFound

    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(items):
        try:
            for meta in client.get_metadata_bulk([{"scope": i.scope, "name": i.name} for i in chunk]):
                out[str(meta["name"])] = meta
        except DataIdentifierNotFound:
            pass  # none of them exists yet
    return out


def register(client: Any, dataset: tuple[str, str], items: Sequence[Registered],
             have: dict[str, dict[str, Any]] | None = None, *, asked: bool = False
             ) -> tuple[list[Registered], dict[str, OutputError]]:
    """Register files, replicas and attachments in bulk; (done, errors by name). Exactly once: names
    Rucio has with the same adler32 and size count as done, with another as a permanent error. `have`:
    what `known` answered for these items just before (else it is asked here; {} = attach at once and
    ask only for a call Rucio refuses). `asked`: this is already the second look at these items."""
    from rucio.common.exception import (
        DataIdentifierNotFound,
        FileAlreadyExists,
        FileConsistencyMismatch,
        UnsupportedOperation,
    )

    done: list[Registered] = []
    errors: dict[str, OutputError] = {}
    if have is None:
        have = known(client, items)
    todo: dict[str, list[Registered]] = {}
    for item in items:
        meta = have.get(item.name)
        if meta is None:
            todo.setdefault(item.rse, []).append(item)
        elif meta.get("adler32") == item.adler32 and int(meta.get("bytes") or -1) == item.bytes:
            done.append(item)
        else:
            errors[item.name] = _clash(item, meta)
    for rse, group in todo.items():
        for chunk in _chunks(group):
            files = [{"scope": i.scope, "name": i.name, "bytes": i.bytes, "adler32": i.adler32} for i in chunk]
            try:
                client.attach_dids(dataset[0], dataset[1], files, rse=rse)
                done.extend(chunk)
            except (FileAlreadyExists, FileConsistencyMismatch) as err:
                if asked:
                    # Refused although Rucio was just asked (a concurrent pass): the next pass sorts it out.
                    errors.update({i.name: OutputError(f"{i.scope}:{i.name}: Rucio refused the attachment ({err}); "
                                                       "tried again in the next pass") for i in chunk})
                    continue
                # Some of them exist (an earlier pass registered them, or a concurrent one): Rucio rolled
                # the call back, so ask which, and attach the rest.
                again, errs = register(client, dataset, chunk, asked=True) if len(chunk) > 1 else \
                    _one(client, dataset, chunk[0])
                done.extend(again)
                errors.update(errs)
            except DataIdentifierNotFound as err:
                raise OutputError(f"output dataset {dataset[0]}:{dataset[1]} is gone from Rucio: {err}",
                                  permanent=True) from err
            except UnsupportedOperation as err:
                raise OutputError(f"output dataset {dataset[0]}:{dataset[1]} is closed: {err}",
                                  permanent=True) from err
    return done, errors


def _clash(item: Registered, meta: dict[str, Any]) -> OutputError:
    return OutputError(f"{item.scope}:{item.name} is already in Rucio with adler32 {meta.get('adler32')} and "
                       f"{meta.get('bytes')} bytes, not {item.adler32} and {item.bytes}: nothing was registered or "
                       "overwritten", permanent=True)


def _one(client: Any, dataset: tuple[str, str], item: Registered) -> tuple[list[Registered], dict[str, OutputError]]:
    known_now = known(client, [item]).get(item.name)
    if known_now is None:
        return [], {item.name: OutputError(f"{item.scope}:{item.name}: Rucio refused the attachment but has no such "
                                           "file; tried again in the next pass")}
    if known_now.get("adler32") == item.adler32 and int(known_now.get("bytes") or -1) == item.bytes:
        return [item], {}
    return [], {item.name: _clash(item, known_now)}


@dataclass
class Verified:
    """Outputs checked on storage; `have`: what Rucio is known to have of their names (register asks
    for a call it refuses)."""

    ready: list[Expected]
    errors: dict[int, OutputError]
    have: dict[str, dict[str, Any]]


def verify(client: Any, wanted: Sequence[Expected], checker: StorageChecker) -> Verified:
    """Storage checksums (no bytes) for one batch; `have` stays empty (see `register`)."""
    if not wanted:
        return Verified([], {}, {})
    sums = checker.checksums(e.url for e in wanted)
    errors: dict[int, OutputError] = {}
    ready: list[Expected] = []
    for e in wanted:
        if e.url not in sums:
            errors.setdefault(e.job, OutputError(f"{e.url}: the storage did not answer the checksum query"))
        elif sums[e.url] is None:
            errors.setdefault(e.job, OutputError(f"{e.url}: the job reported this output staged out, but the "
                                                 "storage has no such file", permanent=True))
        elif sums[e.url] != e.item.adler32:
            errors.setdefault(e.job, OutputError(f"{e.url}: the storage reports adler32 {sums[e.url]}, the job "
                                                 f"{e.item.adler32}", permanent=True))
        else:
            ready.append(e)
    ready = [e for e in ready if e.job not in errors]
    # Optimistic: no name is taken to be known; `register` asks Rucio only for a call it refused.
    return Verified(ready, errors, {})


def register_verified(client: Any, dataset: tuple[str, str], v: Verified,
                      log: Callable[[str], None] = lambda m: None) -> tuple[list[Expected], dict[int, OutputError]]:
    """Bulk registration of a verified batch. (registered, errors by job)."""
    errors = dict(v.errors)
    if not v.ready:
        return [], errors
    done, errs = register(client, dataset, [e.item for e in v.ready], v.have)
    names = {d.name for d in done}
    for e in v.ready:
        if e.item.name in errs:
            errors.setdefault(e.job, errs[e.item.name])
    registered = [e for e in v.ready if e.item.name in names and e.job not in errors]
    if registered:
        log(f"  {len(registered)} output(s) verified on storage and registered in {dataset[0]}:{dataset[1]}")
    return registered, errors


def verify_and_register(client: Any, dataset: tuple[str, str], wanted: Sequence[Expected],
                        checker: StorageChecker, log: Callable[[str], None] = lambda m: None
                        ) -> tuple[list[Expected], dict[int, OutputError]]:
    """Storage checksums, Rucio asked, then bulk registration. (registered, errors by job)."""
    return register_verified(client, dataset, verify(client, wanted, checker), log)


def ensure_dataset(client: Any, scope: str, name: str, meta: dict[str, Any] | None = None) -> None:
    from rucio.common.exception import DataIdentifierAlreadyExists

    try:
        client.add_dataset(scope, name, meta=meta or None)
    except DataIdentifierAlreadyExists:
        pass


def protect(client: Any, scope: str, name: str, rses: Sequence[str]) -> None:
    """One rule for every output of the task: a copy on one of its output RSEs (grouping NONE: each file
    where it already is, as Rucio prefers RSEs holding an AVAILABLE replica)."""
    from rucio.common.exception import DuplicateRule

    if not rses:
        return
    try:
        client.add_replication_rule([{"scope": scope, "name": name}], 1, "|".join(sorted(rses)), grouping="NONE",
                                    comment="juno-submit outputs")
    except DuplicateRule:
        pass


def close_dataset(client: Any, scope: str, name: str) -> None:
    from rucio.common.exception import UnsupportedOperation, UnsupportedStatus

    try:
        client.set_status(scope, name, open=False)
    except (UnsupportedOperation, UnsupportedStatus):
        pass  # already closed
