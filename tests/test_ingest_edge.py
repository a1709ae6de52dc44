"""The Kafka edge at bounded cost, the hostile corpus, narrowing a refused chunk, dead letters of any size.

Pure functions: no broker, no Rucio (the live tests drive the same corpus through the grid).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import jsonschema
import pytest
from rucio.common import exception as rex

from juno_ingest import dlq, edge, hostile, messages
from juno_ingest import simulate as sim
from juno_ingest.batching import Position
from juno_ingest.narrowing import Attempt, Verdict, classify, narrow
from juno_ingest.pipeline import Fate, Incoming, Outcome

SPEC = sim.SimSpec(files=6, streams=("JUNODAQ.tedge01",), seed=7)
PLAN = sim.make_plan(SPEC, now=datetime(2025, 10, 9, 18, 0, tzinfo=UTC))
NOW = datetime(2025, 10, 9, 18, 0, tzinfo=UTC)


def _verdict(value: bytes | None) -> tuple[str, str]:
    """(code, reason) the ingester's pure checks give a message value ("valid" if none)."""
    parsed = messages.parse(value)
    if isinstance(parsed, messages.InvalidMessage):
        return parsed.code, parsed.reason
    future = messages.future_problem(parsed, NOW, 3600)
    return ("future", future) if future else ("valid", "")


# -- the corpus --------------------------------------------------------------------------------------

CASES = hostile.hostile_cases(PLAN.files[0], SPEC.prefix)


def test_the_corpus_has_at_least_30_kinds() -> None:
    assert len({c.kind for c in CASES}) == len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.kind for c in CASES])
def test_every_hostile_message_is_refused_with_its_code(case: hostile.HostileCase) -> None:
    code, reason = _verdict(case.value)  # its cost is bounded by edge.decode's limits, not timed here
    assert code == case.code, reason
    assert reason and len(reason) < 1000  # a reason a person reads, never the hostile value itself


@pytest.mark.parametrize("index", range(5))
def test_valid_messages_at_every_limit_are_taken(index: int) -> None:
    value = hostile.at_limits(PLAN.files[index], SPEC.prefix, index)
    assert _verdict(value) == ("valid", "")
    validator = jsonschema.Draft202012Validator(messages.load_schema())
    assert validator.is_valid(json.loads(value))


def test_names_at_the_length_limit_are_taken_one_more_is_not() -> None:
    at = hostile.long_name(PLAN.files[0])
    assert len(at.lfn) == messages.NAME_MAX
    assert _verdict(at.message(SPEC.prefix).to_json()) == ("valid", "")
    over = hostile.long_name(PLAN.files[0], messages.NAME_MAX + 1)
    code, reason = _verdict(over.message(SPEC.prefix).to_json())
    assert code == "bad_name" and "250" in reason


# -- edge.decode -------------------------------------------------------------------------------------

def test_depth_skips_brackets_inside_strings() -> None:
    assert edge.depth(b'{"a": "[[[[{{{{", "b": {"c": [1]}}') == 3
    assert edge.depth(b'{"a": "\\"[[[["}') == 1


def test_a_message_with_many_brackets_in_text_is_not_taken_for_deep_nesting() -> None:
    data = dict(json.loads(PLAN.messages[0].value))
    data["metadata"] = {"note": "{[" * 100}
    assert _verdict(json.dumps(data).encode())[0] == "valid"


def test_size_limit_is_checked_before_anything_else() -> None:
    with pytest.raises(edge.Invalid, match="at most 65536 bytes"):
        edge.decode(b"[" * (edge.MAX_MESSAGE_BYTES + 1))


def test_show_bounds_what_a_reason_quotes() -> None:
    assert len(edge.show("x" * 10_000_000)) < 120
    assert "10000000 characters" in edge.show("x" * 10_000_000)
    assert edge.show("abc") == "'abc'"


# -- narrowing ---------------------------------------------------------------------------------------

def _rucio(bad: set[int], calls: list[int]) -> object:
    """attempt(): refuses any part holding a bad item, the way a bulk call is one transaction."""
    def attempt(part: Sequence[int]) -> Attempt:
        calls.append(len(part))
        hit = bad & set(part)
        return Attempt(Verdict.REJECTED, f"InvalidObject: item {min(hit)}") if hit else Attempt(Verdict.OK)
    return attempt


@pytest.mark.parametrize("bad", [{0}, {499}, {3, 250, 251}, {7, 100, 300, 301, 499}, set(range(10))])
def test_narrowing_isolates_exactly_the_culprits(bad: set[int]) -> None:
    items = list(range(500))
    calls: list[int] = []
    attempt = _rucio(bad, calls)
    found = narrow(items, attempt, first=attempt(items))  # type: ignore[operator]
    assert sorted(item for item, _ in found.rejected) == sorted(bad)
    assert sorted(found.ok) == sorted(set(items) - bad)
    assert all(reason.reason == f"InvalidObject: item {item}" for item, reason in found.rejected)
    assert found.calls == len(calls) - 1
    # k culprits in n cost about 2·k·log2(n/k) calls, far fewer than n
    assert found.calls <= 2 * len(bad) * 9 + 2


def test_narrowing_three_in_a_thousand_takes_few_calls() -> None:
    items = list(range(1000))
    calls: list[int] = []
    attempt = _rucio({17, 512, 998}, calls)
    found = narrow(items, attempt, first=attempt(items))  # type: ignore[operator]
    assert len(found.ok) == 997 and len(found.rejected) == 3
    assert found.calls < 60


