"""What a backend does: submit a round of items, report events, remove jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from juno_jobs.monitor import Event
from juno_jobs.submit import Item
from juno_jobs.taskdir import TaskDir

if TYPE_CHECKING:  # a type only: `status` never loads the task model (start-up time)
    from juno_jobs.model import Resources


class BackendError(RuntimeError):
    """The batch system refused or could not be reached; the message says which and what to try."""


class Backend(Protocol):
    name: str
    # Events name attempts by (cluster, proc) for condor, (round, proc) for local.
    keyed_by_round: bool

    def describe(self, td: TaskDir, *, uuid: str, name: str, task_id: int, resources: Resources, rnd: int,
                 hold: bool = False) -> str:
        """The submission as text (what `plan` shows)."""
        ...

    def submit(self, td: TaskDir, items: Sequence[Item], *, uuid: str, name: str, task_id: int,
               resources: Resources, rnd: int, hold: bool = False) -> int:
        """Submit one round; return its cluster id (condor) or the round number (local)."""
        ...

    def find_round(self, td: TaskDir, uuid: str, rnd: int) -> int | None:
        """The id of round `rnd` if the batch system already has it (else None)."""
        ...

    def events(self, td: TaskDir) -> list[Event]:
        """Events since the last call (positions are kept in the task directory)."""
        ...

    def remove(self, td: TaskDir, uuid: str, procs: Sequence[tuple[int, int]] | None = None) -> int:
        """Remove the task's jobs (all, or these (cluster|round, proc)); return how many were asked to go."""
        ...

    def job_events(self, td: TaskDir, key: int, proc: int) -> list[str]:
        """One job's events as text, for `logs` (key: cluster or round, as `keyed_by_round` says)."""
        ...

    def largest_slots(self) -> dict[str, int]:
        """Site → the most memory (MB) one slot there offers; {} when the backend cannot tell."""
        ...
