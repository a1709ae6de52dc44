"""Keep-up's trigger (pure): which of juno-ingest's events wake juno-prod, which blocks they name."""

from __future__ import annotations

from datetime import UTC, datetime

from juno_ingest.events import IngestEvent, parse
from juno_prod.consumer import wanted

NAME = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"


def _event(kind: str, stream: str | None = "JUNODAQ.global_trigger") -> IngestEvent:
    return IngestEvent(kind=kind, scope="raw", name=NAME if kind == "file_registered" else "block.JUNODAQ.x.20251009",
                       at=datetime(2025, 10, 9, 14, 5, 12, 31000, tzinfo=UTC),
                       dataset="raw:block.JUNODAQ.global_trigger.20251009"
                       if kind == "file_registered" else None, rse="IHEP-EOS", bytes=10, adler32="0a1b2c3d",
                       run=10554, stream=stream)


def test_file_registered_and_block_closed_of_a_keep_up_stream_wake_it() -> None:
    streams = {"JUNODAQ.global_trigger"}
    assert wanted(_event("file_registered"), streams)
    assert wanted(_event("block_closed"), streams)
    assert not wanted(_event("block_created"), streams)
    assert not wanted(_event("file_registered", stream="TAODAQ.global_trigger"), streams)
    assert not wanted(_event("file_registered", stream=None), streams)


def test_what_the_ingester_encodes_is_what_the_consumer_reads() -> None:
    ev = _event("file_registered")
    assert parse(ev.encode()) == ev


def test_the_block_an_event_names_is_what_keep_up_looks_at_between_walks() -> None:
    from juno_prod import decide

    hints = {_event("file_registered").block, "raw:block.JUNODAQ.global_trigger.20251010",
             "raw:block.TAODAQ.global_trigger.20251009", "raw:stream.JUNODAQ.global_trigger", "no-scope"}
    assert decide.hinted_blocks(hints, ["JUNODAQ.global_trigger"]) == [
        ("raw", "block.JUNODAQ.global_trigger.20251009"), ("raw", "block.JUNODAQ.global_trigger.20251010")]
    assert decide.hinted_blocks(hints, []) == []
    # The streams are walked on the first cycle and then at least every `every_s`, events or not.
    assert decide.keepup_walk_due(None, 1000.0, 300.0)
    assert not decide.keepup_walk_due(900.0, 1000.0, 300.0)
    assert decide.keepup_walk_due(700.0, 1000.0, 300.0)
