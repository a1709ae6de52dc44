"""Production figures, computed once, read by `juno-prod status` and by the status page (`juno-dci`):
per transformation and step, files by state, jobs by state and site, throughput over the last hour, an
ETA, output datasets open and closed.

Read-only: nothing here writes to the bookkeeping or creates a directory. `overview()` is what the status
page shows: the same dicts as `juno-prod status --json`, or why there are none (no production database
configured, or it cannot be read), without stopping the rest of the page.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from juno_prod import decide
from juno_prod.model import FILE_STATES, PROBLEMATIC, PROCESSED

THROUGHPUT_WINDOW_S = 3600.0


def step_names(row: Mapping[str, Any]) -> list[str]:
    """The steps of a recorded transformation, in order, from the YAML text it was submitted with (checked at
    submit; the copy in the work directory may live on another machine than the status page)."""
    spec = yaml.safe_load(row["spec"]) or {}
    return [str(s["name"]) for s in spec.get("steps") or []]


def transformation_status(db: Any, store: Any | None, row: Mapping[str, Any], now: float | None = None
                          ) -> dict[str, Any]:
    """One transformation's figures (`juno-prod status NAME --json`). `store`: juno_jobs' task store, for the
    jobs by site and state (None: jobs not known here, every step's "jobs" is empty)."""
    names = step_names(row)
    counts = db.counts(row["id"])
    now = time.time() if now is None else now
    rate = db.processed_since(row["id"], now - THROUGHPUT_WINDOW_S) / THROUGHPUT_WINDOW_S
    jobs: dict[str, dict[str, dict[str, int]]] = {}
    if store is not None:
        for claim in db.claims(row["id"], states=["running", "done"]):
            step = names[claim["step"]]
            for site, states in store.counts_by_site(int(claim["task_id"])).items():
                per = jobs.setdefault(step, {}).setdefault(site, {})
                for s, n in states.items():
                    per[s] = per.get(s, 0) + n
    steps = []
    left = 0
    for i, name in enumerate(names):
        c = counts.get(i, {})
        left += sum(n for st, n in c.items() if st not in (PROCESSED, PROBLEMATIC))
        steps.append({"step": name, "files": {st: c.get(st, 0) for st in FILE_STATES}, "jobs": jobs.get(name, {})})
    datasets = db.datasets(row["id"])
    return {"name": row["name"], "kind": row["kind"], "state": row["state"], "steps": steps,
            "processed_per_hour": round(rate * 3600, 1), "eta_s": decide.eta_s(left, rate),
            "datasets": {"open": sum(1 for d in datasets if not d["closed"]),
                         "closed": sum(1 for d in datasets if d["closed"])}}


def status_text(d: Mapping[str, Any]) -> str:
    lines = [f"{d['name']} ({d['kind']}, {d['state']}): {d['processed_per_hour']} files/h processed in the last hour"
             + (f", ETA {int(d['eta_s'])} s" if d["eta_s"] else "")
             + f"; datasets {d['datasets']['closed']} closed, {d['datasets']['open']} open"]
    for s in d["steps"]:
        files = " ".join(f"{k}={v}" for k, v in s["files"].items() if v) or "no files yet"
        lines.append(f"  {s['step']:<10} files: {files}")
        for site, states in sorted(s["jobs"].items()):
            lines.append(f"  {'':<10} jobs at {site}: " + " ".join(f"{k}={v}" for k, v in sorted(states.items())))
    return "\n".join(lines)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as the place, never with its password
        return url.split("@")[-1]


def no_database(url: str) -> bool:
    """The bookkeeping is a SQLite file that does not exist yet (nothing was submitted; reading creates nothing)."""
    return url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).is_file()


@contextmanager
def reading(work: Path, url: str) -> Iterator[tuple[Any, Any]]:
    """The bookkeeping (Db) and juno_jobs' task store (None when no task was made yet) of the production
    in `work` (settings.locate), closed at the end: all `status` reads. Neither the engine, nor Rucio, nor
    HTCondor is imported (a command's start-up time)."""
    from juno_jobs.store import Store
    from juno_prod.db import Db

    tasks = work / "jobs" / "tasks.sqlite"
    db = Db(url)
    store = None
    try:
        store = Store(tasks) if tasks.is_file() else None
        yield db, store
    finally:
        if store is not None:
            store.db.close()
        db.close()


def overview(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every transformation's figures for the status page: {"available", "detail", "database",
    "transformations"}. No production database configured or readable → available false, detail says why."""
    from juno_prod import settings

    work, url = settings.locate(env)
    shown = _safe_url(url)
    base: dict[str, Any] = {"available": False, "database": shown, "transformations": []}
    if no_database(url):
        return {**base, "detail": f"no production database at {shown}: set JUNO_PROD_DIR or JUNO_PROD_DB to "
                                  "juno-prod's (`juno-prod submit` creates it)"}
    try:
        with reading(work, url) as (db, store):
            now = time.time()
            rows = [transformation_status(db, store, r, now) for r in db.transformations()]
    except Exception as err:  # noqa: BLE001 - shown in the production section; the rest of the page goes on
        return {**base, "detail": f"cannot read the production database {shown}: {type(err).__name__}: {err}"}
    return {**base, "available": True, "transformations": rows,
            "detail": f"{len(rows)} transformation(s) in {shown}"}
