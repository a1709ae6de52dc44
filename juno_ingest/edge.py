"""The Kafka edge: turn whatever bytes Kafka delivered into a JSON object, at a bounded cost (pure).

    data = decode(raw)        # a dict, or an InvalidMessage saying what was wrong

A SPADE message is a flat JSON object of about 400 bytes with two small nested objects. Anything else is
refused before it can cost much, in this order:

  size       at most MAX_MESSAGE_BYTES (64 KiB) of value;
  encoding   UTF-8 without a byte-order mark (json.loads would otherwise guess UTF-16/32 from the bytes);
  nesting    at most MAX_DEPTH levels of objects/arrays (a message has 2). Counted without parsing, only
             when the text holds more brackets than a message can: the common message pays one bytes.count;
  JSON       strictly: no NaN/Infinity, no duplicate keys (which value would count?); numbers of more
             than 4300 digits are refused by Python itself (sys.int_info.default_max_str_digits);
  shape      an object at the top.

Field rules (types, ranges, characters) are in messages.py; both share `show`, which quotes a hostile
value into a reason of bounded length.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024
MAX_DEPTH = 4
_BRACKETS_OK = 8  # a valid message has at most 3 objects and no array: above this, count the depth
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # strings (skipped whole) and brackets
_KEY_END = re.compile(rb'"\s*:')  # the end of every key (and, rarely, of text holding a quote and a colon)
SHOW_MAX = 80


class Invalid(ValueError):
    """Why the bytes are not a message (messages.parse turns it into an InvalidMessage)."""


def show(value: object, limit: int = SHOW_MAX) -> str:
    """repr(value) cut to `limit` characters with its full length, for reasons (a 10 MB path stays 10 MB
    otherwise, in the log and in the dead-letter header)."""
    if isinstance(value, str | bytes) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters as text)"


def depth(raw: bytes, stop: int | None = None) -> int:
    """How deeply objects and arrays nest in JSON text (brackets inside strings do not count); counting
    ends as soon as `stop` is passed (a hostile message need not be read to its end)."""
    deepest = level = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"{", b"["):
            level += 1
            if level > deepest:
                deepest = level
                if stop is not None and deepest > stop:
                    break
        elif token in (b"}", b"]"):
            level -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise Invalid(f"{name} is not a JSON number (RFC 8259): write a finite number")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise Invalid(f"key {show(key)} appears more than once in one object: which value counts is "
                              "ambiguous; send each key once")
            seen.add(key)
    return out


# One decoder each, made once: json.loads with any option builds a new JSONDecoder on every call.
_FAST = json.JSONDecoder(parse_constant=_no_constant)
_STRICT = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_object)


def decode(raw: bytes | str | None) -> dict[str, Any]:
    """The JSON object in a Kafka message value; Invalid (with the reason) for anything else."""
    if raw is None or len(raw) == 0:
        raise Invalid("empty message: expected a JSON object (SPADE file-arrival message, version 1)")
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)
    if len(data) > MAX_MESSAGE_BYTES:
        raise Invalid(f"message of {len(data)} bytes; a SPADE message is at most {MAX_MESSAGE_BYTES} bytes "
                      "(about 400 is usual)")
    if data.startswith(b"\xef\xbb\xbf"):
        raise Invalid("message starts with a UTF-8 byte-order mark: send plain UTF-8 JSON")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise Invalid(f"not UTF-8 (byte {err.start}: {show(data[err.start:err.start + 4])}): SPADE messages are "
                      "UTF-8 JSON") from None
    if data.count(b"{") + data.count(b"[") > _BRACKETS_OK and depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise Invalid(f"JSON nested more than {MAX_DEPTH} levels deep; a SPADE message has 2")
    try:
        value = _FAST.decode(text)
        if isinstance(value, dict) and _key_ends(data) != _keys(value):
            # More key ends in the text than keys read: a duplicate key (or text with a quote and a colon,
            # or objects inside arrays): read it again, noting every key.
            value = _STRICT.decode(text)
    except Invalid:
        raise
    except (ValueError, RecursionError) as err:
        raise Invalid(f"not JSON ({show(str(err), 120)}); expected a SPADE file-arrival message (a JSON "
                      "object)") from None
    if not isinstance(value, dict):
        raise Invalid(f"expected a JSON object, found {type(value).__name__}")
    return value


def _key_ends(data: bytes) -> int:
    """How many key ends ('"' then ':') the text has; a plain count unless a quote is followed by space."""
    if b'" ' in data or b'"\t' in data or b'"\n' in data or b'"\r' in data:
        return len(_KEY_END.findall(data))
    return data.count(b'":')


def _keys(data: dict[str, Any]) -> int:
    """Keys of an object and of the objects directly in it (a message's shape)."""
    return len(data) + sum(len(v) for v in data.values() if isinstance(v, dict))
