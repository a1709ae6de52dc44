"""A SPADE simulator: raw files onto IHEP's storage, their arrival messages onto Kafka.

    spec = SimSpec(files=600, size=1024, days=3, streams=("JUNODAQ.t1", "JUNODAQ.t2"), duplicates=30)
    plan = make_plan(spec)                 # names, times, contents (deterministic for a seed)
    write_files(plan, endpoint)            # xrdcp, many files per call
    publish(plan, bootstrap, topic)        # keyed by file name, like SPADE

Each message knows what should become of it (`expect`: registered, duplicate, dead + the dead-letter
code), so tests and benchmarks check the ingester against the plan, not against itself.

Messages: valid files in receiving order (spread evenly over each day; today's up to now), shuffled
within windows of `reorder`; `duplicates` exact copies and `conflicts` (same name and size, other
adler32) of valid files, each published after its original; `malformed` messages of every kind the
ingester must reject (bad JSON, missing fields, wrong types, bad names, a file that is not on
storage, the wrong size, ...), mixed in anywhere.
"""

from __future__ import annotations

import json
import random
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from juno_ingest.mapping import SCOPE, plan_block, receiving_day
from juno_ingest.messages import SpadeMessage, format_time
from juno_ingest.storage_check import Endpoint
from rucio_policy import lfn2pfn, naming

DEFAULT_STREAMS = ("JUNODAQ.global_trigger",)
RUN_TYPE = "Physics"
DATA_STREAM = 2
_CHUNK = 4 << 20

# Kinds of malformed messages, and the dead-letter code the ingester must give each.
MALFORMED: dict[str, str] = {
    "not_json": "malformed", "not_object": "malformed", "empty": "malformed", "missing_field": "malformed",
    "wrong_type": "malformed", "bad_adler32": "malformed", "unknown_field": "malformed", "bad_time": "malformed",
    "bad_name": "bad_name", "wrong_version": "unsupported_version", "stream_mismatch": "inconsistent",
    "run_mismatch": "inconsistent", "not_on_storage": "not_on_storage", "size_mismatch": "size_mismatch",
    "path_mismatch": "path_mismatch",
}


@dataclass(frozen=True)
class SimSpec:
    files: int = 10
    size: int = 1024
    days: int = 1
    last_day: date | None = None  # default: today (UTC)
    streams: tuple[str, ...] = DEFAULT_STREAMS
    first_run: int | None = None  # default: from the seed
    files_per_run: int = 100
    duplicates: int = 0
    conflicts: int = 0
    malformed: int = 0
    reorder: int = 0
    seed: int | None = None
    with_path: bool = True
    prefix: str = "/eos/juno/dci"  # IHEP-EOS's protocol prefix, for the messages' paths

    def __post_init__(self) -> None:
        for stream in self.streams:
            naming.check_stream_key(stream)
        if self.files < 0 or self.size < 0 or self.days < 1:
            raise ValueError("files and size must be >= 0 and days >= 1")
        if (self.duplicates or self.conflicts) and not self.files:
            raise ValueError("duplicates and conflicts copy valid files: give files > 0")


@dataclass(frozen=True)
class SimFile:
    lfn: str
    stream: str
    run: int
    size: int
    received_at: datetime
    seed: str  # contents are random bytes from this seed: reproducible without keeping them
    adler32: str = ""

    @property
    def path(self) -> str:
        """Below the storage prefix, where Rucio's lfn2pfn puts it."""
        return lfn2pfn.juno_path(SCOPE, self.lfn)

    @property
    def block(self) -> str:
        return plan_block(self.stream, receiving_day(self.received_at)).name

    def message(self, prefix: str, *, with_path: bool = True, **changes: Any) -> SpadeMessage:
        values: dict[str, Any] = {"lfn": self.lfn, "size": self.size, "adler32": self.adler32, "run": self.run,
                                  "stream": self.stream, "received_at": self.received_at,
                                  "path": f"/{prefix.strip('/')}/{self.path}" if with_path else None}
        values.update(changes)
        return SpadeMessage(**values)


