"""One batch of Kafka messages → Rucio: every message ends registered, a duplicate, or dead-lettered.

    result = Pipeline(registrar, checker, ...).process(batch)

`process` is idempotent: called again on the same batch (after Rucio was unreachable, after a crash
and replay) it registers nothing twice: it looks up what Rucio has before registering, or registers
optimistically where a name Rucio has makes the call fail (the same block: Rucio's FileAlreadyExists;
another block: the server's one-block-per-raw-file rule, rucio_policy.access) and then looks. It
raises RucioUnavailable / StorageUnavailable when it cannot finish; the consumer then waits and
calls it again with the same batch, committing nothing in between.

Order of work for a batch:
  1. parse and map each message (pure); reject what is malformed or not for us;
  2. ask Rucio which names exist (bulk; which names, see _lookup) while xrdfs stats the files at IHEP;
  3. classify each file: new, duplicate (same size and adler32) or conflict (dead-letter; Rucio's file stays);
  4. new files must be on storage with the announced size;
  5. blocks seen for the first time in this process: create (with containers) if missing, give them the
     policy's rules (ensure_block_rules); a closed block takes no new file (dead letter "late");
  6. register and attach the new files per block (bulk, parallel chunks); a chunk Rucio refuses as a
     whole is split until the files it objects to are alone (narrowing.py): those are dead letters
     ("rejected", with Rucio's reason), the rest registered.
Whatever one message does (bytes of any size or shape, values the server would refuse, a bug of
ours while reading it), it ends with one Outcome: the batch never fails because of one message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from rucio.common import exception as rex

from juno_ingest import messages
from juno_ingest.batching import Kind, Known, Position, classify
from juno_ingest.edge import show
from juno_ingest.logs import fields
from juno_ingest.mapping import SCOPE, BlockPlan, FilePlan, expected_path, plan_file
from juno_ingest.narrowing import reason_of
from juno_ingest.registrar import BlockState, Registrar, RucioUnavailable
from juno_ingest.storage_check import StorageChecker

T = TypeVar("T")
log = logging.getLogger("juno_ingest.pipeline")


@dataclass(frozen=True)
class Incoming:
    """A Kafka message as the pipeline sees it."""

    position: Position
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class Fate(Enum):
    REGISTERED = "registered"
    DUPLICATE = "duplicate"
    DEAD = "dead"


@dataclass(frozen=True)
class Outcome:
    fate: Fate
    code: str = ""  # dead letters: malformed, conflict, not_on_storage, size_mismatch, late, ...
    reason: str = ""
    name: str | None = None
    block: str | None = None
    plan: FilePlan | None = field(default=None, compare=False, repr=False)  # registered, duplicate: the file


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    open_blocks: dict[str, BlockPlan] = field(default_factory=dict)  # open blocks this batch touched
    created_blocks: list[str] = field(default_factory=list)
    opened_blocks: list[str] = field(default_factory=list)  # open blocks this process ensured for the first time
    rules_added: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    narrowed: int = 0  # chunks Rucio refused as a whole, split until the culprits were alone
    narrowing_calls: int = 0  # the Rucio calls that took

    def count(self, fate: Fate) -> int:
        return sum(1 for o in self.outcomes if o.fate is fate)

    @property
    def dead(self) -> list[tuple[int, Outcome]]:
        return [(i, o) for i, o in enumerate(self.outcomes) if o.fate is Fate.DEAD]


def _dead(code: str, reason: str, plan: FilePlan | None = None) -> Outcome:
    return Outcome(Fate.DEAD, code, reason, plan.name if plan else None, plan.block.name if plan else None)


class Pipeline:
    def __init__(self, registrar: Registrar, checker: StorageChecker | None, *, prefix: str | None,
                 streams: frozenset[str] = frozenset(), file_metadata: bool = False,
                 future_tolerance_s: float = 3600.0, now: Callable[[], datetime] | None = None) -> None:
        self.registrar = registrar
        self.future_tolerance_s = future_tolerance_s
        self._now = now or (lambda: datetime.now(UTC))
        self.checker = checker
        self.prefix = prefix  # the RSE's protocol prefix, to check the messages' paths (None: no check)
        self.streams = streams
        self.file_metadata = file_metadata
        # Blocks this process has seen: ensured open ones (created, rules given) and closed ones.
        self.blocks: dict[str, BlockState] = {}
        self._side = ThreadPoolExecutor(1, thread_name_prefix="storage")
        # Whether to ask Rucio which of a batch's names it already has before registering them. Always
        # right, but it costs as much as a third of the batch. Steady state is new files into open blocks
        # this process has ensured: then registration is optimistic, and a name Rucio already has makes
        # its chunk fail as a whole and come back through the recheck path (same decisions, one extra
        # round trip). Files of existing blocks not ensured here (closed, other days) are always looked
        # up, so a duplicate never reads as "late"; files of blocks that do not exist are sampled, so a
        # duplicate never creates an empty block (_lookup). On start (after a crash, a rebalance: replays
        # are likely) and after any batch that met a duplicate or conflict, look up all.
        self._lookup_all = True

    def close(self) -> None:
        self._side.shutdown(wait=False, cancel_futures=True)

    # -- the batch --------------------------------------------------------------------------------

    def process(self, batch: Sequence[Incoming]) -> BatchResult:
        clock = time.perf_counter()
        seconds: dict[str, float] = {}
        outcomes: list[Outcome | None] = [None] * len(batch)
        plans: dict[int, FilePlan] = {}
        now = self._now()
        for i, item in enumerate(batch):
            try:
                decided = self._plan(item, now)
            except Exception as err:  # noqa: BLE001 - whatever one message does, it ends in the DLQ
                decided = _dead("internal", f"juno-ingest could not read this message ({type(err).__name__}: "
                                            f"{show(str(err), 200)}); this is a bug: please report it")
            if isinstance(decided, Outcome):
                outcomes[i] = decided
            else:
                plans[i] = decided
        seconds["parse"] = time.perf_counter() - clock

        # 2. Rucio lookup and storage stats at the same time: they do not depend on each other.
        clock = time.perf_counter()
        names = list(dict.fromkeys(p.name for p in plans.values()))
        sizes_future: Future[dict[str, int | None]] | None = None
        if self.checker is not None and self.prefix is not None and names:
            wanted = {expected_path(self.prefix, p): p.size for p in plans.values()}
            sizes_future = self._side.submit(self._timed, seconds, "storage", self.checker.sizes, list(wanted), wanted)
        lookup_all, self._lookup_all = self._lookup_all, True  # a batch that fails is retried with a lookup
        try:
            states = self._unknown_block_states({p.block.name for p in plans.values()})
            looked_up, existing = self._lookup(plans, states, lookup_all)
        finally:
            sizes = sizes_future.result() if sizes_future is not None else None
        if sizes is not None and self.prefix is not None:
            # Not on storage (or another size) may still be a replay of a file Rucio has (its IHEP copy
            # since deleted): that is a duplicate or a conflict, not a dead letter for the storage.
            unsure = [p.name for p in plans.values() if p.name not in looked_up
                      and sizes.get(expected_path(self.prefix, p)) != p.size]
            if unsure:
                existing.update(self.registrar.existing_files(unsure))
        seconds["lookup"] = time.perf_counter() - clock

        # 3. + 4. new, duplicate or conflict; new files must be on storage.
        order = sorted(plans)
        decisions = classify([(plans[i].name, plans[i].size, plans[i].adler32) for i in order], existing)
        primary: dict[str, int] = {}  # name → the message of this batch that registers it
        followers: list[tuple[int, int]] = []  # (message, primary message) for in-batch duplicates
        new: dict[int, FilePlan] = {}
        for i, decision in zip(order, decisions, strict=True):
            plan = plans[i]
            if decision.kind is Kind.CONFLICT:
                outcomes[i] = _dead("conflict", decision.reason, plan)
            elif decision.kind is Kind.DUPLICATE and plan.name in existing:
                outcomes[i] = Outcome(Fate.DUPLICATE, name=plan.name, block=plan.block.name, plan=plan)
            elif decision.kind is Kind.DUPLICATE:
                followers.append((i, primary[plan.name]))
            else:
                primary[plan.name] = i
                problem = self._storage_problem(plan, sizes)
                if problem is not None:
                    outcomes[i] = problem
                else:
                    new[i] = plan

        # 5. blocks.
        clock = time.perf_counter()
        result = BatchResult(outcomes=[])
        valid_blocks = {p.block.name: p.block for p in plans.values()}
        refused = self._ensure_blocks(valid_blocks, {p.block.name for p in new.values()}, states, result)
        for i, plan in list(new.items()):
            if plan.block.name in refused:
                outcomes[i] = _dead("rejected", f"Rucio refused block raw:{plan.block.name} of raw:{plan.name}: "
                                                f"{refused[plan.block.name]}", plan)
                del new[i]
            elif not self.blocks[plan.block.name].is_open:
                outcomes[i] = _dead("late", f"block raw:{plan.block.name} is already closed (its day ended and the "
                                            f"grace period passed); raw:{plan.name} arrived too late to join it: "
                                            "a Rucio admin can attach it by hand", plan)
                del new[i]
        seconds["blocks"] = time.perf_counter() - clock

        # 6. register, per block.
        clock = time.perf_counter()
        try:
            registered = self._register(new, result)
        except RucioUnavailable:
            # Ensure these blocks again on the retry: one that vanished (an admin deleted it) is made anew
            # instead of failing the same way forever.
            for plan in new.values():
                self.blocks.pop(plan.block.name, None)
            raise
        for i, outcome in registered.items():
            outcomes[i] = outcome
        seconds["register"] = time.perf_counter() - clock

        for i, first in followers:
            lead = outcomes[first]
            assert lead is not None
            plan = plans[i]
            if lead.fate is Fate.DEAD:
                outcomes[i] = _dead(lead.code, f"same file as offset {batch[first].position.offset} of this batch, "
                                               f"which was dead-lettered: {lead.reason}", plan)
            else:
                outcomes[i] = Outcome(Fate.DUPLICATE, name=plan.name, block=plan.block.name, plan=plan)

        result.outcomes = [o if o is not None else _dead("internal", "no outcome (bug)") for o in outcomes]
        self._lookup_all = any(o.fate is Fate.DUPLICATE or (o.fate is Fate.DEAD and o.code == "conflict")
                               for o in result.outcomes)
        result.open_blocks = {n: b for n, b in valid_blocks.items() if n in self.blocks and self.blocks[n].is_open}
        result.seconds = seconds
        return result

    # -- steps ------------------------------------------------------------------------------------

    def _plan(self, item: Incoming, now: datetime) -> FilePlan | Outcome:
        """One message → the file to register, or its dead letter (pure, bounded cost)."""
        parsed = messages.parse(item.value)
        if isinstance(parsed, messages.InvalidMessage):
            return _dead(parsed.code, parsed.reason)
        if self.streams and parsed.stream not in self.streams:
            return _dead("unknown_stream", f"stream {parsed.stream} is not one this ingester accepts "
                                           f"({', '.join(sorted(self.streams))}): add it to blocks.streams in the "
                                           "ingest configuration")
        future = messages.future_problem(parsed, now, self.future_tolerance_s)
        if future:
            return _dead("future", future)
        plan = plan_file(parsed, file_metadata=self.file_metadata)
        if parsed.path is not None and self.prefix is not None:
            want = expected_path(self.prefix, plan)
            if parsed.path != want:
                return _dead("path_mismatch", f"path {parsed.path} is not where Rucio expects raw:{plan.name} at "
                                              f"{self.registrar.rse} ({want}): SPADE must land raw files at that "
                                              "path", plan)
        return plan

    @staticmethod
    def _timed(seconds: dict[str, float], key: str, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), its duration in seconds[key] (the storage check overlaps the lookup phase)."""
        clock = time.perf_counter()
        try:
            return fn(*args)
        finally:
            seconds[key] = time.perf_counter() - clock

    def _storage_problem(self, plan: FilePlan, sizes: dict[str, int | None] | None) -> Outcome | None:
        if sizes is None or self.prefix is None:
            return None
        path = expected_path(self.prefix, plan)
        size = sizes.get(path)
        where = f"{self.registrar.rse} ({path})"
        if size is None:
            return _dead("not_on_storage", f"raw:{plan.name} is not on {where}: SPADE announced a file that is not "
                                           "there; nothing was registered", plan)
        if size != plan.size:
            return _dead("size_mismatch", f"raw:{plan.name} has {size} bytes on {where} but the message says "
                                          f"{plan.size}; nothing was registered", plan)
        return None

    def _unknown_block_states(self, names: set[str]) -> dict[str, BlockState]:
        """Rucio's state of the blocks this process has not seen yet (one call)."""
        unknown = sorted(n for n in names if n not in self.blocks)
        return self.registrar.block_states(unknown) if unknown else {}

    def _lookup(self, plans: dict[int, FilePlan], states: dict[str, BlockState], lookup_all: bool
                ) -> tuple[set[str], dict[str, Known]]:
        """Which of the batch's names Rucio already has: (the names asked about, what Rucio has of them).

        Asked: every name after a start or a batch with duplicates or conflicts (lookup_all), else the
        names of blocks this process has not ensured open. Not asked: files of blocks that do not exist
        (a replay finds its block there); one file per such block is, and if Rucio has it (the same file
        announced under another day or stream), all that block's files are, so a block is only created
        for files Rucio does not have. A name Rucio has that was not asked about makes its chunk fail at
        registration and come back through the recheck (the same decision, one round trip later)."""
        absent = {n for n, st in states.items() if not st.exists}
        asked: set[str] = set()
        samples: dict[str, str] = {}  # absent block → the one file of it asked about
        for plan in plans.values():
            block = plan.block.name
            if block in absent:
                samples.setdefault(block, plan.name)
            elif lookup_all or not ((state := self.blocks.get(block)) and state.is_open):
                asked.add(plan.name)
        asked |= set(samples.values())
        existing = self.registrar.existing_files(sorted(asked)) if asked else {}
        hit = {block for block, name in samples.items() if name in existing}
        more = sorted({p.name for p in plans.values() if p.block.name in hit} - asked)
        if more:
            existing.update(self.registrar.existing_files(more))
            asked |= set(more)
        return asked, existing

    def _ensure_blocks(self, blocks: dict[str, BlockPlan], needed: set[str], states: dict[str, BlockState],
                       result: BatchResult) -> dict[str, str]:
        """Blocks first seen in this process: create those new files need (with their containers), and
        give every open one the policy's rules. Both are idempotent, so a crash anywhere here is
        repaired by the next process that sees the block. A block only duplicates point to and that
        does not exist (the file was registered under another day) is not created: it would stay empty."""
        refused: dict[str, str] = {}  # block → Rucio's reason for refusing it
        todo = []
        for name, state in states.items():  # the batch's blocks this process had not seen (_unknown_block_states)
            if state.exists and not state.is_open:
                self.blocks[name] = state
            elif state.exists or name in needed:
                todo.append(blocks[name])
        try:
            done = list(zip(todo, self.registrar.setup_blocks(todo), strict=True))
        except rex.RucioException as err:
            # Refused for its content (rucio_errors turned the service's own failures into RucioUnavailable
            # already): one block at a time, so that only the files of the block Rucio refuses are dead.
            log.warning("blocks refused together; setting them up one at a time", extra=fields(
                blocks=len(todo), error=reason_of(err)))
            done = []
            for plan in todo:
                try:
                    done += list(zip([plan], self.registrar.setup_blocks([plan]), strict=True))
                except rex.RucioException as one:
                    refused[plan.name] = reason_of(one)
        for plan, (created, rules) in done:
            if created:
                result.created_blocks.append(plan.name)
            result.opened_blocks.append(plan.name)
            result.rules_added += list(getattr(rules, "added", None) or [])
            self.blocks[plan.name] = BlockState(exists=True, is_open=True)
        return refused

    def _register(self, new: dict[int, FilePlan], batch: BatchResult) -> dict[int, Outcome]:
        out: dict[int, Outcome] = {}
        by_name = {p.name: i for i, p in new.items()}
        pending = dict(new)
        for attempt in range(3):
            if not pending:
                return out
            per_block: dict[str, list[FilePlan]] = {}
            for plan in pending.values():
                per_block.setdefault(plan.block.name, []).append(plan)
            recheck: list[str] = []
            # Third round: names Rucio twice called existing, yet a lookup did not find, are the server refusing
            # those names (e.g. used before and deleted); narrowed and dead-lettered instead of retried forever.
            results = self.registrar.register({b: [p.rucio_file() for p in plans] for b, plans in per_block.items()},
                                              already_refuses=attempt == 2)
            for block, res in results.items():
                batch.narrowed += res.narrowed
                batch.narrowing_calls += res.calls
                for name in res.registered:
                    out[by_name[name]] = Outcome(Fate.REGISTERED, name=name, block=block, plan=new[by_name[name]])
                for name in res.closed:
                    self.blocks[block] = BlockState(exists=True, is_open=False)
                    out[by_name[name]] = _dead("late", f"block raw:{block} was closed while raw:{name} was being "
                                                       "attached to it; a Rucio admin can attach it by hand",
                                               new[by_name[name]])
                for name, why in res.rejected.items():
                    out[by_name[name]] = _dead("rejected", f"Rucio rejected raw:{name}: {why}", new[by_name[name]])
                recheck += res.recheck
            pending = {}
            if recheck:
                # Someone registered some of these names since our lookup: look again and decide again.
                existing = self.registrar.existing_files(recheck)
                for name in recheck:
                    i, plan = by_name[name], new[by_name[name]]
                    known = existing.get(name)
                    if known is None:
                        pending[i] = plan
                        continue
                    [decision] = classify([(name, plan.size, plan.adler32)], {name: known})
                    out[i] = (_dead("conflict", decision.reason, plan) if decision.kind is Kind.CONFLICT
                              else Outcome(Fate.DUPLICATE, name=name, block=plan.block.name, plan=plan))
        if pending:
            names = ", ".join(sorted(p.name for p in pending.values())[:3])
            raise RucioUnavailable(f"Rucio kept refusing to register {len(pending)} file(s) ({names}, ...) without "
                                   "saying why; the batch will be retried")
        return out


__all__ = ["SCOPE", "BatchResult", "Fate", "Incoming", "Known", "Outcome", "Pipeline"]
