"""What every juno-dci tool shares: one error language and exit-code table, CLI conventions, units,
JSON logs, YAML with line numbers, and where the shipped defaults (etc/) are.

It imports nothing of the product packages (rucio_policy, juno_ingest, juno_jobs, juno_status) nor of
the local grid: they all stand on it.
"""
