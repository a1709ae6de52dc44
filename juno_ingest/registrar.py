"""The Rucio adapter: the only module that calls Rucio (plus the policy engine it hands a client to).

Every call is a bulk call of at most `bulk_size` (≤ 1000, Rucio's cap) items. Files are registered and
attached in one call, `attach_dids(scope, block, files, rse=IHEP)`: one transaction per chunk (DESIGN.md
measured it faster than add_replicas + attach). Chunks run `parallel` at a time, each thread with its
own client.

Idempotency (DESIGN.md): `add_replicas` silently keeps an existing file even with another checksum, and
attaching a file that exists in another block would give it two parents, so the caller looks names up
first (`existing_files`) and registers only new ones. Rucio's own signals back that up:
DataIdentifierAlreadyExists and DuplicateRule are success; FileAlreadyExists and
FileConsistencyMismatch on a chunk (someone else registered a name in between), and the server's
refusal of a file another raw block holds (rucio_policy.access.IN_ANOTHER_BLOCK: Rucio itself would
attach it to a second block silently) make the caller look again (`recheck`).

Errors are sorted into three kinds the consumer acts on:
  RucioUnavailable   server down, timeouts, 5xx, database trouble: retry the batch later, commit nothing;
  RucioRefused       permission, unknown RSE/scope/account, bad credentials: stop with the server's
                     message and what to check (retrying would not help);
  per-file problems  (a name the server rejects, a closed block) come back as results, not exceptions:
                     a chunk the server refuses as a whole is split until the files it objects to are alone
                     (narrowing.py); those come back rejected with the server's reason, the rest registered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rucio.common import exception as rex

from juno_common.errors import RucioRefused, RucioUnavailable, rucio_text
from juno_common.errors import rucio_errors as common_rucio_errors
from juno_ingest import narrowing
from juno_ingest.batching import Known, even_chunks
from juno_ingest.logs import fields
from juno_ingest.mapping import SCOPE, BlockPlan
from juno_ingest.narrowing import Attempt, Verdict
from juno_ingest.storage_check import Endpoint
from rucio_policy.access import IN_ANOTHER_BLOCK

log = logging.getLogger("juno_ingest.registrar")
T = TypeVar("T")

MAX_BULK = 1000  # Rucio's generic schema caps every bulk call here




@contextmanager
def rucio_errors(what: str, *, refused_hint: str = "") -> Iterator[None]:
    """Translate transient and configuration errors of a Rucio call (juno_common.errors); let the rest through."""
    with common_rucio_errors(what, refused_hint=refused_hint or (
            "check the ingest account (rucio.account, its role attribute), the RSE name and the server's policy "
            "(rucio_policy/access.py)")):
        yield


class BlockRules(Protocol):
    """The replication policy, applied per block (rucio_policy.engine behind it)."""

    def ensure_many(self, client: Any, scope: str, names: Sequence[str], new: Mapping[str, Mapping[str, Any]],
                    map_calls: Callable[..., list[Any]]) -> list[Any]: ...

    def finalize(self, client: Any, scope: str, name: str) -> Any: ...

    def finalize_many(self, client: Any, scope: str, names: Sequence[str]) -> list[Any]: ...


class NoRules:
    """rules.apply: false — blocks get no rules (for a grid without a replication policy)."""

    def ensure_many(self, client: Any, scope: str, names: Sequence[str], new: Mapping[str, Mapping[str, Any]],
                    map_calls: Callable[..., list[Any]]) -> list[None]:
        return [None for _ in names]

    def finalize(self, client: Any, scope: str, name: str) -> None:
        return None

    def finalize_many(self, client: Any, scope: str, names: Sequence[str]) -> list[None]:
        return [None for _ in names]


class PolicyRules:
    """rucio_policy.engine: ensure_blocks_rules after creating blocks, finalize_block after closing one."""

    def __init__(self, policy_file: str | None = None) -> None:
        try:
            from rucio_policy import engine
        except ImportError as err:
            raise RucioRefused(f"rules.apply is on but the replication engine (rucio_policy.engine) cannot be "
                               f"imported: {err}; install juno-dci completely, or set rules.apply: false "
                               "(blocks then get no rules)") from None

        self._engine = engine
        try:
            self._policy = engine.load_default_policy(Path(policy_file) if policy_file else None)
        except engine.EngineError as err:
            raise RucioRefused(str(err)) from None
        except Exception as err:  # noqa: BLE001 - replication.PolicyInvalid and YAML errors: say which file
            raise RucioRefused(f"the replication policy ({policy_file or engine.policy_path()}) is not valid: "
                               f"{err}; check it with `juno-policy validate`") from None

    def ensure_many(self, client: Any, scope: str, names: Sequence[str], new: Mapping[str, Mapping[str, Any]],
                    map_calls: Callable[..., list[Any]]) -> list[Any]:
        """ensure for many blocks: each rule the policy wants goes to Rucio in one call for all of them;
        `new` (created just now, with that metadata) are not read back. map_calls runs the calls (threads)."""
        return self._wrap(lambda: self._engine.ensure_blocks_rules(client, scope, names, new=new, policy=self._policy,
                                                                   map_calls=map_calls))

    def finalize(self, client: Any, scope: str, name: str) -> Any:
        return self._wrap(lambda: self._engine.finalize_block(client, scope, name, policy=self._policy))

    def finalize_many(self, client: Any, scope: str, names: Sequence[str]) -> list[Any]:
        """finalize for blocks closed together: the placement tallies are read once for all of them."""
        return self._wrap(lambda: self._engine.finalize_blocks(client, scope, names, policy=self._policy))

    def _wrap(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except self._engine.EngineError as err:
            raise RucioRefused(f"replication policy engine: {err}") from None


@dataclass(frozen=True)
class BlockState:
    exists: bool
    is_open: bool = True
    closed_at: datetime | str | None = None


@dataclass
class RegisterResult:
    """What became of one block's new files."""

    registered: list[str] = field(default_factory=list)
    recheck: list[str] = field(default_factory=list)  # someone registered them meanwhile: look again
    closed: list[str] = field(default_factory=list)  # the block was closed: these files are late
    rejected: dict[str, str] = field(default_factory=dict)  # name → the server's reason
    narrowed: int = 0  # chunks the server refused as a whole, split until the culprits were alone
    calls: int = 0  # the calls that took (besides each chunk's first)


