"""juno_common.units: one grammar for sizes and durations, and formats that read back."""

from __future__ import annotations

import pytest

from juno_common.units import UnitError, format_duration, human_bytes, parse_duration, parse_size


@pytest.mark.parametrize(("text", "binary", "bare", "expected"), [
    ("1024", False, 1, 1024), ("1k", False, 1, 1000), ("1KiB", False, 1, 1024), ("10MB", False, 1, 10**7),
    ("1.5 GB", False, 1, 1_500_000_000), ("2GiB", False, 1, 2 * 2**30),
    ("2GB", True, 2**20, 2 * 2**30), ("512MB", True, 2**20, 512 * 2**20), ("2048", True, 2**20, 2048 * 2**20),
    (3, False, 2**20, 3 * 2**20),
])
def test_sizes(text: str | int, binary: bool, bare: int, expected: int) -> None:
    assert parse_size(text, binary=binary, bare=bare) == expected


@pytest.mark.parametrize("text", ["lots", "1XB", "iB", "-1MB", True, ""])
def test_bad_sizes_say_what_is_accepted(text: object) -> None:
    with pytest.raises(UnitError, match="size"):
        parse_size(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600), ("90", 90), ("1.5h", 5400),
    ("1d 2h", 93600), (60, 60),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30m1h", "1h1h", "5x", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UnitError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 5, 59, 60, 65, 3599, 3600, 3725, 86399, 86400, 90000, 30 * 86400])
def test_durations_read_back(seconds: int) -> None:
    written = format_duration(seconds)
    assert abs(parse_duration(written) - seconds) < 60 if seconds >= 3600 else parse_duration(written) == seconds


def test_bytes_three_significant_digits() -> None:
    assert [human_bytes(n) for n in (None, 999, 1000, 1_234_567, 999_960_000, 2.52e9)] == [
        "-", "999 B", "1 kB", "1.23 MB", "1000 MB", "2.52 GB"]
