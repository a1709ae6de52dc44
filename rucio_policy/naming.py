"""JUNO's scopes and DID names: the patterns, parsers and builders everything else uses.

One module owns the conventions so that the Rucio server (schema, permissions, lfn2pfn), the
ingester (block and container names) and the replication engine can never disagree. Pure Python:
no Rucio import, so clients and tests load it without a Rucio configuration.

Conventions (also in etc/naming.md):

  scopes      raw, rtraw, esd, mc, user.<account>, group.<name>
  raw file    RUN.<run>.<detector>.<run type>.ds-<n>.<stream>.<YYYYMMDDhhmmss>.<seq>.dat
              e.g. RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat
              (the name the JUNO DAQ writes; the timestamp is the run start)
  block       block.<detector>.<stream>.<YYYYMMDD>          one dataset per receiving date and stream
  containers  stream.<detector>.<stream>.<YYYYMM>  (month)  holds the month's blocks
              stream.<detector>.<stream>.<YYYY>    (year)   holds the year's month containers
              stream.<detector>.<stream>           (all)    holds the year containers
  derived     <raw file stem>_<release>[_<release>...].rtraw|.esd, e.g.
              RUN.9857.JUNODAQ.Physics.ds-2.global_trigger.20250903055150.001_J25.5.0_J25.5.0.b.esd

A *stream key* is `<detector>.<stream>` (e.g. `JUNODAQ.global_trigger`): it names the flow of raw
files that shares blocks and containers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

# -- scopes -------------------------------------------------------------------------------------

PRODUCTION_SCOPES: tuple[str, ...] = ("raw", "rtraw", "esd", "mc")
RAW_SCOPE = "raw"
# Rucio's account pattern (generic schema ACCOUNT), so user.<account> exists for every account.
ACCOUNT_RE = r"[a-z0-9_-]+"
ACCOUNT_MAX = 25
# Scope column width: "user." + the longest account (25) = 30. It sets a DB column width (schema.py).
SCOPE_MAX = 30
SCOPE_RE = rf"^(?:raw|rtraw|esd|mc|user\.{ACCOUNT_RE}|group\.{ACCOUNT_RE})$"
SCOPE_HELP = "raw, rtraw, esd, mc, user.<account> or group.<name> (lower case letters, digits, - and _)"

# -- name building blocks -----------------------------------------------------------------------

NAME_MAX = 250
_RUN = r"(?P<run>0|[1-9][0-9]{0,7})"
_DETECTOR = r"(?P<detector>[A-Z][A-Z0-9]*)"
_RUN_TYPE = r"(?P<run_type>[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)"
_DATA_STREAM = r"ds-(?P<data_stream>[0-9]{1,3})"
_STREAM = r"(?P<stream>[a-z][a-z0-9_]*)"
_YEAR = r"20[0-9]{2}"
_MONTH = r"(?:0[1-9]|1[0-2])"
_DAY = r"(?:0[1-9]|[12][0-9]|3[01])"
_TIME = r"(?:[01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]"
_STARTED = rf"(?P<started>{_YEAR}{_MONTH}{_DAY}{_TIME})"
_SEQ = r"(?P<seq>[0-9]{3,6})"
_STEM = rf"RUN\.{_RUN}\.{_DETECTOR}\.{_RUN_TYPE}\.{_DATA_STREAM}\.{_STREAM}\.{_STARTED}\.{_SEQ}"
_TAG = r"[A-Za-z0-9][A-Za-z0-9.-]*"

RAW_FILE_RE = rf"^{_STEM}\.dat$"
BLOCK_RE = rf"^block\.{_DETECTOR}\.{_STREAM}\.(?P<day>{_YEAR}{_MONTH}{_DAY})$"
CONTAINER_RE = rf"^stream\.{_DETECTOR}\.{_STREAM}(?:\.(?P<period>{_YEAR}(?:{_MONTH})?))?$"
DERIVED_FILE_RE = rf"^{_STEM}_(?P<tags>{_TAG}(?:_{_TAG})*)\.(?P<ext>rtraw|esd)$"
STREAM_KEY_RE = r"^[A-Z][A-Z0-9]*\.[a-z][a-z0-9_]*$"
# Every other scope: Rucio's generic DID name pattern without "/": a name is one path component, so
# no name can lead a storage path (lfn2pfn) out of its scope's directory, and ".." cannot start one.
GENERIC_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9\.\-_]*$"

RAW_FILE_HELP = ("RUN.<run>.<detector>.<run type>.ds-<n>.<stream>.<YYYYMMDDhhmmss>.<seq>.dat, "
                 "e.g. RUN.10554.JUNODAQ.Physics.ds-2.global_trigger.20251009140223.002.dat")
BLOCK_HELP = "block.<detector>.<stream>.<YYYYMMDD>, e.g. block.JUNODAQ.global_trigger.20251009"
CONTAINER_HELP = ("stream.<detector>.<stream>[.<YYYY>[MM]], e.g. stream.JUNODAQ.global_trigger.202510 "
                  "(month), .2025 (year) or no date (all)")
GENERIC_NAME_HELP = "letters, digits and . - _ (no /), starting with a letter or digit"

# Python's re and JSON Schema's ECMA regexes both accept these patterns; JSON Schema does not know
# named groups, so schema.py uses the unnamed forms.
_NAMED_GROUP = re.compile(r"\?P<[a-z_]+>")


def json_pattern(pattern: str) -> str:
    """The same pattern without Python's named groups, for JSON Schema (ECMA 262) validators."""
    return _NAMED_GROUP.sub("", pattern)


