"""The transfer service's decisions without storage: FTS3 states, submissions, reasons, the job store."""

from __future__ import annotations

import errno
import uuid
from pathlib import Path

import pytest
from juno_grid.fts.copier import Endpoint, UnsupportedURL, checksums_equal, error_from_output
from juno_grid.fts.states import FileState as F
from juno_grid.fts.states import JobState as J
from juno_grid.fts.states import JobType, derive_job_state, fts_time
from juno_grid.fts.store import DuplicateJob, Store
from juno_grid.fts.submission import BadRequest, Checksum, deterministic_job_id, parse


def _file(src: str = "root://a:1//x", dst: str = "root://b:2//x", **extra: object) -> dict[str, object]:
    return {"sources": [src], "destinations": [dst], "metadata": {"request_id": uuid.uuid4().hex}, **extra}


# --- job state from file states -------------------------------------------------------------------

@pytest.mark.parametrize(("files", "expected"), [
    ([(0, F.FINISHED), (1, F.FINISHED)], J.FINISHED),
    ([(0, F.FAILED), (1, F.FAILED)], J.FAILED),
    ([(0, F.FINISHED), (1, F.FAILED)], J.FINISHEDDIRTY),
    ([(0, F.FINISHED), (1, F.ACTIVE)], J.ACTIVE),
    ([(0, F.STAGING), (1, F.SUBMITTED)], J.STAGING),
    ([(0, F.STARTED)], J.STAGING),
    ([(0, F.SUBMITTED)], J.SUBMITTED),
    ([(0, F.FINISHED), (1, F.CANCELED)], J.CANCELED),
])
def test_regular_job_state(files: list[tuple[int, F]], expected: J) -> None:
    assert derive_job_state(JobType.REGULAR, files) is expected


def test_multiple_replica_job_succeeds_if_one_source_did() -> None:
    assert derive_job_state(JobType.MULTIPLE_REPLICA, [(0, F.FAILED), (0, F.FINISHED), (0, F.NOT_USED)]) is J.FINISHED
    assert derive_job_state(JobType.MULTIPLE_REPLICA, [(0, F.FAILED), (0, F.SUBMITTED)]) is J.SUBMITTED
    assert derive_job_state(JobType.MULTIPLE_REPLICA, [(0, F.FAILED), (0, F.FAILED)]) is J.FAILED


def test_multihop_job_fails_unless_the_last_hop_arrived() -> None:
    assert derive_job_state(JobType.MULTI_HOP, [(0, F.FINISHED), (1, F.FAILED)]) is J.FAILED
    assert derive_job_state(JobType.MULTI_HOP, [(0, F.FAILED), (1, F.NOT_USED)]) is J.FAILED
    assert derive_job_state(JobType.MULTI_HOP, [(0, F.FINISHED), (1, F.FINISHED)]) is J.FINISHED


def test_fts_time_is_what_rucio_parses() -> None:
    assert fts_time(None) is None
    assert fts_time(0) == "1970-01-01T00:00:00"
    assert fts_time(1764000000.75) == "2025-11-24T16:00:00"


# --- submissions ----------------------------------------------------------------------------------

def test_checksum_parsing() -> None:
    assert Checksum.parse("ADLER32:0a1B2c3d") == Checksum("adler32", "0a1b2c3d")
    assert str(Checksum.parse("adler32:0a1b2c3d")) == "ADLER32:0a1b2c3d"
    assert Checksum.parse("ADLER32") == Checksum("adler32", None)
    with pytest.raises(BadRequest, match="hexadecimal"):
        Checksum.parse("ADLER32:xyz")


