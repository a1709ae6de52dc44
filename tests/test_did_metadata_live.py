"""Provenance metadata on the live grid's Rucio: stored and filtered on the server (etc/metadata.md).

juno-prod registers outputs in rtraw/esd/mc with the keys run, stream, parent, transformation, step and
release; Rucio keeps keys it has no DID column for in its JSON metadata plugin ([metadata] plugins in
deploy/rucio-config.yaml), and the query runs in the database. Found with the stock CLI (`rucio did
list --filter ...`) and the Python client; only juno_prod (or an admin) may set them on rtraw/esd/mc,
and juno_prod may not set them anywhere else. The permission tests come first.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from rucio.common.exception import AccessDenied

pytestmark = pytest.mark.grid

KEYS = ("run", "stream", "parent", "transformation", "step", "release")


@pytest.fixture(scope="module")
def prod(grid: Any) -> Any:
    return grid.client("juno_prod")


@pytest.fixture(scope="module")
def outputs(prod: Any) -> dict[str, Any]:
    """As juno_prod: an rtraw dataset of 4 outputs (runs r..r+3) with replicas at IHEP-EOS, an esd file
    and an mc file, each with provenance metadata; the first two given at registration, the rest
    after it (set_dids_metadata_bulk), as juno-prod may do either."""
    tag = uuid.uuid4().hex[:8]
    run = 1_000_000 + zlib.crc32(tag.encode()) % 8_000_000
    transformation = f"kup-{tag}"
    raws = [f"RUN.{run + i}.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.00{i}.dat" for i in range(4)]
    rtraws = [r.removesuffix(".dat") + "_J25.1.0.rtraw" for r in raws]

    def meta(i: int, step: str, parent: str) -> dict[str, Any]:
        return {"run": run + i, "stream": "JUNODAQ.global_trigger", "parent": parent,
                "transformation": transformation, "step": step, "release": "J25.1.0"}

    dataset = f"kup.{transformation}.rtraw"
    prod.add_dataset("rtraw", dataset)
    files = [{"scope": "rtraw", "name": n, "bytes": 10 + i, "adler32": f"{i + 1:08x}",
              "meta": meta(i, "rtraw", f"raw:{raws[i]}")} for i, n in enumerate(rtraws[:2])]
    prod.attach_dids("rtraw", dataset, files, rse="IHEP-EOS")
    later = [{"scope": "rtraw", "name": n, "bytes": 10 + i, "adler32": f"{i + 1:08x}"}
             for i, n in enumerate(rtraws) if i >= 2]
    prod.attach_dids("rtraw", dataset, later, rse="IHEP-EOS")
    prod.set_dids_metadata_bulk([{"scope": "rtraw", "name": rtraws[i], "meta": meta(i, "rtraw", f"raw:{raws[i]}")}
                                 for i in (2, 3)])
    esd = rtraws[0].removesuffix(".rtraw") + "_J25.1.0.esd"
    prod.add_replicas("IHEP-EOS", [{"scope": "esd", "name": esd, "bytes": 5, "adler32": "0000000a",
                                    "meta": meta(0, "esd", f"rtraw:{rtraws[0]}")}])
    mc = f"mc.{tag}.detsim.000.root"
    prod.add_replicas("IHEP-EOS", [{"scope": "mc", "name": mc, "bytes": 5, "adler32": "0000000b"}])
    prod.set_metadata_bulk("mc", mc, {"run": run, "transformation": transformation, "step": "detsim",
                                      "release": "J25.1.0"})
    return {"tag": tag, "run": run, "raws": raws, "rtraws": rtraws, "esd": esd, "mc": mc,
            "transformation": transformation, "dataset": dataset}


# -- who may set them (tried first) ---------------------------------------------------------------------


def test_prod_may_not_set_provenance_outside_its_scopes(prod: Any, root: Any, analyst: Any, outputs: dict) -> None:
    raw = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"
    for scope, name in (("raw", raw), ("user.analyst1", f"user.analyst1.{outputs['tag']}")):
        for call in (lambda s=scope, n=name: prod.set_metadata(s, n, "parent", "raw:x"),
                     lambda s=scope, n=name: prod.set_metadata_bulk(s, n, {"run": 1, "step": "rtraw"}),
                     lambda s=scope, n=name: prod.set_dids_metadata_bulk([{"scope": s, "name": n,
                                                                          "meta": {"release": "J25.1.0"}}])):
            with pytest.raises(AccessDenied):
                call()


def test_others_may_not_forge_provenance_on_production_scopes(analyst: Any, outputs: dict) -> None:
    name = outputs["rtraws"][0]
    with pytest.raises(AccessDenied):
        analyst.set_metadata("rtraw", name, "parent", "raw:forged")
    with pytest.raises(AccessDenied):
        analyst.set_dids_metadata_bulk([{"scope": "rtraw", "name": name, "meta": {"run": 1}}])
    assert analyst.get_metadata("rtraw", name, plugin="JSON")["parent"] == f"raw:{outputs['raws'][0]}"


# -- stored and filtered on the server ------------------------------------------------------------------


def test_metadata_is_stored_in_rucio(prod: Any, outputs: dict) -> None:
    got = prod.get_metadata("rtraw", outputs["rtraws"][3], plugin="JSON")
    assert {k: got[k] for k in KEYS} == {"run": outputs["run"] + 3, "stream": "JUNODAQ.global_trigger",
                                         "parent": f"raw:{outputs['raws'][3]}",
                                         "transformation": outputs["transformation"], "step": "rtraw",
                                         "release": "J25.1.0"}


def test_python_client_filters_on_the_server(analyst: Any, outputs: dict) -> None:
    rtraws, run = outputs["rtraws"], outputs["run"]
    assert list(analyst.list_dids("rtraw", {"parent": f"raw:{outputs['raws'][1]}"}, did_type="all")) == [rtraws[1]]
    assert sorted(analyst.list_dids("rtraw", [{"run.gte": run + 1, "run.lte": run + 2}], did_type="all")) == \
        sorted(rtraws[1:3])
    assert sorted(analyst.list_dids("rtraw", {"transformation": outputs["transformation"], "step": "rtraw"},
                                    did_type="all")) == sorted(rtraws)
    # children of a file, one step down: what `juno-prod files --children` asks
    assert list(analyst.list_dids("esd", {"parent": f"rtraw:{rtraws[0]}"}, did_type="all")) == [outputs["esd"]]
    assert list(analyst.list_dids("mc", {"transformation": outputs["transformation"], "step": "detsim"},
                                  did_type="all")) == [outputs["mc"]]
    assert list(analyst.list_dids("rtraw", {"parent": "raw:nothing-has-this-parent"}, did_type="all")) == []


def _rucio_cli(grid: Any, *args: str) -> list[str]:
    """The stock `rucio` CLI (the venv's), as analyst1; its output lines, sorted."""
    from juno_grid.accounts import write_account_config

    cfg = write_account_config(grid.cfg.rucio_cfg, "analyst1")  # what `juno-grid client-config` writes
    env = {**os.environ, "RUCIO_CONFIG": str(cfg)}
    rucio = str(Path(sys.executable).parent / "rucio")
    run = subprocess.run([rucio, "--config", str(cfg), *args], capture_output=True, text=True, env=env, timeout=120,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return sorted(line.strip() for line in run.stdout.splitlines() if line.strip())


def test_stock_cli_filters_by_parent_and_run_range(grid: Any, outputs: dict) -> None:
    rtraws, run = outputs["rtraws"], outputs["run"]
    assert _rucio_cli(grid, "did", "list", "--short", "--filter", f"parent=raw:{outputs['raws'][2]}",
                      "rtraw:*") == [f"rtraw:{rtraws[2]}"]
    assert _rucio_cli(grid, "did", "list", "--short", "--filter", f"run>={run + 1},run<={run + 3}",
                      "rtraw:*") == sorted(f"rtraw:{n}" for n in rtraws[1:])
    assert _rucio_cli(grid, "did", "list", "--short", "--filter",
                      f"{run}<=run<{run + 2},transformation={outputs['transformation']}", "rtraw:*") == \
        sorted(f"rtraw:{n}" for n in rtraws[:2])
    assert f"esd:{outputs['esd']}" in _rucio_cli(grid, "did", "list", "--short", "--filter",
                                                 "stream=JUNODAQ.global_trigger,step=esd", "esd:*")
    shown = "\n".join(_rucio_cli(grid, "did", "metadata", "list", "--plugin", "JSON", f"rtraw:{rtraws[0]}"))
    assert f"raw:{outputs['raws'][0]}" in shown and outputs["transformation"] in shown


def test_the_grid_runs_the_configured_plugin(grid: Any) -> None:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(grid.cfg.rucio_cfg)
    assert parser.get("metadata", "plugins") == "rucio.core.did_meta_plugins.json_meta.JSONDidMeta"
