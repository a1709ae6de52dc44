"""rucio_policy loaded by Rucio 41 itself, the way the server and the clients load it.

Each check runs in a subprocess with its own rucio.cfg (`[policy] package = rucio_policy`) and a
throw-away SQLite URL, so Rucio's import-time loading is exercised for real without a database
server. Database facts are stubbed where a permission needs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from offline_rucio import offline_rucio_env

from rucio_policy import lfn2pfn

RAW = "RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat"
STEM = RAW[: -len(".dat")]


def run_with_rucio(tmp_path: Path, *parts: str) -> dict:
    """Run the script parts (each dedented) with Rucio configured; return the JSON it printed last."""
    env = offline_rucio_env(tmp_path)
    script = "\n".join(textwrap.dedent(part) for part in parts)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_rucio_loads_the_package(tmp_path: Path) -> None:
    out = run_with_rucio(tmp_path, f"""
        import json
        import rucio_policy
        from packaging.specifiers import SpecifierSet
        from rucio.common.plugins import check_policy_module_version
        from rucio.version import current_version
        check_policy_module_version(rucio_policy)  # raises PolicyPackageVersionError on mismatch
        import rucio.core.permission as core_permission
        from rucio.common.schema import schema_modules
        from rucio.rse.translation import RSEDeterministicTranslation
        from rucio.common.utils import extract_scope
        from rucio.common.constants import POLICY_ALGORITHM_TYPES
        path = RSEDeterministicTranslation("IHEP-EOS", {{"lfn2pfn_algorithm": "juno"}}, {{}}).path("raw", "{RAW}")
        from rucio.rse.rsemanager import get_scope_protocol
        pfn2lfn = get_scope_protocol()
        print(json.dumps({{
            "current": current_version(),
            "other_majors": [v in SpecifierSet(rucio_policy.SUPPORTED_VERSION) for v in ("40", "42")],
            "permission": core_permission.permission_modules["def"].__name__,
            "schema": schema_modules["def"].__name__,
            "types_ok": set(rucio_policy.get_algorithms()) <= set(POLICY_ALGORITHM_TYPES),
            "path": path,
            # No hidden defaults: an RSE without lfn2pfn_algorithm=juno keeps Rucio's own paths.
            "default_lfn2pfn": repr(RSEDeterministicTranslation._get_default_algorithm("lfn2pfn", "")),
            "default_scope": repr(RSEDeterministicTranslation._get_default_algorithm("scope", "")),
            "scope": list(extract_scope("{RAW}")),
            "pfn2lfn": [list(pfn2lfn({{"path": "/raw/2025/1009/", "name": "{RAW}"}})),
                        list(pfn2lfn({{"path": "/user/jdoe/ab/cd/", "name": "out.root"}}))],
        }}))
    """)
    assert out["current"] == "41"
    assert out["other_majors"] == [False, False]
    assert out["permission"] == "rucio_policy.permission"
    assert out["schema"] == "rucio_policy.schema"
    assert out["types_ok"] is True
    assert out["path"] == f"raw/2025/1009/{RAW}"
    assert out["default_lfn2pfn"] == "None" and out["default_scope"] == "None"
    assert out["scope"] == ["raw", RAW]
    assert out["pfn2lfn"] == [[RAW, "raw"], ["out.root", "user.jdoe"]]


_STUB = """
    import json
    import rucio_policy.permission as perm
    from rucio_policy import access

    class StubFacts:
        # What the database would say: analyst1 is an analyst, CNAF-TAPE is tape.
        def __init__(self, issuer, session): pass
        def attributes(self, account): return {"role": "analyst"}
        def rse(self, rse_id): return None
        def resolve(self, expression): return [access.RseFacts("CNAF-TAPE", "TAPE", "CNAF")]
        def rule(self, rule_id): return None
        def owns_scope(self, account, scope): return False
        def did_meta(self, scope, name, key): return None
        def policy_rule_shapes(self, scope): return None
        def raw_blocks(self, files): return {}

    perm.DbFacts = StubFacts
    RULE = dict(dids=[{"scope": "user.analyst1", "name": "my.set"}], copies=1, rse_expression="CNAF-TAPE",
                weight=None, lifetime=None, grouping="DATASET", account="analyst1", locked=False,
                subscription_id=None, source_replica_expression=None, activity=None, notify=None,
                purge_replicas=False, ignore_availability=False, comment=None, ask_approval=False,
                asynchronous=False, delay_injection=None, priority=3, split_container=False, meta=None)
