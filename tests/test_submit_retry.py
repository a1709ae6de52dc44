"""Retry decisions (pure): exit codes, the memory ladder, caps."""

from __future__ import annotations

from juno_jobs.model import RetryPolicy
from juno_jobs.retry import decide, next_memory

LADDER = RetryPolicy(max_attempts=5, memory_ladder_mb=(512, 1024, 2048))


def test_memory_failure_climbs_the_ladder_then_stops() -> None:
    d = decide("memory", exit_code=202, attempt=1, memory_mb=512, policy=LADDER)
    assert (d.retry, d.memory_mb) == (True, 1024)
    d = decide("memory", exit_code=202, attempt=2, memory_mb=1024, policy=LADDER)
    assert (d.retry, d.memory_mb) == (True, 2048)
    d = decide("memory", exit_code=202, attempt=3, memory_mb=2048, policy=LADDER)
    assert not d.retry and "ladder stops at 2GB" in d.reason


def test_the_ladder_starts_above_any_request() -> None:
    assert next_memory(700, (512, 1024, 2048)) == 1024
    assert next_memory(3000, (512, 1024, 2048)) is None
    d = decide("memory", exit_code=None, attempt=1, memory_mb=2048, policy=RetryPolicy(max_attempts=3))
    assert not d.retry and "ladder stops at 2GB" in d.reason


def test_max_attempts_caps_everything() -> None:
    d = decide("memory", exit_code=202, attempt=5, memory_mb=512, policy=LADDER)
    assert not d.retry and "attempt 5 of 5" in d.reason
    d = decide("input", exit_code=201, attempt=5, memory_mb=512, policy=LADDER)
    assert not d.retry


def test_payload_exit_codes() -> None:
    any_code = RetryPolicy(max_attempts=3)
    assert decide("payload", exit_code=1, attempt=1, memory_mb=512, policy=any_code).retry
    only = RetryPolicy(max_attempts=3, exit_codes=frozenset({3}))
    d = decide("payload", exit_code=3, attempt=2, memory_mb=512, policy=only)
    assert (d.retry, d.memory_mb) == (True, 512)
    d = decide("payload", exit_code=9, attempt=1, memory_mb=512, policy=only)
    assert not d.retry and "exit code 9 is not in retry.exit_codes" in d.reason


def test_transient_and_hopeless_kinds() -> None:
    p = RetryPolicy(max_attempts=3)
    for kind in ("input", "held", "lost"):
        assert decide(kind, exit_code=None, attempt=1, memory_mb=512, policy=p).retry
    for kind in ("walltime", "release", "outputs", "wrapper", "something-new"):
        assert not decide(kind, exit_code=None, attempt=1, memory_mb=512, policy=p).retry
