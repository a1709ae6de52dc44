"""The ingest-event contract: juno_ingest.events (code) and etc/ingest-event.schema.json (for other
consumers) accept and refuse the same events; which events a batch makes (publisher.batch_events, pure)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from typing import Any

import jsonschema
import pytest

from juno_ingest import events
from juno_ingest.events import IngestEvent, InvalidEvent
from juno_ingest.mapping import FilePlan, plan_block
from juno_ingest.pipeline import BatchResult, Fate, Outcome
from juno_ingest.publisher import batch_events, duplicate_blocks

LFN = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"
BLOCK = "block.JUNODAQ.global_trigger.20251009"
FILE: dict[str, Any] = {"version": 1, "kind": "file_registered", "scope": "raw", "name": LFN,
                        "dataset": f"raw:{BLOCK}", "rse": "IHEP-EOS", "bytes": 1073741824, "adler32": "0a1b2c3d",
                        "run": 10554, "stream": "JUNODAQ.global_trigger", "at": "2025-10-09T14:05:12.031Z"}
CREATED: dict[str, Any] = {"version": 1, "kind": "block_created", "scope": "raw", "name": BLOCK,
                           "stream": "JUNODAQ.global_trigger", "at": "2025-10-09T00:01:02Z"}
CLOSED: dict[str, Any] = {"version": 1, "kind": "block_closed", "scope": "raw", "name": BLOCK, "rse": "IHEP-EOS",
                          "stream": "JUNODAQ.global_trigger", "bytes": 10, "files": 2,
                          "at": "2025-10-10T06:00:00+00:00"}
_DROP = object()


def schema() -> dict[str, Any]:
    return json.loads(events.SCHEMA_FILE.read_text())


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def corpus() -> list[dict[str, Any]]:
    cases = [copy.deepcopy(FILE), copy.deepcopy(CREATED), copy.deepcopy(CLOSED)]
    for base in (FILE, CREATED, CLOSED):
        for key in [*base, "dataset", "rse", "bytes", "adler32", "files", "run", "stream", "extra"]:
            cases.append(changed(base, **{key: _DROP}))
            for bad in (None, True, 1.5, -1, 0, "", "x", [], {}, "raw:x", "0A1B2C3D", "IHEP EOS",
                        "2025-10-09T14:05:12", "2025-10-09 14:05:12Z", "raw:block.x", "JUNODAQ.global_trigger"):
                cases.append(changed(base, **{key: bad}))
    cases += [changed(FILE, kind="block_created"), changed(CREATED, kind="file_registered"),
              changed(FILE, version=2), changed(FILE, version=1.0), changed(FILE, bytes=5.0),
              changed(FILE, run=1e300), changed(FILE, bytes=2**53), changed(FILE, bytes=2**53 - 1),
              changed(FILE, name="a b"),
              changed(FILE, scope="x" * 26), changed(FILE, dataset="raw:" + "b" * 251),
              changed(FILE, stream="junodaq.x"), changed(FILE, at="2025-10-09T14:05:12.031+08:00")]
    return cases


def test_schema_is_valid_and_its_examples_parse() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    for example in schema()["examples"]:
        assert isinstance(events.parse(json.dumps(example)), IngestEvent)


def test_module_and_schema_agree_on_every_case() -> None:
    validator = jsonschema.Draft202012Validator(schema())
    disagreements = []
    accepted = 0
    for case in corpus():
        schema_ok = validator.is_valid(case)
        try:
            events.parse(json.dumps(case))
            parser_ok = True
        except InvalidEvent:
            parser_ok = False
        accepted += parser_ok
        if schema_ok != parser_ok:
            disagreements.append((schema_ok, parser_ok, case))
    assert not disagreements, disagreements[:3]
    assert 10 < accepted < len(corpus()) - 100  # both kinds of case are in the corpus


def test_field_names_and_kinds_are_the_same() -> None:
    props = schema()["properties"]
    assert set(props) == {"version", *IngestEvent.__dataclass_fields__}
    assert tuple(props["kind"]["enum"]) == events.KINDS
    for rule in schema()["allOf"]:
        kind = rule["if"]["properties"]["kind"]["const"]
        assert tuple(rule["then"]["required"]) == events.REQUIRED[kind]
    assert events.DEFAULT_TOPIC in schema()["description"]


def test_encode_parse_round_trip_and_key_is_the_block() -> None:
    for body in (FILE, CREATED, CLOSED):
        event = events.parse(json.dumps(body))
        again = events.parse(event.encode())
        assert again == event
        assert jsonschema.Draft202012Validator(schema()).is_valid(json.loads(event.encode()))
        assert event.key() == f"raw:{BLOCK}".encode()  # one block's events share a partition
    with pytest.raises(ValueError, match="zone"):
        IngestEvent(kind="block_created", scope="raw", name=BLOCK, at=datetime(2025, 1, 1), stream="A.b").encode()


@pytest.mark.parametrize(("body", "words"), [
    (changed(FILE, bytes=_DROP), "file_registered needs bytes"),
    (changed(CLOSED, files=_DROP), "block_closed needs files"),
    (changed(FILE, at="2025-10-09T14:05:12"), "at:"),
    (changed(FILE, adler32="0A1B2C3D"), "adler32"),
    (changed(FILE, extra=1), "unknown field(s): extra"),
    (changed(FILE, dataset=BLOCK), "dataset"),
])
def test_errors_name_the_field(body: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidEvent, match=words.replace("(", r"\(").replace(")", r"\)")):
        events.parse(json.dumps(body))


# -- which events a batch makes -----------------------------------------------------------------------

def _plan(i: int, day: int = 9) -> FilePlan:
    block = plan_block("JUNODAQ.global_trigger", date(2025, 10, day))
    name = f"RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.{i:03d}.dat"
    return FilePlan(name=name, size=100 + i, adler32=f"{i:08x}", block=block, path=f"raw/2025/1009/{name}", run=10554)


def test_batch_events_registered_and_confirmed_duplicates_once_in_order() -> None:
    now = datetime(2025, 10, 9, 15, tzinfo=UTC)
    a, b, c, d = _plan(1), _plan(2), _plan(3), _plan(4, day=10)
    result = BatchResult(outcomes=[
        Outcome(Fate.REGISTERED, name=a.name, block=a.block.name, plan=a),
        Outcome(Fate.DEAD, "malformed", "bad"),
        Outcome(Fate.DUPLICATE, name=b.name, block=b.block.name, plan=b),  # replay: Rucio has it in its block
        Outcome(Fate.DUPLICATE, name=c.name, block=c.block.name, plan=c),  # Rucio has it under another block
        Outcome(Fate.DUPLICATE, name=a.name, block=a.block.name, plan=a),  # the same file twice in the batch
        Outcome(Fate.REGISTERED, name=d.name, block=d.block.name, plan=d),
    ], opened_blocks=[d.block.name])
    assert duplicate_blocks(result) == {a.block.name: {a.name, b.name, c.name}}
    out = batch_events(result, rse="IHEP-EOS", at=now, confirmed={a.block.name: {a.name, b.name}})
    assert [(e.kind, e.name) for e in out] == [("block_created", d.block.name), ("file_registered", a.name),
                                               ("file_registered", b.name), ("file_registered", d.name)]
    first = out[1]
    assert (first.dataset, first.rse, first.bytes, first.adler32, first.run, first.stream) == (
        f"raw:{a.block.name}", "IHEP-EOS", 101, "00000001", 10554, "JUNODAQ.global_trigger")
    for event in out:
        assert events.parse(event.encode()) == event  # everything published passes the contract


def test_events_settings_have_environment_overrides() -> None:
    from juno_ingest.config import DEFAULT_FILE, load

    cfg = load(DEFAULT_FILE, env={"JUNO_INGEST_EVENTS_TOPIC": "t.events", "JUNO_INGEST_EVENTS_ENABLED": "false"})
    assert (cfg.events.topic, cfg.events.enabled) == ("t.events", False)
    assert load(DEFAULT_FILE, env={}).events.topic == events.DEFAULT_TOPIC
