"""`juno-dci status`: where JUNO's raw data is, against where the replication policy wants it.

    juno_status.collect     one read-only pass over Rucio's database → the status (a JSON-ready dict)
    juno_status.expected    which RSEs the policy wants each raw block at, now (pure, from the policy engine)
    juno_status.db          the read-only session on Rucio's database, and why SQL rather than REST
    juno_status.ingest_lag  the ingester's consumer lag, from Kafka itself
    juno_status.reasons     transfer failure texts folded into one line per cause (pure)
    juno_status.history     bytes replicated per site over time: buckets, cumulative series (pure)
    juno_status.text        the terminal report
    juno_status.page        the HTML page (assets/)
    juno_status.server      `serve`
    juno_status.cli         `juno-dci status | serve | report`
"""
