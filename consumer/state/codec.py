"""Compact binary encoding of customer state and journal entries (Avro, schemaless).

Avro binary has no field names and varint numbers, so a pending lead costs little more than its
strings; that is what keeps Redis memory per pending lead small. The schemas are internal: the
leading version byte lets a later release change them and still read what is stored.
"""

from __future__ import annotations

from typing import Any

from fastavro import parse_schema

from consumer.avro import decode, encode
from consumer.model import AttributedLead, Decision
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode
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

DECISION_SCHEMA = parse_schema(
    {
        "type": "record",
        "name": "D",
        "fields": [
            {"name": "at", "type": "long"},
            {"name": "dl", "type": _OPT_STR},
            {"name": "dt", "type": "string"},
            {"name": "du", "type": _OPT_STR},
            {"name": "vd", "type": _OPT_LONG},
            {
                "name": "lead",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "L",
                        "fields": [
                            {"name": "id", "type": "string"},
                            {"name": "cid", "type": "string"},
                            {"name": "c", "type": "string"},
                            {"name": "v", "type": "string"},
                            {"name": "mo", "type": "string"},
                            {"name": "vv", "type": _OPT_STR},
                            *_CUSTOMER,
                            {"name": "t", "type": _OPT_LONG},
                            {"name": "vt", "type": _OPT_LONG},
                        ],
                    },
                ],
            },
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


def encode_decision(decision: Decision) -> bytes:
    lead = decision.attributed
    record = {
        "at": decision.decided_at_ms,
        "dl": decision.dead_letter.value if decision.dead_letter else None,
        "dt": decision.detail,
        "du": decision.duplicate.value if decision.duplicate else None,
        "vd": decision.verification_delay_ms,
        "lead": None
        if lead is None
        else {
            "id": lead.lead_id,
            "cid": lead.customer_external_id,
            "c": lead.click_id,
            "v": lead.event_name,
            "mo": lead.mode.value,
            "vv": lead.verification_event_name,
            **_customer(lead.customer_name, lead.customer_email, lead.customer_avatar, lead.metadata),
            "t": lead.event_timestamp_ms,
            "vt": lead.verified_timestamp_ms,
        },
    }
    return _VERSION + encode(DECISION_SCHEMA, record)


def decode_decision(blob: bytes) -> Decision:
    if blob[:1] != _VERSION:
        raise ValueError(f"unknown journal encoding version {blob[:1]!r}")
    raw = decode(DECISION_SCHEMA, blob[1:])
    lead = raw["lead"]
    return Decision(
        attributed=None
        if lead is None
        else AttributedLead(
            lead_id=lead["id"],
            customer_external_id=lead["cid"],
            click_id=lead["c"],
            event_name=lead["v"],
            mode=Mode(lead["mo"]),
            verification_event_name=lead["vv"],
            customer_name=lead["n"],
            customer_email=lead["e"],
            customer_avatar=lead["a"],
            metadata=lead["m"],
            event_timestamp_ms=lead["t"],
            verified_timestamp_ms=lead["vt"],
            attributed_at_ms=raw["at"],
        ),
        dead_letter=DeadLetterReason(raw["dl"]) if raw["dl"] else None,
        duplicate=DuplicateKind(raw["du"]) if raw["du"] else None,
        detail=raw["dt"],
        verification_delay_ms=raw["vd"],
        decided_at_ms=raw["at"],
    )
