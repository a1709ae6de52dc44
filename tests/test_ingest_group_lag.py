"""The group-wide "read everything" decision that guards closing blocks with several ingesters (pure)."""

from juno_ingest.group_lag import caught_up, unread


def test_unread_per_partition() -> None:
    assert unread({0: 10, 1: 5}, {0: 12, 1: 5}) == {0: 2, 1: 0}
    assert unread({0: 10}, {0: None}) == {0: None}


def test_caught_up_only_when_every_partition_is_known_and_read() -> None:
    assert caught_up({0: 10, 1: 5}, {0: 10, 1: 5})
    assert not caught_up({0: 10, 1: 5}, {0: 11, 1: 5})  # another instance's backlog
    assert not caught_up({0: 10, 1: 5}, {0: 10, 1: None})  # an end not known: not yet
    assert not caught_up({}, {})  # no partition seen at all is not "everything read"
