"""Does Rucio hold what a simulated SPADE run should have produced? (tests, benchmarks, the demo)

    problems = check_rucio(client, plan, rse="IHEP-EOS", closed_before=today)

Checks, for the plan's streams: exactly the plan's valid files exist as raw file DIDs (nothing more:
no conflicting or malformed message became a DID), each with the announced size and adler32; each
block holds exactly its files and every file is in exactly one block; each block has its replicas
available at the RSE, sits in its month container (month → year → stream); blocks of days before
`closed_before` are closed and those after are open; optionally, the policy engine finds nothing
missing (`explain(...).actions` is empty). Returns the problems found, as sentences; [] is success.

Also `dead_letters`: read a dead-letter topic to the end (a throwaway consumer group).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any

from juno_common.clock import utc_now
from juno_ingest.dlq import DeadLetter
from juno_ingest.mapping import SCOPE
from juno_ingest.simulate import SimPlan
from rucio_policy import naming


def raw_files_of_streams(client: Any, streams: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Every raw file DID of these streams: name → {bytes, adler32}."""
    names: list[str] = []
    for stream in streams:
        detector, short = stream.split(".", 1)
        names += list(client.list_dids(SCOPE, {"name": f"RUN.*.{detector}.*.{short}.*"}, did_type="file"))
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(names), 500):
        for row in client.get_metadata_bulk([{"scope": SCOPE, "name": n} for n in names[start:start + 500]]):
            out[str(row["name"])] = {"bytes": row.get("bytes"), "adler32": row.get("adler32")}
    return out


def check_rucio(client: Any, plan: SimPlan, *, rse: str = "IHEP-EOS", closed_before: date | None = None,
                open_from: date | None = None, policy_rules: bool = True) -> list[str]:
    problems: list[str] = []
    expected = plan.expected_blocks()
    by_name = {f.lfn: f for f in plan.files}
    files = raw_files_of_streams(client, plan.spec.streams)
    extra = sorted(set(files) - set(by_name))
    missing = sorted(set(by_name) - set(files))
    if extra:
        problems.append(f"{len(extra)} raw file(s) that should not exist, e.g. {extra[0]}")
    if missing:
        problems.append(f"{len(missing)} file(s) not registered, e.g. {missing[0]}")
    wrong = [n for n, row in files.items() if n in by_name and (row["bytes"] != by_name[n].size
                                                                 or row["adler32"] != by_name[n].adler32)]
    if wrong:
        problems.append(f"{len(wrong)} file(s) registered with another size or adler32, e.g. {wrong[0]}")

    attached: dict[str, int] = {}
    stream_blocks: set[str] = set()
    for stream in plan.spec.streams:
        stream_blocks |= set(client.list_dids(SCOPE, {"name": f"block.{stream}.*"}, did_type="dataset"))
    if stream_blocks != set(expected):
        problems.append(f"blocks {sorted(stream_blocks)} != expected {sorted(expected)}")
    for block in sorted(stream_blocks | set(expected)):
        try:
            content = {str(f["name"]) for f in client.list_files(SCOPE, block)}
        except Exception as err:  # noqa: BLE001 - reported as a problem: the block is missing
            problems.append(f"{block}: {type(err).__name__}: {err}")
            continue
        for name in content:
            attached[name] = attached.get(name, 0) + 1
        want = expected.get(block, set())
        if content != want:
            problems.append(f"{block}: {len(content)} file(s), expected {len(want)} "
                            f"({len(content - want)} unexpected, {len(want - content)} missing)")
        replicas = {str(r["rse"]): r for r in client.list_dataset_replicas(SCOPE, block, deep=True)}
        at_rse = replicas.get(rse)
        if want and (at_rse is None or int(at_rse.get("available_length") or 0) != len(want)):
            have = int(at_rse.get("available_length") or 0) if at_rse else 0
            problems.append(f"{block}: {have} of {len(want)} replicas available at {rse}")
        meta = client.get_metadata(SCOPE, block)
        day = naming.parse_block(block).day
        if closed_before is not None and day < closed_before and meta.get("is_open"):
            problems.append(f"{block}: still open, but its day is over (closed_before {closed_before})")
        if open_from is not None and day >= open_from and not meta.get("is_open"):
            problems.append(f"{block}: closed, but its day {day} is not over")
        problems += _structure(client, block)
        if policy_rules:
            problems += _policy(client, block)
    twice = sorted(n for n, k in attached.items() if k > 1)
    if twice:
        problems.append(f"{len(twice)} file(s) attached to more than one block, e.g. {twice[0]}")
    loose = sorted(set(files) - set(attached))
    if loose:
        problems.append(f"{len(loose)} file(s) in no block, e.g. {loose[0]}")
    return problems


def _structure(client: Any, block: str) -> list[str]:
    parsed = naming.parse_block(block)
    month, year, top = naming.container_names(parsed.stream_key, parsed.day)
    out = []
    for child, parent in ((block, month), (month, year), (year, top)):
        parents = [str(p["name"]) for p in client.list_parent_dids(SCOPE, child)]
        if parents != [parent]:
            out.append(f"{child}: parents {parents}, expected [{parent}]")
    return out


def _policy(client: Any, block: str) -> list[str]:
    """The policy engine's own diff for the block (not `explain`, which also lists every replica)."""
    from rucio_policy import engine, rule_diff

    state = engine.fetch_did(client, SCOPE, block)
    diff = rule_diff.diff_did(engine.load_default_policy(), state.did, state.rules, owner=engine.rule_owner(SCOPE),
                              now=utc_now())
    missing = [str(a) for a in diff.actions if a.kind in ("add", "decide")]
    if missing:
        return [f"{block}: the policy engine still wants: {'; '.join(missing)}"]
    return []


def dead_letters(bootstrap: str, topic: str, *, idle_s: float = 3.0, max_wait_s: float = 60.0) -> list[DeadLetter]:
    """Every dead letter in `topic` (reads until idle_s without a message)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "session.timeout.ms": 6000})
    out: list[DeadLetter] = []
    try:
        consumer.subscribe([topic])
        started = last = time.monotonic()
        assigned = False
        while time.monotonic() - started < max_wait_s:
            msgs = consumer.consume(num_messages=1000, timeout=0.5)
            if not assigned and consumer.assignment():
                # Joining the group can take seconds (Tansu: ~3 s); idle counts from the assignment.
                assigned, last = True, time.monotonic()
            for msg in msgs:
                if msg.error() is None:
                    out.append(DeadLetter.from_message(msg))
            if msgs:
                last = time.monotonic()
            elif assigned and time.monotonic() - last >= idle_s:
                break
    finally:
        consumer.close()
    return out


def cleanup_rules(client: Any, blocks: Iterable[str]) -> int:
    """Delete the rules on these test blocks (as an admin), so the shared grid's daemons do not spend
    their time copying test data. Returns the number of rules deleted."""
    n = 0
    for block in blocks:
        for rule in client.list_did_rules(SCOPE, block):
            if rule.get("locked"):
                client.update_replication_rule(rule["id"], {"locked": False})
            client.delete_replication_rule(rule["id"], purge_replicas=None)
            # Rucio's API only schedules the deletion an hour ahead (the judge-cleaner then removes the
            # rule, its locks and its queued transfers): bring that forward to now.
            client.update_replication_rule(rule["id"], {"lifetime": 1})
            n += 1
    return n
