"""`juno-prod`: JUNO's production (keep-up, re-production campaigns, Monte Carlo chains) on Rucio and
HTCondor, through juno-submit's job layer (juno_jobs)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from juno_common.cli import CONTEXT, Output, shared_options
from juno_common.errors import InvalidFile, NotFound, Refused
from juno_common.exit_codes import Exit, help_epilog
from juno_common.logs import fields
from juno_common.logs import setup as setup_logs
from juno_prod.model import ACTIVE, FILE_STATES, PAUSED, PROBLEMATIC, STOPPED
from juno_prod.report import status_text

TOOL = "juno-prod"
log = logging.getLogger("juno_prod.cli")


def _extra(err: BaseException) -> tuple[Exit, str] | None:
    from juno_jobs.backends.base import BackendError
    from juno_jobs.locality import LocalityError
    from juno_jobs.plan import PlanError
    from juno_jobs.resolve import InputError
    from juno_prod.transformation import TransformationError

    if isinstance(err, TransformationError):
        return Exit.INVALID, "invalid file"
    if isinstance(err, InputError | LocalityError | PlanError):
        return Exit.REFUSED, "refused"
    if isinstance(err, BackendError):
        return Exit.UNAVAILABLE, "HTCondor"
    return None


def options(func: Callable[..., Any]) -> Callable[..., Any]:
    return shared_options(TOOL, extra=_extra)(func)


def _rucio() -> Any:
    from rucio.client import Client

    return Client()


def production() -> Any:
    from juno_prod import settings
    from juno_prod.db import Db
    from juno_prod.engine import Production

    cfg = settings.from_env()
    return Production(Db(cfg.db_url), cfg.work_dir, _rucio, cfg.jobs), cfg


def _row(db: Any, ref: str) -> dict[str, Any]:
    row = db.transformation(ref)
    if row is None:
        names = ", ".join(t["name"] for t in db.transformations()) or "none yet"
        raise NotFound(f"no transformation {ref!r} (known: {names}); `juno-prod list`")
    return dict(row)


@click.group(context_settings=CONTEXT, epilog=help_epilog())
def main() -> None:
    """Data-driven production on Rucio and HTCondor.

    A transformation (YAML, etc/production/, every key in etc/transformation.schema.json) names its input
    — a Rucio selection, new raw data as it arrives (keep-up), or none (Monte Carlo: N jobs) — and its
    chained steps. `submit` records it; `run` (the daemon) finds input files in Rucio, creates jobs at the
    sites each step allows through juno-submit's job layer, registers outputs with provenance, retries
    failures and closes output datasets. Each input file is processed exactly once per transformation.
    """


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@options
def validate(files: tuple[Path, ...], out: Output) -> int:
    """Check transformation files: every problem with FILE:LINE; exit 3 if any."""
    from juno_prod import transformation as tfile

    results = []
    problems = []
    for path in files:
        try:
            tf = tfile.load(path)
            results.append({"file": str(path), "name": tf.name, "kind": tf.kind, "steps": [s.name for s in tf.steps],
                            "ok": True})
        except tfile.TransformationError as err:
            problems += err.issues
            results.append({"file": str(path), "ok": False, "issues": [i.as_dict() for i in err.issues]})
    out.emit(results, lambda: "\n".join(
        f"{r['file']}: ok ({r['name']}, {r['kind']}: {' → '.join(r['steps'])})" if r["ok"] else
        "\n".join(f"{i['file']}:{i['line']}: {i['where']}: {i['message']}" + (f" ({i['fix']})" if i["fix"] else "")
                  for i in r["issues"]) for r in results))
    return int(Exit.INVALID) if problems else 0


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and show what would be recorded; record nothing.")
@options
def submit(file: Path, dry_run: bool, out: Output) -> int:
    """Record a transformation; `juno-prod run` (the daemon) then creates its jobs.

    Nothing is recorded when the file is invalid (exit 3, every problem as FILE:LINE).
    """
    from juno_prod import transformation as tfile

    try:
        tf = tfile.load(file)
    except tfile.TransformationError as err:
        raise InvalidFile(f"{file} has {len(err.issues)} problem(s); nothing was submitted:\n"
                          + "\n".join(f"  {i}" for i in err.issues)) from None
    summary = {"name": tf.name, "kind": tf.kind, "steps": [s.name for s in tf.steps], "dry_run": dry_run}
    if not dry_run:
        prod, _ = production()
        try:
            summary["id"] = prod.submit(tf)
        except ValueError as err:
            raise Refused(str(err)) from None
    out.emit(summary, f"{'would record' if dry_run else 'recorded'} transformation {tf.name} ({tf.kind}: "
                      f"{' → '.join(summary['steps'])})" + ("" if dry_run else "; `juno-prod run` creates its jobs"))
    return 0


@main.command(name="list")
@options
def list_(out: Output) -> int:
    """Every transformation with its state and files per state."""
    prod, _ = production()
    rows = []
    for t in prod.db.transformations():
        counts: dict[str, int] = {}
        for per_state in prod.db.counts(t["id"]).values():
            for s, n in per_state.items():
                counts[s] = counts.get(s, 0) + n
        rows.append({"id": t["id"], "name": t["name"], "kind": t["kind"], "state": t["state"], "files": counts})
    out.emit(rows, lambda: "\n".join(
        f"{r['id']:>3}  {r['name']:<28} {r['kind']:<10} {r['state']:<8} "
        + " ".join(f"{s}={r['files'][s]}" for s in FILE_STATES if r["files"].get(s)) for r in rows)
        or "no transformations yet: `juno-prod submit etc/production/mc.yaml`")
    return 0


def status_data(prod: Any, row: dict[str, Any]) -> dict[str, Any]:
    """One transformation's figures: juno_prod.report's, the very ones the status page shows."""
    from juno_prod.report import transformation_status

    return transformation_status(prod.db, prod.sess.store, row)


@main.command()
@click.argument("transformation", required=False)
@options
def status(transformation: str | None, out: Output) -> int:
    """Per transformation and step: files by state, jobs by state and site, throughput, ETA.

    Reads the bookkeeping only (fast); `juno-prod run` is what moves things on.
    """
    from juno_prod import settings
    from juno_prod.report import no_database, reading, transformation_status

    work, url = settings.locate()
    if no_database(url):
        if transformation:  # nothing submitted here yet (and `status` creates nothing)
            raise NotFound(f"no transformation {transformation!r} (known: none yet); `juno-prod list`")
        out.emit([], lambda: "no transformations yet")
        return 0
    with reading(work, url) as (db, store):  # the bookkeeping only: no engine, Rucio or HTCondor to import
        rows = [_row(db, transformation)] if transformation else db.transformations()
        data = [transformation_status(db, store, r) for r in rows]
    out.emit(data if not transformation else data[0],
             lambda: "\n".join(status_text(d) for d in data) or "no transformations yet")
    return 0


@main.command()
@click.argument("transformation", required=False)
@click.option("--state", "states", multiple=True, type=click.Choice(FILE_STATES), help="Only files in this state.")
@click.option("--step", help="Only this step.")
@click.option("--parent", help="The outputs made from this input DID (scope:name), asked of Rucio's metadata.")
@click.option("--children", is_flag=True, help="With --parent: the whole chain below it, step after step.")
@click.option("--limit", type=int, default=200, show_default=True)
@options
def files(transformation: str | None, states: tuple[str, ...], step: str | None, parent: str | None,
          children: bool, limit: int, out: Output) -> int:
    """Input files of a transformation with state, attempts and reason; or the outputs made from a file.

      juno-prod files kup-J25.1.0 --state problematic
      juno-prod files --parent raw:RUN.….dat --children
    """
    prod, _ = production()
    if parent:
        rows = _children(prod, parent, recursive=children)
        out.emit(rows, lambda: "\n".join(f"{r['did']}  (from {r['parent']}, {r['transformation']} "
                                         f"{r['step']}, {r['release']})" for r in rows) or "no outputs")
        return 0
    if not transformation:
        raise click.UsageError("give a TRANSFORMATION, or --parent DID")
    row = _row(prod.db, transformation)
    tf = prod.load(row)
    idx = None
    if step is not None:
        names = [s.name for s in tf.steps]
        if step not in names:
            raise click.UsageError(f"--step {step}: the steps are {', '.join(names)}")
        idx = names.index(step)
    data = [{"step": tf.steps[f["step"]].name, "did": f"{f['scope']}:{f['name']}", "state": f["state"],
             "attempts": f["attempts"], "memory_mb": f["memory_mb"], "reason": f["reason"], "group": f["grp"]}
            for f in prod.db.files(row["id"], step=idx, states=states or None, limit=limit)]
    out.emit(data, lambda: "\n".join(f"{d['step']:<8} {d['state']:<11} {d['attempts']}  {d['did']}"
                                     + (f"\n{'':<21}{d['reason']}" if d["reason"] else "") for d in data)
             or "no files")
    return 0


def _children(prod: Any, did: str, *, recursive: bool) -> list[dict[str, Any]]:
    """Outputs whose `parent` metadata is `did`, from Rucio (server-side filter on the custom key)."""
    client = prod.client
    found: list[dict[str, Any]] = []
    todo = [did]
    while todo:
        current = todo.pop(0)
        for scope in ("rtraw", "esd", "mc"):
            for name in client.list_dids(scope, {"parent": current}, did_type="file"):
                child = f"{scope}:{name}"
                meta = client.get_metadata(scope, name, plugin="ALL")
                found.append({"did": child, "parent": current, "transformation": meta.get("transformation"),
                              "step": meta.get("step"), "release": meta.get("release")})
                if recursive:
                    todo.append(child)
    return found


@main.command()
@click.argument("transformation")
@click.option("--step", help="Only this step's problematic files.")
@click.option("--memory", help="Run them with this much memory (e.g. 2GB) instead of the step's.")
@click.option("--file", "names", multiple=True, help="Only this input file (name; repeatable).")
@click.option("--dry-run", is_flag=True, help="Say how many files would go back; change nothing.")
@options
def retry(transformation: str, step: str | None, memory: str | None, names: tuple[str, ...], dry_run: bool,
          out: Output) -> int:
    """Put problematic files back: they are assigned again at the next cycle (attempts start over)."""
    from juno_jobs import units

    prod, _ = production()
    row = _row(prod.db, transformation)
    tf = prod.load(row)
    idx = None
    if step is not None:
        steps = [s.name for s in tf.steps]
        if step not in steps:
            raise click.UsageError(f"--step {step}: the steps are {', '.join(steps)}")
        idx = steps.index(step)
    mb = units.size_mb(memory) if memory else None
    if dry_run:
        n = sum(1 for f in prod.db.files(row["id"], step=idx, states=[PROBLEMATIC])
                if not names or f["name"] in names)
        out.emit({"transformation": row["name"], "files": n, "dry_run": True},
                 f"would put {n} problematic file(s) of {row['name']} back to waiting")
        return 0
    n = prod.db.retry(row["id"], step=idx, memory_mb=mb, names=list(names) or None)
    out.emit({"transformation": row["name"], "files": n}, f"{n} problematic file(s) of {row['name']} waiting again")
    return 0


def _set_state(ref: str, state: str, out: Output) -> int:
    prod, _ = production()
    row = _row(prod.db, ref)
    if row["state"] == STOPPED and state != STOPPED:
        raise Refused(f"{row['name']} is stopped: its jobs were removed; submit it under another name to start over")
    prod.db.set_state(row["id"], state)
    killed = 0
    if state == STOPPED:
        from juno_jobs import control

        for claim in prod.db.claims(row["id"], states=["running"]):
            killed += control.kill(prod.sess, prod.sess.store.task(int(claim["task_id"])))
    out.emit({"transformation": row["name"], "state": state, "jobs_removed": killed},
             f"{row['name']}: {state}" + (f" ({killed} job(s) removed)" if killed else ""))
    return 0


@main.command()
@click.argument("transformation")
@options
def pause(transformation: str, out: Output) -> int:
    """No new jobs; running ones finish and their outputs are registered."""
    return _set_state(transformation, PAUSED, out)


@main.command()
@click.argument("transformation")
@options
def resume(transformation: str, out: Output) -> int:
    """New jobs again after `pause`."""
    return _set_state(transformation, ACTIVE, out)


@main.command()
@click.argument("transformation")
@options
def stop(transformation: str, out: Output) -> int:
    """Stop for good: no new jobs, running ones removed from HTCondor."""
    return _set_state(transformation, STOPPED, out)


@main.command()
@click.argument("release_dir", type=click.Path(file_okay=False, path_type=Path))
@options
def payloads(release_dir: Path, out: Output) -> int:
    """Install juno-prod's stand-in payloads (bin/juno-prod-step) into a release directory.

    On the local grid: juno-prod payloads .grid/release/J25.1.0 (every execute node sees it as
    /cvmfs/juno.ihep.ac.cn/J25.1.0). In production the release on CVMFS carries the real programs.
    """
    from juno_prod import release

    done = [str(p) for p in release.install(release_dir)]
    out.emit(done, "\n".join(f"installed {p}" for p in done))
    return 0


@main.command()
@click.option("--once", is_flag=True, help="One cycle, then exit (0, or 7 if a transformation has problematic files).")
@click.option("--interval", type=float, default=30.0, show_default=True,
              help="Seconds between cycles (an ingest event wakes the daemon at once).")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on 127.0.0.1:PORT.")
@click.option("--transformation", "only", help="Only this transformation.")
@options
def run(once: bool, interval: float, metrics_port: int | None, only: str | None, out: Output) -> int:
    """The production daemon: cycle after cycle, find input in Rucio, create jobs, register outputs.

    SIGTERM (or Ctrl-C) finishes the current step of the cycle, commits, and exits 0. Logs: one JSON
    object per line on stderr. Keep-up: with JUNO_PROD_KAFKA set, juno-ingest's events wake it at once.
    """
    from juno_prod import metrics

    setup_logs("juno_prod", out.log_level)
    prod, cfg = production()
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr="127.0.0.1", registry=metrics.REGISTRY)
    wake = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("stopping", extra=fields(signal=signum))
        prod.stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    consumer = None
    if cfg.kafka and not once:
        from juno_prod.consumer import EventConsumer

        def streams() -> set[str]:
            keys: set[str] = set()
            for t in prod.db.transformations(states=[ACTIVE]):
                if t["kind"] == "new_raw":
                    keys |= set(prod.load(t).input.streams)
            return keys

        consumer = EventConsumer(cfg.kafka, cfg.topic, streams, wake, hint=prod.hint)
        prod.events = True  # keep-up looks at the blocks events name; the streams are walked every few minutes
        consumer.start()
    try:
        while True:
            started = time.perf_counter()
            try:
                report = prod.cycle(only=only)
                metrics.CYCLES.inc()
                for k in ("discovered", "assigned", "processed", "retried", "problematic", "released"):
                    metrics.FILES.labels(k).inc(getattr(report, k))
                metrics.JOBS.inc(report.jobs)
                for w in report.warnings:
                    log.warning("warning", extra=fields(message=w))
                if consumer is not None:
                    consumer.commit()
            except Exception as err:  # noqa: BLE001 - the daemon counts errors and goes on; --once reports them
                if once:
                    raise
                metrics.CYCLE_ERRORS.labels(type(err).__name__).inc()
                log.error("cycle failed", exc_info=out.verbose > 0, extra=fields(error=f"{type(err).__name__}: {err}"))
            metrics.CYCLE_SECONDS.set(time.perf_counter() - started)
            if once or prod.stop.is_set():
                break
            wake.wait(interval)
            wake.clear()
            if prod.stop.is_set():
                break
    finally:
        if consumer is not None:
            consumer.close()
    if once:
        data = [status_data(prod, r) for r in prod.db.transformations()
                if only is None or r["name"] == only]
        out.emit({"cycle": report.__dict__, "transformations": data},
                 lambda: "\n".join(status_text(d) for d in data))
        if any(s["files"].get(PROBLEMATIC) for d in data for s in d["steps"]):
            return int(Exit.FAILED)
    return 0


if __name__ == "__main__":
    main()
