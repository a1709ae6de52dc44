"""The body of `POST /jobs`, checked once at the edge and turned into typed objects.

The shape is what Rucio's `FTS3Transfertool.submit` sends (`{"files": [...], "params": {...}}`, see
`rucio/transfertool/fts3.py`, `_file_from_transfer` and `build_job_params`). Fields this service does
not act on (activity, selection_strategy, copy_pin_lifetime, s3alternate, ...) are accepted and kept.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from .states import FileState, JobType

VERIFY_CHECKSUM_MODES = ("both", "target", "source", "none")
_BY_LETTER = {m[0]: m for m in VERIFY_CHECKSUM_MODES}


class BadRequest(ValueError):
    """The submission cannot be accepted; the message says which field and why (HTTP 400)."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # lower case, e.g. "adler32"
    value: str | None  # None: "verify with this algorithm, compare source and destination"

    @classmethod
    def parse(cls, text: str) -> Checksum:
        """FTS3's 'ALGORITHM:value' (Rucio sends 'ADLER32:0a1b2c3d'); a bare 'ADLER32' is allowed too."""
        name, _, raw = text.partition(":")
        algorithm = name.strip().lower()
        value = raw.strip().lower() or None
        if not algorithm:
            raise BadRequest(f"checksum {text!r}: expected 'ALGORITHM:value', e.g. 'ADLER32:0a1b2c3d'")
        if value is not None:
            try:
                int(value, 16)
            except ValueError:
                raise BadRequest(f"checksum {text!r}: the value is not hexadecimal") from None
        return cls(algorithm, value)

    def __str__(self) -> str:
        return f"{self.algorithm.upper()}:{self.value}" if self.value else self.algorithm.upper()


@dataclass(frozen=True)
class FileRow:
    """One copy to attempt: a (source, destination) pair, as FTS3 stores it."""

    file_index: int
    source_surl: str
    dest_surl: str
    state: FileState
    filesize: int | None
    checksum: Checksum | None
    metadata: Any
    activity: str | None


@dataclass(frozen=True)
class Submission:
    job_type: JobType
    params: dict[str, Any]
    job_metadata: dict[str, Any]
    priority: int
    files: list[FileRow] = field(default_factory=list)

    @property
    def bring_online(self) -> int:
        return _positive_int(self.params.get("bring_online"))

    @property
    def deterministic_sid(self) -> str | None:
        """Rucio's `[conveyor] use_deterministic_id` asks for the job id to be derived from `sid`."""
        if self.params.get("id_generator") == "deterministic" and self.params.get("sid"):
            return str(self.params["sid"])
        return None


def _positive_int(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(number, 0)


    _BY_LETTER = {m[0]: m for m in VERIFY_CHECKSUM_MODES}


def verify_checksum_mode(value: Any) -> str:
    """FTS3's reading of params.verify_checksum: a boolean (older clients: true = compare everything), or a
    string of which only the first letter counts: n(one), s(ource), t(arget), b(oth). FTS3's own client
    sends the letter ('n'), Rucio the word ('both')."""
    if isinstance(value, bool):
        return "both" if value else "none"
    text = str(value).strip().lower()
    if text and text[0] in _BY_LETTER:
        return _BY_LETTER[text[0]]
    raise BadRequest(f"params.verify_checksum {value!r}: expected one of {', '.join(VERIFY_CHECKSUM_MODES)} "
                     f"(or its first letter: {', '.join(_BY_LETTER)}), or a boolean")


def parse(body: Any) -> Submission:
    """Validate a decoded JSON body; raises BadRequest with a message a person can act on."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with 'files' and 'params'")
    files = body.get("files")
    if not isinstance(files, list) or not files:
        raise BadRequest("'files' must be a non-empty list")
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise BadRequest("'params' must be an object")
    mode = verify_checksum_mode(params.get("verify_checksum", "both"))
    params = {**params, "verify_checksum": mode}
    job_metadata = params.get("job_metadata") or {}
    if not isinstance(job_metadata, dict):
        # FTS3 keeps a non-object as {"label": value}; Rucio's poller needs an object to call .get on.
        job_metadata = {"label": job_metadata}
    priority = _positive_int(params.get("priority")) or 3
    multihop = bool(params.get("multihop"))
    staging = _positive_int(params.get("bring_online")) > 0
    multi_source = any(isinstance(f, dict) and len(f.get("sources") or []) > 1 for f in files)
    if multihop and multi_source:
        raise BadRequest("a multihop job cannot have several sources for one file")
    if multi_source and len(files) > 1:
        raise BadRequest("a job with several sources for a file must contain that one file only "
                         "(FTS3 multiple-replica job)")
    job_type = JobType.MULTI_HOP if multihop else JobType.MULTIPLE_REPLICA if multi_source else JobType.REGULAR

    rows: list[FileRow] = []
    for index, entry in enumerate(files):
        where = f"files[{index}]"
        if not isinstance(entry, dict):
            raise BadRequest(f"{where} must be an object")
        sources = entry.get("sources")
        destinations = entry.get("destinations")
        if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
            raise BadRequest(f"{where}.sources must be a non-empty list of URLs")
        if not isinstance(destinations, list) or len(destinations) != 1 or not isinstance(destinations[0], str):
            raise BadRequest(f"{where}.destinations must be a list of exactly one URL")
        checksum = Checksum.parse(entry["checksum"]) if entry.get("checksum") else None
        filesize = entry.get("filesize")
        if filesize is not None and (not isinstance(filesize, int) or isinstance(filesize, bool) or filesize < 0):
            raise BadRequest(f"{where}.filesize must be a non-negative integer")
        for alternative, source in enumerate(sources):
            # Only the first copy is runnable at once: the later hops of a multihop job and the
            # alternative sources of a multiple-replica job wait in NOT_USED, as in FTS3, until the
            # previous one finished (hop) or failed (replica).
            first = alternative == 0 and (index == 0 or job_type is not JobType.MULTI_HOP)
            state = (FileState.STAGING if staging else FileState.SUBMITTED) if first else FileState.NOT_USED
            rows.append(FileRow(index, source, destinations[0], state, filesize, checksum,
                                entry.get("metadata"), entry.get("activity")))
    return Submission(job_type, params, job_metadata, priority, rows)


def deterministic_job_id(base_id: str, vo: str, sid: str) -> str:
    """The id FTS3 gives with id_generator=deterministic, as Rucio predicts it (uuid5 of uuid5)."""
    return str(uuid.uuid5(uuid.uuid5(uuid.UUID(base_id), vo), sid))