def test_regular_submission() -> None:
    sub = parse({"files": [_file(checksum="ADLER32:01020304", filesize=5), _file()],
                 "params": {"verify_checksum": "target", "priority": 4, "overwrite": True}})
    assert sub.job_type is JobType.REGULAR and sub.priority == 4
    assert [f.state for f in sub.files] == [F.SUBMITTED, F.SUBMITTED]
    assert sub.files[0].checksum == Checksum("adler32", "01020304") and sub.files[0].filesize == 5
    assert sub.params["verify_checksum"] == "target" and sub.job_metadata == {}


def test_staging_multihop_and_replica_submissions() -> None:
    staged = parse({"files": [_file(), _file()], "params": {"bring_online": 3600}})
    assert [f.state for f in staged.files] == [F.STAGING, F.STAGING] and staged.bring_online == 3600
    hops = parse({"files": [_file(), _file()], "params": {"multihop": True}})
    assert hops.job_type is JobType.MULTI_HOP and [f.state for f in hops.files] == [F.SUBMITTED, F.NOT_USED]
    replicas = parse({"files": [{**_file(), "sources": ["root://a:1//x", "root://c:3//x"]}], "params": {}})
    assert replicas.job_type is JobType.MULTIPLE_REPLICA
    assert [(f.source_surl, f.state) for f in replicas.files] == [("root://a:1//x", F.SUBMITTED),
                                                                  ("root://c:3//x", F.NOT_USED)]


