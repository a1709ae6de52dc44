"""JUNO's Rucio policy package and replication policy engine.

As a Rucio policy package (`[policy] package = rucio_policy` or RUCIO_POLICY_PACKAGE), Rucio 41:
  1. imports this module and checks SUPPORTED_VERSION against its major version ("41");
  2. imports `rucio_policy.permission` (has_permission) and `rucio_policy.schema` (SCHEMAS, lengths);
  3. calls get_algorithms() and registers each algorithm by type and name.

Keep this module light: clients import it too (scope extraction), without a server or database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# rucio.common.plugins.check_policy_module_version: SpecifierSet(SUPPORTED_VERSION) must contain
# rucio.version.current_version(), which is the major version only ("41") since Rucio 2.
SUPPORTED_VERSION = "~=41.0"


def get_algorithms() -> dict[str, dict[str, Callable[..., Any]]]:
    """The algorithms this package adds, by Rucio algorithm type.

    Only types in rucio.common.constants.POLICY_ALGORITHM_TYPES are allowed: any other key makes
    PolicyPackageAlgorithms._register raise, and the daemons refuse to start.
      lfn2pfn "juno"   deterministic JUNO paths (RSE attribute lfn2pfn_algorithm=juno)
      pfn2lfn "juno"   scope and name back from such a path ([policy] pfn2lfn = juno)
      scope   "juno"   scope from a bare JUNO name (client config [common] extract_scope = juno)
    """
    from rucio_policy.lfn2pfn import ALGORITHM_NAME, lfn2pfn_juno, pfn2lfn_juno
    from rucio_policy.naming import extract_scope_juno

    return {
        "lfn2pfn": {ALGORITHM_NAME: lfn2pfn_juno},
        "pfn2lfn": {ALGORITHM_NAME: pfn2lfn_juno},
        "scope": {"juno": extract_scope_juno},
    }
