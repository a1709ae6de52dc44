"""The local grid's accounts: their userpass passwords and a Rucio client configuration per account, so
the stock `rucio` CLI (and our tools) can act as any role on the grid.

The grid's rucio.cfg logs in as root. For the others (juno_ingest, juno_prod, jcoord, analyst1, ...)
`juno-grid up` and `juno-grid client-config` write `<dir of rucio.cfg>/<account>.cfg`: the same file
with the [client] credentials of that account. Then, inside the grid:

    rucio --config .grid/rucio/analyst1.cfg whoami

Local grid only: production accounts log in with X.509 or tokens, never with these passwords (and the
policy package the Rucio server loads knows nothing of them).
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path


def local_password(account: str) -> str:
    """Every test/demo account of the local grid logs in with userpass `<account>` / `<account>-local`."""
    return f"{account}-local"


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
              f"# written by `juno-grid client-config` from {base}.\n")
    # The password is the local grid's well-known one, but keep the file private like any credential.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(header)
        parser.write(handle)
    return path
