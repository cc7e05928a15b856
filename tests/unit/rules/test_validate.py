"""Field rules of contract section 2, one case per rule and per dead-letter reason."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from consumer.avro.codec import Codec
from consumer.model import Invalid, LeadEvent, SourceRecord
from consumer.processing.records import parse
from consumer.reasons import DeadLetterReason
from consumer.rules.validate import iso_timestamp, parse_timestamp, validate

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
    from consumer.rules.validate import valid_avatar  # noqa: PLC0415

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


_EDGES = [
    "2026-11-26T10:00:00Z",
    "2026-11-26T10:00:00.123Z",
    "2026-11-26T10:00:00.123456+05:30",
    "2026-11-26T10:00:00.999999-00:00",
    "2024-02-29T23:59:59.999Z",  # leap day
    "2023-02-29T00:00:00Z",  # not a leap year
    "2100-02-29T00:00:00Z",  # nor is 2100
    "2000-02-29T00:00:00Z",  # but 2000 is
    "1900-01-01T00:00:00+23:59",
    "2199-12-31T23:59:59.999999-23:59",
    "1899-12-31T23:59:59Z",  # outside the reader's years: the general path
    "2026-11-26T24:00:00Z",
    "2026-11-26T10:60:00Z",
    "2026-11-26T10:00:60Z",
    "2026-13-01T10:00:00Z",
    "2026-00-01T10:00:00Z",
    "2026-11-00T10:00:00Z",
    "2026-11-31T10:00:00Z",
    "2026-11-26T10:00:00+24:00",
    "2026-11-26T10:00:00+05:60",
    "2026-11-26T10:00:00.1Z",
    "2026-11-26T10:00:00.12345Z",
    "2026-11-26T10:00:00.1234567Z",
    "2026-11-26T10:00:00,123Z",
    "2026-11-26t10:00:00Z",
    "2026-11-26 10:00:00Z",
    "2026-11-26T10:00:00z",
    "2026-11-26T10:00:00+0530",
    "2026-11-26T10:00:00+05:30:15",
    "2026-11-26T10:00Z",
    "2026-11-26T1O:00:00Z",
    "2026-11-26T10:00:00.12\uff13Z",  # a full-width digit
    "\uff12026-11-26T10:00:00Z",
    "2026-11-26T10:00:00.Z",
    "2026-11-26T10:00:00ZZ",
    "-026-11-26T10:00:00Z",
]


@pytest.mark.parametrize("value", _EDGES)
def test_timestamp_edges_agree_with_the_general_rule(value: str) -> None:
    assert parse_timestamp(value) == iso_timestamp(value)


def test_timestamps_agree_with_the_general_rule() -> None:
    rng = random.Random(20261127)
    for _ in range(20_000):
        moment = datetime(1880, 1, 1, tzinfo=UTC) + timedelta(
            microseconds=rng.randrange(350 * 365 * 86_400 * 10**6)
        )
        offset = timedelta(minutes=rng.randrange(-1439, 1440))
        text = moment.astimezone(timezone(offset)).isoformat(
            timespec=rng.choice(["seconds", "milliseconds", "microseconds"])
        )
        if offset == timedelta(0) and rng.random() < 0.5:
            text = text.replace("+00:00", "Z")
        mutated = text
        if rng.random() < 0.3:  # one character changed: mostly not a timestamp any more
            at = rng.randrange(len(text))
            mutated = text[:at] + rng.choice("0123456789:-+TZ.x ") + text[at + 1 :]
        assert parse_timestamp(text) == iso_timestamp(text), text
        assert parse_timestamp(mutated) == iso_timestamp(mutated), mutated
