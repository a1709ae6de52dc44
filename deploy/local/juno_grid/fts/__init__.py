"""The local grid's transfer service: the FTS3 REST subset that Rucio's `fts3` transfertool uses.

Modules: `api` (HTTP), `service` (worker pool, staging, cancel, drain), `transfer` (one file's copy and
checks), `copier` (xrdcp/xrdfs), `store` (SQLite job store), `submission` (POST /jobs body),
`states` (FTS3's state machine), `jsonlog`. Run it with `python -m juno_grid.fts --port P --state DIR`.
"""
