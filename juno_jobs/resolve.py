"""Input DIDs → files with the RSEs holding AVAILABLE replicas of them (the Rucio adapter of planning).

How, and why this way (the benchmark counts it): Rucio's `list_replicas` builds a PFN for every replica
on the server, which costs tens of milliseconds per file on a server without memcached (the local grid
measured 25-100 ms per file), so it is kept for the exceptions. The usual path works block by block, as
CRAB does, with the cheap calls, several blocks at a time:

  1. `get_did` for every input DID (a missing DID stops the task here, before anything else);
  2. containers → their datasets (`list_content`, a handful of calls);
  3. per dataset, six at a time: `list_files` (names, bytes, adler32; parsed in one piece, see list_files)
     and `list_dataset_replicas(deep=True)` (per RSE, how many of the dataset's files have an AVAILABLE
     replica there, counted from the file replicas themselves, not from Rucio's collection-replica
     summary, which only a daemon keeps current);
  4. an RSE with all of a dataset's files holds each of them; a dataset that is only partly at an RSE
     (a copy in progress) gets the exact answer from `list_replicas` restricted to those RSEs;
  5. files given directly (not in a dataset) go through `list_replicas`.

PFNs are not needed to plan: planning fixes one URL base per RSE (pfns.py) and each job computes the
paths of its own files. Metadata filters on fields of raw file names cost nothing; other keys cost one
`get_metadata_bulk` per 1000 files.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from juno_jobs.model import Did, FilterValue, InputFile, Range, RseInfo, Scalar
from juno_jobs.taskfile import NAME_FILTER_KEYS
from rucio_policy import naming

WORKERS = 6  # concurrent Rucio calls: enough to overlap latency, not enough to swamp the server
BULK = 1000  # the generic schema caps bulk calls at 1000 items


class InputError(ValueError):
    """The input cannot be resolved (missing DID, empty after the filter, ...); the message says what to do."""


@dataclass
class Timer:
    """Rucio calls made and the time spent in them (summed over threads, so it can exceed wall time)."""

    call_s: float = 0.0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, seconds: float, calls: int = 1) -> None:
        with self._lock:
            self.call_s += seconds
            self.calls += calls


@dataclass(frozen=True)
class Resolution:
    files: list[InputFile]
    rses: dict[str, RseInfo]
    datasets: int
    resolve_s: float  # wall time of the whole resolution
    calls: int
    filtered_out: int = 0


def clone_client(client: Any) -> Any:
    """A client for another thread: same server, account and token, its own HTTP session."""
    import requests

    clone = copy.copy(client)
    clone.session = requests.Session()
    clone.headers = dict(client.headers)
    return clone


def list_files(client: Any, scope: str, name: str) -> list[dict[str, Any]]:
    """`DIDClient.list_files`, parsed in one piece.

    The client parses the answer line by line through a hook that looks for dates in every string
    (measured: 2.0 s of client CPU for 100,000 files, 0.45 s for one json.loads of the whole body), and on
    a 2-CPU machine that CPU is taken from the Rucio server. Same request, same authentication and token
    renewal (the client's own `_send_request`); if that ever fails, the client's method answers instead.
    """
    body = files_body(client, scope, name)
    if body is None:
        return list(client.list_files(scope, name))  # also raises Rucio's exception for errors
    body = body.strip()
    return json.loads("[" + body.replace("\n", ",") + "]") if body else []  # JSON strings hold no raw newline


def files_body(client: Any, scope: str, name: str) -> str | None:
    """The raw answer of Rucio's list_files (one JSON object per line), or None if it did not come."""
    from urllib.parse import quote_plus

    from rucio.common.constants import HTTPMethod
    from rucio.common.utils import build_url

    try:
        url = build_url(client.host, path=f"dids/{quote_plus(scope)}/{quote_plus(name)}/files")
        response = client._send_request(url, method=HTTPMethod.GET)
    except Exception:  # noqa: BLE001 - any surprise in the shortcut: the supported path decides
        return None
    return str(response.text) if response.status_code == 200 else None


def rse_infos(client: Any) -> dict[str, RseInfo]:
    """Every RSE with its site and whether it is tape (RSE attributes `site`, `istape`/`type`)."""
    rses = list(client.list_rses())

    def one(rse: dict[str, Any]) -> RseInfo:
        attrs = clone_client(client).list_rse_attributes(rse["rse"])
        tape = bool(attrs.get("istape")) or str(attrs.get("type", "")).lower() == "tape" \
            or str(rse.get("rse_type", "")).upper() == "TAPE"
        return RseInfo(name=rse["rse"], site=str(attrs.get("site") or rse["rse"]), tape=tape,
                       juno_site=bool(attrs.get("site")))

    with ThreadPoolExecutor(max(1, min(WORKERS, len(rses)))) as pool:
        return {info.name: info for info in pool.map(one, rses)}


# --------------------------------------------------------------------------- metadata filter


def _matches(value: Any, want: FilterValue) -> bool:
    if value is None:
        return False
    if isinstance(want, Range):
        try:
            return (want.min is None or value >= want.min) and (want.max is None or value <= want.max)
        except TypeError:
            return False
    if isinstance(want, tuple):
        return any(_equal(value, w) for w in want)
    return _equal(value, want)


def _equal(value: Any, want: Scalar) -> bool:
    if isinstance(value, str) and not isinstance(want, str):
        return value == str(want)
    return bool(value == want)


_RAW_NAME = re.compile(naming.RAW_FILE_RE)


def name_fields(name: str) -> dict[str, Any] | None:
    """The filterable fields of a raw file name, or None for other names (a regex match only: this runs
    for every input file, and naming.parse_raw_file's date check costs 10x more)."""
    m = _RAW_NAME.match(name)
    if m is None:
        return None
    return {"run": int(m["run"]), "run_type": m["run_type"], "data_stream": int(m["data_stream"]),
            "seq": int(m["seq"]), "detector": m["detector"], "stream": m["stream"]}


def name_filter(files: Iterable[dict[str, Any]], filt: Mapping[str, FilterValue]) -> list[dict[str, Any]]:
    """Keep files whose raw-name fields match every name key of the filter (pure)."""
    keys = {k: v for k, v in filt.items() if k in NAME_FILTER_KEYS}
    if not keys:
        return list(files)
    kept = []
    for f in files:
        fields = name_fields(f["name"])
        if fields is not None and all(_matches(fields[k], v) for k, v in keys.items()):
            kept.append(f)
    return kept


# --------------------------------------------------------------------------- resolution


class Resolver:
    def __init__(self, client: Any, *, workers: int = WORKERS, log: Callable[[str], None] = lambda m: None) -> None:
        self.client = client
        self.workers = workers
        self.log = log
        self.timer = Timer()
        self._local = threading.local()

    def _client(self) -> Any:
        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = clone_client(self.client)
        return c

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            return list(result) if isinstance(result, Iterator) else result
        finally:
            self.timer.add(time.perf_counter() - started)

    def check_dids(self, dids: Sequence[Did]) -> list[tuple[Did, str]]:
        """(DID, type) for each input; InputError naming every missing one."""
        from rucio.common.exception import DataIdentifierNotFound, ScopeNotFound

        found, missing = [], []
        for did in dids:
            try:
                info = self._call(self.client.get_did, did.scope, did.name)
            except (DataIdentifierNotFound, ScopeNotFound):
                missing.append(did)
                continue
            found.append((did, str(info["type"]).upper()))
        if missing:
            names = ", ".join(str(d) for d in missing)
            near = missing[0].name.rsplit(".", 1)[0] + ".*" if "." in missing[0].name else "*"
            raise InputError(f"input {names} not found in Rucio: check the spelling and the scope, e.g. "
                             f"`rucio did list '{missing[0].scope}:{near}'`. Nothing was submitted")
        return found

    def datasets_of(self, roots: Sequence[tuple[Did, str]]) -> tuple[list[Did], list[Did]]:
        """(datasets, files) reachable from the inputs; containers are walked level by level."""
        datasets: list[Did] = []
        files: list[Did] = []
        containers: list[Did] = []
        for did, kind in roots:
            {"DATASET": datasets, "FILE": files}.get(kind, containers).append(did)
        seen: set[Did] = set()
        while containers:
            with ThreadPoolExecutor(self.workers) as pool:
                levels = list(pool.map(lambda d: self._call(self._client().list_content, d.scope, d.name), containers))
            containers = []
            for children in levels:
                for child in children:
                    did = Did(child["scope"], child["name"])
                    if did in seen:
                        continue
                    seen.add(did)
                    kind = str(child["type"]).upper()
                    {"DATASET": datasets, "FILE": files}.get(kind, containers).append(did)
        return datasets, files

    def _dataset(self, did: Did, filt: Mapping[str, FilterValue], rses: Mapping[str, RseInfo],
                 wanted_rse: Callable[[str], bool], partial_if_complete: bool = True
                 ) -> tuple[list[InputFile], int]:
        client = self._client()
        listed = self._call(list_files, client, did.scope, did.name)
        kept = name_filter(listed, filt)
        if not kept:
            return [], len(listed)
        replicas = self._call(client.list_dataset_replicas, did.scope, did.name, deep=True)
        complete: list[str] = []
        partial: list[str] = []
        for rep in replicas:
            rse = rep["rse"]
            if rep.get("available_length", 0) <= 0:
                continue
            if rep["available_length"] >= rep["length"]:
                complete.append(rse)
            elif wanted_rse(rse):
                partial.append(rse)
        at: dict[str, list[str]] = {}
        if not partial_if_complete and any(wanted_rse(r) for r in complete):
            partial = []  # every file is at a complete disk copy: copies in progress are not asked file by file
        if partial:
            # A copy in progress: ask Rucio file by file, but only about those RSEs.
            expression = "|".join(sorted(partial))
            for rep in self._call(client.list_replicas, [{"scope": did.scope, "name": did.name}],
                                  rse_expression=expression, all_states=False, resolve_archives=False):
                at[rep["name"]] = [r for r, state in rep.get("states", {}).items() if state == "AVAILABLE"]
        base = tuple(sorted(complete))
        files = [InputFile(scope=f["scope"], name=f["name"], bytes=int(f.get("bytes") or 0), adler32=f.get("adler32"),
                           rses=base + tuple(sorted(at.get(f["name"], ()))) if partial else base)
                 for f in kept]
        return files, len(listed) - len(kept)

    def _files(self, dids: Sequence[Did], filt: Mapping[str, FilterValue]) -> tuple[list[InputFile], int]:
        out: list[InputFile] = []
        total = 0
        for start in range(0, len(dids), BULK):
            chunk = [{"scope": d.scope, "name": d.name} for d in dids[start:start + BULK]]
            total += len(chunk)
            reps = self._call(self.client.list_replicas, chunk, all_states=False, resolve_archives=False)
            kept = name_filter(reps, filt)
            out += [InputFile(scope=r["scope"], name=r["name"], bytes=int(r.get("bytes") or 0),
                              adler32=r.get("adler32"),
                              rses=tuple(sorted(rse for rse, s in r.get("states", {}).items() if s == "AVAILABLE")))
                    for r in kept]
        return out, total - len(out)

    def _metadata_filter(self, files: list[InputFile], filt: Mapping[str, FilterValue]) -> list[InputFile]:
        keys = {k: v for k, v in filt.items() if k not in NAME_FILTER_KEYS}
        if not keys or not files:
            return files
        chunks = [files[i:i + BULK] for i in range(0, len(files), BULK)]

        def one(chunk: list[InputFile]) -> list[InputFile]:
            metas = self._call(self._client().get_metadata_bulk, [{"scope": f.scope, "name": f.name} for f in chunk])
            by_name = {(m.get("scope"), m.get("name")): m for m in metas}
            return [f for f in chunk if all(_matches(by_name.get((f.scope, f.name), {}).get(k), v)
                                            for k, v in keys.items())]

        with ThreadPoolExecutor(self.workers) as pool:
            return [f for part in pool.map(one, chunks) for f in part]

    def dataset_files(self, did: Did, filt: Mapping[str, FilterValue] | None, rses: Mapping[str, RseInfo]
                      ) -> list[InputFile]:
        """One dataset's files (those passing the filter) with the disk RSEs holding AVAILABLE replicas, for a
        caller that knows the dataset exists (no get_did, no walk; list_files and list_dataset_replicas, as
        `resolve` does per dataset). Empty when nothing is in it or passes; a missing dataset raises
        Rucio's DataIdentifierNotFound.

        Unlike `resolve`, an RSE holding part of the dataset is asked about file by file (list_replicas,
        which builds a PFN per file on the server: seconds per thousand files) only when no disk RSE holds
        all of it: with a complete disk copy every file has a usable replica, and a copy in progress (the
        replication policy's rules on juno-prod's fresh outputs) only adds choices."""
        filt = filt or {}

        def wanted_rse(rse: str) -> bool:
            info = rses.get(rse)
            return info is not None and not info.tape

        files, _ = self._dataset(did, filt, rses, wanted_rse, partial_if_complete=False)
        return self._metadata_filter(files, filt)

    def resolve(self, dids: Sequence[Did], filt: Mapping[str, FilterValue] | None = None,
                rses: Mapping[str, RseInfo] | None = None, wanted_site: Callable[[str], bool] = lambda s: True
                ) -> Resolution:
        filt = filt or {}
        started = time.perf_counter()
        with ThreadPoolExecutor(1) as side:
            # The RSE catalogue comes in while the inputs are checked and walked.
            pending = side.submit(self._call, rse_infos, clone_client(self.client)) if rses is None else None
            roots = self.check_dids(dids)
            datasets, direct = self.datasets_of(roots)
            rses = dict(pending.result() if pending is not None else rses or {})

        def wanted_rse(rse: str) -> bool:
            info = rses.get(rse)
            return info is not None and not info.tape and wanted_site(info.site)

        self.log(f"resolving {len(datasets)} dataset(s)" + (f" and {len(direct)} file(s)" if direct else "")
                 + " in Rucio ...")
        files: list[InputFile] = []
        filtered = 0
        with ThreadPoolExecutor(self.workers) as pool:
            for part, dropped in pool.map(lambda d: self._dataset(d, filt, rses, wanted_rse), datasets):
                files += part
                filtered += dropped
        if direct:
            part, dropped = self._files(direct, filt)
            files += part
            filtered += dropped
        before = len(files)
        files = self._metadata_filter(files, filt)
        filtered += before - len(files)
        # A file reached through two inputs (e.g. a block and its container) counts once. Names are
        # almost always unique already: check that cheaply before building the (scope, name) index.
        if len({f.name for f in files}) != len(files):
            files = list({(f.scope, f.name): f for f in files}.values())
        if not files:
            what = ", ".join(str(d) for d in dids)
            if filtered:
                raise InputError(f"no input file of {what} passes input.filter ({filtered} files looked at): "
                                 "widen the filter. Nothing was submitted")
            raise InputError(f"{what} holds no files: check with `rucio did content list {dids[0]}`. "
                             "Nothing was submitted")
        self.log(f"  {len(files)} files in {time.perf_counter() - started:.1f} s "
                 f"({self.timer.calls} Rucio calls)")
        return Resolution(files=files, rses=rses, datasets=len(datasets), resolve_s=time.perf_counter() - started,
                          calls=self.timer.calls, filtered_out=filtered)
