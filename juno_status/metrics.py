"""Prometheus metrics of the status server (`juno-dci serve`, /metrics): replication, rules, transfers, jobs.

The replication numbers are the status page's own (one collection, cached), turned into gauges by a pure
function; jobs come from the schedd, grouped by state and by the site a job runs at. The ingester exports
its own metrics (juno_ingest_*); deploy/production/monitoring/ has the scrape configuration and the
Grafana dashboards that query both.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# HTCondor's JobStatus codes.
JOB_STATES = {1: "idle", 2: "running", 3: "removed", 4: "completed", 5: "held", 6: "transferring", 7: "suspended"}
JOB_PROJECTION = ["JobStatus", "MachineAttrJUNO_Site0", "DESIRED_Sites"]
JUNO_JOBS = "JunoTask =!= undefined"


def status_families(status: Mapping[str, Any]) -> Iterator[GaugeMetricFamily]:
    """Gauges from one status (the JSON of /api/status)."""
    files = GaugeMetricFamily("juno_replication_files", "Files of the selected raw blocks per RSE, by kind "
                              "(expected by the policy, present, verified, missing)", labels=["rse", "site", "kind"])
    nbytes = GaugeMetricFamily("juno_replication_bytes", "Bytes of the selected raw blocks per RSE, by kind",
                               labels=["rse", "site", "kind"])
    for rse in status.get("rses", []):
        for kind in ("expected", "present", "verified", "missing"):
            files.add_metric([rse["rse"], rse["site"], kind], rse[kind]["files"])
            nbytes.add_metric([rse["rse"], rse["site"], kind], rse[kind]["bytes"])
    yield files
    yield nbytes
    rules = GaugeMetricFamily("juno_rules", "Replication rules on the selected blocks, by state", labels=["state"])
    for state, n in status.get("rules", {}).get("states", {}).items():
        rules.add_metric([state], n)
    yield rules
    transfers = status.get("transfers", {})
    in_flight = GaugeMetricFamily("juno_transfers_in_flight", "Transfer requests not yet done, by destination "
                                  "and state", labels=["destination", "state"])
    in_flight_bytes = GaugeMetricFamily("juno_transfers_in_flight_bytes", "Bytes of the transfer requests not "
                                        "yet done, by destination and state", labels=["destination", "state"])
    for row in transfers.get("in_flight", []):
        in_flight.add_metric([row["destination"], row["state"]], row["files"])
        in_flight_bytes.add_metric([row["destination"], row["state"]], row["bytes"])
    yield in_flight
    yield in_flight_bytes
    yield GaugeMetricFamily("juno_transfers_failed_attempts", "Failed transfer attempts in the status window",
                            value=transfers.get("failed_attempts", 0))
    yield GaugeMetricFamily("juno_status_complete", "1 when every selected block is where the policy wants it",
                            value=1 if status.get("complete") else 0)
    yield GaugeMetricFamily("juno_status_collect_seconds", "Time the last status collection took",
                            value=status.get("seconds", 0.0))


def job_families(ads: Iterable[Mapping[str, Any]]) -> Iterator[GaugeMetricFamily]:
    """Jobs by state and site: the site a job runs (or ran) at, or the sites it may run at while idle."""
    counts: Counter[tuple[str, str]] = Counter()
    for ad in ads:
        state = JOB_STATES.get(int(ad.get("JobStatus", 0)), "unknown")
        site = ad.get("MachineAttrJUNO_Site0") or ad.get("DESIRED_Sites") or "unknown"
        counts[(state, str(site))] += 1
    jobs = GaugeMetricFamily("juno_jobs", "JUNO jobs in the schedd's queue, by state and site",
                             labels=["state", "site"])
    for (state, site), n in sorted(counts.items()):
        jobs.add_metric([state, site], n)
    yield jobs


def schedd_jobs() -> list[Mapping[str, Any]]:
    """The JUNO jobs of the local schedd (CONDOR_CONFIG); raises when the schedd does not answer."""
    import htcondor2

    return list(htcondor2.Schedd().query(JUNO_JOBS, projection=JOB_PROJECTION))


class StatusCollector(Collector):
    """What /metrics serves: the cached status and, when a schedd answers, the jobs."""

    def __init__(self, status: Callable[[], tuple[Mapping[str, Any] | None, str | None]],
                 jobs: Callable[[], list[Mapping[str, Any]]] | None = schedd_jobs) -> None:
        self.status = status
        self.jobs = jobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value, error = self.status()
        yield GaugeMetricFamily("juno_status_up", "1 when the last status collection succeeded",
                                value=0 if error or value is None else 1)
        if value is not None:
            yield from status_families(value)
        if self.jobs is not None:
            try:
                ads = self.jobs()
            except Exception:  # noqa: BLE001 - no schedd here is a state to show, not a failed scrape
                yield GaugeMetricFamily("juno_jobs_up", "1 when the schedd answered", value=0)
            else:
                yield GaugeMetricFamily("juno_jobs_up", "1 when the schedd answered", value=1)
                yield from job_families(ads)
