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


LOG = """\
000 (031.000.000) 2026-11-22 00:02:55 Job submitted from host: <127.0.0.1:37269?addrs=127.0.0.1-37269>
...
035 (031.-01.000) 2026-11-22 00:02:55 Cluster submitted from host: <127.0.0.1:37269?addrs=127.0.0.1-37269>
...
001 (031.000.000) 2026-11-22 00:02:58 Job executing on host: <127.0.0.1:37805?addrs=127.0.0.1-37805>
	SlotName: slot2@127-0-0-1.juno-grid.local
	Memory = 2048
...
028 (031.000.000) 2026-11-22 00:02:58 Job ad information event triggered.
Cluster = 31
MachineAttrJUNO_Site0 = "CNAF"
Proc = 0
...
006 (031.000.000) 2026-11-22 00:02:59 Image size of job updated: 10960
	3  -  MemoryUsage of job (MB)
	2768  -  ResidentSetSize of job (KB)
...
005 (031.000.000) 2026-11-22 00:03:00 Job terminated.
	(1) Normal termination (return value 3)
		Usr 0 00:00:00, Sys 0 00:00:00  -  Run Remote Usage
	Partitionable Resources :    Usage  Request Allocated
	\x20  Cpus                 :                 1         1
	\x20  Memory (MB)          :        3      128      2048
	Job terminated of its own accord at 2026-11-22T00:02:58Z with exit-code 3.
...
005 (031.001.000) 2026-11-22 00:03:01 Job terminated.
	(0) Abnormal termination (signal 9)
	(0) No core file
...
012 (031.002.000) 2026-11-22 00:03:02 Job was held.
	Cannot access initial working directory /nowhere: No such file or directory
	Code 13 Subcode 2
...
013 (031.002.000) 2026-11-22 00:03:03 Job was released.
	via condor_release (by user juno)
...
009 (031.003.000) 2026-11-22 00:03:05 Job was aborted.
	via condor_rm (by user juno)
...
001 (031.004.000) 2026-11-22 00:03:06 Job executing on host: <127.0.0.1:37805?addrs=127.0.0.1-37805>
"""  # the last event is still being written: no "..." yet


def test_text_log_parses_the_events_juno_submit_uses() -> None:
    from juno_jobs.monitor import parse_text

    events, used = parse_text(LOG)
    assert used == LOG.index("001 (031.004.000)")
    got = [(e.cluster, e.proc, e.kind, e.site, e.exit_code, e.signal, e.hold_code, e.memory_mb) for e in events]
    assert got == [
        (31, 0, "submit", None, None, None, None, None),
        (31, 0, "execute", None, None, None, None, None),
        (31, 0, "info", "CNAF", None, None, None, None),
        (31, 0, "image", None, None, None, None, 3),
        (31, 0, "terminated", None, 3, None, None, 3),
        (31, 1, "terminated", None, None, 9, None, None),
        (31, 2, "held", None, None, None, 13, None),
        (31, 2, "released", None, None, None, None, None),
        (31, 3, "removed", None, None, None, None, None),
    ]
    held = events[6]
    assert held.hold_reason == "Cannot access initial working directory /nowhere: No such file or directory"
    assert events[1].time > 0


def test_text_log_reads_incrementally(tmp_path) -> None:  # noqa: ANN001 - pytest's tmp_path
    from juno_jobs.monitor import TextLog

    log = tmp_path / "events.log"
    cut = LOG.index("005 (031.001.000)")
    log.write_text(LOG[:cut])
    reader = TextLog(log, tmp_path / ".pos")
    first = reader.read()
    assert [e.kind for e in first][-1] == "terminated"
    with open(log, "a") as fh:
        fh.write(LOG[cut:])
    second = reader.read()
    assert [e.kind for e in second] == ["terminated", "held", "released", "removed"]
    assert reader.read() == []
    with open(log, "a") as fh:
        fh.write("...\n")  # the event that was being written is complete now
    assert [e.kind for e in reader.read()] == ["execute"]
