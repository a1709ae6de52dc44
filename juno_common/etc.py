"""Where the shipped defaults are: the files of etc/ (replication policy, sites, ingest configuration,
SPADE message schema, task schema, example tasks).

They are package data of the `juno_etc` package (pyproject maps it to etc/), so an installed wheel
carries them and a checkout's editable install reads the checkout's etc/ itself. JUNO_ETC points
every tool at another directory of the same files. Settings that name one file (JUNO_REPLICATION_POLICY,
--config, ...) take precedence over both.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ETC_ENV = "JUNO_ETC"


def etc_dir() -> Path:
    override = os.environ.get(ETC_ENV)
    if override:
        return Path(override)
    spec = importlib.util.find_spec("juno_etc")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the juno_etc package data (etc/) is not installed: reinstall juno-dci "
                                f"or set {ETC_ENV} to a directory with its files")
    return Path(next(iter(spec.submodule_search_locations)))


def etc_file(name: str) -> Path:
    """etc/<name> of the defaults, e.g. etc_file('replication.yaml')."""
    return etc_dir() / name
