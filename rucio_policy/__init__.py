"""rucio_policy."""