class Registrar:
    """Registers JUNO raw files in Rucio as the ingest account."""

    def __init__(self, client_factory: Callable[[], Any], *, rse: str, bulk_size: int = 500, parallel: int = 2,
                 rules: BlockRules | None = None) -> None:
        if not 1 <= bulk_size <= MAX_BULK:
            raise ValueError(f"bulk_size must be 1..{MAX_BULK}, got {bulk_size}")
        self.rse = rse
        self.bulk_size = bulk_size
        self.parallel = max(1, parallel)
        self.rules: BlockRules = rules or NoRules()
        self._factory = client_factory
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="rucio")
        self._main: Any | None = None

    # -- clients ----------------------------------------------------------------------------------

    def connect(self) -> str:
        """Authenticate and check the RSE; the account name. Bad credentials are RucioRefused at once."""
        with rucio_errors("authentication", refused_hint="check rucio.account / rucio.auth_type and the "
                                                         "credentials (rucio.cfg, or rucio.username/password)"):
            self._main = self._factory()
            who = self._main.whoami()
        with rucio_errors(f"looking up RSE {self.rse}", refused_hint="check rucio.rse in the ingest configuration"):
            self._main.get_rse(self.rse)
        return str(who.get("account"))

    @property
    def client(self) -> Any:
        if self._main is None:
            with rucio_errors("authentication"):
                self._main = self._factory()
        return self._main

    def _thread_client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            with rucio_errors("authentication"):
                client = self._local.client = self._factory()
        return client

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def storage_endpoint(self, scheme: str = "root") -> Endpoint:
        """The RSE's `scheme` protocol (host:port, prefix), as Rucio has it."""
        with rucio_errors(f"reading the protocols of {self.rse}"):
            protocols = self.client.get_protocols(self.rse)
        for proto in protocols:
            if proto.get("scheme") == scheme:
                return Endpoint(f"{proto['hostname']}:{proto['port']}", str(proto.get("prefix") or ""))
        schemes = ", ".join(sorted({str(p.get("scheme")) for p in protocols})) or "none"
        raise RucioRefused(f"RSE {self.rse} has no {scheme}:// protocol (it has: {schemes}); the storage check "
                           "needs one: set storage_check.scheme, or storage_check.enabled: false")

    def _map(self, fn: Callable[[Any, Any], Any], items: Sequence[Any]) -> list[Any]:
        """fn(client, item) for each item, `parallel` at a time, results in order."""
        if len(items) <= 1 or self.parallel == 1:
            return [fn(self.client, item) for item in items]
        return list(self._pool.map(lambda item: fn(self._thread_client(), item), items))

    def _chunks(self, items: Sequence[T]) -> list[Sequence[T]]:
        return even_chunks(items, self.bulk_size)

    # -- reading ----------------------------------------------------------------------------------

    def existing_files(self, names: Sequence[str]) -> dict[str, Known]:
        """name → (size, adler32) for the names Rucio already has in raw."""
        def lookup(client: Any, chunk: Sequence[str]) -> list[dict[str, Any]]:
            with rucio_errors("looking up existing files"):
                return list(client.get_metadata_bulk([{"scope": SCOPE, "name": n} for n in chunk]))

        out: dict[str, Known] = {}
        for rows in self._map(lookup, self._chunks(list(dict.fromkeys(names)))):
            for row in rows:
                out[str(row["name"])] = Known(row.get("bytes"), row.get("adler32"))
        return out

    def block_states(self, names: Sequence[str], client: Any | None = None) -> dict[str, BlockState]:
        """State of blocks (or containers) by name; missing ones have exists=False."""
        client = client or self.client
        out = {n: BlockState(exists=False) for n in names}
        for chunk in self._chunks(list(dict.fromkeys(names))):
            with rucio_errors("looking up blocks"):
                rows = list(client.get_metadata_bulk([{"scope": SCOPE, "name": n} for n in chunk]))
            for row in rows:
                out[str(row["name"])] = BlockState(exists=True, is_open=bool(row.get("is_open", True)),
                                                   closed_at=row.get("closed_at"))
        return out

    def list_blocks(self, streams: Sequence[str], created_after: datetime) -> dict[str, BlockState]:
        """Blocks of these streams (all streams if empty) created after a date, with their state."""
        patterns = [f"block.{s}.*" for s in streams] or ["block.*"]
        names: list[str] = []
        for pattern in patterns:
            with rucio_errors("listing blocks"):
                since = created_after.strftime("%Y-%m-%dT%H:%M:%S.000Z")
                names += list(self.client.list_dids(SCOPE, {"name": pattern, "created_after": since},
                                                    did_type="dataset"))
        return self.block_states(sorted(set(names))) if names else {}

    # -- blocks -----------------------------------------------------------------------------------

    def setup_blocks(self, plans: Sequence[BlockPlan]) -> list[tuple[bool, Any]]:
        """The blocks, their containers and attachments (those missing), then the policy's rules, for all
        the blocks at once: (whether this call created the block, the engine's result), in order.

        A handful of calls whatever the number of blocks: one lookup, one add_dids, one attach, and one
        add_replication_rule per rule of the policy (for every block that lacks it). Blocks this call
        created are known to have no rules and are not read back; existing ones are read `parallel` at a
        time, and the rules' calls go `parallel` at a time too. All of it is idempotent: a crash anywhere
        is repaired by the next process that sees them.

        The rules go on before any file is attached: a rule added to an empty dataset is cheap, and
        Rucio's judge then evaluates attached files as they come. Adding rules to a block that already
        holds files makes the rule's creation evaluate them all at once, inside the request, while the
        files' own attaches compete with it (measured: the first batch of the benchmark 4x slower)."""
        if not plans:
            return []
        client = self.client
        kinds: dict[str, tuple[str, dict[str, Any]]] = {}
        for plan in plans:
            kinds.setdefault(plan.name, ("DATASET", plan.meta))
            for container in plan.containers:
                kinds.setdefault(container, ("CONTAINER", plan.container_meta()))
        states = self.block_states(list(kinds), client)
        created = self._add_collections(client, [n for n in kinds if not states[n].exists], kinds)
        self._attach_collections(client, plans)
        new = {p.name: p.meta for p in plans if p.name in created}
        with rucio_errors(f"adding the policy's rules to {len(plans)} block(s)"):
            results = self.rules.ensure_many(client, SCOPE, [p.name for p in plans], new, self._map)
        return [(plan.name in created, result) for plan, result in zip(plans, results, strict=True)]

    def _add_collections(self, client: Any, missing: Sequence[str], kinds: Mapping[str, tuple[str, dict[str, Any]]]
                         ) -> set[str]:
        """add_dids for the missing blocks and containers; the names this call created."""
        dids = [{"scope": SCOPE, "name": n, "type": kinds[n][0], "meta": kinds[n][1]} for n in missing]
        created: set[str] = set()
        for chunk in self._chunks(dids):
            try:
                with rucio_errors(f"creating {len(chunk)} block(s) and container(s)"):
                    client.add_dids(list(chunk))
                created.update(str(d["name"]) for d in chunk)
            except rex.DataIdentifierAlreadyExists:
                # Someone made one of them in between: the bulk call is one transaction, make each alone.
                for did in chunk:
                    try:
                        with rucio_errors(f"creating {did['name']}"):
                            client.add_dids([did])
                        created.add(str(did["name"]))
                    except rex.DataIdentifierAlreadyExists:
                        pass
        return created

    def _attach_collections(self, client: Any, plans: Sequence[BlockPlan]) -> None:
        """Each block into its month, the month into its year, the year into its stream (one call)."""
        children: dict[str, list[str]] = {}
        for plan in plans:
            for parent, child in plan.attachments():
                if child not in children.setdefault(parent, []):
                    children[parent].append(child)
        attachments = [{"scope": SCOPE, "name": parent, "dids": [{"scope": SCOPE, "name": c} for c in kids]}
                       for parent, kids in children.items()]
        for attempt in (1, 2):
            try:
                with rucio_errors(f"attaching {len(plans)} block(s) to their containers"):
                    client.attach_dids_to_dids(attachments, ignore_duplicate=True)
                return
            except rex.DuplicateContent:
                # Another ingester attached the same month to its year at the same moment: the second try
                # sees that attachment and skips it.
                if attempt == 2:
                    raise RucioUnavailable("attaching blocks to their containers kept colliding") from None

    def close_blocks(self, blocks: Sequence[str]) -> list[Any]:
        """Close the blocks, then let the policy decide what depends on their final sizes (all at once:
        the placement tallies are read once); the engine's result per block, in order."""
        for block in blocks:
            try:
                with rucio_errors(f"closing {block}"):
                    self.client.set_status(SCOPE, block, open=False)
            except rex.UnsupportedOperation:
                pass  # already closed (a crash after closing, or another ingester): finalize is idempotent
        with rucio_errors(f"finalizing the rules of {len(blocks)} block(s)"):
            return self.rules.finalize_many(self.client, SCOPE, list(blocks))

    def block_totals(self, block: str) -> tuple[int, int]:
        """(files, bytes) of a block, as Rucio counts them."""
        with rucio_errors(f"reading the size of {block}"):
            meta = self.client.get_metadata(SCOPE, block)
        return int(meta.get("length") or 0), int(meta.get("bytes") or 0)

    def attached(self, wanted: Mapping[str, set[str]]) -> dict[str, set[str]]:
        """block → which of the wanted names Rucio has attached to it (one listing per block)."""
        def listing(client: Any, block: str) -> set[str]:
            with rucio_errors(f"listing the files of {block}"):
                try:
                    return {str(f["name"]) for f in client.list_files(SCOPE, block)} & wanted[block]
                except rex.DataIdentifierNotFound:
                    return set()

        blocks = sorted(wanted)
        return dict(zip(blocks, self._map(listing, blocks), strict=True))

    def finalize(self, block: str) -> Any:
        with rucio_errors(f"finalizing the rules of {block}"):
            return self.rules.finalize(self.client, SCOPE, block)

    # -- files ------------------------------------------------------------------------------------

    def register(self, files_by_block: Mapping[str, Sequence[Mapping[str, Any]]], *, already_refuses: bool = False
                 ) -> dict[str, RegisterResult]:
        """Register replicas at the RSE and attach them to their blocks: every block's chunks together,
        `parallel` at a time (a backlog spreads one batch over many blocks, each often one chunk)."""
        work = [(block, chunk) for block, files in files_by_block.items() for chunk in self._chunks(files)]
        results = {block: RegisterResult() for block in files_by_block}
        parts = self._map(lambda client, item: self._register_chunk(client, *item, already_refuses=already_refuses),
                          work)
        for (block, _), part in zip(work, parts, strict=True):
            result = results[block]
            result.registered += part.registered
            result.recheck += part.recheck
            result.closed += part.closed
            result.rejected.update(part.rejected)
            result.narrowed += part.narrowed
            result.calls += part.calls
        return results

    def _attempt(self, client: Any, block: str, files: Sequence[Mapping[str, Any]]) -> Attempt:
        """One attach_dids call: what it means for these files. Failures about the service, not the files,
        are raised (RucioUnavailable: retry the batch; RucioRefused: configuration)."""
        try:
            client.attach_dids(SCOPE, block, list(files), rse=self.rse)
            return narrowing.OK
        except rex.AccessDenied as err:
            if IN_ANOTHER_BLOCK in str(err):
                return Attempt(Verdict.RECHECK, narrowing.reason_of(err))
            verdict = narrowing.classify(err)
        except rex.DataIdentifierNotFound as err:
            # The block itself is gone (deleted by an admin while we ran): nothing per file to blame.
            raise RucioUnavailable(f"{block} disappeared while registering into it: {rucio_text(err)}") from err
        except Exception as err:  # noqa: BLE001 - classify re-raises what is not Rucio's
            verdict = narrowing.classify(err)
        if verdict.verdict is Verdict.UNAVAILABLE:
            raise RucioUnavailable(f"Rucio unavailable during registering {len(files)} files in {block}: "
                                   f"{verdict.reason}")
        if verdict.verdict is Verdict.REFUSED:
            raise RucioRefused(f"Rucio refused registering files in {block}: {verdict.reason}; check the ingest "
                               "account (rucio.account, its role attribute) and rucio.rse")
        return verdict

    def _alive(self, client: Any, block: str) -> bool:
        """Whether Rucio answers a read about the block (then a failure of one file is that file's)."""
        try:
            client.get_metadata(SCOPE, block)
            return True
        except Exception:  # noqa: BLE001 - any failure means "cannot tell": the batch is retried
            return False

    def _register_chunk(self, client: Any, block: str, chunk: Sequence[Mapping[str, Any]], *,
                        already_refuses: bool = False) -> RegisterResult:
        """already_refuses: "this name exists" counts as a refusal of the file (the caller looked these names
        up twice after such answers and Rucio has none of them: a name the server will not take again)."""
        names = [str(f["name"]) for f in chunk]

        def attempt(part: Sequence[Mapping[str, Any]]) -> Attempt:
            verdict = self._attempt(client, block, part)
            if already_refuses and verdict.verdict is Verdict.RECHECK:
                return Attempt(Verdict.REJECTED, f"{verdict.reason} (yet Rucio has no DID of that name: a name "
                                                 "used before and deleted cannot be registered again)")
            return verdict

        first = attempt(chunk)
        if first.verdict is Verdict.OK:
            return RegisterResult(registered=names)
        if first.verdict is Verdict.RECHECK:
            return RegisterResult(recheck=names)
        if first.verdict is Verdict.CLOSED:
            return RegisterResult(closed=names)
        if first.verdict is Verdict.AMBIGUOUS and not self._alive(client, block):
            raise RucioUnavailable(f"Rucio failed registering {len(chunk)} files in {block} ({first.reason}) and "
                                   "does not answer a read either: retrying later")
        found = narrowing.narrow(chunk, attempt, first=first)
        result = RegisterResult(registered=[str(f["name"]) for f in found.ok],
                                recheck=[str(f["name"]) for f in found.recheck],
                                closed=[str(f["name"]) for f in found.closed], narrowed=1, calls=found.calls)
        for item, verdict in found.rejected:
            name = str(item["name"])
            if verdict.verdict is Verdict.AMBIGUOUS:
                # Blame the file only if it fails again, alone, while Rucio demonstrably works.
                again = attempt([item])
                result.calls += 1
                if again.verdict is Verdict.OK:
                    result.registered.append(name)
                    continue
                if again.verdict is not Verdict.AMBIGUOUS:
                    verdict = again
                elif not found.ok and not self._alive(client, block):
                    raise RucioUnavailable(f"Rucio failed on {name} in {block} ({verdict.reason}) and does not "
                                           "answer a read either: retrying later")
            if verdict.verdict is Verdict.RECHECK:
                result.recheck.append(name)
            elif verdict.verdict is Verdict.CLOSED:
                result.closed.append(name)
            elif verdict.verdict is Verdict.OK:
                result.registered.append(name)
            else:
                result.rejected[name] = verdict.reason
        log.info("chunk narrowed", extra=fields(block=block, files=len(chunk), calls=result.calls + 1,
                                                rejected=len(result.rejected), first=first.reason))
        return result
