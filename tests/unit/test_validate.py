"""Field rules of contract section 2, one case per rule and per dead-letter reason."""

from __future__ import annotations

from typing import Any

import pytest

from consumer.avro import Codec
from consumer.model import Invalid, LeadEvent, SourceRecord
from consumer.pipeline import parse
from consumer.reasons import DeadLetterReason
from consumer.validate import validate

BASE: dict[str, Any] = {
    "customerExternalId": "cust-1",
    "eventName": "signup",
    "clickId": "click-1",
    "mode": None,
    "timestamp": "2026-11-26T10:00:00Z",
    "customerName": "Ann",
    "customerEmail": "ann@example.com",
    "customerAvatar": "https://cdn.example.com/a.png",
    "metadata": {"utm_source": "google"},
}

INVALID = [
    ("customerExternalId", "", DeadLetterReason.INVALID_FIELD),
    ("customerExternalId", "x" * 101, DeadLetterReason.INVALID_FIELD),
    ("eventName", "", DeadLetterReason.INVALID_FIELD),
    ("eventName", "e" * 256, DeadLetterReason.INVALID_FIELD),
    ("clickId", "c" * 101, DeadLetterReason.INVALID_FIELD),
    ("mode", "later", DeadLetterReason.INVALID_MODE),
    ("mode", "", DeadLetterReason.INVALID_MODE),
    ("timestamp", "yesterday", DeadLetterReason.INVALID_FIELD),
    ("timestamp", "2026-11-26T10:00:00", DeadLetterReason.INVALID_FIELD),  # no offset
    ("timestamp", "2026-11-26", DeadLetterReason.INVALID_FIELD),
    ("customerName", "n" * 101, DeadLetterReason.INVALID_FIELD),
    ("customerEmail", "not-an-email", DeadLetterReason.INVALID_FIELD),
    ("customerEmail", "a@b", DeadLetterReason.INVALID_FIELD),
    ("customerEmail", "a b@example.com", DeadLetterReason.INVALID_FIELD),
    ("customerEmail", "a" * 90 + "@example.com", DeadLetterReason.INVALID_FIELD),
    ("customerAvatar", "ftp://example.com/a.png", DeadLetterReason.INVALID_FIELD),
    ("customerAvatar", "https://", DeadLetterReason.INVALID_FIELD),
    ("customerAvatar", "https://example.com/" + "a" * 2040, DeadLetterReason.INVALID_FIELD),
    ("metadata", {"k": "v" * 10_000}, DeadLetterReason.INVALID_FIELD),
]


@pytest.mark.parametrize(
    ("name", "value", "reason"), INVALID, ids=[f"{n}={str(v)[:20]}" for n, v, _ in INVALID]
)
def test_invalid_field(name: str, value: Any, reason: DeadLetterReason) -> None:
    result = validate({**BASE, name: value})
    assert isinstance(result, Invalid)
    assert result.reason is reason
    assert result.detail.startswith(name + ":")
    if isinstance(value, str) and len(value) > 3:
        assert value not in result.detail  # never echo values: they may be PII


def test_valid_event() -> None:
    event = validate(BASE)
    assert isinstance(event, LeadEvent)
    assert event.timestamp_ms == 1_795_687_200_000
    assert event.metadata == {"utm_source": "google"}


@pytest.mark.parametrize(
    "timestamp", ["2026-11-26T10:00:00+02:00", "2026-11-26T10:00:00.123Z", "2026-11-26T10:00:00-05:30"]
)
def test_timestamps_with_offsets(timestamp: str) -> None:
    assert isinstance(validate({**BASE, "timestamp": timestamp}), LeadEvent)


def test_empty_click_id_is_absent() -> None:
    event = validate({**BASE, "clickId": ""})
    assert isinstance(event, LeadEvent) and event.click_id is None


def test_deferred_without_click_id() -> None:
    for click in (None, ""):
        result = validate({**BASE, "clickId": click, "mode": "deferred"})
        assert isinstance(result, Invalid) and result.reason is DeadLetterReason.MISSING_CLICK_ID


def test_cid_is_not_trimmed() -> None:
    event = validate({**BASE, "customerExternalId": " cust-1 "})
    assert isinstance(event, LeadEvent) and event.customer_external_id == " cust-1 "


def test_metadata_limit_is_inclusive() -> None:
    assert isinstance(validate({**BASE, "metadata": {"k": "v" * 9_999}}), LeadEvent)


def test_undecodable_bytes() -> None:
    codec = Codec("lead_event")
    for garbage in (b"", b"\xff\xff\xff", b"\x02a\x02b\x00\x00\x00\x00\x00\x00\x00trailing"):
        result = parse(codec, SourceRecord("t", 0, 0, None, garbage))
        assert isinstance(result, Invalid) and result.reason is DeadLetterReason.UNDECODABLE


def test_decodes_plain_avro() -> None:
    codec = Codec("lead_event")
    result = parse(codec, SourceRecord("t", 0, 0, None, codec.encode(BASE)))
    assert isinstance(result, LeadEvent) and result.customer_external_id == "cust-1"


def test_avatar_urls() -> None:
    from consumer.validate import valid_avatar  # noqa: PLC0415

    good = [
        "https://cdn.example.com/a.png",
        "http://example.com",
        "HTTPS://Example.com:8443/x?y=1#z",
        "https://user@host.example/p",
        "https://[2001:db8::1]/a.png",
    ]
    bad = [
        "https://",
        "ftp://x.com/a",
        "https:///path",
        "https://exa mple.com/",
        "https://host/a b",
        "//host/a",
        "https://:80/",
    ]
    assert all(valid_avatar(url) for url in good)
    assert not any(valid_avatar(url) for url in bad)
