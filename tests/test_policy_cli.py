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

from rucio_policy import cli
from rucio_policy.engine import DidNotFound, EngineError
from rucio_policy.replication import PolicyInvalid
from rucio_policy.yaml_lines import Issue

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("error", "code", "says"), [
    (AccessDenied("Account analyst1 can not add replication rule. no"), cli.EXIT_DENIED, "coordinator or root"),
    (CannotAuthenticate("bad password"), cli.EXIT_RUCIO, "cannot log in to Rucio"),
    (DataIdentifierNotFound("raw:x"), cli.EXIT_NOT_FOUND, "check the DID"),
    (DidNotFound("raw:x does not exist in Rucio: check the name"), cli.EXIT_NOT_FOUND, "does not exist"),
    (EngineError("raw:x is still open: close it"), cli.EXIT_RUCIO, "still open"),
    (RucioException("boom"), cli.EXIT_RUCIO, "Rucio error"),
    (requests.exceptions.ConnectionError("refused"), cli.EXIT_RUCIO, "cannot reach Rucio"),
    (PolicyInvalid([Issue("p.yaml", 3, "classes", "bad", "fix it")]), cli.EXIT_INVALID, "nothing sent to Rucio"),
])
def test_one_handler_maps_errors_to_exit_codes(error: Exception, code: int, says: str) -> None:
    failure = cli._translate(error)
    assert failure is not None and failure.code == code and says in str(failure)


def test_unknown_errors_are_not_swallowed() -> None:
    assert cli._translate(ZeroDivisionError()) is None


def test_exit_codes_are_distinct_and_documented() -> None:
    assert len(set(cli.EXIT_CODES)) == len(cli.EXIT_CODES) == 9
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    shown = " ".join(result.output.split())
    for code, text in cli.EXIT_CODES.items():
        assert f"{code} {text}" in shown


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
    assert result.exit_code == cli.EXIT_USAGE and "no replication policy at" in result.output
