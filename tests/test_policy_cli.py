"""`juno-policy`'s error handling and options, without Rucio (the live commands: test_policy_engine.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from rucio.common.exception import (
    AccessDenied,
    CannotAuthenticate,
    DataIdentifierNotFound,
    RucioException,
)

from juno_common.cli import classify
from juno_common.exit_codes import MEANING, Exit
from juno_common.yamlfile import Issue
from rucio_policy import cli
from rucio_policy.engine import DidNotFound, EngineError
from rucio_policy.replication import PolicyInvalid

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("error", "code", "says"), [
    (AccessDenied("Account analyst1 can not add replication rule. no"), Exit.REFUSED, "Rucio refused"),
    (CannotAuthenticate("bad password"), Exit.REFUSED, "bad password"),
    (DataIdentifierNotFound("raw:x"), Exit.NOT_FOUND, "check the DID"),
    (DidNotFound("raw:x does not exist in Rucio: check the name"), Exit.NOT_FOUND, "does not exist"),
    (EngineError("raw:x is still open: close it"), Exit.REFUSED, "still open"),
    (RucioException("boom"), Exit.UNAVAILABLE, "Rucio unavailable"),
    (requests.exceptions.ConnectionError("refused"), Exit.UNAVAILABLE, "RUCIO_CONFIG"),
    (PolicyInvalid([Issue("p.yaml", 3, "classes", "bad", "fix it")]), Exit.INVALID, "p.yaml:3"),
])
def test_one_handler_maps_errors_to_exit_codes(error: Exception, code: int, says: str) -> None:
    got, _, message = classify(error)
    assert got == code and says in message


def test_unknown_errors_are_bugs() -> None:
    assert classify(ZeroDivisionError())[0] == Exit.ERROR


def test_exit_codes_are_documented() -> None:
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    shown = " ".join(result.output.split())
    for code, text in MEANING.items():
        assert f"{int(code)} {text}" in shown


@pytest.mark.parametrize("command", [["plan"], ["apply"], ["explain", "raw:x"], ["validate"],
                                     ["sites", "plan"], ["sites", "apply"]])
def test_every_command_has_the_shared_options(command: list[str]) -> None:
    result = CliRunner().invoke(cli.main, [*command, "--help"])
    assert result.exit_code == 0
    for option in ("--json", "--verbose", "--quiet"):
        assert option in result.output, (command, option)


def test_validate_defaults_to_the_shipped_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("JUNO_REPLICATION_POLICY", raising=False)
    result = CliRunner().invoke(cli.main, ["validate"])
    assert result.exit_code == 0, result.output
    assert "etc/replication.yaml: valid (" in result.output and "RSEs from etc/sites.yaml" in result.output


def test_missing_policy_file_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["plan", "--policy", str(tmp_path / "nope.yaml")])
    assert result.exit_code == Exit.USAGE and "no replication policy at" in result.output
