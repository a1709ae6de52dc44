"""juno-prod's Prometheus metrics, declared in one place (`juno-prod run --metrics-port`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()
CYCLES = Counter("juno_prod_cycles", "Production cycles run", registry=REGISTRY)
CYCLE_ERRORS = Counter("juno_prod_cycle_errors", "Cycles that ended with an error (counted, the daemon goes on)",
                       ["kind"], registry=REGISTRY)
FILES = Counter("juno_prod_files", "Files by what happened to them in a cycle", ["event"], registry=REGISTRY)
JOBS = Counter("juno_prod_jobs_submitted", "Jobs submitted through juno_jobs", registry=REGISTRY)
EVENTS = Counter("juno_prod_ingest_events", "juno-ingest events consumed", ["kind"], registry=REGISTRY)
STATE = Gauge("juno_prod_files_in_state", "Files per transformation, step and state",
              ["transformation", "step", "state"], registry=REGISTRY)
CYCLE_SECONDS = Gauge("juno_prod_last_cycle_seconds", "Duration of the last cycle", registry=REGISTRY)
