"""Folding batch-system events into attempt changes (pure)."""

from __future__ import annotations

from juno_jobs.monitor import Event, fold, is_memory_hold


def test_events_fold_in_order_per_job() -> None:
    events = [
        Event(7, 0, "submit", 1.0), Event(7, 1, "submit", 1.0),
        Event(7, 0, "execute", 2.0), Event(7, 0, "info", 2.0, site="CNAF"),
        Event(7, 0, "image", 3.0, memory_mb=120), Event(7, 0, "terminated", 4.0, exit_code=0, memory_mb=150),
        Event(7, 1, "held", 5.0, hold_reason="Cannot access initial working directory", hold_code=13),
    ]
    out = fold(events)
    assert (out[(7, 0)].state, out[(7, 0)].site, out[(7, 0)].started, out[(7, 0)].finished,
            out[(7, 0)].exit_code, out[(7, 0)].memory_mb) == ("ended", "CNAF", 2.0, 4.0, 0, 150)
    assert (out[(7, 1)].state, out[(7, 1)].hold_code) == ("held", 13)


def test_released_and_evicted_jobs_are_idle_again() -> None:
    out = fold([Event(1, 0, "execute", 1.0), Event(1, 0, "evicted", 2.0), Event(2, 0, "held", 3.0),
                Event(2, 0, "released", 4.0)])
    assert out[(1, 0)].state == "idle" and out[(2, 0)].state == "idle"


def test_memory_holds() -> None:
    assert is_memory_hold(34, "")
    assert is_memory_hold(26, "Job has gone over cgroup memory limit of 512 megabytes")
    assert not is_memory_hold(13, "Cannot access initial working directory")