def test_narrowing_keeps_recheck_and_closed_apart() -> None:
    def attempt(part: Sequence[int]) -> Attempt:
        if 5 in part:
            return Attempt(Verdict.RECHECK)
        if 9 in part:
            return Attempt(Verdict.REJECTED, "no")
        return Attempt(Verdict.OK)

    found = narrow(list(range(12)), attempt, first=Attempt(Verdict.REJECTED, "no"))
    assert [item for item, _ in found.rejected] == [9]
    assert 5 in found.recheck and 9 not in found.ok


@pytest.mark.parametrize(("err", "verdict"), [
    (rex.InvalidObject("bad adler32"), Verdict.REJECTED),
    (rex.InputValidationError("bad"), Verdict.REJECTED),
    (rex.AccessDenied("no"), Verdict.REJECTED),
    (rex.InvalidMetadata("no"), Verdict.REJECTED),
    (rex.UnsupportedOperation("something else"), Verdict.REJECTED),
    (rex.UnsupportedOperation("The data identifier raw:b is closed"), Verdict.CLOSED),
    (rex.FileAlreadyExists("x"), Verdict.RECHECK),
    (rex.FileConsistencyMismatch("x"), Verdict.RECHECK),
    (rex.DatabaseException("value too long"), Verdict.AMBIGUOUS),
    (rex.RucioException("502 Bad Gateway"), Verdict.AMBIGUOUS),
    (rex.ServiceUnavailable("x"), Verdict.UNAVAILABLE),
    (rex.ServerConnectionException("x"), Verdict.UNAVAILABLE),
    (ConnectionRefusedError("x"), Verdict.UNAVAILABLE),
    (TimeoutError("x"), Verdict.UNAVAILABLE),
    (rex.CannotAuthenticate("x"), Verdict.REFUSED),
    (rex.RSENotFound("x"), Verdict.REFUSED),
])
def test_rucio_errors_are_sorted_by_what_they_say_about_the_files(err: Exception, verdict: Verdict) -> None:
    assert classify(err).verdict is verdict


def test_errors_that_are_not_rucios_are_bugs_and_show() -> None:
    with pytest.raises(TypeError):
        classify(TypeError("bug"))


# -- dead letters of any size ------------------------------------------------------------------------

def _item(value: bytes | None, key: bytes | None = b"k") -> Incoming:
    return Incoming(Position("spade", 2, 41), key, value, 1700000000000)


def test_a_large_original_is_kept_truncated_with_size_and_hash() -> None:
    value = b"x" * (10 << 20)
    item = _item(value, key=b"K" * 5000)
    kept, key, truncated = dlq.stored(item)
    assert kept == value[:dlq.VALUE_MAX] and key == b"K" * dlq.KEY_MAX and truncated == "value,key"
    headers = dict(dlq.headers_for(item, Outcome(Fate.DEAD, "malformed", "r" * 10_000), truncated=truncated))
    assert headers[dlq.SIZE] == str(10 << 20).encode()
    assert headers[dlq.SHA256] == hashlib.sha256(value).hexdigest().encode()
    assert headers[dlq.TRUNCATED] == b"value,key" and headers[dlq.KEY_SIZE] == b"5000"
    assert headers[dlq.PARTITION] == b"2" and headers[dlq.OFFSET] == b"41" and headers[dlq.TOPIC] == b"spade"
    reason = headers[dlq.REASON]
    assert isinstance(reason, bytes) and len(reason) <= dlq.REASON_MAX


def test_small_and_null_originals_are_kept_unchanged() -> None:
    assert dlq.stored(_item(b"{}")) == (b"{}", b"k", "")
    assert dlq.stored(_item(None, None)) == (None, None, "")
    headers = dict(dlq.headers_for(_item(None, None), Outcome(Fate.DEAD, "malformed", "empty")))
    assert headers[dlq.SIZE] == b"" and dlq.TRUNCATED not in headers


def test_mix_into_puts_each_hostile_message_before_a_canary_with_its_key() -> None:
    plan = sim.make_plan(sim.SimSpec(files=10, streams=("JUNODAQ.tedge02",), seed=3),
                         now=datetime(2025, 10, 9, 18, 0, tzinfo=UTC))
    added = hostile.mix_into(plan, SPEC.prefix)
    assert added == len(CASES)
    for k, msg in enumerate(plan.messages):
        if msg.kind.startswith("hostile:"):
            after = next(m for m in plan.messages[k + 1:] if not m.kind.startswith("hostile:"))
            assert after.expect == "registered" and after.key == msg.key
    assert plan.summary()["expect"]["dead"] == len(CASES)


@pytest.mark.parametrize("raw", [b'{"a": 1, "a" : 2}', b'{"a": 1, "m": {"k": 1, "k"\n:2}}', b'{"a": 1,"a":1}'])
def test_duplicate_keys_are_found_whatever_the_spacing(raw: bytes) -> None:
    with pytest.raises(edge.Invalid, match="more than once"):
        edge.decode(raw)


@pytest.mark.parametrize("raw", [b'{"a": "x\\": y", "b": 1}', b'{"a": [{"b": 1}], "c": 2}'])
def test_text_holding_quote_colon_or_objects_in_arrays_are_not_duplicates(raw: bytes) -> None:
    assert isinstance(edge.decode(raw), dict)
