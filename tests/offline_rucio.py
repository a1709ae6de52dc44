"""Rucio configured offline (SQLite, the JUNO policy package) for tests that load Rucio's own modules in a
subprocess, as a Rucio server would, without a server."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path


def offline_rucio_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a process that loads Rucio with our policy package and a throw-away database."""
    cfg = tmp_path / "rucio.cfg"
    cfg.write_text(textwrap.dedent(f"""\
        [common]
        extract_scope = juno
        [database]
        default = sqlite:///{tmp_path}/rucio.db
        [policy]
        package = rucio_policy
        pfn2lfn = juno
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUCIO_", "JUNO_"))}
    env["RUCIO_CONFIG"] = str(cfg)
    return env
