"""The consumer's decisions, without a broker: batches, offsets, duplicates, dead-letter limit, closing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from juno_ingest.batching import (
    Backoff,
    BatchPolicy,
    DlqLimit,
    Kind,
    Known,
    OpenBlock,
    Position,
    blocks_due,
    classify,
    commit_offsets,
    even_chunks,
)
from juno_ingest.storage_check import StorageUnavailable, parse_list_output, parse_stat_output, should_list


def test_batch_goes_when_full_or_old() -> None:
    policy = BatchPolicy(max_messages=3, max_wait_s=0.5)
    assert not policy.due(0, None, 10.0)
    assert not policy.due(2, 10.0, 10.4)
    assert policy.due(2, 10.0, 10.5)
    assert policy.due(3, 10.0, 10.0)
    assert policy.wait_left(None, 1.0) == 0.5
    assert policy.wait_left(10.0, 10.2) == pytest.approx(0.05)  # linger: a short wait for more
    assert policy.wait_left(10.0, 10.48) == pytest.approx(0.02)  # never past max_wait_s
    assert policy.wait_left(10.0, 11.0) == 0.0


def test_commit_is_highest_offset_plus_one_per_partition() -> None:
    positions = [Position("t", 0, 7), Position("t", 1, 3), Position("t", 0, 5), Position("u", 0, 0),
                 Position("t", 1, 9)]
    assert commit_offsets(positions) == {("t", 0): 8, ("t", 1): 10, ("u", 0): 1}
    assert commit_offsets([]) == {}


def test_chunks_are_even_and_capped() -> None:
    for n in (0, 1, 499, 500, 501, 520, 1000, 1001, 1003, 2000, 2999):
        chunks = even_chunks(list(range(n)), 500)
        assert [x for c in chunks for x in c] == list(range(n))
        assert all(len(c) <= 500 for c in chunks)
        assert not chunks or max(map(len, chunks)) - min(map(len, chunks)) <= 1
    assert [len(c) for c in even_chunks(list(range(520)), 500)] == [260, 260]


def test_classify_against_rucio_and_within_the_batch() -> None:
    existing = {"a": Known(10, "0000000a"), "b": Known(10, "0000000b")}
    files = [("a", 10, "0000000A"),  # same content (adler32 case does not matter)
             ("b", 11, "0000000b"),  # other size: conflict, Rucio's stays
             ("c", 5, "0000000c"),  # new
             ("c", 5, "0000000c"),  # again in the batch: duplicate of the first
             ("c", 5, "ffffffff"),  # again with other content: conflict with the first
             ("d", 1, "00000001")]
    kinds = [d.kind for d in classify(files, existing)]
    assert kinds == [Kind.DUPLICATE, Kind.CONFLICT, Kind.NEW, Kind.DUPLICATE, Kind.CONFLICT, Kind.NEW]
    reasons = [d.reason for d in classify(files, existing)]
    assert "size 11 != 10" in reasons[1] and "registered file is kept" in reasons[1]
    assert "adler32 ffffffff != 0000000c" in reasons[4] and "first message is registered" in reasons[4]


def test_classify_first_message_wins_whatever_comes_later() -> None:
    # Replaying the same messages in the same order always picks the same winner.
    files = [("x", 1, "00000001"), ("x", 2, "00000002")]
    assert [d.kind for d in classify(files, {})] == [Kind.NEW, Kind.CONFLICT]
    assert [d.kind for d in classify(files, {"x": Known(1, "00000001")})] == [Kind.DUPLICATE, Kind.CONFLICT]


def test_dlq_limit_ratio_needs_enough_messages() -> None:
    limit = DlqLimit(max_ratio=0.5, window=10, min_messages=4, max_consecutive=100)
    assert limit.check([True, True, True]) is None  # only 3 seen
    assert "4 of the last 4" in (limit.check([True, True, True, True]) or "")
    limit.record([False, False, False, False])
    assert limit.check([True, True, True, True]) is None  # 4 of 8
    assert limit.check([True] * 5) is not None  # 5 of 9
    # check() records nothing
    assert limit.check([True, True, True, True]) is None


def test_dlq_limit_window_slides() -> None:
    limit = DlqLimit(max_ratio=0.3, window=10, min_messages=1, max_consecutive=100)
    limit.record([True, True, True] + [False] * 7)  # 3 of 10
    assert limit.check([True]) is None  # the oldest dead one slides out: still 3 of 10
    assert limit.check([False, False, False, True, True, True]) is None  # the first three slid out: 3 of 10
    assert limit.check([False, False, False, True, True, True, True]) is not None  # 4 of 10
    limit.record([False] * 10)
    assert limit.check([True, True, True]) is None


def test_dlq_limit_consecutive() -> None:
    limit = DlqLimit(max_ratio=1.0, window=100, min_messages=1, max_consecutive=3)
    assert limit.check([True, True, True]) is None
    assert "4 messages in a row" in (limit.check([True] * 4) or "")
    limit.record([True, True, True])
    assert limit.check([True]) is not None
    assert limit.check([False, True]) is None


def test_blocks_close_after_grace_and_only_when_caught_up() -> None:
    end = datetime(2025, 10, 10, tzinfo=UTC)
    blocks = [OpenBlock("b1", end), OpenBlock("b2", end + timedelta(days=1))]
    grace = timedelta(hours=6)
    assert blocks_due(blocks, end + timedelta(hours=5), grace, caught_up=True) == []
    assert blocks_due(blocks, end + timedelta(hours=6), grace, caught_up=True) == ["b1"]
    assert blocks_due(blocks, end + timedelta(days=3), grace, caught_up=False) == []
    assert blocks_due(blocks, end + timedelta(days=3), grace, caught_up=True) == ["b1", "b2"]


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    backoff = Backoff(1.0, 8.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(6)]
    caps = [1, 2, 4, 8, 8, 8]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    backoff.reset()
    assert backoff.next() <= 1.0


XRDFS_OUT = """[127.0.0.1:11094] / > stat /eos/a.dat
Path:   /eos/a.dat
Id:     1
Size:   1024
MTime:  2026-11-21 22:44:50
Flags:  16 (IsReadable)
Mode:   0644
[127.0.0.1:11094] / > stat /eos/dir
Path:   /eos/dir
Size:   4096
Flags:  51 (XBitSet|IsDir|IsReadable|IsWritable)
[127.0.0.1:11094] / > stat /eos/missing.dat
[127.0.0.1:11094] / > exit
Goodbye.
[ERROR] Server responded with an error: [3011] Unable to locate /eos/missing.dat; no such file or directory
"""


def test_xrdfs_output_sizes_missing_and_directories() -> None:
    sizes = parse_stat_output(XRDFS_OUT, ["/eos/a.dat", "//eos/dir", "/eos/missing.dat"])
    assert sizes == {"/eos/a.dat": 1024, "/eos/dir": None, "/eos/missing.dat": None}


def test_xrdfs_server_down_is_not_missing() -> None:
    with pytest.raises(StorageUnavailable, match="Connection error"):
        parse_stat_output("[FATAL] Connection error\n", ["/eos/a.dat"])
    with pytest.raises(StorageUnavailable, match="answered 1 of 2"):
        parse_stat_output(XRDFS_OUT.split("[127.0.0.1:11094] / > stat /eos/dir")[0], ["/eos/a.dat", "/eos/b.dat"])
    with pytest.raises(StorageUnavailable, match="3010"):
        parse_stat_output("[ERROR] Server responded with an error: [3010] permission denied\n", ["/eos/a.dat"])


XRDFS_LS = """\
-rw-r--r-- xrootd xrootd    1024 2026-11-22 02:44:37 /eos/raw/2026/1122/a.dat
-rw-r--r-- xrootd xrootd       0 2026-11-22 02:44:37 /eos/raw/2026/1122/empty.dat
drwxr-xr-x xrootd xrootd    4096 2026-11-22 02:37:53 /eos/raw/2026/1122/sub
-rw-r--r-- xrootd xrootd      77 2026-11-22 02:44:37 /eos/raw/2026/1122/other.dat
"""


def test_listing_gives_sizes_missing_and_directories() -> None:
    asked = ["/eos/raw/2026/1122/a.dat", "//eos/raw/2026/1122/empty.dat", "/eos/raw/2026/1122/sub",
             "/eos/raw/2026/1122/missing.dat"]
    assert parse_list_output(XRDFS_LS, 0, "/eos/raw/2026/1122", asked) == {
        "/eos/raw/2026/1122/a.dat": 1024, "/eos/raw/2026/1122/empty.dat": 0, "/eos/raw/2026/1122/sub": None,
        "/eos/raw/2026/1122/missing.dat": None}


def test_listing_of_a_missing_directory_means_missing_files_but_errors_are_not() -> None:
    gone = "[ERROR] Server responded with an error: [3011] Unable to locate /eos/x; no such file or directory \n"
    assert parse_list_output(gone, 54, "/eos/x", ["/eos/x/a.dat"]) == {"/eos/x/a.dat": None}
    with pytest.raises(StorageUnavailable, match="Connection error"):
        parse_list_output("[FATAL] Connection error\n", 51, "/eos/x", ["/eos/x/a.dat"])
    with pytest.raises(StorageUnavailable, match="3010"):
        parse_list_output("[ERROR] Server responded with an error: [3010] permission denied\n", 54, "/eos/x",
                          ["/eos/x/a.dat"])
    with pytest.raises(StorageUnavailable, match="exit code 1"):
        parse_list_output("", 1, "/eos/x", ["/eos/x/a.dat"])


def test_listing_only_when_it_beats_stat() -> None:
    assert not should_list(5, None)  # a handful of files: stat them
    assert should_list(16, None)  # never listed: try
    assert should_list(2000, 14_000) and should_list(1000, 14_000)
    assert not should_list(500, 14_000)  # a big day directory and few of the batch's files in it
    assert not should_list(20, 1_440)
