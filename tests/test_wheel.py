"""The built wheel works outside the checkout, as deploy/production/README.md tells operators to install it:
`pip wheel .` builds without a warning, and in a fresh venv the shipped defaults (etc/ as the juno_etc
package data) serve `juno-policy validate`, `juno-ingest config`, and every command's --help.

The fresh venv gets the wheel itself (pip install --no-deps); its dependencies (Rucio, htcondor, ...) are
borrowed from the project's .venv through a .pth file naming a directory of links to them, leaving out
this project's own (editable) packages, so the test checks the wheel, not the checkout, and stays fast.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("juno_common", "juno_etc", "juno_status", "juno_ingest", "juno_jobs", "juno_grid", "rucio_policy",
        "juno_dci", "__editable__")


def _clean_env() -> dict[str, str]:
    """Without the grid's PYTHONPATH (the checkout) or JUNO_* settings: as on an operator's machine."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("JUNO_", "PYTHONPATH", "VIRTUAL_ENV"))}


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env or _clean_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(root / "dist"), str(REPO)],
                 cwd=root, env={**_clean_env(), "PIP_RETRIES": "0"})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    log = built.stdout + built.stderr
    # The build's warnings (setuptools': "...Warning", "warning: ..."), not pip's own about its indexes.
    warnings = [line for line in log.splitlines() if re.search(r"[a-z]Warning\b|^\s*warning:", line)
                and "byte-compiling is disabled" not in line]  # PYTHONDONTWRITEBYTECODE of this machine
    assert not warnings, "\n".join(warnings)
    [wheel] = (root / "dist").glob("juno_dci-*.whl")

    venv = root / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=root)  # its own pip (ensurepip, offline)
    assert made.returncode == 0, made.stderr
    deps = root / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(OURS) and not entry.name.endswith(".pth"):
            (deps / entry.name).symlink_to(entry)
    [site] = (venv / "lib").glob("python3.*/site-packages")
    (site / "borrowed-deps.pth").write_text(f"{deps}\n")
    # The fresh venv's own pip, so the commands' scripts run its python, not the project's.
    done = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _tool(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=venv.parent)  # outside the checkout


def test_packages_come_from_the_wheel(installed: Path) -> None:
    done = _tool(installed, "python", "-c", "import juno_common.etc, juno_jobs.backends, rucio_policy; "
                 "print(juno_common.etc.etc_dir()); print(rucio_policy.__file__)")
    assert done.returncode == 0, done.stderr
    assert all(str(REPO) not in line for line in done.stdout.splitlines()), done.stdout


def test_validate_uses_the_shipped_policy_and_sites(installed: Path) -> None:
    done = _tool(installed, "juno-policy", "validate")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "replication.yaml: valid (" in done.stdout + done.stderr and "site-packages/juno_etc" in done.stderr


def test_ingest_config_reads_the_shipped_file(installed: Path) -> None:
    done = _tool(installed, "juno-ingest", "config", "--json")
    assert done.returncode == 0, done.stderr
    assert '"topic"' in done.stdout


@pytest.mark.parametrize("tool", ["juno-submit", "juno-prod", "juno-dci", "juno-policy", "juno-ingest", "juno-grid"])
def test_every_command_starts(installed: Path, tool: str) -> None:
    done = _tool(installed, tool, "--help")
    assert done.returncode == 0 and "Exit codes" in done.stdout, done.stderr[-3000:]