@dataclass(frozen=True)
class SimMessage:
    key: bytes
    value: bytes
    kind: str  # valid | duplicate | conflict | malformed:<what>
    expect: str  # registered | duplicate | dead
    code: str = ""  # the dead-letter code expected
    lfn: str | None = None
    block: str | None = None
    file: SimFile | None = None  # valid and duplicate messages: the file they announce


@dataclass
class SimPlan:
    spec: SimSpec
    files: list[SimFile]  # the valid files (registered in the end)
    extra_files: list[SimFile]  # written to storage but never registered (size_mismatch)
    messages: list[SimMessage]
    meta: dict[str, Any] = field(default_factory=dict)

    def expected_blocks(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for f in self.files:
            out.setdefault(f.block, set()).add(f.lfn)
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.messages:
            kind = m.kind.split(":", 1)[0]
            out[kind] = out.get(kind, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        runs = sorted({f.run for f in self.files})
        return {"messages": len(self.messages), "kinds": self.counts(), "files": len(self.files),
                "bytes_per_file": self.spec.size, "streams": list(self.spec.streams),
                "days": sorted({f.received_at.date().isoformat() for f in self.files}),
                "runs": [runs[0], runs[-1]] if runs else [],
                "blocks": {b: len(names) for b, names in sorted(self.expected_blocks().items())},
                "expect": {"registered": sum(1 for m in self.messages if m.expect == "registered"),
                           "duplicate": sum(1 for m in self.messages if m.expect == "duplicate"),
                           "dead": sum(1 for m in self.messages if m.expect == "dead")}}


def contents(seed: str, size: int) -> Iterator[bytes]:
    """The file's bytes, in chunks: pseudo-random from the seed (no two files alike, reproducible)."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(left, _CHUNK)
        yield rng.randbytes(n)
        left -= n


def adler32_of(seed: str, size: int) -> str:
    value = 1
    for chunk in contents(seed, size):
        value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def _days(spec: SimSpec, now: datetime) -> list[date]:
    last = spec.last_day or now.date()
    return [last - timedelta(days=spec.days - 1 - i) for i in range(spec.days)]


def make_plan(spec: SimSpec, *, now: datetime | None = None) -> SimPlan:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    rng = random.Random(spec.seed)
    seed_tag = rng.getrandbits(32)
    first_run = spec.first_run if spec.first_run is not None else 100_000 + rng.randrange(9_000_000)
    days = _days(spec, now)
    per_slot = _split(spec.files, len(spec.streams) * len(days))
    files: list[SimFile] = []
    slot = 0
    for s_index, stream in enumerate(spec.streams):
        stream_files: list[tuple[str, datetime]] = []
        for day in days:
            start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
            span = min(86400.0, max(1.0, (now - start).total_seconds())) if day >= now.date() else 86400.0
            n = per_slot[slot]
            slot += 1
            stream_files += [(stream, start + timedelta(seconds=(k + 0.5) * span / max(n, 1))) for k in range(n)]
        files += _name_files(stream_files, first_run, spec, f"{seed_tag}:{s_index}")
    files.sort(key=lambda f: (f.received_at, f.lfn))

    valid = [SimMessage(f.lfn.encode(), f.message(spec.prefix, with_path=spec.with_path).to_json(), "valid",
                        "registered", lfn=f.lfn, block=f.block, file=f) for f in files]
    order = list(range(len(valid)))
    if spec.reorder > 1:
        for first in range(0, len(order), spec.reorder):
            window = order[first:first + spec.reorder]
            rng.shuffle(window)
            order[first:first + spec.reorder] = window
    slots: list[tuple[float, SimMessage]] = [(float(pos), valid[i]) for pos, i in enumerate(order)]
    position = {valid[i].lfn: float(pos) for pos, i in enumerate(order)}
    total = float(len(valid))

    for _ in range(spec.duplicates):
        original = valid[rng.randrange(len(valid))]
        assert original.lfn is not None
        slots.append((rng.uniform(position[original.lfn] + 0.1, total + 0.1),
                      SimMessage(original.key, original.value, "duplicate", "duplicate", lfn=original.lfn,
                                 block=original.block, file=original.file)))
    for k in range(spec.conflicts):
        original = valid[(k * 7919) % len(valid)]
        assert original.file is not None and original.lfn is not None
        other = f"{(int(original.file.adler32, 16) ^ 0x5A5A5A5A):08x}"
        msg = original.file.message(spec.prefix, with_path=spec.with_path, adler32=other)
        slots.append((rng.uniform(position[original.lfn] + 0.1, total + 0.1),
                      SimMessage(original.key, msg.to_json(), "conflict", "dead", "conflict", lfn=original.lfn,
                                 block=original.block)))
    extra: list[SimFile] = []
    kinds = list(MALFORMED)
    junk_times = [now - timedelta(seconds=rng.uniform(0, 3600)) for _ in range(spec.malformed)]
    junk_files = _name_files([(spec.streams[0], t) for t in junk_times], first_run + 5_000, spec, f"{seed_tag}:junk")
    for k in range(spec.malformed):
        what = kinds[k % len(kinds)]
        key, value, junk = _malformed(what, junk_files[k], spec)
        if junk is not None:
            extra.append(junk)
        slots.append((rng.uniform(0, total + 0.1), SimMessage(key, value, f"malformed:{what}", "dead",
                                                              MALFORMED[what], lfn=junk_files[k].lfn)))
    slots.sort(key=lambda s: s[0])
    return SimPlan(spec, files, extra, [m for _, m in slots],
                   meta={"first_run": first_run, "generated_at": format_time(now)})


def _split(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


def _name_files(items: Sequence[tuple[str, datetime]], first_run: int, spec: SimSpec, seed: str) -> list[SimFile]:
    """Names for files received at these times: a new run every files_per_run files."""
    out: list[SimFile] = []
    ordered = sorted(items, key=lambda item: item[1])
    run_start = ordered[0][1] if ordered else datetime.now(UTC)
    for k, (stream, received) in enumerate(ordered):
        run_index, seq = divmod(k, max(1, spec.files_per_run))
        if seq == 0:
            run_start = received - timedelta(seconds=120)
        run = first_run + run_index
        detector, short = stream.split(".", 1)
        lfn = (f"RUN.{run}.{detector}.{RUN_TYPE}.ds-{DATA_STREAM}.{short}.{run_start:%Y%m%d%H%M%S}."
               f"{seq + 1:03d}.dat")
        file_seed = f"{seed}:{lfn}"
        out.append(SimFile(lfn, stream, run, spec.size, received, file_seed, adler32_of(file_seed, spec.size)))
    return out


def _malformed(what: str, f: SimFile, spec: SimSpec) -> tuple[bytes, bytes, SimFile | None]:
    """(key, value, a file to write to storage or None) for one malformed message of kind `what`."""
    key = f.lfn.encode()
    good = f.message(spec.prefix, with_path=True).as_dict()
    extra: SimFile | None = None

    def dump(d: dict[str, Any]) -> bytes:
        return json.dumps(d).encode()

    if what == "not_json":
        return key, b"{this is not json", None
    if what == "not_object":
        return key, b'["a", "list"]', None
    if what == "empty":
        return key, b"", None
    if what == "missing_field":
        good.pop("adler32")
    elif what == "wrong_type":
        good["size"] = str(good["size"])
    elif what == "bad_adler32":
        good["adler32"] = "not-hex!"
    elif what == "unknown_field":
        good["colour"] = "blue"
    elif what == "bad_time":
        good["received_at"] = "yesterday"
    elif what == "bad_name":
        good["lfn"] = "run-" + f.lfn.lower()
        good.pop("path")
    elif what == "wrong_version":
        good["version"] = 2
    elif what == "stream_mismatch":
        good["stream"] = "JUNODAQ.other_stream"
    elif what == "run_mismatch":
        good["run"] = f.run + 1
    elif what == "not_on_storage":
        pass  # a valid message; the file is never written
    elif what == "size_mismatch":
        extra = f  # written with its real size; the message says one byte more
        good["size"] = f.size + 1
    elif what == "path_mismatch":
        good["path"] = f"/{spec.prefix.strip('/')}/elsewhere/{f.lfn}"
    else:
        raise ValueError(f"unknown malformed kind {what!r}")
    return key, dump(good), extra


# -- storage ---------------------------------------------------------------------------------------


def write_files(plan: SimPlan, endpoint: Endpoint, *, parallel: int = 8, log: Callable[[str], None] | None = None,
                timeout_s: float = 3600) -> int:
    """Put every file the plan needs on the storage (xrdcp, one call per directory); files written."""
    wanted = plan.files + plan.extra_files
    by_dir: dict[str, list[SimFile]] = {}
    for f in wanted:
        by_dir.setdefault(f.path.rsplit("/", 1)[0], []).append(f)
    with tempfile.TemporaryDirectory(prefix="juno-spade-") as tmp:
        for directory, items in sorted(by_dir.items()):
            local = Path(tmp) / directory.replace("/", "_")
            local.mkdir()
            listing = []
            for f in items:
                target = local / f.lfn
                with open(target, "wb") as fh:
                    for chunk in contents(f.seed, f.size):
                        fh.write(chunk)
                listing.append(str(target))
            lst = local / "files.txt"
            lst.write_text("\n".join(listing) + "\n")
            dest = f"root://{endpoint.host}//{endpoint.prefix.strip('/')}/{directory}/"
            out = subprocess.run(["xrdcp", "--nopbar", "--silent", "--force", "--path", "--parallel", str(parallel),
                                  "--infiles", str(lst), dest], capture_output=True, text=True, timeout=timeout_s)
            if out.returncode != 0:
                raise OSError(f"xrdcp to {dest} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
            if log:
                log(f"wrote {len(items)} file(s) to {dest}")
            for f in items:
                (local / f.lfn).unlink()
    return len(wanted)


# -- Kafka -----------------------------------------------------------------------------------------


def ensure_topic(bootstrap: str, topic: str, partitions: int, settings: dict[str, Any] | None = None) -> bool:
    """Create the topic if it does not exist; True if created."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **(settings or {})})
    if topic in admin.list_topics(timeout=15).topics:
        return False
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(15)
    except KafkaException as err:
        if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
        return False
    return True


def publish(messages: Sequence[SimMessage], bootstrap: str, topic: str, *, rate: float = 0.0,
            settings: dict[str, Any] | None = None, restamp: bool = False,
            on_sent: Callable[[SimMessage, float], None] | None = None) -> float:
    """Produce the messages in order (rate: messages per second, 0 = as fast as possible); seconds taken.

    restamp: valid and duplicate messages get received_at = the moment they are published (a live
    replay, for latency measurements).
    """
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5 if rate == 0 else 0, "acks": "all",
                         **(settings or {})})
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    started = time.perf_counter()
    for k, msg in enumerate(messages):
        if rate > 0:
            wait = started + k / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        value = restamp_value(msg.value) if restamp and msg.file is not None else msg.value
        while True:
            try:
                producer.produce(topic, key=msg.key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        if rate > 0:
            producer.flush(10)
            if on_sent:
                on_sent(msg, time.time())
        elif k % 1000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left or errors:
        raise OSError(f"{left} message(s) not delivered to {topic}; {len(errors)} error(s): {errors[:1]}")
    return time.perf_counter() - started


def restamp_value(value: bytes) -> bytes:
    """The same message with received_at = now (a live replay)."""
    data = json.loads(value)
    data["received_at"] = format_time(datetime.now(UTC))
    return json.dumps(data, separators=(",", ":")).encode()
