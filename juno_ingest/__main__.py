"""`python -m juno_ingest ...` is `juno-ingest ...`."""

from juno_ingest.cli import main

main()
