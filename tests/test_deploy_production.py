"""deploy/production/ as tested files: Helm values against Rucio's charts, one Rucio configuration for the
local grid and production, images, systemd units, HTCondor site configuration, monitoring.

What can be checked here is checked with the real tools: the charts' own values and templates (release
40.0.0, ../shared/reference), `systemd-analyze verify`, HTCondor's own configuration parser, the wheel the
images install, and (live) every metric the Grafana dashboards query, scraped from the grid's services.
The images themselves cannot be built here (no image registry is reachable).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from juno_grid import daemon_set, rucio_config

REPO = Path(__file__).resolve().parents[1]
PROD = REPO / "deploy" / "production"
CHARTS = REPO.parent / "shared" / "reference" / "rucio-helm-charts"
VENV_BIN = Path(sys.executable).parent
OPT_VENV = "/opt/juno-dci/venv"


# --------------------------------------------------------------------------- Helm values


def _chart(name: str) -> tuple[dict[str, Any], str]:
    chart = CHARTS / name
    assert chart.is_dir(), f"Rucio's Helm charts are expected in {CHARTS} (shared/reference beside the clone)"
    templates = "\n".join(p.read_text() for p in sorted((chart / "templates").glob("*")) if p.is_file())
    return yaml.safe_load((chart / "values.yaml").read_text()), templates


def _unknown_keys(ours: dict[str, Any], chart: dict[str, Any] | None, templates: str, path: str = "") -> list[str]:
    """Keys we set that neither the chart's values.yaml nor its templates know. `config:` is Rucio's
    configuration (free-form in the chart, rendered into rucio.cfg): it is checked against the description."""
    unknown = []
    for key, value in ours.items():
        here = f"{path}.{key}" if path else key
        if here == "config":
            continue
        in_values = isinstance(chart, dict) and key in chart
        # Daemon options the chart reads without a default in values.yaml ($component_values.didLimit, .nAttempts).
        in_templates = re.search(rf"\.{re.escape(key)}\b", templates) is not None
        if not (in_values or in_templates):
            unknown.append(here)
        elif isinstance(value, dict) and value:
            sub = chart.get(key) if in_values and isinstance(chart.get(key), dict) else None
            if sub is not None or not in_templates:
                unknown += _unknown_keys(value, sub, templates, here)
    return unknown


@pytest.mark.parametrize("chart", ["rucio-server", "rucio-daemons"])
def test_every_helm_key_exists_in_the_chart(chart: str) -> None:
    values, templates = _chart(chart)
    ours = yaml.safe_load((PROD / "helm" / f"{chart}.values.yaml").read_text())
    assert _unknown_keys(ours, values, templates) == []
    # The check can fail: a key the chart does not have is caught.
    assert _unknown_keys({"judgeEvaluatr": {"threads": 1}}, values, templates) == ["judgeEvaluatr"]


def test_helm_daemons_equal_the_local_grids() -> None:
    values = yaml.safe_load((PROD / "helm" / "rucio-daemons.values.yaml").read_text())
    running = {key[: -len("Count")]: n for key, n in values.items() if key.endswith("Count") and n > 0}
    assert running == {d.helm_key: d.count for d in daemon_set.DAEMONS}
    chart, _ = _chart("rucio-daemons")
    for daemon in daemon_set.DAEMONS:
        assert f"{daemon.helm_key}Count" in chart, daemon.name
        assert values[daemon.helm_key]["threads"] == daemon.threads, daemon.name
        assert values[daemon.helm_key]["sleepTime"] == daemon.production_sleep_s, daemon.name


def test_replica_recoverer_gets_nattempts_zero_through_the_chart() -> None:
    # The chart writes `{{- if $component_values.nAttempts }} --nattempts ...`: a numeric 0 is false in Go
    # templates and would silently leave Rucio's default. The string "0" is passed.
    values = yaml.safe_load((PROD / "helm" / "rucio-daemons.values.yaml").read_text())
    recoverer = values["replicaRecoverer"]
    assert recoverer["nAttempts"] == str(daemon_set.RECOVERER_NATTEMPTS) == "0"
    assert recoverer["limitSuspiciousFilesOnRse"] == str(daemon_set.RECOVERER_LIMIT_PER_RSE)
    assert recoverer["activeMode"] is True
    assert Path(recoverer["inputFile"]).name == daemon_set.RECOVERER_POLICY.name


def test_secrets_are_referenced_not_inlined() -> None:
    for chart in ("rucio-server", "rucio-daemons"):
        values = yaml.safe_load((PROD / "helm" / f"{chart}.values.yaml").read_text())
        text = json.dumps(values)
        assert "password" not in text.lower() and "postgresql://" not in text and "psycopg://" not in text
        envs = {e["name"]: e for e in values["additionalEnvs"]}
        assert "secretKeyRef" in envs["RUCIO_CFG_DATABASE_DEFAULT"]["valueFrom"]


# --------------------------------------------------------------------------- one Rucio configuration


def test_helm_values_are_rendered_from_the_one_description() -> None:
    done = subprocess.run([sys.executable, str(PROD / "helm" / "render.py"), "--check"], cwd=REPO,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    production = rucio_config.view("production")
    for chart in ("rucio-server", "rucio-daemons"):
        values = yaml.safe_load((PROD / "helm" / f"{chart}.values.yaml").read_text())
        assert values["config"] == production


def test_both_environments_share_every_option_set_once(tmp_path: Path) -> None:
    description = rucio_config.load()
    local, production = rucio_config.view("local"), rucio_config.view("production")
    for section, options in description.items():
        for option, value in options.items():
            if not isinstance(value, dict):
                assert local[section][option] == production[section][option] == str(value)
    # The policy package is loaded everywhere, with the same algorithms.
    assert local["policy"]["package"] == production["policy"]["package"] == "rucio_policy"
    # A description with an unknown environment is refused, with where.
    bad = tmp_path / "rucio-config.yaml"
    bad.write_text("conveyor:\n  scheme: {local: root, staging: davs}\n")
    with pytest.raises(ValueError, match=r"\[conveyor\] scheme: per-environment keys"):
        rucio_config.load(bad)


@pytest.mark.grid
def test_the_running_grids_rucio_cfg_is_the_local_view(grid: Any) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(grid.cfg.rucio_cfg)
    rendered = {s: dict(parser[s]) for s in parser.sections()}
    local = rucio_config.view("local")
    assert set(rendered) == set(local)
    for section, options in local.items():
        assert set(rendered[section]) == set(options), section
        for option, value in options.items():
            if "$" not in value:
                assert rendered[section][option] == value, (section, option)


# --------------------------------------------------------------------------- images


def _dockerfiles() -> list[Path]:
    found = sorted((PROD / "images").glob("*.Dockerfile"))
    assert {p.name for p in found} == {"rucio-server.Dockerfile", "rucio-daemons.Dockerfile"}
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "-w", str(out), str(REPO)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = list(out.glob("juno_dci-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_images_copy_files_that_exist_and_the_rucio_release_we_run(wheel: Path) -> None:
    import rucio.vcsversion

    names = set(zipfile.ZipFile(wheel).namelist())
    for dockerfile in _dockerfiles():
        text = dockerfile.read_text().replace("\\\n", " ")
        base = re.search(r"^FROM (\S+)", text, re.M)
        assert base and base.group(1).endswith(f"release-{rucio.vcsversion.VERSION}"), base
        for line in re.findall(r"^COPY (.+)$", text, re.M):
            *sources, _dest = line.split()
            for source in sources:
                if source.startswith("dist/"):
                    continue  # the wheel, built by `pip wheel -w dist .` (the fixture builds it)
                assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: no such file"
        for module in re.findall(r"import ([\w., ]+)\"", text)[0].split(","):
            assert f"{module.strip().replace('.', '/')}.py" in names, f"{module} is not in the wheel"


def _image_requirements(dockerfile: Path) -> list[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    reqs = []
    for command in re.findall(r"pip install ([^&]+)", text):
        args = [a.strip('"') for a in shlex.split(command) if not a.startswith("-")]
        reqs += [a for a in args if not a.endswith(".whl") and "/" not in a]
    return reqs


POLICY_IMPORT = textwrap.dedent("""
    import importlib.abc, importlib.metadata as md, json, sys
    from packaging.requirements import Requirement

    allowed = set(json.loads(sys.argv[1]))
    def closure(name, seen):
        key = name.lower().replace("_", "-")
        if key in seen:
            return
        seen.add(key)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            return
        for r in reqs:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                closure(req.name, seen)
    dists = set()
    for name in ["rucio", *allowed]:
        closure(name, dists)
    tops = {top for top, owners in md.packages_distributions().items()
            if any(o.lower().replace("_", "-") in dists for o in owners)}
    ours = {"rucio_policy", "juno_common", "juno_etc"}

    class Only(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in tops or top in ours or top.startswith("_"):
                return None
            raise ImportError(f"{name} is not in the image: not in Rucio's dependency closure nor installed by it")

    sys.meta_path.insert(0, Only())
    import rucio_policy
    import rucio_policy.permission, rucio_policy.schema, rucio_policy.lfn2pfn
    algorithms = rucio_policy.get_algorithms()
    print(json.dumps(sorted(algorithms)))
""")


def test_the_policy_package_imports_with_what_the_images_install(tmp_path: Path) -> None:
    # The images' rucio.cfg: the production view (the database URL comes from a secret there).
    cfg = tmp_path / "rucio.cfg"
    production = rucio_config.view("production")
    production["database"]["default"] = f"sqlite:///{tmp_path / 'rucio.db'}"
    cfg.write_text(rucio_config.render_ini(production))
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUCIO_CONFIG": str(cfg)}
    for dockerfile in _dockerfiles():
        extra = [Path(r.split(">")[0].split("=")[0]).name for r in _image_requirements(dockerfile)]
        done = subprocess.run([sys.executable, "-c", POLICY_IMPORT, json.dumps(extra)], capture_output=True,
                              text=True, cwd="/", env=env)
        assert done.returncode == 0, f"{dockerfile.name}: {done.stderr[-2000:]}"
        assert "lfn2pfn" in json.loads(done.stdout.splitlines()[-1])
    # The guard itself refuses what the image would not have (the tools' Kafka client, say).
    probe = POLICY_IMPORT.replace("import rucio_policy\n", "import confluent_kafka\n")
    done = subprocess.run([sys.executable, "-c", probe, "[]"], capture_output=True, text=True, cwd="/", env=env)
    assert done.returncode != 0 and "confluent_kafka is not in the image" in done.stderr


# --------------------------------------------------------------------------- systemd


def _units() -> list[Path]:
    units = sorted((PROD / "systemd").glob("*.service"))
    assert {u.name for u in units} >= {"juno-ingest.service", "juno-ingest@.service", "juno-dci-status.service"}
    return units


def _exec_start(unit: Path) -> list[str]:
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    if argv[:2] == ["/bin/sh", "-c"]:
        argv = shlex.split(argv[2].removeprefix("exec ").replace("$((9464 + %i))", "9465"))
    return argv


def test_systemd_units_verify(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze comes with Debian's systemd (install-system)"
    for unit in _units():
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(OPT_VENV, str(VENV_BIN.parent)))
        target = copy.name.replace("@.service", "@1.service")
        done = subprocess.run(["systemd-analyze", "verify", target], cwd=tmp_path, capture_output=True, text=True)
        problems = [line for line in (done.stdout + done.stderr).splitlines() if unit.name in line or "juno" in line]
        assert done.returncode == 0 and not problems, f"{unit.name}: {done.stdout}{done.stderr}"
        # The command line is one our tool accepts (click parses every option before --help answers).
        argv = _exec_start(unit)
        assert argv[0].startswith(f"{OPT_VENV}/bin/"), argv
        tool = VENV_BIN / Path(argv[0]).name
        done = subprocess.run([str(tool), *argv[1:], "--help"], capture_output=True, text=True)
        assert done.returncode == 0, f"{unit.name}: {' '.join(argv)}: {done.stderr}"
    # verify does catch a broken unit.
    broken = tmp_path / "broken.service"
    broken.write_text("[Service]\nExecStart=/nonexistent/juno-ingest run\n")
    assert subprocess.run(["systemd-analyze", "verify", broken.name], cwd=tmp_path,
                          capture_output=True).returncode != 0


def test_ingest_unit_stops_restarting_on_the_exit_codes_that_restarts_cannot_mend() -> None:
    from juno_common.exit_codes import Exit

    for name in ("juno-ingest.service", "juno-ingest@.service"):
        text = (PROD / "systemd" / name).read_text()
        codes = re.search(r"^RestartPreventExitStatus=(.+)$", text, re.M)
        assert codes, name
        assert {int(c) for c in codes.group(1).split()} == {Exit.USAGE, Exit.STOPPED}


# --------------------------------------------------------------------------- HTCondor


CONDOR_PARAMS = textwrap.dedent("""
    import json, os, sys, tempfile, pathlib
    d = tempfile.mkdtemp()
    top = pathlib.Path(d, "condor_config")
    top.write_text(f"LOCAL_DIR = {d}\\nRELEASE_DIR = /usr\\nLOCAL_CONFIG_FILE = {sys.argv[1]}\\n")
    os.environ["CONDOR_CONFIG"] = str(top)
    import htcondor2
    htcondor2.reload_config()
    print(json.dumps({k: htcondor2.param.get(k) for k in sys.argv[2:]}))
""")


def _condor_params(path: Path, *names: str) -> dict[str, str | None]:
    done = subprocess.run([sys.executable, "-c", CONDOR_PARAMS, str(path), *names], capture_output=True, text=True)
    assert done.returncode == 0, f"{path.name}: {done.stdout}{done.stderr}"
    return json.loads(done.stdout.splitlines()[-1])


def test_htcondor_configs_parse_with_htcondors_own_parser(tmp_path: Path) -> None:
    from rucio_policy.topology import load as load_topology

    sites = {s.name for s in load_topology().sites}
    execute = _condor_params(PROD / "htcondor" / "execute-node.conf", "JUNO_Site", "STARTD_ATTRS", "DAEMON_LIST",
                             "SEC_DEFAULT_AUTHENTICATION_METHODS")
    assert execute["JUNO_Site"].strip('"') in sites
    assert "JUNO_Site" in execute["STARTD_ATTRS"].split()
    assert "STARTD" in execute["DAEMON_LIST"] and "SCHEDD" not in execute["DAEMON_LIST"]
    assert "IDTOKENS" in execute["SEC_DEFAULT_AUTHENTICATION_METHODS"]
    submit = _condor_params(PROD / "htcondor" / "submit-host.conf", "DAEMON_LIST", "SCHEDD_ALLOW_LATE_MATERIALIZE")
    assert "SCHEDD" in submit["DAEMON_LIST"] and submit["SCHEDD_ALLOW_LATE_MATERIALIZE"] is True
    cm = _condor_params(PROD / "htcondor" / "central-manager.conf", "DAEMON_LIST")
    assert "COLLECTOR" in cm["DAEMON_LIST"] and "NEGOTIATOR" in cm["DAEMON_LIST"]
    # The parser does refuse a broken file.
    bad = tmp_path / "bad.conf"
    bad.write_text('JUNO_Site = "CNAF"\nthis is not configuration\n')
    assert subprocess.run([sys.executable, "-c", CONDOR_PARAMS, str(bad)], capture_output=True).returncode != 0


# --------------------------------------------------------------------------- monitoring

METRIC = re.compile(r"\b(juno_[a-z0-9_]+)")


def _dashboard_metrics() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted((PROD / "monitoring" / "grafana").glob("*.json")):
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"] and board["panels"], path.name
        names = set()
        for panel in board["panels"]:
            assert panel["targets"], f"{path.name}: panel {panel['title']!r} queries nothing"
            for target in panel["targets"]:
                names |= {re.sub(r"_(bucket|sum|count|total)$", "", m) for m in METRIC.findall(target["expr"])}
        out[path.name] = names
    assert set(out) == {"juno-ingest.json", "juno-replication.json", "juno-jobs.json"}
    return out


def test_prometheus_scrapes_the_ports_the_services_use() -> None:
    from juno_ingest import config as ingest_config

    scrape = yaml.safe_load((PROD / "monitoring" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    ingest_targets = jobs["juno-ingest"]["static_configs"][0]["targets"]
    assert f"127.0.0.1:{ingest_config.load().metrics.port}" in ingest_targets
    assert jobs["juno-dci-status"]["static_configs"][0]["targets"] == ["127.0.0.1:18500"]
    assert _dashboard_metrics()  # every dashboard parses and every panel queries something


def _families(url: str) -> tuple[set[str], str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}, text


def _wait_scrape(url: str, want: str, timeout: float = 120) -> tuple[set[str], str]:
    deadline = time.monotonic() + timeout
    last: tuple[set[str], str] = (set(), "")
    while time.monotonic() < deadline:
        try:
            last = _families(url)
        except OSError:
            pass
        if want in last[1]:
            return last
        time.sleep(0.5)
    raise AssertionError(f"{url} never showed {want!r}; last scrape:\n{last[1][-3000:]}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.grid
@pytest.mark.condor
def test_every_metric_the_dashboards_query_is_served_by_the_grids_services(grid: Any, tmp_path: Path) -> None:
    import htcondor2

    tag = uuid.uuid4().hex[:8]
    stream, topic = f"JUNODAQ.mon{tag}", f"monitoring-{tag}"
    sim = subprocess.run([str(VENV_BIN / "juno-ingest"), "simulate", "--files", "6", "--malformed", "2",
                          "--stream", stream, "--topic", topic, "--partitions", "1", "--text"],
                         capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    ingest_port, status_port = _free_port(), _free_port()
    ingester = subprocess.Popen([str(VENV_BIN / "juno-ingest"), "run", "--once", "--topic", topic,
                                 "--group-id", f"mon-{tag}", "--dlq-topic", f"{topic}.dlq", "--stream", stream,
                                 "--metrics-port", str(ingest_port)],
                                stdout=subprocess.DEVNULL, stderr=(tmp_path / "ingest.log").open("w"))
    server = subprocess.Popen([str(VENV_BIN / "juno-dci"), "serve", "--port", str(status_port), "--refresh", "1",
                               "--no-ingest", "--blocks", f"block.{stream}.*"],
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "serve.log").open("w"))
    schedd = htcondor2.Schedd()
    held = schedd.submit(htcondor2.Submit({"executable": "/bin/true", "hold": "true", "MY.JunoTask": '"monitoring"',
                                           "MY.DESIRED_Sites": '"CNAF"'}))
    try:
        ingest_families, ingest_text = _wait_scrape(f"http://127.0.0.1:{ingest_port}/metrics",
                                                    "juno_ingest_files_registered_total 6.0")
        present = 'juno_replication_files{kind="present",rse="IHEP-EOS",site="IHEP"} 6.0'
        status_families, status_text = _wait_scrape(f"http://127.0.0.1:{status_port}/metrics", present)
        assert "juno_status_up 1.0" in status_text
        _, status_text = _wait_scrape(f"http://127.0.0.1:{status_port}/metrics", 'juno_jobs{site="CNAF",state="held"}')
    finally:
        schedd.act(htcondor2.JobAction.Remove, f"ClusterId == {held.cluster()}")
        server.send_signal(signal.SIGTERM)
        ingester.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        ingester.wait(60)
    served = {re.sub(r"_total$", "", f) for f in ingest_families | status_families}
    for board, names in _dashboard_metrics().items():
        assert names - served == set(), f"{board} queries metrics no service exposes: {sorted(names - served)}"
    assert 'juno_ingest_dead_lettered_total{reason=' in ingest_text
