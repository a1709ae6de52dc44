"""The job wrapper on its own (local processes, no grid): payload outcomes, memory watchdog, paths."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from juno_jobs import pfns, wrapper
from rucio_policy.lfn2pfn import juno_path


@pytest.mark.parametrize(("scope", "name"), [
    ("raw", "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"),
    ("raw", "RUN.1.TAODAQ.Calib-ACU-Ge68.ds-0.tao_trigger.20260101000000.1000.dat"),
    ("raw", "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20250231140223.002.dat"),  # no 31 Feb: hashed
    ("raw", "block.JUNODAQ.global_trigger.20251009"),
    ("rtraw", "RUN.9857.JUNODAQ.Physics.ds-2.global_trigger.20250903055150.001_J25.5.0.rtraw"),
    ("esd", "RUN.9857.JUNODAQ.Physics.ds-2.global_trigger.20250903055150.001_J25.5.0_J25.5.0.b.esd"),
    ("esd", "not-derived.esd"),
    ("user.analyst1", "user.analyst1.raw-checksum.00003.summary.json"),
    ("group.reco", "some/file.root"),
    ("mc", "mc.file"),
])
def test_wrapper_paths_equal_the_policy_package(scope: str, name: str) -> None:
    assert pfns.path_of(scope, name) == juno_path(scope, name)


def make_task(tmp_path: Path, script: str, *, outputs: list[str], wall_s: int = 60,
              release: str | None = None, log_limit: int = 1 << 20) -> Path:
    """A job's scratch directory as HTCondor's file transfer leaves it: task.json, 0.json, the payload."""
    root = tmp_path / "scratch"
    root.mkdir(parents=True)
    (root / "script.sh").write_text(script)
    (root / "task.json").write_text(json.dumps({
        "id": 1, "uuid": "u", "name": "t", "payload": {"kind": "script", "path": "payload/script.sh"},
        "release": release, "environment": {"FROM_TASK": "yes"}, "outputs": outputs, "wall_s": wall_s,
        "rse_bases": {}, "naming": pfns.NAMING, "arguments": ["a b", "{tag}"], "output": None,
        "log_limit": log_limit}))
    set_job(root, {"job": 0, "sites": [], "rses": [], "vars": {"tag": "c"}, "inputs": []})
    return root


def set_job(root: Path, spec: dict[str, Any]) -> None:
    (root / "0.json").write_text(json.dumps(spec))


def run_full(root: Path, memory_mb: int = 256) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = subprocess.run([sys.executable, str(Path(wrapper.__file__)), "0", "1", str(memory_mb)], cwd=root,
                          env={"PATH": "/usr/bin:/bin", "JUNO_SITE": "CNAF"}, capture_output=True, text=True,
                          timeout=60)
    return done, json.loads((root / "result.json").read_text())


def run(root: Path, memory_mb: int = 256) -> tuple[int, dict[str, Any]]:
    done, result = run_full(root, memory_mb)
    return done.returncode, result


def test_success_keeps_outputs_with_their_adler32(tmp_path: Path) -> None:
    root = make_task(tmp_path, 'mkdir sub; echo "$1|$2|$FROM_TASK|$JUNO_SITE" > sub/out.txt\n',
                     outputs=["sub/*.txt"])
    code, result = run(root)
    assert code == 0 and result["failure"] is None and result["site"] == "CNAF"
    out = root / "outputs" / "sub.out.txt"
    assert out.read_text() == "a b|c|yes|CNAF\n"
    assert result["outputs"] == [{"file": "sub.out.txt", "bytes": out.stat().st_size,
                                  "adler32": wrapper.adler32_file(out)}]


def test_payload_exit_code_passes_through(tmp_path: Path) -> None:
    code, result = run(make_task(tmp_path, "exit 3\n", outputs=["x"]))
    assert code == 3 and result["failure"] == "payload" and result["exit_code"] == 3


def test_memory_over_the_request_is_stopped_and_reported(tmp_path: Path) -> None:
    script = "python3 -c \"import time; b = b'x' * (300 << 20); time.sleep(5)\"\n"
    code, result = run(make_task(tmp_path, script, outputs=["x"]), memory_mb=100)
    assert code == wrapper.EXIT["memory"] and result["failure"] == "memory"
    assert result["max_rss_mb"] > 100
    code, result = run(make_task(tmp_path / "b", script.replace("time.sleep(5)", "time.sleep(1)") + "touch x\n",
                                 outputs=["x"]), memory_mb=600)
    assert code == 0 and result["failure"] is None and 250 < result["max_rss_mb"] < 600


def test_wall_time(tmp_path: Path) -> None:
    code, result = run(make_task(tmp_path, "sleep 30\n", outputs=["x"], wall_s=1))
    assert code == wrapper.EXIT["walltime"] and result["failure"] == "walltime"


def test_missing_output_fails_the_job(tmp_path: Path) -> None:
    code, result = run(make_task(tmp_path, "touch a.root\n", outputs=["*.root", "summary.txt"]))
    assert code == wrapper.EXIT["outputs"] and "'summary.txt' matched no file" in result["message"]


def test_missing_release(tmp_path: Path) -> None:
    code, result = run(make_task(tmp_path, "true\n", outputs=[], release=str(tmp_path / "nope")))
    assert code == wrapper.EXIT["release"] and "not found at this site" in result["message"]


def test_release_setup_is_sourced(tmp_path: Path) -> None:
    rel = tmp_path / "J25.5.0"
    rel.mkdir()
    (rel / "setup.sh").write_text("export JUNO_VERSION=J25.5.0\n")
    root = make_task(tmp_path, 'echo "$JUNO_VERSION" > v.txt\n', outputs=["v.txt"], release=str(rel))
    code, _ = run(root)
    assert code == 0
    assert (root / "outputs" / "v.txt").read_text() == "J25.5.0\n"


def test_input_not_at_this_site_is_an_input_failure(tmp_path: Path) -> None:
    root = make_task(tmp_path, "true\n", outputs=[])
    set_job(root, {"job": 0, "sites": ["JINR"], "rses": ["JINR-DISK"], "vars": {},
                   "inputs": [["raw", "RUN.1.JUNODAQ.Physics.ds-2.s.20250101000000.001.dat", 5, "00000001"]]})
    task = json.loads((root / "task.json").read_text())
    task["rse_bases"] = {"JINR-DISK": {"site": "JINR", "base": "root://127.0.0.1:1//x/"}}
    (root / "task.json").write_text(json.dumps(task))
    code, result = run(root)
    assert code == wrapper.EXIT["input"]
    assert re.search(r"inputs are at JINR, not at CNAF", result["message"])


@pytest.mark.parametrize("template", ["--job {job} {inputs}", "{input} n={nfiles} '{{x}}'", "--seed {seed} {job}",
                                      "plain words", ""])
def test_wrapper_renders_arguments_as_planning_does(template: str) -> None:
    from juno_jobs.model import InputFile
    from juno_jobs.splitting import input_path, render, tokenize

    files = tuple(InputFile("raw", f"f{i}.dat", 1, None, ()) for i in range(3))
    tokens = tokenize(template)
    planned = render(tokens, 4, files, {"seed": 17})
    assert wrapper.render_args(tokens, 4, [input_path(f) for f in files], {"seed": 17}) == list(planned)


@pytest.mark.parametrize("bad", ["/tmp/juno-escaped-{u}.dat", "../../juno-escaped-{u}.dat", "a/../../../juno-{u}"])
def test_an_input_name_that_leaves_the_input_directory_is_refused(tmp_path: Path, bad: str) -> None:
    """Security (issue 10, hole 6): an input named '/...' or with '..' would be written outside the
    job's input directory (xrdcp to dest / name). The wrapper refuses it and writes nothing."""
    u = uuid.uuid4().hex[:8]
    name = bad.format(u=u).replace("/tmp/", str(tmp_path / "elsewhere") + "/")
    (tmp_path / "elsewhere").mkdir()
    src = tmp_path / "source.dat"
    src.write_bytes(b"bytes an attacker wants placed\n")
    root = make_task(tmp_path, "true\n", outputs=[])
    task = json.loads((root / "task.json").read_text())
    task["rse_bases"] = {"CNAF-DISK": {"site": "CNAF", "base": None}}
    (root / "task.json").write_text(json.dumps(task))
    item = ["user.x", name, src.stat().st_size, wrapper.adler32_file(src), {"CNAF-DISK": str(src)}]
    set_job(root, {"job": 0, "sites": ["CNAF"], "rses": ["CNAF-DISK"], "vars": {}, "inputs": [item]})
    code, result = run(root)
    assert code == wrapper.EXIT["unsafe"] and result["failure"] == "unsafe", result
    assert "outside the job's directory" in result["message"]
    written = [p for p in tmp_path.rglob("*") if "juno" in p.name and "escaped" in p.name or p.name == f"juno-{u}"]
    assert written == []


def test_payload_logs_come_back_capped_head_and_tail(tmp_path: Path) -> None:
    script = "i=0; while [ $i -lt 4000 ]; do echo line-$i; i=$((i+1)); done; echo err-start >&2; touch x\n"
    root = make_task(tmp_path, script, outputs=["x"], log_limit=2000)
    done, result = run_full(root)
    assert result["failure"] is None, result
    assert done.stdout.startswith("line-0\n") and done.stdout.rstrip().endswith("line-3999")
    assert "bytes of this log cut; limit 2000 bytes" in done.stdout
    assert len(done.stdout) < 2200
    assert "err-start" in done.stderr