"""


def test_denial_message_reaches_the_gateway_exception(tmp_path: Path) -> None:
    out = run_with_rucio(tmp_path, _STUB, """
        from rucio.common.exception import AccessDenied
        from rucio.gateway.rule import add_replication_rule
        try:
            add_replication_rule(**RULE, issuer="analyst1")
            message = "allowed?!"
        except AccessDenied as err:
            message = err.args[0]
        print(json.dumps({"message": message}))
    """)
    # The gateway raises exactly this; the REST layer sends it as ExceptionMessage and the client
    # raises AccessDenied with it (rucio/web/rest/flaskapi/v1/common.py, rucio/client/baseclient.py).
    assert out["message"] == ("Account analyst1 can not add replication rule. analyst1 adds rules on disk RSEs "
                              "only; CNAF-TAPE includes tape RSE(s) CNAF-TAPE")


def test_core_permission_results(tmp_path: Path) -> None:
    out = run_with_rucio(tmp_path, _STUB, """
        from rucio.common.types import InternalAccount, InternalScope
        from rucio.core.permission import has_permission
        me = InternalAccount("analyst1")
        kwargs = dict(RULE, account=me, dids=[{"scope": InternalScope("user.analyst1"), "name": "my.set"}])
        denied = has_permission(me, "add_rule", kwargs, session=object())
        # Not a JUNO action: Rucio's generic policy answers (everyone may ask for an ssh token).
        generic = has_permission(me, "get_auth_token_ssh", {}, session=object())

        class Broken(StubFacts):
            def attributes(self, account): raise TypeError("bug")
        perm.DbFacts = Broken
        broken = has_permission(me, "add_rule", kwargs, session=object())
        print(json.dumps({"denied": [denied.allowed, denied.message], "generic": bool(generic),
                          "broken": [broken.allowed, broken.message]}))
    """)
    assert out["denied"] == [False, "analyst1 adds rules on disk RSEs only; CNAF-TAPE includes tape RSE(s) CNAF-TAPE"]
    assert out["generic"] is True
    # A bug in the policy denies (Rucio would otherwise silently fall back to its generic rules).
    assert out["broken"][0] is False and "could not decide add_rule" in out["broken"][1]


@pytest.mark.parametrize(("scope", "name", "path"), [
    ("raw", RAW, f"raw/2025/1009/{RAW}"),
    ("rtraw", f"{STEM}_J25.5.0.rtraw", f"rtraw/J25.5.0/2025/1009/{STEM}_J25.5.0.rtraw"),
    ("esd", f"{STEM}_J25.5.0_J25.5.0.b.esd", f"esd/J25.5.0.b/2025/1009/{STEM}_J25.5.0_J25.5.0.b.esd"),
])
def test_juno_paths(scope: str, name: str, path: str) -> None:
    assert lfn2pfn.lfn2pfn_juno(scope, name, "ANY-RSE", {}, {}) == path


def test_other_paths_use_rucio_hash_layout() -> None:
    # md5("user.jdoe:out.root") starts with these four hex digits: same layout as Rucio's "hash".
    import hashlib

    digest = hashlib.md5(b"user.jdoe:out.root").hexdigest()
    assert lfn2pfn.juno_path("user.jdoe", "out.root") == f"user/jdoe/{digest[:2]}/{digest[2:4]}/out.root"
    assert lfn2pfn.juno_path("raw", "not-a-raw-name").startswith("raw/")
    # Names with "/" are refused by the schema; any registered before are escaped, never followed.
    assert lfn2pfn.juno_path("mc", "/juno/mc/x.root").endswith("/%2Fjuno%2Fmc%2Fx.root")
    assert "//" not in lfn2pfn.juno_path("mc", "/juno/mc/x.root")


@pytest.mark.parametrize("name", [
    "a/../../../../../raw/2025/1009/RUN.10554.JUNODAQ.Physics.ds-2.x.20251009140223.001.dat",
    "/etc/passwd", "..", ".", "../x", "a/./b", "%2F..%2F", "x/", "",
])
@pytest.mark.parametrize("scope", ["user.jdoe", "group.calib", "mc", "rtraw", "esd", "raw"])
def test_paths_never_leave_their_scope_tree(scope: str, name: str) -> None:
    """Whatever the name, its path is <scope tree>/<two hash levels>/<one component>: no '..' can climb."""
    path = lfn2pfn.juno_path(scope, name)
    parts = path.split("/")
    top = scope.split(".") if scope.startswith(("user.", "group.")) else [scope]
    assert parts[:len(top)] == top, path
    assert len(parts) == len(top) + 3, path
    assert parts[-1] not in ("..", "."), path
    directory, _, last = ("/" + path).rpartition("/")
    assert lfn2pfn.pfn2lfn_juno({"path": directory + "/", "name": last}) == (name, scope)


@pytest.mark.parametrize(("scope", "name"), [
    ("raw", RAW), ("rtraw", f"{STEM}_J25.5.0.rtraw"), ("esd", f"{STEM}_J25.5.0_J25.5.0.b.esd"),
    ("user.jdoe", "out.root"), ("group.calib", "pmt.v2.root"), ("mc", "sim.00001.root"), ("raw", "not-a-raw-name"),
])
def test_pfn2lfn_inverts_the_paths(scope: str, name: str) -> None:
    """Declaring a replica bad by PFN finds it again (Rucio passes the path below the prefix, split)."""
    path = "/" + lfn2pfn.juno_path(scope, name)
    directory, _, last = path.rpartition("/")
    assert lfn2pfn.pfn2lfn_juno({"path": directory + "/", "name": last}) == (name, scope)


def test_no_hidden_default_algorithm() -> None:
    """Rucio uses `<package>.lfn2pfn.lfn2pfn` for every RSE without the attribute: we must not define it."""
    assert not hasattr(lfn2pfn, "lfn2pfn")
    import importlib.util

    assert importlib.util.find_spec("rucio_policy.scope") is None
