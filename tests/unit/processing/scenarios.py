"""The steps of the property tests (tests/unit/processing/test_properties.py) and the hypothesis
strategies that generate them: records for three customers on two partitions, in batches, with
clock advances across every window."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.config import Settings
from consumer.reasons import DeadLetterReason
from consumer.rules.attribute import Windows
from tests.unit.processing.reference_model import (
    VALID_AVATARS,
    VALID_EMAILS,
    VALID_TIMESTAMPS,
    Attributed,
    Record,
    Unlinked,
)

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def _schema(name: str) -> Any:
    return parse_schema(json.loads((SCHEMAS / f"{name}.avsc").read_text()))


LEAD_EVENT = _schema("lead_event")
ATTRIBUTED = _schema("attributed_lead")
UNLINKED = _schema("unlinked_lead")
DEAD_LETTER = _schema("dead_letter")

WINDOWS = Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000)
OTHER_WINDOWS = (
    Windows(pending_ttl_ms=5_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000),  # deadlines coincide
    Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=2_500),  # dedupe shortest
)
LEASE_MS = 30_000
# Clock values are multiples of 250 ms: exact in binary, so clock() * 1000 loses no millisecond.
T0_MS = 1_000_000_000
ADVANCES_MS = (250, 1_000, 4_750, 5_000, 5_250, 9_750, 10_000, 10_250, 30_000, 60_000, 61_000)
INPUT_TOPIC = "leads.raw"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CODECS = OutputCodecs(Settings())
DECODER = Codec("lead_event")

CIDS = ("c1", "C1", "c1 ")
CLICKS = ("k1", "k2")
EVENT1_NAMES = ("signup", "trial")
EVENT2_NAMES = ("email_verified", "phone_verified")
# One defect each, so the expected reason does not depend on the order the rules are checked in.
BAD_MODES = ("Deferred", "direct", "")
MUTATIONS: tuple[tuple[str, Any], ...] = (
    ("customerExternalId", ""),
    ("customerExternalId", "c" * 101),
    ("eventName", ""),
    ("eventName", "e" * 256),
    ("clickId", "k" * 101),
    ("customerName", "n" * 101),
    ("customerEmail", "not-an-email"),
    ("customerAvatar", "ftp://img.example.com/a.png"),
    ("timestamp", "2024-01-01T00:00:00"),
    ("timestamp", "yesterday"),
    ("metadata", {"k": "v" * 10_000}),
)
GARBAGE = (b"", b"\xff\xff garbage", b"\x00")
# Dead letters decided from the input alone, not by the rules (and so not journaled).
INPUT_REASONS = frozenset(
    r.value for r in DeadLetterReason if r is not DeadLetterReason.DUPLICATE_ATTRIBUTION
)

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# --- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    partition: int
    key: bytes | None
    payload: Mapping[str, Any] | bytes  # bytes: not a LeadEvent at all


@dataclass(frozen=True, slots=True)
class Batch:
    records: tuple[Send, ...]
    # A sweeper claims due items while the batch is between its read and its write (a
    # compare-and-set conflict), and publishes and releases them after the batch.
    interleave_sweep: bool = False
    # Process it again, as after an aborted Kafka transaction: None = no abort, 0 = the re-poll
    # returns the same batch, k = it returns the first k records, then the rest in a second batch.
    replay: int | None = None


@dataclass(frozen=True, slots=True)
class Advance:
    ms: int
    sweep: bool = True
    crash: bool = False  # a sweeper claims due items, then dies before publishing and releasing
    # Land ms after the n-th next deadline or dedupe expiry instead: windows tested at their edges.
    to_deadline: int | None = None


Step = Batch | Advance


def encode_lead(record: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, LEAD_EVENT, dict(record))
    return buffer.getvalue()


def _blank(cid: str, event_name: str) -> dict[str, Any]:
    return {
        "customerExternalId": cid,
        "eventName": event_name,
        "clickId": None,
        "mode": None,
        "timestamp": None,
        "customerName": None,
        "customerEmail": None,
        "customerAvatar": None,
        "metadata": None,
    }


def _cores() -> list[dict[str, Any]]:
    """Every (kind, cid, eventName, clickId) the scenarios use, deferred Event 1s and Event 2s twice."""
    cores = []
    for cid in CIDS:
        for name in EVENT1_NAMES:
            for click in CLICKS:
                cores.append({**_blank(cid, name), "clickId": click})
                cores += [{**_blank(cid, name), "clickId": click, "mode": "deferred"}] * 2
        for name in EVENT2_NAMES:
            cores += [{**_blank(cid, name), "clickId": None}, {**_blank(cid, name), "clickId": ""}]
    return cores


# Customer details, as one draw: fewer draws keep generation cheaper than running the test.
_DETAILS: tuple[dict[str, Any], ...] = (
    {},
    {"timestamp": "2024-01-01T00:00:00Z", "customerName": "Ann", "customerEmail": "ann@example.com"},
    {"timestamp": "2024-01-01T02:00:00+02:00", "customerName": "Bob", "metadata": {"utm_source": "ads"}},
    {"timestamp": "2023-06-15T12:30:00.500+00:00", "customerAvatar": "https://img.example.com/a.png"},
    {"customerEmail": "bob.b+leads@mail.example.org", "customerAvatar": "http://cdn.example.net/b"},
    {"customerName": "Ann", "metadata": {}},
)
assert all(
    d.get("timestamp") in (None, *VALID_TIMESTAMPS)
    and d.get("customerEmail") in (None, *VALID_EMAILS)
    and d.get("customerAvatar") in (None, *VALID_AVATARS)
    for d in _DETAILS
)

# Strategies are built once: building them inside a composite costs more than running the test.
_CORE = st.sampled_from(_cores())
_DETAIL = st.sampled_from(_DETAILS)
_NO_CLICK = st.sampled_from((None, ""))  # "" is treated as absent
_DEFECT = st.sampled_from(("garbage", "truncated", "trailing", "no_click", "mode", "field"))
_BAD_MODE = st.sampled_from(BAD_MODES)
_GARBAGE = st.sampled_from(GARBAGE)
_MUTATION = st.sampled_from(MUTATIONS)
_PARTITION = st.integers(0, 1)
_CHOICE = st.integers(0, 9)
_ADVANCE = st.sampled_from(ADVANCES_MS)
_NEAR = st.sampled_from((-250, 0, 0, 250))
_QUARTER = st.integers(0, 3)
_KEY = st.sampled_from(("cid", "none", "other"))


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    return {**draw(_CORE), **draw(_DETAIL)}


VALID_RECORDS = valid_records()


@st.composite
def bad_payloads(draw: st.DrawFn) -> Mapping[str, Any] | bytes:
    how = draw(_DEFECT)
    if how == "garbage":
        return draw(_GARBAGE)
    base = draw(VALID_RECORDS)
    if how == "truncated":
        return encode_lead(base)[:-1]
    if how == "trailing":
        return encode_lead(base) + b"\x00"
    if how == "no_click":
        return {**base, "mode": "deferred", "clickId": draw(_NO_CLICK)}
    if how == "mode":
        return {**base, "mode": draw(_BAD_MODE)}
    name, value = draw(_MUTATION)
    return {**base, name: value}


BAD_PAYLOADS = bad_payloads()


@st.composite
def scenarios(draw: st.DrawFn, crashes: bool = False) -> list[Step]:
    steps: list[Step] = []
    sent: list[Send] = []
    for _ in range(draw(st.integers(1, 14))):
        if draw(st.integers(0, 2)) == 0:
            sweep = draw(st.booleans())
            crash = crashes and draw(st.booleans())
            if draw(st.booleans()):
                nth = draw(_QUARTER)
                steps.append(Advance(draw(_NEAR), sweep=sweep, crash=crash, to_deadline=nth))
            else:
                steps.append(Advance(draw(_ADVANCE), sweep=sweep, crash=crash))
            continue
        records: list[Send] = []
        for _ in range(draw(st.integers(1, 6))):
            choice = draw(_CHOICE)
            if choice == 0 and sent:
                records.append(sent[draw(st.integers(0, len(sent) - 1))])  # exact duplicate
                continue
            payload = draw(BAD_PAYLOADS) if choice == 1 else draw(VALID_RECORDS)
            cid = payload.get("customerExternalId", "c1") if isinstance(payload, Mapping) else "c1"
            # The key is recommended, not required: correctness must not depend on it.
            key = {"cid": str(cid).encode(), "none": None, "other": b"someone-else"}[draw(_KEY)]
            records.append(Send(draw(_PARTITION), key, payload))
            sent.append(records[-1])
        replay = draw(st.integers(0, len(records) - 1)) if draw(_QUARTER) == 0 else None
        steps.append(Batch(tuple(records), draw(_QUARTER) == 0, replay))
    return steps


# --- the harness: real pipeline and sweeper on one side, the model on the other -----------------


def at_ms(value: datetime) -> int:
    """A decoded timestamp-millis back to epoch milliseconds, without float rounding."""
    return (value - EPOCH) // timedelta(milliseconds=1)


def millis(value: datetime | None) -> int | None:
    return None if value is None else at_ms(value)


def decode_record(schema: Any, data: bytes) -> dict[str, Any]:
    buffer = io.BytesIO(data)
    record = schemaless_reader(buffer, schema)
    assert isinstance(record, dict)
    assert buffer.tell() == len(data), "trailing bytes after an output record"
    return record


def outcome_of(record: Record) -> str:
    if isinstance(record, Attributed):
        return f"attributed:{record.mode}"
    return f"{'unlinked' if isinstance(record, Unlinked) else 'dead_letter'}:{record.reason}"


def without_detected_at(records: Iterable[Unlinked]) -> Counter[Unlinked]:
    return Counter(replace(r, detected_at=0) for r in records)
