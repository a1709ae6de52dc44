"""A finished job's outputs → bytes on the chosen RSE and files in the task's output dataset, exactly once.

For each output file of the job's successful attempt (attempts/JOB.ATTEMPT/outputs/):
  1. its adler32 is computed again here and must equal the wrapper's record;
  2. the bytes go to the RSE's PFN for the file (xrdcp), unless the storage already has them with that
     adler32 (an earlier, interrupted finalization); the storage's own adler32 must match afterwards;
  3. `attach_dids(dataset, [file], rse=RSE)` registers the file, its replica and the attachment in one
     server transaction. If it was attached before (FileAlreadyExists), the file Rucio has must carry our
     adler32 and size: then this is a repeat and counts as done; a different checksum
     (FileConsistencyMismatch) is an error nobody should paper over;
  4. a rule (1 copy at the RSE) protects the replica; DuplicateRule means an earlier run made it.
The DID name is `<dataset>.<job:05d>.<file>`: the same for every attempt and every finalization, so
running finalization twice (two `status` commands at once, a crash in the middle) cannot register a
file twice; the store's outputs table records what is done (INSERT OR IGNORE).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from juno_jobs.model import RseInfo
from juno_jobs.pfns import PfnMaker
from juno_jobs.wrapper import adler32_file


class OutputError(RuntimeError):
    """Finalization failed; `permanent` says whether trying again can help."""

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


def choose_rse(target_rse: str, site: str | None, rses: dict[str, RseInfo], preferred: list[str]) -> str:
    """The output RSE: the fixed one, or a disk RSE at the site where the job ran (one it read from first)."""
    if target_rse != "site":
        return target_rse
    at_site = sorted(r for r, i in rses.items() if i.site == site and not i.tape)
    if not at_site:
        raise OutputError(f"the job ran at site {site or '(unknown)'}, which has no disk RSE for outputs: set "
                          "output.rse in the task file", permanent=True)
    for r in preferred:
        if r in at_site:
            return r
    return at_site[0]


def _split(url: str) -> tuple[str, str]:
    rest = url.split("://", 1)[1]
    host, path = rest.split("/", 1)
    return host, "/" + path.lstrip("/")


def storage_adler32(url: str) -> str | None:
    host, path = _split(url)
    done = subprocess.run(["xrdfs", host, "query", "checksum", path], capture_output=True, text=True, timeout=120)
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) < 2 or parts[0] != "adler32":
        return None
    return parts[1].lower().rjust(8, "0")


def upload(local: Path, url: str, adler32: str) -> None:
    if storage_adler32(url) == adler32:
        return  # already there, same bytes: an earlier finalization got this far
    done = subprocess.run(["xrdcp", "--nopbar", "--force", "--path", str(local), url], capture_output=True,
                          text=True, timeout=3600)
    if done.returncode != 0:
        raise OutputError(f"xrdcp {local} -> {url} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    remote = storage_adler32(url)
    if remote != adler32:
        raise OutputError(f"{url}: the storage reports adler32 {remote}, the file has {adler32}")


def register(client: Any, dataset: tuple[str, str], item: Registered) -> None:
    from rucio.common.exception import (
        DataIdentifierNotFound,
        DuplicateRule,
        FileAlreadyExists,
        FileConsistencyMismatch,
        UnsupportedOperation,
    )

    did = {"scope": item.scope, "name": item.name, "bytes": item.bytes, "adler32": item.adler32}
    try:
        client.attach_dids(dataset[0], dataset[1], [did], rse=item.rse)
    except FileAlreadyExists:
        known = client.get_did(item.scope, item.name)
        if known.get("adler32") != item.adler32 or int(known.get("bytes") or -1) != item.bytes:
            raise OutputError(f"{item.scope}:{item.name} is already in {dataset[0]}:{dataset[1]} with adler32 "
                              f"{known.get('adler32')} and {known.get('bytes')} bytes, not {item.adler32} and "
                              f"{item.bytes}", permanent=True) from None
    except FileConsistencyMismatch as err:
        raise OutputError(f"{item.scope}:{item.name} exists in Rucio with another checksum: {err}",
                          permanent=True) from err
    except DataIdentifierNotFound as err:
        raise OutputError(f"output dataset {dataset[0]}:{dataset[1]} is gone from Rucio: {err}",
                          permanent=True) from err
    except UnsupportedOperation as err:
        raise OutputError(f"output dataset {dataset[0]}:{dataset[1]} is closed: {err}", permanent=True) from err
    try:
        client.add_replication_rule([{"scope": item.scope, "name": item.name}], 1, item.rse,
                                    comment="juno-submit output")
    except DuplicateRule:
        pass


def finalize(client: Any, maker: PfnMaker, *, dataset: tuple[str, str], file_name: Callable[[str], str],
             outputs_dir: Path, records: list[dict[str, Any]], rse: str,
             log: Callable[[str], None] = lambda m: None) -> list[Registered]:
    """Upload and register one job's outputs; return what is in Rucio now."""
    done = []
    scope = dataset[0]
    for rec in records:
        local = outputs_dir / rec["file"]
        if not local.is_file():
            raise OutputError(f"{local} is missing: the attempt's outputs were removed", permanent=True)
        adler32 = adler32_file(local)
        if adler32 != rec["adler32"] or local.stat().st_size != rec["bytes"]:
            raise OutputError(f"{local} changed since the job wrote it (adler32 {adler32}, the job recorded "
                              f"{rec['adler32']})", permanent=True)
        item = Registered(scope=scope, name=file_name(rec["file"]), rse=rse, bytes=rec["bytes"], adler32=adler32)
        upload(local, maker.write_url(rse, scope, item.name), adler32)
        register(client, dataset, item)
        log(f"  {scope}:{item.name} at {rse} (adler32 {adler32})")
        done.append(item)
    return done


def ensure_dataset(client: Any, scope: str, name: str, meta: dict[str, Any] | None = None) -> None:
    from rucio.common.exception import DataIdentifierAlreadyExists

    try:
        client.add_dataset(scope, name, meta=meta or None)
    except DataIdentifierAlreadyExists:
        pass


def close_dataset(client: Any, scope: str, name: str) -> None:
    from rucio.common.exception import UnsupportedOperation, UnsupportedStatus

    try:
        client.set_status(scope, name, open=False)
    except (UnsupportedOperation, UnsupportedStatus):
        pass  # already closed
