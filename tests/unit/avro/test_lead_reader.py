"""The hand-written LeadEvent reader returns exactly what fastavro returns, or steps aside."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.avro.codec import Codec
from consumer.avro.lead_reader import LAYOUT, Unusual, read_lead_event
from consumer.avro.schemas import decode, encode, has_layout, load_schema, schema_text
from consumer.model import SourceRecord
from consumer.processing.records import parse
from consumer.rules.validate import validate

SCHEMA = load_schema("lead_event")
text = st.text(max_size=300)
optional = st.none() | text
records = st.fixed_dictionaries(
    {
        "customerExternalId": text,
        "eventName": text,
        "clickId": optional,
        "mode": optional,
        "timestamp": optional,
        "customerName": optional,
        "customerEmail": optional,
        "customerAvatar": optional,
        "metadata": st.none() | st.dictionaries(text, text, max_size=70),  # > 63: two-byte counts
    }
)


def fastavro_or_error(data: bytes) -> Any:
    try:
        return decode(SCHEMA, data)
    except Exception as error:
        return type(error)


def test_the_bundled_schema_has_the_layout() -> None:
    assert has_layout(json.loads(schema_text("lead_event")), LAYOUT)
    assert Codec("lead_event")._hand_read is read_lead_event


@settings(max_examples=500, deadline=None)
@given(records)
def test_reads_what_fastavro_reads(record: dict[str, Any]) -> None:
    data = encode(SCHEMA, record)
    assert read_lead_event(data) == decode(SCHEMA, data) == record


@settings(max_examples=1500, deadline=None)
@given(records, st.data())
def test_damaged_records_are_left_to_fastavro_or_read_alike(
    record: dict[str, Any], draw: st.DataObject
) -> None:
    """Flipped, cut or appended bytes: the hand reader raises Unusual (the codec then asks
    fastavro, so the verdict is fastavro's), or returns what fastavro returns for those bytes."""
    data = bytearray(encode(SCHEMA, record))
    for _ in range(draw.draw(st.integers(1, 4))):
        action = draw.draw(st.sampled_from(["flip", "cut", "append"]))
        if action == "flip" and data:
            data[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
        elif action == "cut" and data:
            del data[draw.draw(st.integers(0, len(data) - 1)) :]
        else:
            data += draw.draw(st.binary(min_size=1, max_size=8))
    damaged = bytes(data)
    try:
        mine = read_lead_event(damaged)
    except Unusual:
        return
    assert mine == fastavro_or_error(damaged)


def test_every_single_byte_change_is_left_to_fastavro_or_read_alike() -> None:
    """Exhaustive over one small record: each position, each of the 256 values."""
    record = {
        "customerExternalId": "usr_1",
        "eventName": "signup",
        "clickId": "c1",
        "mode": "deferred",
        "timestamp": None,
        "customerName": "Ann",
        "customerEmail": None,
        "customerAvatar": "https://x",
        "metadata": {"utm_source": "g", "k": ""},
    }
    data = encode(SCHEMA, record)
    read = 0
    for position in range(len(data)):
        for value in range(256):
            changed = data[:position] + bytes([value]) + data[position + 1 :]
            try:
                mine = read_lead_event(changed)
            except Unusual:
                continue
            read += 1
            assert mine == fastavro_or_error(changed), (position, value)
    assert read > len(data)  # the reader did read changed records, not only refuse them


@given(st.binary(max_size=200))
def test_garbage_is_left_to_fastavro_or_read_alike(data: bytes) -> None:
    try:
        mine = read_lead_event(data)
    except Unusual:
        return
    assert mine == fastavro_or_error(data)


def test_unusual_encodings_go_to_fastavro_through_the_codec() -> None:
    record: dict[str, Any] = dict.fromkeys(
        ("clickId", "mode", "timestamp", "customerName", "customerEmail", "customerAvatar")
    )
    record |= {"customerExternalId": "c", "eventName": "e", "metadata": {"k": "v"}}
    plain = encode(SCHEMA, record)
    # The map as one block with its byte size (a negative count, as Avro allows): valid Avro that
    # the hand reader does not read; the codec's answer is still the record.
    sized = plain[:-6] + bytes([1, 8]) + plain[-5:]  # count -1 (zigzag 1), then 4 bytes of entries
    with pytest.raises(Unusual):
        read_lead_event(sized)
    assert decode(SCHEMA, sized) == record
    assert Codec("lead_event").decode(sized) == record
    with pytest.raises(Unusual):
        read_lead_event(plain + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        Codec("lead_event").decode(plain + b"\x00")


# Plausible field values, valid and not, so that records reach every rule of consumer/rules/validate.py.
def _values(*choices: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(choices) | st.none() | text


plausible = st.fixed_dictionaries(
    {
        "customerExternalId": st.sampled_from(["usr_1", "", "x" * 101, " c "]) | text,
        "eventName": st.sampled_from(["signup", "", "e" * 256]) | text,
        "clickId": _values("click-1", "", "c" * 101, "8a1e5f0c-3b1d-4c2e-9f6a-0d4b7e2c1a93"),
        "mode": _values("deferred", "later", ""),
        "timestamp": _values("2026-11-26T10:00:00Z", "2026-11-26T10:00:00.123+02:00", "2026-11-26", "x"),
        "customerName": _values("Ann", "n" * 101),
        "customerEmail": _values("ann@example.com", "a@b", "a" * 90 + "@example.com"),
        "customerAvatar": _values("https://cdn.example.com/a.png?s=1", "ftp://x/a", "https://"),
        "metadata": st.none() | st.dictionaries(text, text, max_size=5) | st.just({"k": "v" * 10_000}),
    }
)


@settings(max_examples=1500, deadline=None)
@given(plausible)
def test_the_pipeline_reads_and_judges_fields_as_fastavro_and_validate_do(record: dict[str, Any]) -> None:
    """parse() reads the plain layout's fields without a dict (read_fields + validate_fields):
    the same LeadEvent, or the same dead-letter reason and detail, as validate() of fastavro's dict."""
    data = encode(SCHEMA, record)
    codec = Codec("lead_event")
    assert codec.reads_fields
    assert parse(codec, SourceRecord("t", 0, 0, None, data)) == validate(decode(SCHEMA, data))
