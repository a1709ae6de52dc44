"""Where a job finds its input files: each RSE's URL base; the wrapper adds each file's lfn2pfn path.

Computing PFNs at planning time is what does not scale: Rucio's client takes ~0.2 ms per PFN
(`rsemanager.lfns2pfns`) and even the bare `juno` path function ~40 µs: seconds for 100,000 files, for
paths a job needs only for its own few files. JUNO's RSEs are deterministic with the `juno` algorithm,
whose path does not depend on the RSE, so planning fixes one base URL per RSE and the wrapper computes
the paths of its files (wrapper.lfn_path). The base comes from Rucio itself: the PFN Rucio gives for a
sample file, minus the path the wrapper would compute. If they disagree (another algorithm, a
non-deterministic RSE), that RSE gets explicit per-file PFNs from Rucio instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from juno_jobs import wrapper
from juno_jobs.model import InputFile
from rucio_policy import naming

READ_SCHEMES = ("root", "roots")  # what the wrapper's xrdcp reads
NAMING = {"raw_file": naming.RAW_FILE_RE, "derived_file": naming.DERIVED_FILE_RE}
_RAW = re.compile(NAMING["raw_file"])
_DERIVED = re.compile(NAMING["derived_file"])


def path_of(scope: str, name: str) -> str:
    """The path the wrapper will use for scope:name."""
    return wrapper.lfn_path(scope, name, _RAW, _DERIVED)


class NoReadProtocol(LookupError):
    pass


def _base_of(pfn: str, scope: str, name: str) -> str | None:
    """The URL base of `pfn` (what precedes the juno path of scope:name), None if it does not end so."""
    path = path_of(scope, name)
    return pfn[: -len(path)] if pfn.endswith(path) else None


class PfnMaker:
    """PFNs from the Rucio server (`lfns2pfns` REST call): the client-side rsemanager would import Rucio's
    server core (seconds of imports) to do the same.

    The URL bases it found (read: per RSE; write: per RSE and scope) are kept for the maker's lifetime:
    a service that plans many tasks (juno-prod: one per claim) keeps one maker and asks Rucio once per
    RSE, not once per task. Threads may share a maker (`client` lets each pass its own session)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._bases: dict[str, str | None] = {}
        self._write_bases: dict[tuple[str, str], str | None] = {}

    def _lfns2pfns(self, rse: str, dids: list[tuple[str, str]], operation: str, client: Any = None
                   ) -> dict[str, str]:
        from rucio.common.exception import RSEProtocolNotSupported

        client = client or self.client
        lfns = [f"{scope}:{name}" for scope, name in dids]
        for scheme in READ_SCHEMES:
            try:
                out = client.lfns2pfns(rse, lfns, protocol_domain="wan", operation=operation, scheme=scheme)
            except RSEProtocolNotSupported:
                continue
            return {key.split(":", 1)[1]: str(pfn) for key, pfn in out.items()}
        raise NoReadProtocol(f"RSE {rse} has no {' or '.join(READ_SCHEMES)} protocol to {operation}: jobs use xrdcp")

    def base(self, rse: str, sample: InputFile, client: Any = None) -> str | None:
        """The URL every PFN at `rse` starts with, or None if the RSE needs per-file PFNs."""
        if rse not in self._bases:
            pfn = self._lfns2pfns(rse, [(sample.scope, sample.name)], "read", client)[sample.name]
            self._bases[rse] = _base_of(pfn, sample.scope, sample.name)
        return self._bases[rse]

    def pfns(self, rse: str, files: Iterable[InputFile]) -> dict[str, str]:
        """name → PFN at `rse`, file by file from Rucio (the general way, for RSEs with other paths)."""
        out: dict[str, str] = {}
        batch: list[tuple[str, str]] = []
        for f in files:
            batch.append((f.scope, f.name))
            if len(batch) == 1000:
                out.update(self._lfns2pfns(rse, batch, "read"))
                batch = []
        if batch:
            out.update(self._lfns2pfns(rse, batch, "read"))
        return out

    def write_url(self, rse: str, scope: str, name: str) -> str:
        """Where a new file scope:name goes at `rse` (outputs)."""
        return self._lfns2pfns(rse, [(scope, name)], "write")[name]

    def write_base(self, rse: str, scope: str, sample: str) -> str | None:
        """The URL every new file of `scope` at `rse` starts with (Rucio's write PFN of `sample` minus the
        path the wrapper computes), or None when Rucio places files elsewhere. Asked once per RSE and scope."""
        key = (rse, scope)
        if key not in self._write_bases:
            self._write_bases[key] = _base_of(self.write_url(rse, scope, sample), scope, sample)
        return self._write_bases[key]
