"""One exit-code table for all five commands (juno_common.exit_codes): each tool, each error kind.

The "server does not answer" cases run the real commands against a rucio.cfg pointing at a closed port
on loopback (a real client failing to connect; nothing is mocked and no grid is needed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from rucio.common.exception import (
    AccessDenied,
    CannotAuthenticate,
    DatabaseException,
    DataIdentifierNotFound,
    DuplicateRule,
    RucioException,
)

from juno_common.cli import classify
from juno_common.errors import InvalidFile, JunoError, Stopped, UsageProblem, from_rucio
from juno_common.exit_codes import MEANING, Exit

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TOOLS = ("juno-grid", "juno-policy", "juno-ingest", "juno-submit", "juno-dci", "juno-prod")


def test_every_code_has_one_meaning() -> None:
    assert [int(c) for c in Exit] == list(range(10))
    assert set(MEANING) == set(Exit) and len(set(MEANING.values())) == len(MEANING)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_documents_the_same_table(tool: str) -> None:
    done = subprocess.run([str(BIN / tool), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = " ".join(done.stdout.split())
    for code, text in MEANING.items():
        assert f"{int(code)} {text}" in shown, (tool, code)


@pytest.mark.parametrize(("error", "code"), [
    (AccessDenied("no"), Exit.REFUSED),
    (CannotAuthenticate("bad password"), Exit.REFUSED),
    (DataIdentifierNotFound("raw:x"), Exit.NOT_FOUND),
    (DatabaseException("down"), Exit.UNAVAILABLE),
    (RucioException("502 from a proxy"), Exit.UNAVAILABLE),
    (requests.exceptions.ConnectionError("refused"), Exit.UNAVAILABLE),
    (requests.exceptions.ReadTimeout("slow"), Exit.UNAVAILABLE),
    (ConnectionRefusedError(111, "Connection refused"), Exit.UNAVAILABLE),
    (DuplicateRule("again"), Exit.UNAVAILABLE),  # left to callers; a leftover one is a Rucio failure
    (InvalidFile("p.yaml:3: bad"), Exit.INVALID),
    (UsageProblem("bad setting"), Exit.USAGE),
    (Stopped("limit"), Exit.STOPPED),
    (ZeroDivisionError(), Exit.ERROR),
])
def test_one_translation(error: BaseException, code: Exit) -> None:
    assert classify(error)[0] == code


def test_specific_rucio_answers_are_left_to_the_caller() -> None:
    assert from_rucio(DuplicateRule("again")) is None
    assert isinstance(from_rucio(AccessDenied("no"), "adding rules"), JunoError)


def test_every_tools_own_errors_map_into_the_table() -> None:
    from juno_ingest.cli import _exit_code
    from juno_ingest.config import ConfigError
    from juno_ingest.consumer import DeadLetterLimitExceeded, KafkaSetupError
    from juno_ingest.storage_check import StorageUnavailable
    from juno_jobs import cli as submit
    from juno_status.db import StatusError
    from rucio_policy.engine import DidNotFound, EngineError
    from rucio_policy.replication import PolicyInvalid
    from rucio_policy.topology import TopologyError

    assert _exit_code(ConfigError("x")) == (Exit.USAGE, "configuration error")
    assert _exit_code(DeadLetterLimitExceeded("x"))[0] == Exit.STOPPED  # type: ignore[index]
    assert _exit_code(KafkaSetupError("x"))[0] == Exit.UNAVAILABLE  # type: ignore[index]
    assert _exit_code(StorageUnavailable("x"))[0] == Exit.UNAVAILABLE  # type: ignore[index]
    assert (submit.TASK_FILE, submit.INPUT, submit.SERVICE, submit.NOT_FOUND, submit.JOBS_FAILED) == (
        Exit.INVALID, Exit.REFUSED, Exit.UNAVAILABLE, Exit.NOT_FOUND, Exit.FAILED)
    assert classify(StatusError("db down"))[0] == Exit.UNAVAILABLE
    assert classify(DidNotFound("raw:x"))[0] == Exit.NOT_FOUND
    assert classify(EngineError("open"))[0] == Exit.REFUSED
    assert classify(PolicyInvalid([]))[0] == classify(TopologyError("x"))[0] == Exit.INVALID


@pytest.fixture(scope="module")
def dead_rucio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A rucio.cfg whose server and database do not answer (a loopback port nobody listens on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: connections are refused
    root = tmp_path_factory.mktemp("dead")
    cfg = root / "rucio.cfg"
    cfg.write_text(f"[common]\nloglevel = ERROR\n[client]\nrucio_host = http://127.0.0.1:{port}\n"
                   f"auth_host = http://127.0.0.1:{port}\nauth_type = userpass\nusername = analyst1\n"
                   "password = x\naccount = analyst1\nrequest_retries = 1\n"
                   f"[database]\ndefault = postgresql+psycopg://rucio:x@127.0.0.1:{port}/rucio\n")
    return {**os.environ, "RUCIO_CONFIG": str(cfg), "JUNO_SUBMIT_DIR": str(root / "submit"),
            "JUNO_SUBMIT_BACKEND": "local", "JUNO_PROD_DIR": str(root / "prod")}


@pytest.mark.parametrize("argv", [
    ["juno-policy", "plan"],
    ["juno-policy", "explain", "raw:block.JUNODAQ.x.20251009"],
    ["juno-submit", "plan", "etc/tasks/raw-checksum.yaml", "--input", "raw:block.JUNODAQ.x.20251009"],
    ["juno-dci", "status", "--no-ingest"],
    ["juno-prod", "files", "--parent", "raw:RUN.1.JUNODAQ.Physics.ds-2.x.20251009140223.001.dat", "--children"],
])
def test_a_server_that_does_not_answer_is_exit_5_with_one_clear_line(argv: list[str],
                                                                      dead_rucio: dict[str, str]) -> None:
    done = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=dead_rucio, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == Exit.UNAVAILABLE, (argv, done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith(f"{argv[0]}:")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0] and "refused" in errors[0].lower(), done.stderr
    assert "Traceback" not in done.stderr and "ERROR\tConnectionError" not in done.stderr, done.stderr


def test_json_errors_carry_the_code(dead_rucio: dict[str, str]) -> None:
    import json

    done = subprocess.run([str(BIN / "juno-policy"), "explain", "raw:block.JUNODAQ.x.20251009", "--json"],
                          env=dead_rucio, cwd=REPO, capture_output=True, text=True, timeout=120)
    error = json.loads(done.stdout)
    assert error["exit_code"] == done.returncode == Exit.UNAVAILABLE and error["error"] == "Rucio unavailable"


def test_invalid_files_are_exit_3_in_every_tool(tmp_path: Path) -> None:
    from juno_status.cli import cli as status_cli
    from rucio_policy.cli import main as policy_cli

    bad = tmp_path / "replication.yaml"
    bad.write_text("version: 1\nclasses: [oops\n")
    (tmp_path / "sites.yaml").write_text((REPO / "etc" / "sites.yaml").read_text())
    assert CliRunner().invoke(policy_cli, ["validate", str(bad)]).exit_code == Exit.INVALID
    assert CliRunner().invoke(status_cli, ["status", "--no-ingest", "--policy", str(bad)]).exit_code == Exit.INVALID
    task = tmp_path / "task.yaml"
    task.write_text("name: x\npayload: {script: 'true'}\nsplit: {files_per_job: lots}\n")
    done = subprocess.run([str(BIN / "juno-submit"), "plan", str(task)], capture_output=True, text=True,
                          env={**os.environ, "JUNO_SUBMIT_DIR": str(tmp_path / "s")}, timeout=60)
    assert done.returncode == Exit.INVALID and "task.yaml:" in done.stderr, done.stderr
    tf = tmp_path / "tf.yaml"
    tf.write_text("name: x\nsteps: lots\n")
    done = subprocess.run([str(BIN / "juno-prod"), "validate", str(tf)], capture_output=True, text=True,
                          env={**os.environ, "JUNO_PROD_DIR": str(tmp_path / "p")}, timeout=60)
    assert done.returncode == Exit.INVALID and "tf.yaml:2:" in done.stdout, done  # the report, as juno-policy's


def test_usage_errors_are_exit_2_in_every_tool() -> None:
    for tool in TOOLS:
        done = subprocess.run([str(BIN / tool), "no-such-command"], capture_output=True, text=True, timeout=60)
        assert done.returncode == Exit.USAGE, (tool, done.stderr)


def test_a_local_os_error_is_not_blamed_on_rucio() -> None:
    code, label, _ = classify(PermissionError(13, "Permission denied", "/x"))
    assert code == Exit.UNAVAILABLE and label == "I/O error"
    assert from_rucio(PermissionError(13, "Permission denied")) is None
    assert isinstance(from_rucio(PermissionError(13, "x"), "a call", inside_call=True), JunoError)


@pytest.mark.parametrize("argv", [["exec", "--", "true"], ["daemons"], ["tpc"]])
def test_juno_grid_commands_on_a_grid_that_is_not_up_are_exit_5_and_create_nothing(argv: list[str],
                                                                                  tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("juno-grid needs root")
    name = f"juno-absent-{os.getpid()}"
    env = {**os.environ, "JUNO_GRID_DIR": str(tmp_path / "grid"), "JUNO_GRID_NETNS": name}
    done = subprocess.run([str(BIN / "juno-grid"), *argv], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == Exit.UNAVAILABLE, (argv, done.returncode, done.stderr)
    assert "the grid is not up" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not Path(f"/run/netns/{name}").exists()  # nothing made: no namespace left behind
