"""One exit-code table for every juno-dci command (juno-grid, juno-policy, juno-ingest, juno-submit,
juno-dci), so a script or cron job reads every tool the same way. Each code has one meaning.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0  # done; in sync; complete
    ERROR = 1  # unexpected error (a bug: -v prints the traceback)
    USAGE = 2  # bad command line, option value or configuration setting (click's own code)
    INVALID = 3  # an input file (policy, sites, task file) is invalid: every problem as FILE:LINE; nothing sent
    REFUSED = 4  # refused: Rucio denied it (permission, login) or it cannot be done as asked
    UNAVAILABLE = 5  # a service could not be reached or failed: Rucio (server, database), Kafka, HTCondor, storage
    NOT_FOUND = 6  # the named thing does not exist (DID, task)
    FAILED = 7  # ran to the end, but parts failed (listed): apply's failed changes, a task's failed jobs
    DIFFERS = 8  # checked, and not as wanted: plan/--dry-run has changes, status incomplete, grid part down
    STOPPED = 9  # stopped before doing harm: a safety limit reached, a deletion not confirmed


MEANING: dict[Exit, str] = {
    Exit.OK: "done (in sync, complete)",
    Exit.ERROR: "unexpected error (-v shows the traceback)",
    Exit.USAGE: "bad command line, option value or configuration setting",
    Exit.INVALID: "invalid policy, sites or task file: every problem as FILE:LINE, nothing sent",
    Exit.REFUSED: "refused: Rucio denied it (permission, login), or it cannot be done as asked",
    Exit.UNAVAILABLE: "a service could not be reached or failed (Rucio, its database, Kafka, HTCondor, storage)",
    Exit.NOT_FOUND: "no such DID or task",
    Exit.FAILED: "ran to the end, but parts failed (listed)",
    Exit.DIFFERS: "not as wanted: plan has changes, status incomplete, a grid part down",
    Exit.STOPPED: "stopped by a safety limit or an unconfirmed deletion; nothing (more) changed",
}


def help_epilog(used: tuple[Exit, ...] = tuple(Exit)) -> str:
    """The table for a command's --help (click keeps lines after \\b as they are)."""
    return "\b\nExit codes (the same for every juno-dci command):\n" + "\n".join(
        f"  {int(code)}  {MEANING[code]}" for code in used)
