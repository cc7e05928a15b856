"""Avro binary of LeadEvent, read by hand: the first step of every input record.

fastavro's generic reader interprets the schema for each record (a dispatch per field, a branch
lookup per union) and cost ~12 % of the consumer's CPU. This reader knows the layout of
schemas/lead_event.avsc and, compiled (setup.py), costs a fraction of that. It only reads what it
is sure of: anything unusual (an unknown union branch, a truncated or oversized value, invalid
UTF-8, a map written in sized blocks, trailing bytes) raises Unusual, and the caller decodes the
record with fastavro instead, so malformed input is judged exactly as before. It is used only while
the schema still has exactly LAYOUT (checked when the codec is built, consumer/avro/codec.py); tests
compare its results with fastavro's on random and mutated records.
"""

from __future__ import annotations

from typing import Any, Final

# (field name, Avro type) as in schemas/lead_event.avsc, in order.
LAYOUT: tuple[tuple[str, Any], ...] = (
    ("customerExternalId", "string"),
    ("eventName", "string"),
    ("clickId", ["null", "string"]),
    ("mode", ["null", "string"]),
    ("timestamp", ["null", "string"]),
    ("customerName", ["null", "string"]),
    ("customerEmail", ["null", "string"]),
    ("customerAvatar", ["null", "string"]),
    ("metadata", ["null", {"type": "map", "values": "string"}]),
)
_NAMES: Final = tuple(name for name, _ in LAYOUT)
# A long takes at most 10 bytes; lengths here are far below 2^28 (4 bytes) in any sane record.
_MAX_LENGTH_BYTES: Final = 4


class Unusual(Exception):
    """Not a plain encoding this reader vouches for: let fastavro judge the record."""


# The record's fields in LAYOUT order, None for a null branch: a fixed-size tuple, which compiled
# code returns as a C struct (no object built), for the pipeline to validate directly.
Fields = tuple[
    str, str, str | None, str | None, str | None, str | None, str | None, str | None, dict[str, str] | None
]


def read_lead_event(data: bytes) -> dict[str, Any]:
    """The record as fastavro returns it: every field present, None for a null branch."""
    return dict(zip(_NAMES, read_fields(data), strict=True))


def read_fields(data: bytes) -> Fields:
    """The record's fields, in LAYOUT order (what read_lead_event returns, without the dict)."""
    end = len(data)
    cid, pos = _string(data, 0, end)
    event_name, pos = _string(data, pos, end)
    click_id, pos = _optional(data, pos, end)
    mode, pos = _optional(data, pos, end)
    timestamp, pos = _optional(data, pos, end)
    name, pos = _optional(data, pos, end)
    email, pos = _optional(data, pos, end)
    avatar, pos = _optional(data, pos, end)
    branch, pos = _branch(data, pos, end)
    metadata: dict[str, str] | None = None
    if branch:
        metadata = {}
        count, pos = _length(data, pos, end)
        while count:
            if count > (end - pos) >> 1:  # an entry takes two bytes at least: checked before reading
                raise Unusual("map block count")
            for _ in range(count):
                key, pos = _string(data, pos, end)
                value, pos = _string(data, pos, end)
                metadata[key] = value
            count, pos = _length(data, pos, end)
    if pos != end:
        raise Unusual("trailing bytes")
    return cid, event_name, click_id, mode, timestamp, name, email, avatar, metadata


def _optional(data: bytes, pos: int, end: int) -> tuple[str | None, int]:
    """A ["null", "string"] union."""
    branch, pos = _branch(data, pos, end)
    if branch:
        return _string(data, pos, end)
    return None, pos


def _length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """A zigzag varint that must be >= 0 (string lengths, map block counts)."""
    n = 0
    shift = 0
    while True:
        if pos >= end or shift >= 7 * _MAX_LENGTH_BYTES:
            raise Unusual("length")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            break
    if n & 1:
        raise Unusual("negative length")  # a sized map block, or garbage
    return n >> 1, pos


def _branch(data: bytes, pos: int, end: int) -> tuple[bool, int]:
    """The branch of a ["null", X] union: False for null, True for X."""
    if pos >= end:
        raise Unusual("union")
    byte = data[pos]
    if byte == 0:
        return False, pos + 1
    if byte == 2:
        return True, pos + 1
    raise Unusual("union branch")


def _string(data: bytes, pos: int, end: int) -> tuple[str, int]:
    size, pos = _length(data, pos, end)
    stop = pos + size
    if stop > end:
        raise Unusual("truncated")
    try:
        return data[pos:stop].decode(), stop
    except UnicodeDecodeError as error:
        raise Unusual("utf-8") from error
