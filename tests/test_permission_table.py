"""The decision table against the installed Rucio: every action Rucio can ask about has a row, every row is
an action Rucio knows, every cell is valid, and etc/permissions.md is the table (no grid needed)."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

from rucio_policy import access
from rucio_policy import permission_table as table

REPO = Path(__file__).resolve().parents[1]
RUCIO = Path(importlib.util.find_spec("rucio").origin).parent  # type: ignore[arg-type, union-attr]


def generic_actions() -> set[str]:
    """The keys of the action → perm_* dict in the installed rucio.core.permission.generic.has_permission
    (read from the source: importing Rucio's core needs a server configuration)."""
    tree = ast.parse((RUCIO / "core" / "permission" / "generic.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "has_permission")
    dicts = [n for n in ast.walk(function) if isinstance(n, ast.Dict)]
    assert len(dicts) == 1, "rucio.core.permission.generic.has_permission changed shape: review the table"
    return {k.value for k in dicts[0].keys if isinstance(k, ast.Constant)}


_ASKED = re.compile(r"""has_permission\(([^()]|\([^()]*\))*?action\s*=\s*['"]([a-z_]+)['"]""", re.S)
_ASKED_POSITIONAL = re.compile(r"""has_permission\(\s*issuer\s*,\s*['"]([a-z_]+)['"]""")


def gateway_actions() -> set[str]:
    """Every action the installed gateway asks about (some are not in the generic dict: perm_default)."""
    found: set[str] = set()
    for path in (RUCIO / "gateway").rglob("*.py"):
        text = path.read_text()
        found |= {m.group(2) for m in _ASKED.finditer(text)}
        found |= set(_ASKED_POSITIONAL.findall(text))
    return found


def test_the_installed_rucio_has_no_action_the_table_does_not_list() -> None:
    """Fails on a Rucio upgrade that adds an action: decide its row (etc/permissions.md) before deploying."""
    rucio_actions = generic_actions() | gateway_actions()
    assert len(generic_actions()) >= 75
    missing = sorted(rucio_actions - set(table.TABLE))
    assert not missing, f"Rucio asks about actions JUNO's table does not list: {missing}"


def test_every_row_is_an_action_rucio_knows() -> None:
    stale = sorted(set(table.TABLE) - generic_actions() - gateway_actions())
    assert not stale, f"rows for actions the installed Rucio never asks about: {stale}"


def test_every_cell_is_valid() -> None:
    for action, row in table.TABLE.items():
        assert tuple(row) == table.ROLES, action
        for role, cell in row.items():
            assert cell.kind in (table.ALLOW, table.DENY, table.RUCIO, table.CHECK), (action, role)
            if cell.kind == table.CHECK:
                assert cell.check in access._CHECKS, (action, role, cell.check)
                assert cell.check in table.CHECKS, f"check {cell.check} has no description for operators"


def test_non_admins_never_fall_back_to_rucio_except_where_named() -> None:
    """'rucio' for a non-admin is a deliberate choice, and each one is explained for operators."""
    for action, row in table.TABLE.items():
        for role in table.ROLES[2:]:
            if row[role].kind == table.RUCIO:
                assert action in table.RUCIO_MEANING, (action, role)


def test_the_holes_rows() -> None:
    for role in table.ROLES[2:]:
        assert table.cell("declare_suspicious_file_replicas", role).kind == table.DENY  # hole 3
        assert table.cell("declare_bad_file_replicas", role).kind == table.DENY
    assert table.cell("set_status", "ingest").check == "set_status"  # hole 7
    assert table.cell("add_replicas", "analyst").check == "replicas_add"  # hole 2


def test_permissions_md_is_the_table() -> None:
    """etc/permissions.md is generated: `python -m rucio_policy.permission_table > etc/permissions.md`."""
    assert (REPO / "etc" / "permissions.md").read_text() == table.markdown()


def test_the_gateway_arguments_the_adapter_reads_are_still_there() -> None:
    """rucio_policy.permission reads what Rucio checks without (add_did's content, add_replicas' files,
    set_status' open flag, whose follows change) from the gateway function's own arguments."""
    from rucio_policy.permission import _GATEWAY_CONTENT

    wanted = {"add_did": {"dids", "rse"}, "add_replicas": {"files"}, "set_status": {"kwargs"},
              "remove_did_from_followed": {"account"}, "remove_dids_from_followed": {"account"}}
    assert set(wanted) == set(_GATEWAY_CONTENT)
    for action, (module, function) in _GATEWAY_CONTENT.items():
        path = RUCIO.parent / (module.replace(".", "/") + ".py")
        tree = ast.parse(path.read_text())
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
        names = {a.arg for a in node.args.args + node.args.kwonlyargs}
        if node.args.kwarg:
            names.add(node.args.kwarg.arg)
        assert wanted[action] <= names, f"{module}.{function} lost {wanted[action] - names}: review permission.py"
        assert f"action='{action}'" in ast.get_source_segment(path.read_text(), node), (module, function, action)
