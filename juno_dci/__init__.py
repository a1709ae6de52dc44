"""`juno-dci status`: where JUNO's raw data is, against where the replication policy wants it.

    juno_dci.collect     one read-only pass over Rucio's database → the status (a JSON-ready dict)
    juno_dci.expected    which RSEs the policy wants each raw block at, now (pure, from the policy engine)
    juno_dci.db          the read-only session on Rucio's database, and why SQL rather than REST
    juno_dci.ingest_lag  the ingester's consumer lag, from Kafka itself
    juno_dci.reasons     transfer failure texts folded into one line per cause (pure)
    juno_dci.history     bytes replicated per site over time: buckets, cumulative series (pure)
    juno_dci.text        the terminal report;  juno_dci.page  the HTML page (assets/);  juno_dci.server  `serve`
    juno_dci.units       bytes, counts and durations as people read them
    juno_dci.cli         `juno-dci status | serve | report`
"""
