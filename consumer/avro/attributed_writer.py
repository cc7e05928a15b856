"""Avro binary of AttributedLead, written by hand: the one record encoded for most input events.

fastavro's generic writer resolves every union of the schema by inspecting the value (the map
under ["null", map] is walked to choose its branch); on the bench workload that made the attributed
record cost ~30 us, the largest single item of the consumer's profile. This writer knows the
layout and costs ~6 us. It is used only while schemas/attributed_lead.avsc still has exactly the
layout below (checked when the codecs are built); tests compare its bytes with fastavro's.
"""

from __future__ import annotations

from typing import Any, Final

from consumer.avro.varint import uvarint, zigzag
from consumer.model import AttributedLead

# (field name, Avro type) as in schemas/attributed_lead.avsc, in order.
LAYOUT: tuple[tuple[str, Any], ...] = (
    ("leadId", "string"),
    ("customerExternalId", "string"),
    ("clickId", "string"),
    ("eventName", "string"),
    ("mode", "string"),
    ("verificationEventName", ["null", "string"]),
    ("customerName", ["null", "string"]),
    ("customerEmail", ["null", "string"]),
    ("customerAvatar", ["null", "string"]),
    ("metadata", ["null", {"type": "map", "values": "string"}]),
    ("eventTimestamp", ["null", {"type": "long", "logicalType": "timestamp-millis"}]),
    ("verifiedTimestamp", ["null", {"type": "long", "logicalType": "timestamp-millis"}]),
    ("attributedAt", {"type": "long", "logicalType": "timestamp-millis"}),
)


def _zigzag(n: int) -> bytes:
    return uvarint(zigzag(n))


_SMALL: Final = tuple(_zigzag(n) for n in range(1024))  # lengths of almost every string
_NULL: Final = b"\x00"
_SECOND: Final = b"\x02"  # union branch 1 (the non-null one), zigzag-encoded


def _long(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 1024 else _zigzag(n)


def _string(value: str) -> bytes:
    data = value.encode()
    return _long(len(data)) + data


def _optional(value: str | None) -> bytes:
    return _NULL if value is None else _SECOND + _string(value)


def encode_attributed(lead: AttributedLead) -> bytes:
    parts = [
        _string(lead.lead_id),
        _string(lead.customer_external_id),
        _string(lead.click_id),
        _string(lead.event_name),
        _string(lead.mode.value),
        _optional(lead.verification_event_name),
        _optional(lead.customer_name),
        _optional(lead.customer_email),
        _optional(lead.customer_avatar),
    ]
    metadata = lead.metadata
    if metadata is None:
        parts.append(_NULL)
    else:
        parts.append(_SECOND)
        if metadata:  # one block with all entries, then the empty block that ends the map
            parts.append(_long(len(metadata)))
            for key, value in metadata.items():
                parts.append(_string(key))
                parts.append(_string(value))
        parts.append(_NULL)
    for timestamp in (lead.event_timestamp_ms, lead.verified_timestamp_ms):
        parts.append(_NULL if timestamp is None else _SECOND + _long(timestamp))
    parts.append(_long(lead.attributed_at_ms))
    return b"".join(parts)
