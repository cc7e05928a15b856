"""Field rules of contract section 2: a decoded record becomes a LeadEvent or an Invalid.

Details name the field and the rule, never the value: values may be customer PII and the
detail travels to the dead-letter topic, logs and dashboards.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from consumer.model import Invalid, LeadEvent
from consumer.reasons import DeadLetterReason

MAX_CID = 100
MAX_EVENT_NAME = 255
MAX_CLICK_ID = 100
MAX_NAME = 100
MAX_EMAIL = 100
MAX_AVATAR = 2048
MAX_METADATA_CHARS = 10_000
DEFERRED = "deferred"

# Pragmatic RFC 5322 subset: dot-atom local part, and a domain of LDH labels with at least one dot.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def _field(name: str, rule: str) -> Invalid:
    return Invalid(DeadLetterReason.INVALID_FIELD, f"{name}: {rule}")


# (field, min, max) for the string fields; checked in this order, the first problem is reported.
_LENGTHS = (
    ("customerExternalId", 1, MAX_CID),
    ("eventName", 1, MAX_EVENT_NAME),
    ("clickId", 0, MAX_CLICK_ID),
    ("customerName", 0, MAX_NAME),
    ("customerEmail", 0, MAX_EMAIL),
    ("customerAvatar", 0, MAX_AVATAR),
    ("timestamp", 0, 64),
)


def parse_timestamp(value: str) -> int | None:
    """ISO 8601 with an offset or Z -> epoch milliseconds; None when it is not that."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None or "T" not in value.upper():
        return None
    return int(parsed.timestamp() * 1000)


def valid_email(value: str) -> bool:
    return len(value) <= MAX_EMAIL and _EMAIL.match(value) is not None


# http(s)://[userinfo@]host[:port][/path?query#fragment], no whitespace anywhere. A regex rather
# than urlsplit: this runs for every event and urlsplit alone cost more than the Avro decode.
_AVATAR = re.compile(
    r"^(?i:https?)://(?:[^@/?#\s]*@)?(?:\[[0-9A-Fa-f:.]+\]|[^:/?#\s\[\]@]+)(?::\d{1,5})?(?:[/?#]\S*)?$"
)


def valid_avatar(value: str) -> bool:
    return len(value) <= MAX_AVATAR and _AVATAR.match(value) is not None


def validate(record: dict[str, Any]) -> LeadEvent | Invalid:
    # Runs for every event: one flat loop, no helper call per field (it was the costliest step).
    # A dict, not any Mapping: compiled (setup.py), its lookups are direct calls.
    for name, low, high in _LENGTHS:
        value = record.get(name)
        if value is None:
            if low:
                return _field(name, "is required")
            continue
        if type(value) is not str:
            return _field(name, "must be a string")
        if not low <= len(value) <= high:
            return _field(name, f"must be {low}..{high} characters")

    mode = record.get("mode")
    if mode is not None and mode != DEFERRED:
        return Invalid(DeadLetterReason.INVALID_MODE, 'mode: must be absent or "deferred"')

    timestamp_ms: int | None = None
    if record.get("timestamp") is not None:
        timestamp_ms = parse_timestamp(record["timestamp"])
        if timestamp_ms is None:
            return _field("timestamp", "must be ISO 8601 with an offset or Z")
    email = record.get("customerEmail")
    if email is not None and not valid_email(email):
        return _field("customerEmail", "must be a valid email address")
    avatar = record.get("customerAvatar")
    if avatar is not None and not valid_avatar(avatar):
        return _field("customerAvatar", "must be an http(s) URL")
    metadata = record.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            return _field("metadata", "must be a map of strings")
        chars = 0
        for k, v in metadata.items():
            if type(k) is not str or type(v) is not str:
                return _field("metadata", "must be a map of strings")
            chars += len(k) + len(v)
        if chars > MAX_METADATA_CHARS:
            return _field("metadata", f"must be at most {MAX_METADATA_CHARS} characters in total")

    click_id = record.get("clickId") or None  # "" is treated as absent (contract section 2)
    deferred = mode == DEFERRED
    if deferred and click_id is None:
        return Invalid(DeadLetterReason.MISSING_CLICK_ID, "mode deferred needs a clickId")
    return LeadEvent(
        customer_external_id=record["customerExternalId"],
        event_name=record["eventName"],
        click_id=click_id,
        deferred=deferred,
        timestamp_ms=timestamp_ms,
        customer_name=record.get("customerName"),
        customer_email=email,
        customer_avatar=avatar,
        metadata=metadata,
    )
