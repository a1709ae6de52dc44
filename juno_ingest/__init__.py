"""juno_ingest."""
