"""Compact encoding of customer state and journal entries.

State is a JSON array of arrays: no field names, no whitespace. Measured against schemaless Avro
on a realistic pending lead (same run): encode 10 us vs 31 us, decode 15 us vs 32 us, for 305
instead of 257 bytes. Every event encodes one state, so speed won over the 48 bytes. JSON (not
pickle or marshal) because the bytes come back from Redis: decoding them must never run code and
must stay readable by any later Python. The leading version byte lets a later release change the
layout and still read what is stored.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator

from consumer.model import AttributedLead, Decision
from consumer.reasons import DeadLetterReason, DuplicateKind
from consumer.state.model import EMPTY, CustomerState, HeldVerification, PendingLead

_STATE_VERSION = b"\x03"
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_decode_json = json.JSONDecoder().decode


def encode_state(state: CustomerState) -> bytes:
    # Field order is the storage format: append new fields at the end, never reorder.
    pending = [
        [
            p.click_id,
            p.event_name,
            p.customer_name,
            p.customer_email,
            p.customer_avatar,
            p.metadata,
            p.event_timestamp_ms,
            p.created_ms,
            p.deadline_ms,
            p.lease_until_ms,
        ]
        for p in state.pending
    ]
    held = [
        [
            h.event_name,
            h.customer_name,
            h.customer_email,
            h.customer_avatar,
            h.metadata,
            h.verified_timestamp_ms,
            h.created_ms,
            h.deadline_ms,
            h.lease_until_ms,
        ]
        for h in state.held
    ]
    return _STATE_VERSION + _encoder.encode([pending, held, state.done, state.verified_until_ms]).encode()


def decode_state(blob: bytes | None) -> CustomerState:
    if not blob:
        return EMPTY
    if blob[:1] != _STATE_VERSION:
        raise ValueError(f"unknown state encoding version {blob[:1]!r}")
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
_JOURNAL_VERSION = b"\x02"
_SEP = b"\x00"


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
_FRAME = struct.Struct(">qI")


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
