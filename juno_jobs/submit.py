"""The HTCondor submit description of a task round, and its items file (pure text).

One cluster per round, with HTCondor file transfer (no shared file system with the execute nodes).
Every job of the cluster has the same Requirements, the locality convention of
the pool: `stringListMember(TARGET.JUNO_Site, MY.DESIRED_Sites)`; what varies per job comes from the items
file (`queue job,attempt,memory,sites from FILE`), which the schedd expands itself with late
materialization (`max_idle`): 10,000 jobs are one call and a few milliseconds, where passing items from
Python (`itemdata=`) is quadratic. `sites` is the last column because HTCondor splits item lines at commas
and spaces and gives the last variable the rest of the line ("CNAF,JINR" stays whole).

`job_machine_attrs = JUNO_Site` records the site in the job ad (MachineAttrJUNO_Site0) and
`job_ad_information_attrs` copies it into the user log, where juno-submit reads it; the wrapper gets it
as $JUNO_SITE (`$$(JUNO_Site)` is the slot's value at match time) to pick that site's storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from juno_jobs.taskdir import TaskDir

if TYPE_CHECKING:  # a type only: `status` never loads the task model (start-up time)
    from juno_jobs.model import Resources

ITEM_VARS = "job,attempt,memory,sites"
REQUIREMENTS = "stringListMember(TARGET.JUNO_Site, MY.DESIRED_Sites)"
WALL_MARGIN_S = 600  # the wrapper stops the payload at the wall time; HTCondor only as a safety net


@dataclass(frozen=True)
class Item:
    job: int
    attempt: int
    memory_mb: int
    sites: tuple[str, ...]

    def line(self) -> str:
        return f"{self.job} {self.attempt} {self.memory_mb} {','.join(self.sites)}\n"


def items_text(items: Sequence[Item]) -> str:
    return "".join(i.line() for i in items)


def description(td: TaskDir, *, uuid: str, name: str, task_id: int, resources: Resources, max_idle: int,
                rnd: int, hold: bool = False) -> dict[str, str]:
    """The submit description (without the queue statement) shared by every job of the task."""
    root = td.root
    desc = {
        "universe": "vanilla",
        "executable": str(td.wrapper),
        "arguments": "$(job) $(attempt) $(memory)",
        "initialdir": str(root),
        "output": "logs/$(job).$(attempt).out",
        "error": "logs/$(job).$(attempt).err",
        "log": str(td.events_log),
        "request_memory": "$(memory)",
        "request_cpus": str(resources.cpus),
        "request_disk": f"{resources.disk_mb * 1024}",  # KiB
        "requirements": REQUIREMENTS,
        "MY.DESIRED_Sites": '"$(sites)"',
        "MY.JunoTask": f'"{uuid}"',
        "MY.JunoTaskName": f'"{name}"',
        "MY.JunoTaskId": str(task_id),
        "MY.JunoRound": str(rnd),
        "MY.JunoJob": "$(job)",
        "MY.JunoAttempt": "$(attempt)",
        "job_machine_attrs": "JUNO_Site",
        "job_ad_information_attrs": "MachineAttrJUNO_Site0",
        "environment": '"JUNO_SITE=$$(JUNO_Site)"',
        # Execute nodes share no file system with the submitter: the job's own item, task.json and the
        # payload travel with it; only the result record (and stdout/stderr) comes back. Outputs go from
        # the worker to storage (the wrapper), never through here.
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT",
        "transfer_input_files": ", ".join(td.transfer_inputs("$(job)")),
        "transfer_output_files": "result.json",
        "transfer_output_remaps": '"result.json = results/$(job).$(attempt).json"',
        "allowed_execute_duration": str(resources.wall_s + WALL_MARGIN_S),
        "max_idle": str(max_idle),
    }
    if hold:
        desc["hold"] = "True"
    return desc


def submit_text(desc: dict[str, str], items: str) -> str:
    body = "".join(f"{k} = {v}\n" for k, v in desc.items())
    return f"{body}queue {ITEM_VARS} from {items}\n"
