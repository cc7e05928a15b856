"""Compact encoding of customer state and journal entries.

State (version 4) is binary: no field names, lengths as varints, times as zigzag varints (deadlines
as the distance from their item's creation, which is the TTL or grace period: 4-5 bytes instead
of 13 digits), a clickId that is a canonical UUID as its 16 bytes, and the standard utm_* metadata
keys as one byte each. A pending lead on the bench's workload takes ~210 bytes instead of the ~325
of version 3 (JSON); in Redis that is one jemalloc size class or two less per pending lead, the
largest part of its memory (docs/performance.md, "Redis memory"). Decoding never runs code (no
pickle or marshal: the bytes come back from Redis). The leading version byte lets a later release
change the layout and still read what is stored: version 3 (JSON arrays) is still read, so states
written before an upgrade stay valid.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from consumer.avro.varint import unzigzag, uvarint, zigzag
from consumer.model import AttributedLead, Decision
from consumer.reasons import DeadLetterReason, DuplicateKind
from consumer.state.customer import EMPTY, CustomerState, HeldVerification, Item, PendingLead

_STATE_VERSION: Final = 4
_JSON_STATE_VERSION: Final = 3
_decode_json = json.JSONDecoder().decode

# Metadata keys written as one byte (their index + 1; 0 = a key spelled out). Append only: the
# position is the storage format.
_KEYS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "utm_id")
_KEY_CODE: Final = {key: bytes((i + 1,)) for i, key in enumerate(_KEYS)}
_VERSION_BYTE: Final = bytes((_STATE_VERSION,))


def _svarint(n: int) -> bytes:
    return uvarint(zigzag(n))


def _text(value: str) -> bytes:
    raw = value.encode()
    size = len(raw)
    return uvarint(size) + raw


def _optional_text(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    raw = value.encode()
    size = len(raw) + 1
    return uvarint(size) + raw


def _optional_time(value: int | None) -> bytes:
    return b"\x00" if value is None else uvarint(zigzag(value) + 1)


def _click_id(value: str) -> bytes:
    """0 + 16 bytes for a canonical (lowercase, hyphenated) UUID, else length + 1 and the text."""
    if len(value) == 36 and value[8] == value[13] == value[18] == value[23] == "-":
        digits = value.replace("-", "")
        if len(digits) == 32:
            try:
                packed = bytes.fromhex(digits)
            except ValueError:
                pass
            else:
                if packed.hex() == digits:  # lowercase, no spaces: decodes back to the same text
                    return b"\x00" + packed
    return _optional_text(value)


def _metadata(value: Mapping[str, str] | None) -> bytes:
    if value is None:
        return b"\x00"
    parts = [uvarint(len(value) + 1)]
    for key, item in value.items():
        code = _KEY_CODE.get(key)
        parts.append(code if code is not None else b"\x00" + _text(key))
        parts.append(_text(item))
    return b"".join(parts)


def _item_into(parts: list[bytes], item: Item, timestamp: int | None) -> None:
    """The fields after the first of a pending lead or held verification (read by _item_at)."""
    parts.append(_optional_text(item.customer_name))
    parts.append(_optional_text(item.customer_email))
    parts.append(_optional_text(item.customer_avatar))
    parts.append(_metadata(item.metadata))
    parts.append(_optional_time(timestamp))
    parts.append(_svarint(item.created_ms))
    parts.append(_svarint(item.deadline_ms - item.created_ms))
    parts.append(_svarint(item.lease_until_ms))


def encode_state(state: CustomerState) -> bytes:
    # Field order is the storage format: a new field means a new version, never a reorder.
    # Appended part by part: compiled, tuples built to extend the list cost more than the parts.
    parts = [_VERSION_BYTE, uvarint(len(state.pending))]
    for p in state.pending:
        parts.append(_click_id(p.click_id))
        parts.append(_text(p.event_name))
        _item_into(parts, p, p.event_timestamp_ms)
    parts.append(uvarint(len(state.held)))
    for h in state.held:
        parts.append(_text(h.event_name))
        _item_into(parts, h, h.verified_timestamp_ms)
    parts.append(uvarint(len(state.done)))
    for name, until in state.done.items():
        parts.append(_text(name))
        parts.append(_svarint(until))
    parts.append(_svarint(state.verified_until_ms))
    return b"".join(parts)


# The largest state a customer may have: its changelog record (key and this) must fit the
# producer's message.max.bytes (1,000,000) and the topic's max.message.bytes, or its batch fails for
# ever. Legitimate states are a few hundred bytes; only thousands of distinct event names within
# the dedupe window come near (consumer/processing/batch.py dead-letters the event that would pass it).
MAX_STATE_BYTES: Final = 500_000
# A state of at most this many items cannot reach MAX_STATE_BYTES (an item is at most ~43 KB: its
# texts at their limits of contract section 2, in UTF-8): it is not encoded to be measured.
_SMALL_STATE_ITEMS: Final = 8


def too_large(state: CustomerState) -> bool:
    """The state would take more than MAX_STATE_BYTES."""
    if len(state.pending) + len(state.held) + len(state.done) <= _SMALL_STATE_ITEMS:
        return False
    return len(encode_state(state)) > MAX_STATE_BYTES


class CorruptState(ValueError):
    """A stored state this release cannot read (consumer/processing/quarantine.py moves it aside). The
    message never quotes the blob's content: it may hold a customer's name or email."""


# Decoding: each reader takes (blob, position) and returns (value, next position). A blob cut
# short raises IndexError or leaves the position past its end; decode_state reports both.


def _uvarint_at(blob: bytes, at: int) -> tuple[int, int]:
    byte = blob[at]
    if byte < 0x80:
        return byte, at + 1
    value, shift = 0, 0
    while True:
        byte = blob[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _svarint_at(blob: bytes, at: int) -> tuple[int, int]:
    n, at = _uvarint_at(blob, at)
    return unzigzag(n), at


def _text_at(blob: bytes, at: int) -> tuple[str, int]:
    size = blob[at]
    if size < 0x80:  # short texts (nearly all): no call for the length
        at += 1
    else:
        size, at = _uvarint_at(blob, at)
    end = at + size
    return blob[at:end].decode(), end


def _optional_text_at(blob: bytes, at: int) -> tuple[str | None, int]:
    size = blob[at]
    if size < 0x80:
        at += 1
    else:
        size, at = _uvarint_at(blob, at)
    if size == 0:
        return None, at
    end = at + size - 1
    return blob[at:end].decode(), end


def _optional_time_at(blob: bytes, at: int) -> tuple[int | None, int]:
    n, at = _uvarint_at(blob, at)
    return (None if n == 0 else unzigzag(n - 1)), at


def _click_id_at(blob: bytes, at: int) -> tuple[str, int]:
    size, at = _uvarint_at(blob, at)
    if size:
        return blob[at : at + size - 1].decode(), at + size - 1
    d = blob[at : at + 16].hex()
    return f"{d[:8]}-{d[8:12]}-{d[12:16]}-{d[16:20]}-{d[20:]}", at + 16


def _metadata_at(blob: bytes, at: int) -> tuple[dict[str, str] | None, int]:
    count, at = _uvarint_at(blob, at)
    if count == 0:
        return None, at
    value: dict[str, str] = {}
    for _ in range(count - 1):
        code, at = _uvarint_at(blob, at)
        if code == 0:
            key, at = _text_at(blob, at)
        elif code <= len(_KEYS):
            key = _KEYS[code - 1]
        else:
            raise CorruptState(f"unknown metadata key code {code}")
        value[key], at = _text_at(blob, at)
    return value, at


def decode_state(blob: bytes | None) -> CustomerState:
    """Raises CorruptState for anything that is not a state this release wrote or can read."""
    if not blob:
        return EMPTY
    version = blob[0]
    try:
        if version == _JSON_STATE_VERSION:
            return _decode_json_state(blob)
        if version != _STATE_VERSION:
            raise CorruptState(f"unknown state encoding version {version}")
        state, at = _decode_binary(blob)
    except CorruptState:
        raise
    except IndexError:
        raise CorruptState("truncated state") from None
    except Exception as error:  # whatever bytes do to the readers below: a message of our own
        raise CorruptState(f"unreadable state ({type(error).__name__})") from None
    if at != len(blob):
        raise CorruptState("truncated state" if at > len(blob) else "trailing bytes after the state")
    return state


def _item_at(blob: bytes, at: int) -> tuple[tuple[object, ...], int]:
    """The fields after the first of a pending lead or held verification, in model order."""
    name, at = _optional_text_at(blob, at)
    email, at = _optional_text_at(blob, at)
    avatar, at = _optional_text_at(blob, at)
    metadata, at = _metadata_at(blob, at)
    timestamp, at = _optional_time_at(blob, at)
    created, at = _svarint_at(blob, at)
    ttl, at = _svarint_at(blob, at)
    lease, at = _svarint_at(blob, at)
    return (name, email, avatar, metadata, timestamp, created, created + ttl, lease), at


def _decode_binary(blob: bytes) -> tuple[CustomerState, int]:
    count, at = _uvarint_at(blob, 1)
    pending = []
    for _ in range(count):
        click_id, at = _click_id_at(blob, at)
        event_name, at = _text_at(blob, at)
        fields, at = _item_at(blob, at)
        pending.append(PendingLead(click_id, event_name, *fields))  # type: ignore[arg-type]
    count, at = _uvarint_at(blob, at)
    held = []
    for _ in range(count):
        event_name, at = _text_at(blob, at)
        fields, at = _item_at(blob, at)
        held.append(HeldVerification(event_name, *fields))  # type: ignore[arg-type]
    count, at = _uvarint_at(blob, at)
    done = {}
    for _ in range(count):
        name, at = _text_at(blob, at)
        done[name], at = _svarint_at(blob, at)
    verified_until, at = _svarint_at(blob, at)
    return CustomerState(tuple(pending), tuple(held), done, verified_until), at


def is_current(blob: bytes) -> bool:
    """Written in this release's encoding (not an earlier one's)."""
    return blob[:1] == _VERSION_BYTE


def _decode_json_state(blob: bytes) -> CustomerState:
    """Version 3 (JSON arrays), written before version 4; read so an upgrade keeps stored states."""
    pending, held, done, verified_until = _decode_json(blob[1:].decode())
    return CustomerState(
        pending=tuple(PendingLead(*p) for p in pending),
        held=tuple(HeldVerification(*h) for h in held),
        done=done,
        verified_until_ms=verified_until,
    )


# Journal entries: what the rules decided for one input record, until its batch is committed.
# An attributed decision stores the AttributedLead record bytes exactly as published, so a replay
# re-publishes them byte for byte and the normal path pays no second encoding. Layout:
#   version, kind, then "\x00"-separated fields; for "A" the last field is the raw record bytes.
_JOURNAL_VERSION: Final = b"\x02"
_SEP: Final = b"\x00"


def encode_journal(decision: Decision, lead_record: bytes | None) -> bytes:
    at = str(decision.decided_at_ms).encode()
    if decision.attributed is not None:
        assert lead_record is not None, "an attributed decision is journaled with its record bytes"
        delay = (
            b"" if decision.verification_delay_ms is None else str(decision.verification_delay_ms).encode()
        )
        return _JOURNAL_VERSION + b"A" + at + _SEP + delay + _SEP + lead_record
    if decision.dead_letter is not None:
        return (
            _JOURNAL_VERSION
            + b"X"
            + at
            + _SEP
            + decision.dead_letter.value.encode()
            + _SEP
            + decision.detail.encode()
        )
    if decision.duplicate is not None:
        return _JOURNAL_VERSION + b"U" + at + _SEP + decision.duplicate.value.encode()
    return _JOURNAL_VERSION + b"N" + at


def decode_journal(
    blob: bytes, decode_lead: Callable[[bytes], AttributedLead]
) -> tuple[Decision, bytes | None]:
    """(decision, the attributed record's bytes or None)."""
    if blob[:1] != _JOURNAL_VERSION:
        raise ValueError(f"unknown journal encoding version {blob[:1]!r}")
    kind, body = blob[1:2], blob[2:]
    if kind == b"A":
        at, delay, record = body.split(_SEP, 2)
        return (
            Decision(
                attributed=decode_lead(record),
                verification_delay_ms=int(delay) if delay else None,
                decided_at_ms=int(at),
            ),
            record,
        )
    if kind == b"X":
        at, reason, detail = body.split(_SEP, 2)
        return Decision(
            dead_letter=DeadLetterReason(reason.decode()), detail=detail.decode(), decided_at_ms=int(at)
        ), None
    if kind == b"U":
        at, duplicate = body.split(_SEP, 1)
        return Decision(duplicate=DuplicateKind(duplicate.decode()), decided_at_ms=int(at)), None
    return Decision(decided_at_ms=int(body)), None


# In Redis, the journal entries of one batch write and input partition share one hash field:
# each entry framed as (offset: signed 64-bit, length: unsigned 32-bit, big-endian) + entry.
_FRAME: Final = struct.Struct(">qI")


def frame_journal(offset: int, entry: bytes) -> bytes:
    return _FRAME.pack(offset, len(entry)) + entry


def unframe_journal(blob: bytes) -> Iterator[tuple[int, bytes]]:
    position, size = 0, _FRAME.size
    while position < len(blob):
        offset, length = _FRAME.unpack_from(blob, position)
        position += size + length
        if position > len(blob):
            raise ValueError("truncated journal entry")
        yield offset, blob[position - length : position]
