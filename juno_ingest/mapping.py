"""Message → what Rucio must hold (pure): the file DID, its block, the block's containers, metadata.

Names come from rucio_policy.naming, the module the Rucio server's schema and permissions use too,
so the ingester cannot build a name the server would reject.

    raw:<lfn>                                   the file, replica at the IHEP disk RSE
    raw:block.<detector>.<stream>.<YYYYMMDD>    its block: the stream's files *received* that UTC day
    raw:stream.<detector>.<stream>.<YYYYMM>     month container  ⊃ block
    raw:stream.<detector>.<stream>.<YYYY>       year container   ⊃ month
    raw:stream.<detector>.<stream>              stream container ⊃ year

Metadata: blocks carry stream_name, datatype RAW and juno_day (the receiving date); containers
stream_name and datatype. Files carry run and stream in their names (Rucio's name filters find them:
`RUN.10554.*`); per-file metadata costs one extra database update per file in Rucio (measured:
~2.5x slower registration), so it is written only when the message brings some (SPADE's
`metadata`, sha1/sha256) or when `file_metadata` is on (run_number, stream_name, juno_received_at).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from juno_ingest.messages import SpadeMessage, format_time
from rucio_policy import naming

SCOPE = naming.RAW_SCOPE
DATATYPE = "RAW"


@dataclass(frozen=True)
class BlockPlan:
    """A block and the containers above it (month, year, stream), with their metadata."""

    name: str
    stream: str
    day: date
    containers: tuple[str, str, str]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def day_end(self) -> datetime:
        """The first moment (UTC) after the block's receiving day."""
        return datetime.combine(self.day + timedelta(days=1), time(0), tzinfo=UTC)

    def container_meta(self) -> dict[str, Any]:
        return {"stream_name": self.stream, "datatype": DATATYPE}

    def attachments(self) -> list[tuple[str, str]]:
        """(parent, child) pairs, innermost first: month ⊃ block, year ⊃ month, stream ⊃ year."""
        month, year, top = self.containers
        return [(month, self.name), (year, month), (top, year)]


@dataclass(frozen=True)
class FilePlan:
    """One file to register: the DID, where it must be on storage, which block it joins."""

    name: str
    size: int
    adler32: str
    block: BlockPlan
    path: str  # below the RSE's protocol prefix, as Rucio's lfn2pfn computes it (no leading /)
    md5: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    run: int = 0

    def rucio_file(self) -> dict[str, Any]:
        """The file dict for Client.attach_dids(..., rse=...): registers the replica and attaches it."""
        item: dict[str, Any] = {"scope": SCOPE, "name": self.name, "bytes": self.size, "adler32": self.adler32}
        if self.md5:
            item["md5"] = self.md5
        if self.meta:
            item["meta"] = dict(self.meta)
        return item


def receiving_day(received_at: datetime) -> date:
    """The UTC date a file landed at IHEP: the date of its block."""
    return received_at.astimezone(UTC).date()


def plan_block(stream: str, day: date) -> BlockPlan:
    containers = naming.container_names(stream, day)
    return BlockPlan(name=naming.block_name(stream, day), stream=stream, day=day,
                     containers=(containers[0], containers[1], containers[2]),
                     meta={"stream_name": stream, "datatype": DATATYPE, "juno_day": day.isoformat()})


def plan_file(msg: SpadeMessage, *, file_metadata: bool = False) -> FilePlan:
    meta: dict[str, Any] = dict(msg.metadata)
    for algo in ("sha1", "sha256"):
        if algo in msg.checksums:
            meta[f"juno_{algo}"] = msg.checksums[algo]
    if file_metadata:
        meta.update({"run_number": msg.run, "stream_name": msg.stream,
                     "juno_received_at": format_time(msg.received_at)})
    return FilePlan(name=msg.lfn, size=msg.size, adler32=msg.adler32,
                    block=plan_block(msg.stream, receiving_day(msg.received_at)),
                    path=raw_path(msg.lfn, msg.run_start), md5=msg.md5, meta=meta, run=msg.run)


def raw_path(lfn: str, run_start: datetime) -> str:
    """rucio_policy.lfn2pfn.juno_path for a raw file whose name was already parsed (it would parse it
    again: strptime is a third of the ingester's per-message CPU). A unit test holds the two together."""
    return f"raw/{run_start:%Y}/{run_start:%m%d}/{lfn}"


def expected_path(prefix: str, plan: FilePlan) -> str:
    """Absolute path of the file on the RSE whose protocol prefix is `prefix` (e.g. //eos/juno/dci)."""
    return "/" + "/".join(part for part in (prefix.strip("/"), plan.path) if part)
