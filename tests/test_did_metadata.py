"""Provenance metadata: one decision for every environment (deploy/rucio-config.yaml), documented."""

from __future__ import annotations

from juno_grid import rucio_config

from juno_common.etc import etc_file

JSON_PLUGIN = "rucio.core.did_meta_plugins.json_meta.JSONDidMeta"
KEYS = ("run", "stream", "parent", "transformation", "step", "release")


def test_local_and_production_store_custom_keys_in_the_json_plugin() -> None:
    for env in ("local", "production"):
        assert rucio_config.view(env)["metadata"]["plugins"] == JSON_PLUGIN, env


def test_the_keys_juno_prod_sets_are_documented_and_are_no_did_column() -> None:
    from rucio.db.sqla import models
    from sqlalchemy import inspect

    text = etc_file("metadata.md").read_text()
    columns = {c.key for c in inspect(models.DataIdentifier).attrs}
    for key in KEYS:
        assert f"| `{key}` |" in text, key
        assert key not in columns, f"{key} is a DID column: it would not be a JSON key"
