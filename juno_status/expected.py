"""Which RSEs the replication policy wants each raw block's files at, now (pure: no Rucio calls).

The policy engine's own decision (`rucio_policy.rules.plan_rules`) is the single source: a block is
expected at an RSE when the policy gives it a rule there —

  - every full-copy rule (IHEP tape, CNAF disk, JINR disk, CNAF tape, ...);
  - a fraction rule (IN2P3's third) only when the block's recorded placement (metadata
    `juno_place_<class>_<rule>`, see rucio_policy.placement.PlacementRecord) says *placed*; blocks not
    decided yet (open) are *pending*, decided "not this block" are *skipped*: neither is expected;
  - a rule with a lifetime (IHEP-EOS landing copy, 30 days) only while the block is younger than it
    (the block's creation time stands for the rule's: the ingester adds both together).

An RSE expression must select exactly `copies` RSEs to say where the files must be; one that lets
Rucio choose (e.g. 1 copy on tier=1&rse_type=DISK) is reported as *unattributed* instead of guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rucio_policy.placement import PLACEMENT_META_PREFIX
from rucio_policy.replication import Policy
from rucio_policy.rse_expr import ExpressionError, evaluate
from rucio_policy.rules import Did, plan_rules


@dataclass(frozen=True)
class Block:
    """A raw block as Rucio has it: its files (from its contents) and what the policy reads."""

    scope: str
    name: str
    files: int
    bytes: int
    is_open: bool | None = None
    created_at: datetime | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wanted:
    """One RSE the policy wants the block's files at, through which of its rules."""

    rse: str
    rule_id: str
    rse_expression: str


@dataclass(frozen=True)
class BlockExpectation:
    block: Block
    class_name: str | None
    wanted: tuple[Wanted, ...] = ()
    pending: tuple[str, ...] = ()  # RSEs of fraction rules still to decide (the block is open)
    skipped: tuple[str, ...] = ()  # RSEs of fraction rules decided "not this block"
    expired: tuple[str, ...] = ()  # RSEs whose rule lifetime has passed for this block
    unattributed: tuple[str, ...] = ()  # "<expression> x<copies>": Rucio picks the RSEs
    problems: tuple[str, ...] = ()

    @property
    def rses(self) -> tuple[str, ...]:
        return tuple(w.rse for w in self.wanted)


class Expector:
    """`expect` for many blocks: plans and RSE expressions are computed once per distinct input.

    Ten thousand blocks share a handful of distinct (class, placement record verdicts, open) inputs;
    caching them makes the policy part of a status cost milliseconds instead of seconds.
    """

    def __init__(self, policy: Policy, rses: Mapping[str, Mapping[str, Any]]) -> None:
        self.policy = policy
        self.rses = rses
        self._selected: dict[str, set[str] | ExpressionError] = {}
        self._plans: dict[tuple[Any, ...], Any] = {}

    def selected(self, expression: str) -> set[str]:
        """The RSEs an expression selects; raises ExpressionError (cached too)."""
        if expression not in self._selected:
            try:
                self._selected[expression] = evaluate(expression, self.rses)
            except ExpressionError as err:
                self._selected[expression] = err
        found = self._selected[expression]
        if isinstance(found, ExpressionError):
            raise found
        return found

    def _plan(self, block: Block) -> Any:
        data_class = self.policy.class_for(block.scope, block.name, "DATASET", block.meta)
        if data_class is None:
            return None
        # plan_rules reads the class, the placement records of its fraction rules and the open flag.
        records = tuple(sorted((k, str(v)) for k, v in block.meta.items() if str(k).startswith(PLACEMENT_META_PREFIX)))
        key = (data_class.name, records, block.is_open)
        if key not in self._plans:
            self._plans[key] = plan_rules(self.policy, Did(block.scope, block.name, "DATASET", block.bytes,
                                                           block.is_open, block.meta))
        return self._plans[key]

    def expect(self, block: Block, now: datetime) -> BlockExpectation:
        """The RSEs the policy wants `block` at, at time `now` (naive UTC, as Rucio's dates)."""
        plan = self._plan(block)
        if plan is None:
            return BlockExpectation(block, None)
        wanted: list[Wanted] = []
        expired: list[str] = []
        unattributed: list[str] = []
        problems = list(plan.problems)
        for rule in plan.rules:
            try:
                selected = self.selected(rule.rse_expression)
            except ExpressionError as err:
                problems.append(str(err))
                continue
            if len(selected) != rule.copies:
                unattributed.append(f"{rule.rse_expression} x{rule.copies}")
                continue
            alive = (rule.lifetime is None or block.created_at is None
                     or block.created_at + timedelta(seconds=rule.lifetime) > now)
            for rse in sorted(selected):
                if alive:
                    wanted.append(Wanted(rse, rule.rule_id, rule.rse_expression))
                else:
                    expired.append(rse)
        return BlockExpectation(block, plan.class_name, tuple(wanted), self._rses_of(plan.pending),
                                self._rses_of(plan.skipped), tuple(expired), tuple(unattributed), tuple(problems))

    def _rses_of(self, items: Any) -> tuple[str, ...]:
        out: set[str] = set()
        for item in items:
            try:
                out |= self.selected(item.rse_expression)
            except ExpressionError:
                continue  # the policy validator refuses such expressions; reported with the rules above
        return tuple(sorted(out))


def expect(block: Block, policy: Policy, rses: Mapping[str, Mapping[str, Any]], now: datetime) -> BlockExpectation:
    """The RSEs `policy` wants `block` at, at time `now` (one block; see Expector for many).

    `rses`: RSE name → attributes (rucio_policy.rse_catalog.RseCatalog.attribute_table()).
    """
    return Expector(policy, rses).expect(block, now)
