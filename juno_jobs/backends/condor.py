"""The condor backend: htcondor2 against a schedd (the local grid's pool, or a remote one).

Which schedd: JUNO_SUBMIT_SCHEDD names a remote one (located through the collector of CONDOR_CONFIG);
otherwise the local schedd of CONDOR_CONFIG. Authentication is whatever HTCondor's configuration says:
CLAIMTOBE on the local grid (loopback only); IDTOKENS or SciTokens in production (README).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from juno_jobs import submit as subdesc
from juno_jobs.backends.base import BackendError
from juno_jobs.monitor import Event, condor_reader, job_blocks
from juno_jobs.settings import Settings
from juno_jobs.submit import Item
from juno_jobs.taskdir import TaskDir

if TYPE_CHECKING:  # a type only: `status` never loads the task model (start-up time)
    from juno_jobs.model import Resources

REMOVE_TRIES = 5


class CondorBackend:
    name = "condor"
    keyed_by_round = False

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self._schedd: Any = None

    def schedd(self) -> Any:
        import htcondor2

        if self._schedd is None:
            try:
                if self.cfg.schedd:
                    ad = htcondor2.Collector().locate(htcondor2.DaemonType.Schedd, self.cfg.schedd)
                    if ad is None:  # htcondor2 answers None, and Schedd(None) would be the local schedd
                        raise LookupError(f"the collector knows no schedd named {self.cfg.schedd}")
                    self._schedd = htcondor2.Schedd(ad)
                else:
                    self._schedd = htcondor2.Schedd()
            except Exception as err:  # noqa: BLE001 - the bindings raise HTCondorException and plain errors
                raise BackendError(f"cannot reach the schedd {self.cfg.schedd or '(local)'}: {err}. Is HTCondor "
                                   "running and CONDOR_CONFIG set (on the local grid: juno-grid exec -- ...)?") from err
        return self._schedd

    def describe(self, td: TaskDir, *, uuid: str, name: str, task_id: int, resources: Resources, rnd: int,
                 hold: bool = False) -> str:
        desc = subdesc.description(td, uuid=uuid, name=name, task_id=task_id, resources=resources,
                                   max_idle=self.cfg.max_idle, rnd=rnd, hold=hold)
        return subdesc.submit_text(desc, str(td.items(rnd)))

    def largest_slots(self) -> dict[str, int]:
        """Site → the most memory (MB) one slot there offers, from the collector; {} if it does not answer.
        A job asking for more never starts: planning warns about it."""
        import htcondor2

        try:
            ads = htcondor2.Collector().query(htcondor2.AdType.Startd, projection=["JUNO_Site", "Memory",
                                                                                   "TotalSlotMemory"])
        except Exception:  # noqa: BLE001 - a warning only: no collector, no warning
            return {}
        out: dict[str, int] = {}
        for ad in ads:
            site = ad.get("JUNO_Site")
            memory = ad.get("TotalSlotMemory", ad.get("Memory"))
            if site and isinstance(memory, int):
                out[str(site)] = max(out.get(str(site), 0), memory)
        return out

    def find_round(self, td: TaskDir, uuid: str, rnd: int) -> int | None:
        """The cluster of a round the schedd has although the store never heard back (a crash between
        submitting and recording): submitting it again would double it."""
        try:
            ads = self.schedd().query(f'JunoTask == "{uuid}" && JunoRound == {rnd}', projection=["ClusterId"],
                                      limit=1)
        except Exception as err:  # noqa: BLE001 - see schedd()
            raise BackendError(f"cannot ask the schedd about round {rnd}: {err}") from err
        return int(ads[0]["ClusterId"]) if ads else None

    def submit(self, td: TaskDir, items: Sequence[Item], *, uuid: str, name: str, task_id: int,
               resources: Resources, rnd: int, hold: bool = False) -> int:
        import htcondor2

        td.items(rnd).write_text(subdesc.items_text(items))
        text = self.describe(td, uuid=uuid, name=name, task_id=task_id, resources=resources, rnd=rnd, hold=hold)
        td.submit_file(rnd).write_text(text)
        try:
            result = self.schedd().submit(htcondor2.Submit(text))
        except BackendError:
            raise
        except Exception as err:  # noqa: BLE001 - see schedd()
            raise BackendError(f"the schedd refused round {rnd} of task {name}: {err}. The submit description "
                               f"is in {td.submit_file(rnd)}") from err
        return int(result.cluster())

    def events(self, td: TaskDir) -> list[Event]:
        return condor_reader(td.events_log, td.root).read()

    def job_events(self, td: TaskDir, key: int, proc: int) -> list[str]:
        return job_blocks(td.events_log, key, proc)

    def remove(self, td: TaskDir, uuid: str, procs: Sequence[tuple[int, int]] | None = None) -> int:
        import htcondor2

        if procs is not None and not procs:
            return 0
        # Always constrained by the task's id: never touches anybody else's jobs.
        constraint = f'JunoTask == "{uuid}"'
        if procs is not None:
            ids = " || ".join(f"(ClusterId == {c} && ProcId == {p})" for c, p in procs)
            constraint += f" && ({ids})"
        # A schedd busy materializing or removing thousands of jobs can time a request out: removing is
        # idempotent, so it is asked again (unlike submitting, which could double a round).
        for attempt in range(REMOVE_TRIES):
            try:
                result = self.schedd().act(htcondor2.JobAction.Remove, constraint)
                return int(result.get("TotalSuccess", 0)) if result is not None else 0
            except Exception as err:  # noqa: BLE001 - see schedd()
                if attempt == REMOVE_TRIES - 1:
                    raise BackendError(f"the schedd did not remove the jobs ({REMOVE_TRIES} tries): {err}. "
                                       f"Try again: juno-submit kill, or condor_rm -constraint '{constraint}'"
                                       ) from err
                time.sleep(2.0 * (attempt + 1))
        return 0