_raw_file = re.compile(RAW_FILE_RE)
_block = re.compile(BLOCK_RE)
_container = re.compile(CONTAINER_RE)
_derived = re.compile(DERIVED_FILE_RE)
_scope = re.compile(SCOPE_RE)
_generic = re.compile(GENERIC_NAME_RE)
_stream_key = re.compile(STREAM_KEY_RE)


class NamingError(ValueError):
    """A scope or name that breaks JUNO's conventions; the message shows the expected pattern."""


# -- DIDs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DidRef:
    """A DID's identity, `scope:name`, and nothing else (hashable: sets and dict keys). What is known
    about a DID (type, size, metadata) lives with whoever asked Rucio, e.g. rules.Did for the policy."""

    scope: str
    name: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> DidRef:
        """'scope:name' (surrounding spaces dropped); not validated here (did_name_error does that)."""
        scope, _, name = text.partition(":")
        return cls(scope.strip(), name.strip())


# -- parsed names -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawFileName:
    """The fields the DAQ encodes in a raw file name."""

    name: str
    run: int
    detector: str
    run_type: str
    data_stream: int
    stream: str
    started: datetime
    seq: int

    @property
    def stream_key(self) -> str:
        return f"{self.detector}.{self.stream}"

    @property
    def stem(self) -> str:
        return self.name[: -len(".dat")]


@dataclass(frozen=True)
class DerivedFileName:
    """An rtraw/esd file named after the raw file it came from."""

    name: str
    raw_stem: str
    started: datetime
    releases: tuple[str, ...]
    ext: str

    @property
    def release(self) -> str:
        """The release that produced this file (the last tag)."""
        return self.releases[-1]


@dataclass(frozen=True)
class BlockName:
    name: str
    stream_key: str
    day: date


@dataclass(frozen=True)
class ContainerName:
    name: str
    stream_key: str
    level: str  # "all", "year" or "month"
    year: int | None
    month: int | None


def _timestamp(text: str) -> datetime:
    # The regex already bounds each field; this also rejects 20250231.
    return datetime.strptime(text, "%Y%m%d%H%M%S")


def parse_raw_file(name: str) -> RawFileName:
    """Split a raw file name into its fields, or raise NamingError showing the pattern."""
    m = _raw_file.match(name)
    if m is None:
        raise NamingError(f"{name!r} is not a JUNO raw file name: expected {RAW_FILE_HELP}")
    try:
        started = _timestamp(m["started"])
    except ValueError:
        raise NamingError(f"{name!r}: {m['started']} is not a valid date and time (YYYYMMDDhhmmss)") from None
    return RawFileName(name=name, run=int(m["run"]), detector=m["detector"], run_type=m["run_type"],
                       data_stream=int(m["data_stream"]), stream=m["stream"], started=started,
                       seq=int(m["seq"]))


def parse_derived_file(name: str) -> DerivedFileName:
    m = _derived.match(name)
    if m is None:
        raise NamingError(f"{name!r} is not named after a raw file: expected <raw file stem>_<release>.rtraw|.esd")
    try:
        started = _timestamp(m["started"])
    except ValueError:
        raise NamingError(f"{name!r}: {m['started']} is not a valid date and time (YYYYMMDDhhmmss)") from None
    stem = name[: m.start("tags") - 1]
    return DerivedFileName(name=name, raw_stem=stem, started=started, releases=tuple(m["tags"].split("_")),
                           ext=m["ext"])


def parse_block(name: str) -> BlockName:
    m = _block.match(name)
    if m is None:
        raise NamingError(f"{name!r} is not a block name: expected {BLOCK_HELP}")
    try:
        day = datetime.strptime(m["day"], "%Y%m%d").date()
    except ValueError:
        raise NamingError(f"{name!r}: {m['day']} is not a valid date (YYYYMMDD)") from None
    return BlockName(name=name, stream_key=f"{m['detector']}.{m['stream']}", day=day)


def parse_container(name: str) -> ContainerName:
    m = _container.match(name)
    if m is None:
        raise NamingError(f"{name!r} is not a raw container name: expected {CONTAINER_HELP}")
    key = f"{m['detector']}.{m['stream']}"
    period = m["period"]
    if period is None:
        return ContainerName(name=name, stream_key=key, level="all", year=None, month=None)
    if len(period) == 4:
        return ContainerName(name=name, stream_key=key, level="year", year=int(period), month=None)
    return ContainerName(name=name, stream_key=key, level="month", year=int(period[:4]), month=int(period[4:]))


