"""juno-prod on the live grid (Rucio, XRootD storages, the HTCondor pool), nothing mocked: a Monte Carlo
chain of three steps; a re-production over raw blocks held at different sites; a step failing for some
files, retried up the memory ladder, problematic, then completed by `juno-prod retry`; `kill -9` of
`juno-prod run` during a run. Payloads (juno_prod/payloads/juno-prod-step, installed in the grid's
release directory) really read their inputs: each output holds the SHA-256 of the input it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from juno_grid import condor, storage
from juno_grid.accounts import write_account_config

from juno_jobs.settings import Settings
from juno_prod import release, transformation
from juno_prod.cli import main
from juno_prod.db import Db
from juno_prod.engine import Production
from juno_prod.model import PROBLEMATIC, PROCESSED

pytestmark = [pytest.mark.grid, pytest.mark.condor]

TIMEOUT = 420.0
SITE_OF = {"IHEP-EOS": "IHEP", "CNAF-DISK": "CNAF", "JINR-DISK": "JINR", "IN2P3-DISK": "IN2P3"}


@dataclass
class Env:
    grid: Any
    work: Path
    client: Any

    def production(self) -> Production:
        cfg = Settings(work_dir=self.work / "jobs", backend="condor", job_owner=(condor.JOB_UID, condor.JOB_GID),
                       max_idle=200)
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
        cfg.tasks_dir.mkdir(parents=True, exist_ok=True)
        client = self.client
        return Production(Db(f"sqlite:///{self.work / 'prod.sqlite'}"), self.work, lambda: client, cfg)

    def cli_env(self) -> dict[str, str]:
        cfg = write_account_config(Path(os.environ["RUCIO_CONFIG"]), "juno_prod", dest_dir=self.work)
        return {"JUNO_PROD_DIR": str(self.work), "RUCIO_CONFIG": str(cfg), **condor.client_env(self.grid.cfg)}


def make_env(grid: Any) -> Env:
    """A fresh production work directory on the live pool (the payloads in the grid's release)."""
    condor.configure_bindings(grid.cfg)
    ok, msg = condor.health(grid.cfg)
    assert ok, msg
    release.install(condor.release_dir(grid.cfg) / "J25.1.0")
    work = condor.job_dir(grid.cfg, f"test-prod-{uuid.uuid4().hex[:10]}")
    return Env(grid, work, grid.client("juno_prod"))


@pytest.fixture
def env(grid: Any) -> Iterator[Env]:
    yield make_env(grid)


def _tf(tmp_path: Path, text: str) -> Any:
    p = tmp_path / "tf.yaml"
    p.write_text(text)
    return transformation.load(p)


def until(prod: Production, done: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        report = prod.cycle()
        if done():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached after {timeout:.0f} s: {prod.db.transformations()} "
                        f"{[prod.db.counts(t['id']) for t in prod.db.transformations()]} {report}")
        time.sleep(2.0)


def _read(grid: Any, rse: str, scope: str, name: str) -> bytes:
    """The bytes on the RSE's storage, read as any client does (Rucio's PFN, xrdcp)."""
    client = grid.client()
    rep = next(iter(client.list_replicas([{"scope": scope, "name": name}], rse_expression=rse)))
    pfn = rep["rses"][rse][0]
    return subprocess.run(["xrdcp", "--nopbar", "-s", pfn, "-"], capture_output=True, check=True, timeout=60).stdout


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _all_processed(prod: Production, tf_id: int, steps: int, n: int) -> Callable[[], bool]:
    def check() -> bool:
        c = prod.db.counts(tf_id)
        return all(c.get(s, {}).get(PROCESSED, 0) == n for s in range(steps)) and \
            all(d["closed"] for d in prod.db.datasets(tf_id)) and len(prod.db.datasets(tf_id)) == steps
    return check


def test_monte_carlo_chain_of_three_steps(env: Env, tmp_path: Path) -> None:
    name = f"mc-t{uuid.uuid4().hex[:8]}"
    tf = _tf(tmp_path, f"""\
name: {name}
release: J25.1.0
input: {{jobs: 3}}
steps:
  - {{name: detsim, payload: bin/juno-prod-step, arguments: --events 7, where: anywhere,
      output: {{scope: mc, rse: site}}, resources: {{memory: 256MB, wall_time: 10m}}}}
  - {{name: elecsim, payload: bin/juno-prod-step, output: {{scope: mc, rse: site}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
  - {{name: rec, payload: bin/juno-prod-step, output: {{scope: mc, rse: CNAF-DISK}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
""")
    prod = env.production()
    tf_id = prod.submit(tf)
    until(prod, _all_processed(prod, tf_id, 3, 3), "3 jobs x 3 steps processed, datasets closed")
    client = env.client
    outs = prod.db.outputs(tf_id)
    assert len(outs) == 9 and len({o["name"] for o in outs}) == 9
    for o in outs:
        if o["step"] == 2:
            assert o["rse"] == "CNAF-DISK"  # the step's designated RSE
        meta = client.get_metadata("mc", o["name"], plugin="JSON")
        assert meta["transformation"] == name and meta["release"] == "J25.1.0"
        assert meta["step"] == ["detsim", "elecsim", "rec"][o["step"]]
        if o["step"] > 0:  # each output holds the hash of the very input it was made from
            parent = _read(env.grid, next(p["rse"] for p in outs if p["name"] == o["parent_name"]), "mc",
                           o["parent_name"])
            assert f"sha256 {_sha(parent)}" in _read(env.grid, o["rse"], "mc", o["name"]).decode()
            assert meta["parent"] == f"mc:{o['parent_name']}"
    for d in prod.db.datasets(tf_id):
        did = client.get_did("mc", d["name"])
        assert did["open"] is False
        assert len(list(client.list_files("mc", d["name"]))) == 3
        rules = {r["rse_expression"] for r in client.list_did_rules("mc", d["name"])}
        assert {"IHEP-EOS", "tier=1&rse_type=DISK"} <= rules  # the replication policy's mc class
    # The chain from Rucio: `files --parent --children` asks the server's metadata filter.
    first = next(o for o in outs if o["step"] == 0)
    r = CliRunner(env=env.cli_env()).invoke(main, ["files", "--parent", f"mc:{first['name']}", "--children",
                                                   "--json"])
    assert r.exit_code == 0, r.output
    chain = json.loads(r.output)
    assert [c["step"] for c in chain] == ["elecsim", "rec"] and chain[1]["parent"] == chain[0]["did"]


@pytest.fixture
def raw_blocks(grid: Any, tmp_path: Path) -> tuple[str, dict[str, str], dict[str, dict[str, Any]]]:
    """Two closed blocks of three small raw files: one at CNAF-DISK, one at JINR-DISK (+ IHEP-TAPE)."""
    client = grid.client()
    stream = f"p{uuid.uuid4().hex[:10]}"
    run = random.randrange(10_000_000, 99_999_999)
    month = f"stream.JUNODAQ.{stream}.202503"
    client.add_container("raw", month)
    blocks = {f"block.JUNODAQ.{stream}.20250301": "CNAF-DISK", f"block.JUNODAQ.{stream}.20250302": "JINR-DISK"}
    files: dict[str, dict[str, Any]] = {}
    for b, (block, rse) in enumerate(blocks.items()):
        client.add_dataset("raw", block)
        items = []
        for seq in (1, 2, 3):
            name = f"RUN.{run}.JUNODAQ.Physics.ds-2.{stream}.2025030{b + 1}120000.{seq:03d}.dat"
            local = storage.make_file(tmp_path / name, 20_000 + 1000 * seq)
            item = storage.put_replica(client, rse, "raw", name, local, register=False)
            items.append({k: item[k] for k in ("scope", "name", "bytes", "adler32")})
            files[name] = {"rse": rse, "sha": _sha(local.read_bytes()), "block": block}
        client.attach_dids("raw", block, items, rse=rse)
        client.add_replicas(rse="IHEP-TAPE", files=items)  # no bytes: a job that read tape would fail
        client.attach_dids("raw", month, [{"scope": "raw", "name": block}])
        client.set_status("raw", block, open=False)
    return month, blocks, files


def test_reproduction_runs_every_job_at_a_site_holding_its_raw_input(env: Env, tmp_path: Path,
                                                                      raw_blocks: Any) -> None:
    container, blocks, files = raw_blocks
    name = f"rp-t{uuid.uuid4().hex[:8]}"
    tf = _tf(tmp_path, f"""\
name: {name}
release: J25.1.0
input: {{dids: ['raw:{container}']}}
steps:
  - {{name: rtraw, payload: bin/juno-prod-step, files_per_job: 2, output: {{scope: rtraw, rse: site}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
  - {{name: esd, payload: bin/juno-prod-step, output: {{scope: esd, rse: site}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
""")
    prod = env.production()
    tf_id = prod.submit(tf)
    until(prod, lambda: all(prod.db.counts(tf_id).get(s, {}).get(PROCESSED, 0) == 6 for s in (0, 1))
          and len(prod.db.datasets(tf_id)) == 4 and all(d["closed"] for d in prod.db.datasets(tf_id)),
          "6 raw files through rtraw and esd, 4 datasets closed")
    outs = prod.db.outputs(tf_id)
    rtraw = {o["parent_name"]: o for o in outs if o["step"] == 0}
    assert set(rtraw) == set(files)
    for raw_name, o in rtraw.items():
        # Each job ran where its raw input was (its output went to that site's disk) and read those bytes.
        assert o["rse"] == files[raw_name]["rse"], (raw_name, o)
        assert o["name"] == raw_name[:-4] + "_J25.1.0.rtraw"
        assert f"sha256 {files[raw_name]['sha']}" in _read(env.grid, o["rse"], "rtraw", o["name"]).decode()
        assert o["dataset"] == f"rtraw.{name}.rtraw.{files[raw_name]['block']}"
    for claim in prod.db.claims(tf_id, states=["done"]):
        for job in prod.sess.store.jobs(int(claim["task_id"])):
            assert job["state"] == "done" and job["site"] in {"CNAF", "JINR"}
    esd = [o for o in outs if o["step"] == 1]
    assert all(o["rse"] == rtraw[o["parent_name"][:-len("_J25.1.0.rtraw")] + ".dat"]["rse"] for o in esd)
    meta = env.client.get_metadata("esd", esd[0]["name"], plugin="JSON")
    assert meta["parent"] == f"rtraw:{esd[0]['parent_name']}"


def test_failing_files_are_retried_then_problematic_then_retry_completes_them(env: Env, tmp_path: Path) -> None:
    name = f"mf-t{uuid.uuid4().hex[:8]}"
    # Job 1's payload needs ~600 MB: 256 MB and 384 MB (the ladder) are not enough; the others pass.
    tf = _tf(tmp_path, f"""\
name: {name}
release: J25.1.0
input: {{jobs: 3}}
steps:
  - name: detsim
    payload: bin/juno-prod-step
    arguments: --big-pattern .000001. --big-mb 600
    where: anywhere
    output: {{scope: mc, rse: site}}
    resources: {{memory: 256MB, wall_time: 10m}}
    retry: {{max_attempts: 4, memory: [256MB, 384MB]}}
""")
    prod = env.production()
    tf_id = prod.submit(tf)
    until(prod, lambda: prod.db.counts(tf_id).get(0, {}) == {PROCESSED: 2, PROBLEMATIC: 1},
          "two processed, one problematic")
    bad = prod.db.files(tf_id, states=[PROBLEMATIC])[0]
    assert bad["name"] == f"{name}.000001.job" and bad["attempts"] == 2
    assert "ladder" in bad["reason"] and "memory" in bad["reason"]
    assert not prod.db.datasets(tf_id)[0]["closed"]  # incomplete: stays open
    runner = CliRunner(env=env.cli_env())
    r = runner.invoke(main, ["files", name, "--state", "problematic"])
    assert r.exit_code == 0 and bad["name"] in r.output and "ladder" in r.output
    r = runner.invoke(main, ["retry", name, "--dry-run"])
    assert r.exit_code == 0 and "would put 1 problematic" in r.output, r.output
    assert prod.db.counts(tf_id)[0][PROBLEMATIC] == 1
    r = runner.invoke(main, ["retry", name, "--memory", "1GB"])
    assert r.exit_code == 0 and "1 problematic file" in r.output, r.output
    until(prod, _all_processed(prod, tf_id, 1, 3), "the retried file processed, dataset closed")
    assert prod.db.files(tf_id, states=[PROCESSED])[1]["memory_mb"] == 1024


# The acceptance scale is 2,000 raw files: JUNO_PROD_KILL_FILES=2000 (one run: 693 s for the test,
# 12 min with the grid's start, at a load average of ~25 on the 2-core test machine; a job stages its 40 files
# in and out in ~1 s, in bulk, where one file at a time took ~1.2 s per file; KUP runs at IHEP's single slot).
# The suite runs 400 (20 jobs per step): with bulk staging, 200 files were done before the fifth kill at a
# load average of ~25 (a daemon's start-up takes ~10 s there), and every kill must come during keep-up.
KILL_FILES = int(os.environ.get("JUNO_PROD_KILL_FILES", "400"))
KILL_FILES_PER_JOB = max(20, KILL_FILES // 50)  # at most ~50 jobs per step: the job count stays modest


def test_kill_9_five_times_during_keep_up_loses_and_duplicates_nothing(env: Env, tmp_path: Path) -> None:
    """Keep-up of KILL_FILES raw files arriving through juno-ingest (SPADE's messages → Rucio + events) while
    `juno-prod run` is killed with SIGKILL five times at random moments, then stopped with SIGTERM: each raw
    file processed exactly once per step (one done job holds it, that job ran once), each output registered
    once in Rucio, none lost."""
    import threading
    from datetime import UTC, datetime, timedelta

    from ingest_helpers import endpoint_of, ingest_config, publish_plan, unique_streams

    from juno_ingest import simulate as sim
    from juno_ingest.consumer import Ingester

    started = time.monotonic()
    n = KILL_FILES
    streams = unique_streams(1)
    plan = sim.make_plan(sim.SimSpec(files=n, size=512, days=1, streams=streams, files_per_run=500,
                                     prefix=endpoint_of(env.grid).prefix),
                         now=datetime.now(UTC) - timedelta(days=1))  # yesterday: the ingester closes the block
    sim.write_files(plan, endpoint_of(env.grid), parallel=16)
    topic = f"kup-k9-{uuid.uuid4().hex[:8]}"
    cfg = ingest_config(env.grid, topic, streams)
    sim.ensure_topic(env.grid.cfg.kafka_bootstrap, cfg.events.topic, 3)
    name = f"k9-t{uuid.uuid4().hex[:8]}"
    path = tmp_path / "kup.yaml"
    path.write_text(f"""\
name: {name}
release: J25.1.0
input: {{new_raw: {{streams: [{streams[0]}]}}}}
steps:
  - {{name: rtraw, payload: bin/juno-prod-step, where: [IHEP], files_per_job: {KILL_FILES_PER_JOB},
      output: {{scope: rtraw, rse: IHEP-EOS}}, resources: {{memory: 256MB, wall_time: 10m}}}}
  - {{name: esd, payload: bin/juno-prod-step, where: [IHEP], files_per_job: {KILL_FILES_PER_JOB},
      output: {{scope: esd, rse: IHEP-EOS}}, resources: {{memory: 256MB, wall_time: 10m}}}}
""")
    cli = env.cli_env()
    r = CliRunner(env=cli).invoke(main, ["submit", str(path)])
    assert r.exit_code == 0, r.output
    daemon_env = {**os.environ, **cli, "JUNO_PROD_KAFKA": env.grid.cfg.kafka_bootstrap,
                  "JUNO_PROD_KAFKA_TOPIC": cfg.events.topic}
    prod = env.production()
    tf_id = int(prod.db.transformation(name)["id"])  # type: ignore[index]
    publish_plan(env.grid, plan, topic)
    prepared = time.monotonic()
    ingested: list[Any] = []
    ingester = threading.Thread(target=lambda: ingested.append(Ingester(cfg).run(once=True)), daemon=True)
    ingester.start()  # the raw files arrive while the daemons below are killed
    rng = random.Random()
    kills: list[float] = []
    for k in range(5):
        proc, logf = _daemon(daemon_env, tmp_path / f"daemon{k}.log")
        # Once it has done a cycle (imports take long on a busy machine), at a random moment of the next ones.
        _wait_for_line(logf, '"msg": "cycle"', proc)
        time.sleep(rng.uniform(0.0, 6.0))
        assert proc.poll() is None, logf.read_text()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append(round(time.monotonic() - prepared, 1))
        c = prod.db.counts(tf_id)
        print(f"kill -9 #{k + 1} at {kills[-1]} s: {c}")
        # During keep-up: the step after it still had files to process when this daemon died.
        assert c.get(1, {}).get(PROCESSED, 0) < n, f"kill -9 #{k + 1} came after keep-up had finished: {c}"
    ingester.join(timeout=TIMEOUT)
    assert ingested and ingested[0].registered == n and ingested[0].dead_lettered == 0, ingested
    # Then one more daemon, stopped with SIGTERM once it has done a cycle (finishes its step, commits, exits 0).
    proc, logf = _daemon(daemon_env, tmp_path / "daemon-term.log")
    _wait_for_line(logf, '"msg": "cycle"', proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 0, logf.read_text()[-2000:]
    c = prod.db.counts(tf_id)
    assert sum(c.get(0, {}).values()) == n and c.get(0, {}).get("waiting", 0) < n, c  # the daemons were at work
    until(prod, _all_processed(prod, tf_id, 2, n), f"{n} raw files x 2 steps after {len(kills)} kill -9",
          timeout=max(TIMEOUT, 6.0 * n))  # a deadline against hanging (IHEP's one slot runs every job)
    assert prod.db.counts(tf_id) == {0: {PROCESSED: n}, 1: {PROCESSED: n}}

    raw = {f.lfn for f in plan.files}
    rtraw = {f"{x[:-4]}_J25.1.0.rtraw" for x in raw}
    esd = {f"{x[:-len('.rtraw')]}_J25.1.0.esd" for x in rtraw}
    # Exactly once in the job layer: per step, the done jobs hold n files, each job ran once, and each
    # output was registered by exactly one job.
    for step, names in ((0, rtraw), (1, esd)):
        held = 0
        registered: list[str] = []
        for claim in prod.db.claims(tf_id, states=["done", "running", "submitting"]):
            if claim["step"] != step:
                continue
            task = int(claim["task_id"])
            for j in prod.sess.store.jobs(task):
                assert j["state"] == "done", dict(j)
                held += int(j["n_files"])
                tries = prod.sess.store.attempts(task, int(j["job"]))
                assert [a["state"] for a in tries] == ["succeeded"], [dict(a) for a in tries]
            registered += [o["name"] for o in prod.sess.store.outputs(task)]
        assert held == n, (step, held)
        assert len(registered) == n and set(registered) == names, step
    # Every input's row once per step, with one output each, made from it.
    for step in (0, 1):
        rows = prod.db.files(tf_id, step=step)
        assert len(rows) == n and len({f["name"] for f in rows}) == n
    outs = prod.db.outputs(tf_id)
    assert len(outs) == 2 * n and len({o["name"] for o in outs}) == 2 * n
    assert {o["parent_name"] for o in outs if o["step"] == 0} == raw
    # Rucio: every output once, in its dataset, nothing else there.
    for scope, names in (("rtraw", rtraw), ("esd", esd)):
        in_rucio = [f["name"] for d in prod.db.datasets(tf_id) if d["scope"] == scope
                    for f in env.client.list_files(scope, d["name"])]
        assert len(in_rucio) == n and set(in_rucio) == names, scope
    sample = sorted(raw)[rng.randrange(n)]
    assert _sha(_read(env.grid, "IHEP-EOS", "raw", sample)) in _read(
        env.grid, "IHEP-EOS", "rtraw", f"{sample[:-4]}_J25.1.0.rtraw").decode(errors="replace")
    print(f"kill -9 at {kills} s after the first SPADE message; {n} files x 2 steps in "
          f"{time.monotonic() - started:.0f} s (files written and published in {prepared - started:.0f} s)")


def test_keep_up_starts_jobs_within_seconds_of_an_ingest_event_and_a_lost_event_loses_nothing(
        env: Env, tmp_path: Path) -> None:
    from confluent_kafka import Producer

    from juno_ingest.events import IngestEvent
    from juno_ingest.simulate import ensure_topic

    client = env.grid.client()  # as the ingester would: raw files at IHEP-EOS in an open block
    stream = f"k{uuid.uuid4().hex[:10]}"
    key = f"JUNODAQ.{stream}"
    run = random.randrange(10_000_000, 99_999_999)
    block = f"block.JUNODAQ.{stream}.20250301"
    client.add_container("raw", f"stream.{key}")
    client.add_container("raw", f"stream.{key}.202503")
    client.attach_dids("raw", f"stream.{key}", [{"scope": "raw", "name": f"stream.{key}.202503"}])
    client.add_dataset("raw", block)
    client.attach_dids("raw", f"stream.{key}.202503", [{"scope": "raw", "name": block}])
    name = f"kup-t{uuid.uuid4().hex[:8]}"
    path = tmp_path / "kup.yaml"
    path.write_text(f"""\
name: {name}
release: J25.1.0
input: {{new_raw: {{streams: [{key}]}}}}
steps:
  - {{name: rtraw, payload: bin/juno-prod-step, where: [IHEP], output: {{scope: rtraw, rse: IHEP-EOS}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
  - {{name: esd, payload: bin/juno-prod-step, where: [IHEP], output: {{scope: esd, rse: IHEP-EOS}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
""")
    bootstrap = env.grid.cfg.kafka_bootstrap
    topic = f"juno.ingest.events.{stream}"
    ensure_topic(bootstrap, topic, 1)
    cli = env.cli_env()
    assert CliRunner(env=cli).invoke(main, ["submit", str(path)]).exit_code == 0
    daemon_env = {**os.environ, **cli, "JUNO_PROD_KAFKA": bootstrap, "JUNO_PROD_KAFKA_TOPIC": topic}
    # A long interval: only an event can make the daemon look again within this test.
    logf = tmp_path / "daemon.log"
    with open(logf, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "juno_prod.cli", "run", "--interval", "600"],
                                env=daemon_env, stdout=subprocess.DEVNULL, stderr=fh)
    prod = env.production()
    tf_id = int(prod.db.transformation(name)["id"])  # type: ignore[index]

    def add_raw(seq: int) -> tuple[str, str]:
        fname = f"RUN.{run}.JUNODAQ.Physics.ds-2.{stream}.20250301120000.{seq:03d}.dat"
        local = storage.make_file(tmp_path / fname, 30_000 + seq)
        item = storage.put_replica(client, "IHEP-EOS", "raw", fname, local, register=False)
        client.attach_dids("raw", block, [{k: item[k] for k in ("scope", "name", "bytes", "adler32")}],
                           rse="IHEP-EOS")
        return fname, str(item["adler32"])

    try:
        _wait_for_line(logf, '"msg": "cycle"', proc)  # its first cycle (nothing to do yet)
        time.sleep(6)  # the consumer joins its group
        fname, adler = add_raw(1)
        event = IngestEvent(kind="file_registered", scope="raw", name=fname, at=_now(), dataset=f"raw:{block}",
                            rse="IHEP-EOS", bytes=30_001, adler32=adler, run=run, stream=key)
        producer = Producer({"bootstrap.servers": bootstrap})
        sent = time.monotonic()
        producer.produce(topic, key=event.key(), value=event.encode())
        producer.flush(10)
        waited = None
        while time.monotonic() - sent < 60:
            rows = [f for f in prod.db.files(tf_id, step=0) if f["name"] == fname]
            if rows and rows[0]["state"] != "waiting":
                waited = time.monotonic() - sent
                break
            time.sleep(0.2)
        assert waited is not None and waited < 20, f"no job for {fname} {waited} s after its event"
        lost, _ = add_raw(2)  # registered, but its event is lost
        time.sleep(4)
        assert not [f for f in prod.db.files(tf_id) if f["name"] == lost]  # the daemon slept: only events wake it
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    err = logf.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert f'"msg": "event", "kind": "file_registered", "did": "raw:{fname}"' in err  # woken by the event
    client.set_status("raw", block, open=False)  # the day ends: the block closes
    # The periodic look at Rucio (here: cycles of this process) finds the file whose event was lost.
    until(prod, _all_processed(prod, tf_id, 2, 2), "both raw files through rtraw and esd, datasets closed")
    outs = prod.db.outputs(tf_id)
    assert {o["rse"] for o in outs} == {"IHEP-EOS"}
    assert {o["name"] for o in outs if o["step"] == 1} == {
        f"{n[:-4]}_J25.1.0_J25.1.0.esd" for n in (fname, lost)}
    for claim in prod.db.claims(tf_id, states=["done"]):
        assert {j["site"] for j in prod.sess.store.jobs(int(claim["task_id"]))} == {"IHEP"}
    meta = env.client.get_metadata("rtraw", f"{lost[:-4]}_J25.1.0.rtraw", plugin="JSON")
    assert meta["parent"] == f"raw:{lost}" and meta["transformation"] == name
    print(f"keep-up: job created {waited:.1f} s after the ingest event")


def _daemon(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], Path]:
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "juno_prod.cli", "run", "--interval", "1"], env=env,
                                stdout=subprocess.DEVNULL, stderr=fh)
    return proc, log


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"the daemon ended (exit {proc.returncode}): {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} from the daemon after {timeout:.0f} s"
        time.sleep(0.2)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_keep_up_end_to_end_spade_to_ingest_to_event_to_rtraw_and_esd(env: Env, tmp_path: Path) -> None:
    """The whole keep-up chain with nothing stood in: SPADE's messages → juno-ingest (Rucio, its events on
    Kafka) → the juno-prod daemon woken by those events → RAW→RTRAW jobs at IHEP → RTRAW→ESD → outputs in
    rtraw and esd with provenance, each dataset with the replication policy's rules."""
    from datetime import UTC, datetime, timedelta

    from ingest_helpers import endpoint_of, ingest_config, publish_plan, unique_streams

    from juno_ingest import simulate as sim
    from juno_ingest.consumer import Ingester

    streams = unique_streams(1)
    plan = sim.make_plan(sim.SimSpec(files=4, size=4096, days=1, streams=streams, prefix=endpoint_of(env.grid).prefix),
                         now=datetime.now(UTC) - timedelta(days=1))  # yesterday: the ingester closes the block
    sim.write_files(plan, endpoint_of(env.grid))
    topic = f"kup-e2e-{uuid.uuid4().hex[:8]}"
    cfg = ingest_config(env.grid, topic, streams)
    sim.ensure_topic(env.grid.cfg.kafka_bootstrap, cfg.events.topic, 3)
    name = f"kup-e2e-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "kup.yaml"
    path.write_text(f"""\
name: {name}
release: J25.1.0
input: {{new_raw: {{streams: [{streams[0]}]}}}}
steps:
  - {{name: rtraw, payload: bin/juno-prod-step, where: [IHEP], output: {{scope: rtraw, rse: IHEP-EOS}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
  - {{name: esd, payload: bin/juno-prod-step, where: [IHEP], output: {{scope: esd, rse: IHEP-EOS}},
      resources: {{memory: 256MB, wall_time: 10m}}}}
""")
    cli = env.cli_env()
    assert CliRunner(env=cli).invoke(main, ["submit", str(path)]).exit_code == 0
    daemon_env = {**os.environ, **cli, "JUNO_PROD_KAFKA": env.grid.cfg.kafka_bootstrap,
                  "JUNO_PROD_KAFKA_TOPIC": cfg.events.topic}
    logf = tmp_path / "daemon.log"
    with open(logf, "wb") as fh:  # a long interval: within this test only the ingester's events wake it
        proc = subprocess.Popen([sys.executable, "-m", "juno_prod.cli", "run", "--interval", "600"],
                                env=daemon_env, stdout=subprocess.DEVNULL, stderr=fh)
    prod = env.production()
    tf_id = int(prod.db.transformation(name)["id"])  # type: ignore[index]
    lfns = {f.lfn for f in plan.files}
    try:
        _wait_for_line(logf, '"msg": "cycle"', proc)
        time.sleep(6)  # the consumer joins its group
        publish_plan(env.grid, plan, topic)
        summary = Ingester(cfg).run(once=True)
        assert summary.registered == 4 and summary.dead_lettered == 0, summary
        ingested = time.monotonic()
        while time.monotonic() - ingested < 120:
            if {f["name"] for f in prod.db.files(tf_id, step=0) if f["state"] != "waiting"} == lfns:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"the event-driven daemon made no rtraw jobs for every file: {prod.db.files(tf_id)}")
        woke = time.monotonic() - ingested
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    err = logf.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert '"msg": "event", "kind": "file_registered"' in err  # the ingester's own events woke it
    until(prod, _all_processed(prod, tf_id, 2, 4), "4 raw files through rtraw and esd, datasets closed")
    outs = prod.db.outputs(tf_id)
    assert {o["rse"] for o in outs} == {"IHEP-EOS"}
    assert {o["name"] for o in outs if o["step"] == 1} == {f"{n[:-4]}_J25.1.0_J25.1.0.esd" for n in lfns}
    for claim in prod.db.claims(tf_id, states=["done"]):
        assert {j["site"] for j in prod.sess.store.jobs(int(claim["task_id"]))} == {"IHEP"}
    raw = sorted(lfns)[0]
    rtraw = f"{raw[:-4]}_J25.1.0.rtraw"
    assert _sha(_read(env.grid, "IHEP-EOS", "raw", raw)) in _read(env.grid, "IHEP-EOS", "rtraw", rtraw).decode(
        errors="replace"), "the rtraw output was made from its raw file's bytes"
    meta = env.client.get_metadata("rtraw", rtraw, plugin="JSON")
    assert meta["parent"] == f"raw:{raw}" and meta["transformation"] == name
    for ds in prod.db.datasets(tf_id):
        assert list(env.client.list_did_rules(ds["scope"], ds["name"])), f"no policy rule on {ds['scope']}:{ds['name']}"
    print(f"keep-up end to end: rtraw jobs for all 4 files {woke:.1f} s after the ingester's run")
