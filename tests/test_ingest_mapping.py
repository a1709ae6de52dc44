"""Message → DIDs (pure): block by UTC receiving date, containers, file dict, metadata, paths."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from juno_ingest import messages
from juno_ingest.mapping import expected_path, plan_block, plan_file, receiving_day
from juno_ingest.messages import SpadeMessage
from rucio_policy import naming

LFN = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"


def message(**changes: object) -> SpadeMessage:
    values: dict[str, object] = {"lfn": LFN, "size": 100, "adler32": "0a1b2c3d", "run": 10554,
                                 "stream": "JUNODAQ.global_trigger",
                                 "received_at": datetime(2025, 10, 9, 14, 5, tzinfo=UTC)}
    values.update(changes)
    return SpadeMessage(**values)  # type: ignore[arg-type]


def test_block_is_the_utc_receiving_day_not_the_run_start() -> None:
    # Received 23:30 at UTC-2 = 01:30 UTC the next day: the block is the 10th, whatever the run start.
    when = datetime(2025, 10, 9, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    plan = plan_file(message(received_at=when))
    assert receiving_day(when) == date(2025, 10, 10)
    assert plan.block.name == "block.JUNODAQ.global_trigger.20251010" == naming.block_name("JUNODAQ.global_trigger",
                                                                                           date(2025, 10, 10))
    assert plan.path == f"raw/2025/1009/{LFN}"  # the storage path follows the run start (lfn2pfn)


def test_containers_and_attachments() -> None:
    block = plan_block("JUNODAQ.global_trigger", date(2025, 10, 9))
    assert block.containers == ("stream.JUNODAQ.global_trigger.202510", "stream.JUNODAQ.global_trigger.2025",
                                "stream.JUNODAQ.global_trigger")
    assert block.attachments() == [("stream.JUNODAQ.global_trigger.202510", block.name),
                                   ("stream.JUNODAQ.global_trigger.2025", "stream.JUNODAQ.global_trigger.202510"),
                                   ("stream.JUNODAQ.global_trigger", "stream.JUNODAQ.global_trigger.2025")]
    assert block.meta == {"stream_name": "JUNODAQ.global_trigger", "datatype": "RAW", "juno_day": "2025-10-09"}
    assert block.day_end == datetime(2025, 10, 10, tzinfo=UTC)
    for name in (block.name, *block.containers):
        assert naming.did_name_error("raw", name, "DATASET" if name.startswith("block.") else "CONTAINER") is None


def test_file_dict_has_no_metadata_unless_asked_or_given() -> None:
    plain = plan_file(message()).rucio_file()
    assert plain == {"scope": "raw", "name": LFN, "bytes": 100, "adler32": "0a1b2c3d"}
    rich = plan_file(message(checksums={"md5": "a" * 32, "sha256": "b" * 64}, metadata={"events": 7}),
                     file_metadata=True).rucio_file()
    assert rich["md5"] == "a" * 32
    assert rich["meta"] == {"events": 7, "juno_sha256": "b" * 64, "run_number": 10554,
                            "stream_name": "JUNODAQ.global_trigger", "juno_received_at": "2025-10-09T14:05:00.000Z"}


def test_raw_path_is_rucios_lfn2pfn() -> None:
    from juno_ingest.simulate import SimSpec, make_plan
    from rucio_policy import lfn2pfn

    plan = make_plan(SimSpec(files=300, days=3, streams=("JUNODAQ.p1", "TAODAQ.p2"), files_per_run=7, seed=3))
    for f in plan.files:
        msg = message(lfn=f.lfn, run=f.run, stream=f.stream)
        parsed = messages.parse(msg.to_json())
        assert isinstance(parsed, messages.SpadeMessage)
        assert plan_file(parsed).path == lfn2pfn.juno_path("raw", f.lfn) == plan_file(msg).path


def test_expected_path_with_rucio_prefixes() -> None:
    plan = plan_file(message())
    want = f"/eos/juno/dci/raw/2025/1009/{LFN}"
    assert expected_path("//eos/juno/dci", plan) == want
    assert expected_path("/eos/juno/dci/", plan) == want
    assert expected_path("", plan) == f"/raw/2025/1009/{LFN}"