# -- builders (the ingester's side) -------------------------------------------------------------


def check_stream_key(stream: str) -> str:
    if not _stream_key.match(stream):
        raise NamingError(f"{stream!r} is not a stream key: expected <detector>.<stream>, e.g. JUNODAQ.global_trigger")
    return stream


def block_name(stream: str, day: date) -> str:
    """The block (Rucio dataset) of raw files of `stream` received on `day` (UTC)."""
    return f"block.{check_stream_key(stream)}.{day:%Y%m%d}"


def container_names(stream: str, day: date) -> list[str]:
    """The containers above a block, innermost first: month, year, all.

    The ingester attaches the block to the month, the month to the year and the year to the stream's
    top container, so each DID has exactly one parent.
    """
    check_stream_key(stream)
    return [f"stream.{stream}.{day:%Y%m}", f"stream.{stream}.{day:%Y}", f"stream.{stream}"]


# -- validation (schema, permissions, CLI) ------------------------------------------------------


def scope_error(scope: str) -> str | None:
    """None if `scope` is a JUNO scope, else a message that shows the expected form."""
    if len(scope) > SCOPE_MAX:
        return f"scope {scope!r} is longer than {SCOPE_MAX} characters"
    if not _scope.match(scope):
        return f"scope {scope!r} is not a JUNO scope: expected {SCOPE_HELP}"
    return None


# Rucio spells DID types in full or by their first letter depending on the call.
_TYPES = {"FILE": "FILE", "F": "FILE", "DATASET": "DATASET", "D": "DATASET", "CONTAINER": "CONTAINER",
          "C": "CONTAINER"}


def normalize_did_type(did_type: object) -> str | None:
    """'FILE' | 'DATASET' | 'CONTAINER' from any spelling Rucio uses (str, 'F', DIDType), or None."""
    if did_type is None:
        return None
    text = str(getattr(did_type, "name", did_type)).upper()
    return _TYPES.get(text)


_RAW_KINDS: dict[str, tuple[str, re.Pattern[str], Callable[[str], object], str]] = {
    "FILE": ("file", _raw_file, parse_raw_file, RAW_FILE_HELP),
    "DATASET": ("block", _block, parse_block, BLOCK_HELP),
    "CONTAINER": ("container", _container, parse_container, CONTAINER_HELP),
}


def raw_name_error(name: str, did_type: str | None) -> str | None:
    """Check a name in the raw scope; did_type None means "any raw DID" (attachments carry no type)."""
    kinds = [did_type] if did_type in _RAW_KINDS else list(_RAW_KINDS)
    for kind in kinds:
        label, regex, parse, help_ = _RAW_KINDS[kind]
        if regex.match(name):
            try:
                parse(name)
            except NamingError as err:  # right shape, impossible date
                return str(err)
            return None
    if len(kinds) == 1:
        label, _, _, help_ = _RAW_KINDS[kinds[0]]
        return f"{name!r} is not a raw {label} name: expected {help_}"
    expected = "; or ".join(f"a {label} {help_}" for label, _, _, help_ in _RAW_KINDS.values())
    return f"{name!r} is not a raw DID name: expected {expected}"


def did_name_error(scope: str, name: str, did_type: object = None) -> str | None:
    """None if scope:name follows JUNO's conventions for its type, else a message with the pattern."""
    problem = scope_error(scope)
    if problem:
        return problem
    if len(name) > NAME_MAX:
        return f"name {name[:40]!r}... is longer than {NAME_MAX} characters"
    if scope == RAW_SCOPE:
        return raw_name_error(name, normalize_did_type(did_type))
    if not _generic.match(name):
        return f"name {name!r} in scope {scope}: expected {GENERIC_NAME_HELP}"
    return None


def check_did_name(scope: str, name: str, did_type: object = None) -> None:
    problem = did_name_error(scope, name, did_type)
    if problem:
        raise NamingError(problem)


def own_scope(account: str) -> str:
    """The scope an account may write in as an analyst."""
    return f"user.{account}"


# -- scope extraction (`[common] extract_scope = juno` on clients) ------------------------------


def extract_scope_juno(did: str, scopes: object = None) -> tuple[str, str]:
    """Scope and name of a DID written without a scope: JUNO names say which scope they belong to.

    raw file, block and container names → raw; <raw stem>_<release>.rtraw|.esd → rtraw|esd;
    user.<account>.* and group.<name>.* → that scope; anything else → the part before the first dot.
    """
    if ":" in did:
        scope, _, name = did.partition(":")
        if not scope or not name or ":" in name:
            from rucio.common.exception import RucioException  # clients have rucio; keep this module pure

            raise RucioException(f"Cannot extract scope and name from DID {did}: write it as <scope>:<name>")
        return scope, name
    name = did.rstrip("/") if did.endswith("/") else did
    if _raw_file.match(name) or _block.match(name) or _container.match(name):
        return RAW_SCOPE, name
    derived = _derived.match(name)
    if derived:
        return derived["ext"], name
    parts = name.split(".")
    if parts[0] in ("user", "group") and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}", name
    return parts[0], name