@pytest.mark.parametrize(("body", "message"), [
    ({"files": []}, "non-empty"),
    ({"files": [{"sources": [], "destinations": ["root://b//x"]}]}, "sources"),
    ({"files": [{"sources": ["root://a//x"], "destinations": ["d1", "d2"]}]}, "exactly one"),
    ({"files": [_file(filesize=-1)]}, "filesize"),
    ({"files": [_file()], "params": {"verify_checksum": "always"}}, "verify_checksum"),
])
def test_bad_submissions_say_what_is_wrong(body: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse(body)


def test_deterministic_id_matches_rucios_prediction() -> None:
    base, sid = str(uuid.uuid1()), uuid.uuid4().hex
    # rucio.transfertool.fts3.FTS3Transfertool.__get_deterministic_id
    assert deterministic_job_id(base, "juno", sid) == str(uuid.uuid5(uuid.uuid5(uuid.UUID(base), "juno"), sid))


# --- storage adapter helpers ----------------------------------------------------------------------

def test_endpoints() -> None:
    assert Endpoint.parse("root://127.0.0.1:1094//eos/juno/f?x=1").path == "/eos/juno/f"
    assert Endpoint.parse("root://127.0.0.1:1094/eos/juno/f").host == "127.0.0.1:1094"
    for url in ("file:///etc/passwd", "davs://h:443/x", "/plain/path"):
        with pytest.raises(UnsupportedURL) as err:
            Endpoint.parse(url)
        assert err.value.errno == errno.EPROTONOSUPPORT
    with pytest.raises(UnsupportedURL, match="FTS3 does not copy them"):
        Endpoint.parse("file:///x")


@pytest.mark.parametrize(("text", "expected"), [
    ("[ERROR] Server responded with an error: [3011] Unable to open /x; no such file or directory", errno.ENOENT),
    ("[FATAL] Connection error:  (destination)", errno.ECONNREFUSED),
    ("[ERROR] Invalid operation: file exists", errno.EEXIST),
    ("[ERROR] Operation expired", errno.ETIMEDOUT),
    ("[ERROR] Server responded with an error: [3010] not authorized", errno.EACCES),
    ("something else", errno.EIO),
])
def test_errors_map_to_errno(text: str, expected: int) -> None:
    assert error_from_output(text) == expected


def test_checksums_compare_as_numbers() -> None:
    assert checksums_equal("0001abcd", "1abcd")
    assert not checksums_equal("0001abcd", "0001abce")


# --- the job store --------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "jobs.sqlite")


def test_store_survives_reopening_and_never_forgets(tmp_path: Path) -> None:
    first = Store(tmp_path / "jobs.sqlite")
    job = first.add_job(parse({"files": [_file()], "params": {}}), "juno")
    base = first.base_id()
    first.close()
    again = Store(tmp_path / "jobs.sqlite")
    assert again.job(job.job_id) is not None and again.base_id() == base
    with pytest.raises(DuplicateJob):
        again.add_job(parse({"files": [_file()], "params": {}}), "juno", job.job_id)


def test_claim_takes_highest_priority_first(store: Store) -> None:
    low = store.add_job(parse({"files": [_file()], "params": {"priority": 1}}), "juno")
    high = store.add_job(parse({"files": [_file()], "params": {"priority": 5}}), "juno")
    claimed = store.claim_next()
    assert claimed is not None and claimed[0].job_id == high.job_id and claimed[1].file_state is F.ACTIVE
    store.set_priority(low.job_id, 5)
    assert store.job(low.job_id).priority == 5  # type: ignore[union-attr]


def test_multihop_releases_the_next_hop_only_after_success(store: Store) -> None:
    job = store.add_job(parse({"files": [_file(), _file()], "params": {"multihop": True}}), "juno")
    _, hop1 = store.claim_next()  # type: ignore[misc]
    assert store.claim_next() is None  # the second hop waits
    store.finish(hop1.file_id, F.FINISHED)
    _, hop2 = store.claim_next()  # type: ignore[misc]
    assert hop2.file_index == 1
    store.finish(hop2.file_id, F.FAILED, "TRANSFER [5] x")
    assert store.job(job.job_id).job_state is J.FAILED  # type: ignore[union-attr]


def test_replica_job_tries_the_next_source_after_a_failure(store: Store) -> None:
    body = {"files": [{**_file(), "sources": ["root://a:1//x", "root://c:3//x"]}], "params": {}}
    job = store.add_job(parse(body), "juno")
    _, first = store.claim_next()  # type: ignore[misc]
    store.finish(first.file_id, F.FAILED, "SOURCE [2] gone")
    _, second = store.claim_next()  # type: ignore[misc]
    assert second.source_surl == "root://c:3//x"
    store.finish(second.file_id, F.FINISHED)
    assert store.job(job.job_id).job_state is J.FINISHED  # type: ignore[union-attr]


def test_recover_resumes_interrupted_copies_then_gives_up(store: Store) -> None:
    job = store.add_job(parse({"files": [_file()], "params": {}}), "juno")
    for attempt in range(1, 4):
        _, file = store.claim_next()  # type: ignore[misc]
        resumed = store.recover(max_interruptions=2)
        if attempt <= 2:
            assert [f.file_id for f in resumed] == [file.file_id]
            assert store.job(job.job_id).job_state is J.SUBMITTED  # type: ignore[union-attr]
    assert store.job(job.job_id).job_state is J.FAILED  # type: ignore[union-attr]
    assert "interrupted 3 times" in (store.files(job.job_id)[0].reason or "")


def test_cancel_reports_running_copies_and_keeps_finished_ones(store: Store) -> None:
    job = store.add_job(parse({"files": [_file(), _file(), _file()], "params": {}}), "juno")
    _, done = store.claim_next()  # type: ignore[misc]
    store.finish(done.file_id, F.FINISHED)
    _, running = store.claim_next()  # type: ignore[misc]
    assert store.cancel(job.job_id) == [running.file_id]
    assert [f.file_state for f in store.files(job.job_id)] == [F.FINISHED, F.CANCELED, F.CANCELED]
    assert store.job(job.job_id).job_state is J.CANCELED  # type: ignore[union-attr]
    assert not store.finish(running.file_id, F.FINISHED)  # a copy that ends after the cancel changes nothing


@pytest.mark.parametrize(("given", "mode"), [
    ("n", "none"), ("s", "source"), ("t", "target"), ("b", "both"), ("both", "both"), ("None", "none"),
    ("TARGET", "target"), (True, "both"), (False, "none")])
def test_verify_checksum_keeps_the_first_letter_as_fts3(given: object, mode: str) -> None:
    """FTS3's own client sends 'n'; Rucio sends 'both': FTS3 keeps only the first letter, so do we."""
    sub = parse({"files": [_file()], "params": {"verify_checksum": given}})
    assert sub.params["verify_checksum"] == mode


@pytest.mark.parametrize("given", ["", "x", "always", 3])
def test_verify_checksum_refuses_what_fts3_does_not_know(given: object) -> None:
    with pytest.raises(BadRequest, match="verify_checksum"):
        parse({"files": [_file()], "params": {"verify_checksum": given}})


def test_link_modes_file_is_checked_and_used_per_link() -> None:
    from juno_grid.fts.links import Modes, parse

    modes = parse('{"default": "stream", "links": {"127.0.0.1:12194>127.0.0.1:12196": "push"}}', "tpc")
    assert modes.mode_for("davs://127.0.0.1:12194/a", "davs://127.0.0.1:12196/b") == "push"
    assert modes.mode_for("root://127.0.0.1:11094//a", "root://127.0.0.1:11096//b") == "stream"
    assert parse("{}", "tpc") == Modes("tpc")
    for bad, why in [("[", "not JSON"), ('{"default": "fast"}', "default"), ('{"links": {"a>b": "fly"}}', "link"),
                     ('{"links": {"nohost": "tpc"}}', "link"), ('{"other": 1}', "expected an object")]:
        with pytest.raises(ValueError, match=why):
            parse(bad, "tpc")


def test_copy_mode_is_the_links_then_the_source_schemes_then_the_default() -> None:
    from juno_grid.fts.links import parse

    modes = parse('{"default": "stream", "schemes": {"davs": "tpc"}, "links": {"h:1>h:2": "push"}}', "tpc")
    assert modes.mode_for("davs://h:1/x", "davs://h:2/y") == "push"
    assert modes.mode_for("davs://h:3/x", "davs://h:2/y") == "tpc"
    assert modes.mode_for("root://h:3//x", "root://h:2//y") == "stream"
    # The service's --scheme-mode applies unless the file says otherwise for that scheme.
    assert parse('{"default": "tpc"}', "tpc", {"davs": "push"}).mode_for("davs://a:1/x", "davs://b:2/y") == "push"
    with pytest.raises(ValueError, match="'schemes' must map a URL scheme"):
        parse('{"schemes": {"davs": "fast"}}', "tpc")


def test_tpc_choice_ranks_the_chosen_protocol_first_and_keeps_tape_recalls_on_root() -> None:
    from juno_grid import tpc

    def proto(scheme: str, port: int, read: int | None, write: int | None) -> dict:
        return {"scheme": scheme, "hostname": "h", "port": port,
                "domains": {"wan": {"third_party_copy_read": read, "third_party_copy_write": write}}}

    have = {"DISK": [proto("root", 1, 1, 1), proto("davs", 2, 2, 2)],
            "TAPE": [proto("root", 3, 1, 1), proto("davs", 4, 2, 2)]}
    assert tpc.chosen(have) == {"DISK": "root", "TAPE": "root"}
    want = {(r.rse, r.scheme): (r.read, r.write) for r in tpc.wanted(have, {"TAPE"}, "davs")}
    assert want == {("DISK", "davs"): (1, 1), ("DISK", "root"): (2, 2),
                    ("TAPE", "davs"): (None, 1), ("TAPE", "root"): (2, 2)}
    assert {(r.rse, r.scheme) for r in tpc.wanted(have, {"TAPE"}, "root")} == set(want)
    assert all((r.read, r.write) == ((1, 1) if r.scheme == "root" else (2, 2))
               for r in tpc.wanted(have, {"TAPE"}, "root"))
    with pytest.raises(ValueError, match="choose one of root, davs"):
        tpc.rank("root", "gsiftp", is_tape=False)
