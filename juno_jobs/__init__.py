"""juno_jobs."""
