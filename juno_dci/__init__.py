"""`juno-dci status`: where JUNO's raw data is, against where the replication policy wants it.

    juno_dci.collect   one read-only pass over Rucio's database (+ Kafka for the ingest lag) → a Status
    juno_dci.expected  which RSEs the policy wants each raw block at (pure)
    juno_dci.text      the terminal table;  juno_dci.page   the HTML page;  juno_dci.server   `serve`
    juno_dci.cli       `juno-dci status | serve | report`
"""
