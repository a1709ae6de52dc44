"""Should a failed attempt go again, and with how much memory? (pure)

Failure kinds come from the wrapper's result record or from HTCondor (wrapper.py, monitor.py):

  memory    the payload went over its memory request (the wrapper measures its resident set size, or
            HTCondor held the job for memory): again with the next step of the memory ladder above the
            last request; no step left = failed ("capped")
  input     reading an input from the site's storage failed: again, same memory (storage hiccups pass)
  payload   the payload exited non-zero: again if the task's retry.exit_codes says so ('any' by default)
  held      HTCondor held the job for another reason: again (the hold reason is kept for the user)
  lost      the job vanished from the batch system without a result: again
  walltime  the payload ran past resources.wall_time: failed (it would again)
  release   the software release is missing at the site: failed (a set-up problem, not bad luck)
  stageout  copying an output to the output RSE failed, or its adler32 there differed: again
  outputs   the payload succeeded but a declared output is missing: failed (the task file or the payload)
  conflict  an output's PFN already holds other bytes: failed (nothing is ever overwritten)
  unsafe    the job's description asked for something a job must never do (e.g. '/' or '..' in an input
            name): failed
  wrapper   the wrapper itself broke: failed

Every decision respects retry.max_attempts (the first attempt included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from juno_jobs.units import format_mb

if TYPE_CHECKING:  # a type only: `status` never loads the task model (start-up time)
    from juno_jobs.model import RetryPolicy

RETRIABLE_ALWAYS = frozenset({"input", "stageout", "held", "lost"})
NEVER = frozenset({"walltime", "release", "outputs", "conflict", "unsafe", "wrapper"})
KINDS = frozenset({"memory", "payload"}) | RETRIABLE_ALWAYS | NEVER


@dataclass(frozen=True)
class Decision:
    retry: bool
    memory_mb: int  # for the next attempt (unchanged when not retrying)
    reason: str


def next_memory(current_mb: int, ladder: tuple[int, ...]) -> int | None:
    """The smallest ladder step above the current request, or None at the top."""
    return next((step for step in ladder if step > current_mb), None)


def decide(kind: str, *, exit_code: int | None, attempt: int, memory_mb: int, policy: RetryPolicy) -> Decision:
    """What to do after attempt number `attempt` (1-based) failed with `kind`."""
    if kind not in KINDS:
        kind = "wrapper"
    if kind in NEVER:
        return Decision(False, memory_mb, f"{kind} failure: not retried")
    if attempt >= policy.max_attempts:
        return Decision(False, memory_mb, f"{kind} failure on attempt {attempt} of {policy.max_attempts}: "
                                          "no attempts left")
    if kind == "memory":
        nxt = next_memory(memory_mb, policy.memory_ladder_mb)
        if nxt is None:
            top = format_mb(policy.memory_ladder_mb[-1]) if policy.memory_ladder_mb else format_mb(memory_mb)
            return Decision(False, memory_mb, f"memory failure at {format_mb(memory_mb)}: the memory ladder stops at "
                                              f"{top}")
        return Decision(True, nxt, f"memory failure at {format_mb(memory_mb)}: again with {format_mb(nxt)}")
    if kind == "payload":
        if policy.exit_codes is not None and exit_code not in policy.exit_codes:
            return Decision(False, memory_mb, f"payload exit code {exit_code} is not in retry.exit_codes")
        return Decision(True, memory_mb, f"payload exit code {exit_code}: again")
    return Decision(True, memory_mb, f"{kind} failure: again")
