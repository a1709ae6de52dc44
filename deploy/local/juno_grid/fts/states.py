"""FTS3's job and file state machine, as pure functions.

The names and the rules for deriving a job's state from its files follow FTS3
(https://fts3-docs.web.cern.ch/fts3-docs/docs/state_machine.html), because Rucio's poller reads them
literally: a file is final in FINISHED, FAILED, CANCELED or NOT_USED; a job in FINISHED,
FINISHEDDIRTY, FAILED or CANCELED.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum


class FileState(StrEnum):
    STAGING = "STAGING"  # waiting for a bring-online request to be issued
    STARTED = "STARTED"  # bring-online request issued, polling the source until it is online
    SUBMITTED = "SUBMITTED"  # ready to copy, waiting for a worker
    ACTIVE = "ACTIVE"  # a worker is copying it
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    NOT_USED = "NOT_USED"  # an alternative source or a later hop that was (not yet) needed


class JobState(StrEnum):
    SUBMITTED = "SUBMITTED"
    STAGING = "STAGING"
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"
    FINISHEDDIRTY = "FINISHEDDIRTY"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class JobType(StrEnum):
    # FTS3's one-letter codes (Rucio compares `job_type` with FTS_JOB_TYPE.MULTI_HOP == "H").
    REGULAR = "N"
    MULTIPLE_REPLICA = "R"
    MULTI_HOP = "H"


FINAL_FILE_STATES = frozenset(
    {FileState.FINISHED, FileState.FAILED, FileState.CANCELED, FileState.NOT_USED}
)
FINAL_JOB_STATES = frozenset(
    {JobState.FINISHED, JobState.FINISHEDDIRTY, JobState.FAILED, JobState.CANCELED}
)
# States a file can be found in after a crash, with the state it resumes from.
RESUME_FROM = {FileState.ACTIVE: FileState.SUBMITTED, FileState.STARTED: FileState.STAGING}


def derive_job_state(job_type: JobType, files: Iterable[tuple[int, FileState]]) -> JobState:
    """The job state FTS3 reports for files given as (file_index, state).

    Rows sharing a file_index are alternatives for one logical file (a multiple-replica job): the
    logical file succeeded if any of them FINISHED.
    """
    rows = list(files)
    states = {state for _, state in rows}
    if not states <= FINAL_FILE_STATES:
        if FileState.ACTIVE in states:
            return JobState.ACTIVE
        if states & {FileState.STAGING, FileState.STARTED}:
            return JobState.STAGING
        return JobState.SUBMITTED
    if FileState.CANCELED in states:
        return JobState.CANCELED
    by_index: dict[int, set[FileState]] = {}
    for index, state in rows:
        by_index.setdefault(index, set()).add(state)
    done = [FileState.FINISHED in group for group in by_index.values()]
    if done and all(done):
        return JobState.FINISHED
    if not any(done) or job_type is JobType.MULTI_HOP:
        # A multihop job whose last hop did not arrive failed, whatever hops did finish.
        return JobState.FAILED
    return JobState.FINISHEDDIRTY


def job_reason(state: JobState) -> str | None:
    """The job-level reason FTS3 gives (the per-file reasons carry the detail)."""
    if state in (JobState.FAILED, JobState.FINISHEDDIRTY):
        return "One or more files failed. Please have a look at the details for more information"
    if state is JobState.CANCELED:
        return "Job canceled by the user"
    return None


def fts_time(epoch: float | None) -> str | None:
    """FTS3's timestamp format, which Rucio parses with '%Y-%m-%dT%H:%M:%S' (UTC, no fraction)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")
