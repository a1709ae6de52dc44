"""Rucio client configurations per account, so the stock `rucio` CLI can act as any role on the local grid.

The grid's rucio.cfg logs in as root. For the others (juno_ingest, juno_prod, jcoord, analyst1, ...)
this writes `<dir of rucio.cfg>/<account>.cfg`: the same file with the [client] credentials of that
account (userpass `<account>` / sites_sync.local_password). Then, inside the grid:

    rucio --config .grid/rucio/analyst1.cfg whoami

Local grid only: production accounts log in with X.509 or tokens, never with these passwords.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from rucio_policy.sites_sync import local_password


def write_account_config(base: Path, account: str, dest_dir: Path | None = None) -> Path:
    """Write `<dest_dir or base's dir>/<account>.cfg` from the config `base`; return its path."""
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(base):
        raise FileNotFoundError(f"no Rucio configuration at {base}: start the grid (juno-grid up) or set RUCIO_CONFIG")
    if not parser.has_section("client"):
        parser.add_section("client")
    parser["client"].update({"auth_type": "userpass", "account": account, "username": account,
                             "password": local_password(account)})
    path = (dest_dir or base.parent) / f"{account}.cfg"
    header = (f"# Rucio client configuration for account {account} on the local JUNO grid,\n"
              f"# written by `juno-policy sites client-config` from {base}.\n")
    # The password is the local grid's well-known one, but keep the file private like any credential.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(header)
        parser.write(handle)
    return path
