"""Compact binary encoding of customer state and journal entries (Avro, schemaless).

Avro binary has no field names and varint numbers, so a pending lead costs little more than its
strings; that is what keeps Redis memory per pending lead small. The schemas are internal: the
leading version byte lets a later release change them and still read what is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastavro import parse_schema

from consumer.avro import decode, encode
from consumer.model import AttributedLead, Decision
from consumer.reasons import DeadLetterReason, DuplicateKind
from consumer.state.model import EMPTY, CustomerState, HeldVerification, PendingLead

_VERSION = b"\x01"
_OPT_STR: list[Any] = ["null", "string"]
_OPT_LONG: list[Any] = ["null", "long"]
_OPT_MAP: list[Any] = ["null", {"type": "map", "values": "string"}]
_CUSTOMER: list[dict[str, Any]] = [
    {"name": "n", "type": _OPT_STR},  # customerName
    {"name": "e", "type": _OPT_STR},  # customerEmail
    {"name": "a", "type": _OPT_STR},  # customerAvatar
    {"name": "m", "type": _OPT_MAP},  # metadata
]

STATE_SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "S",
        "fields": [
            {
                "name": "p",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "P",
                        "fields": [
                            {"name": "c", "type": "string"},
                            {"name": "v", "type": "string"},
                            *_CUSTOMER,
                            {"name": "t", "type": _OPT_LONG},
                            {"name": "cr", "type": "long"},
                            {"name": "dl", "type": "long"},
                            {"name": "ls", "type": "long"},
                        ],
                    },
                },
            },
            {
                "name": "h",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "record",
                        "name": "H",
                        "fields": [
                            {"name": "v", "type": "string"},
                            *_CUSTOMER,
                            {"name": "t", "type": _OPT_LONG},
                            {"name": "cr", "type": "long"},
                            {"name": "dl", "type": "long"},
                            {"name": "ls", "type": "long"},
                        ],
                    },
                },
            },
            {"name": "d", "type": {"type": "map", "values": "long"}},
            {"name": "vu", "type": "long"},
        ],
    }
)


def _customer(n: str | None, e: str | None, a: str | None, m: Any) -> dict[str, Any]:
    return {"n": n, "e": e, "a": a, "m": dict(m) if m is not None else None}


def encode_state(state: CustomerState) -> bytes:
    record = {
        "p": [
            {
                "c": p.click_id,
                "v": p.event_name,
                **_customer(p.customer_name, p.customer_email, p.customer_avatar, p.metadata),
                "t": p.event_timestamp_ms,
                "cr": p.created_ms,
                "dl": p.deadline_ms,
                "ls": p.lease_until_ms,
            }
            for p in state.pending
        ],
        "h": [
            {
                "v": h.event_name,
                **_customer(h.customer_name, h.customer_email, h.customer_avatar, h.metadata),
                "t": h.verified_timestamp_ms,
                "cr": h.created_ms,
                "dl": h.deadline_ms,
                "ls": h.lease_until_ms,
            }
            for h in state.held
        ],
        "d": dict(state.done),
        "vu": state.verified_until_ms,
    }
    return _VERSION + encode(STATE_SCHEMA, record)


def decode_state(blob: bytes | None) -> CustomerState:
    if not blob:
        return EMPTY
    if blob[:1] != _VERSION:
        raise ValueError(f"unknown state encoding version {blob[:1]!r}")
    raw = decode(STATE_SCHEMA, blob[1:])
    return CustomerState(
        pending=tuple(
            PendingLead(p["c"], p["v"], p["n"], p["e"], p["a"], p["m"], p["t"], p["cr"], p["dl"], p["ls"])
            for p in raw["p"]
        ),
        held=tuple(
            HeldVerification(h["v"], h["n"], h["e"], h["a"], h["m"], h["t"], h["cr"], h["dl"], h["ls"])
            for h in raw["h"]
        ),
        done=raw["d"],
        verified_until_ms=raw["vu"],
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
