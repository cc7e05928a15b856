"""A fuzz campaign through decode, validate and the batch path (contract rule 6): random bytes,
mutated LeadEvents, Avro with out-of-range values, extreme field lengths and non-UTF-8 text, and
registry-framed records with unknown ids and hostile writer schemas (served over HTTP by the
stand-in registry). Every input ends as an output or a dead letter, none raises, none takes longer
than BOUND_S; unreadable state blobs raise CorruptState only. The campaign is seeded, so a failure
repeats; it prints how many inputs it tried and its slowest case (pytest -s)."""

from __future__ import annotations

import io
import json
import random
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.avro.registry import SchemaRegistry
from consumer.avro.schemas import schema_text
from consumer.avro.varint import uvarint, zigzag
from consumer.config import Settings
from consumer.model import Decision, Invalid, SourceRecord
from consumer.processing.batch import BatchProcessor
from consumer.processing.records import parse
from consumer.rules.attribute import Windows
from consumer.state.codec import CorruptState, decode_state, encode_state
from consumer.state.customer import CustomerState, HeldVerification, PendingLead
from consumer.state.memory import InMemoryStore
from harness.kafka import lead
from tests.support.standin_registry import StandinRegistry

BOUND_S = 0.25  # per input; a decoding bomb takes hours, a plain record microseconds
SEED = 20261204
WINDOWS = Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000)
PLAIN = Codec("lead_event")

# The LeadEvent layout with every string as bytes: writes non-UTF-8 and extreme lengths that the
# real schema's writer would refuse.
_BYTES_LAYOUT = json.loads(schema_text("lead_event").replace('"string"', '"bytes"'))
_BYTES_SCHEMA = parse_schema(_BYTES_LAYOUT)


def _avro(schema: Any, record: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def _long(n: int) -> bytes:
    """An Avro long: zigzag, then a base-128 varint."""
    return uvarint(zigzag(n))


def _text(rng: random.Random) -> bytes:
    """A field value: ordinary, empty, extreme in length, non-UTF-8, or control characters."""
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice([b"c-1", b"signup", b"deferred", b"2026-12-04T10:00:00Z", b"a@example.com"])
    if kind == 1:
        return b""
    if kind == 2:
        return b"x" * rng.choice([99, 100, 101, 255, 256, 2048, 2049, 10_001, 200_000])
    if kind == 3:
        return rng.randbytes(rng.randint(1, 40))  # mostly not UTF-8
    if kind == 4:
        return "é😀\u202e\x00\ufeff".encode() * rng.randint(1, 30)
    return rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])  # invalid UTF-8


def _out_of_range(rng: random.Random) -> bytes:
    """Avro of the LeadEvent layout with values the rules must refuse."""
    record: dict[str, Any] = {
        "customerExternalId": _text(rng),
        "eventName": _text(rng),
        **{
            name: rng.choice([None, _text(rng)])
            for name in ("clickId", "mode", "timestamp", "customerName", "customerEmail", "customerAvatar")
        },
        "metadata": rng.choice([None, {}, {_text(rng).hex(): _text(rng) for _ in range(rng.randint(1, 60))}]),
    }
    return _avro(_BYTES_SCHEMA, record)


def _valid(rng: random.Random) -> bytes:
    cid = f"c{rng.randrange(50)}"
    fields: dict[str, Any] = {"clickId": rng.choice([None, f"k{rng.randrange(5)}"])}
    if rng.random() < 0.4:
        fields["mode"] = "deferred"
    if rng.random() < 0.3:
        fields["metadata"] = {"utm_source": "google", "utm_campaign": "x" * rng.randrange(200)}
    return PLAIN.encode(lead(cid, rng.choice(["signup", "demo", "email_verified"]), **fields))


def _mutated(rng: random.Random) -> bytes:
    data = bytearray(_valid(rng))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            del data[at : at + rng.randint(1, 8)]
        elif op == 3:
            data = data[:at]
        else:  # a varint claiming a huge count or length
            data[at:at] = _long(rng.choice([2**27, 2**31, 2**62, -(2**62), -1]))
    return bytes(data)


def _random(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice([0, 1, 2, 5, 20, 200, 5000]))


# Writer schemas a hostile or careless producer registers: each is LeadEvent plus one field.
_HOSTILE_FIELDS: list[Any] = [
    {"type": "array", "items": "null"},
    {"type": "map", "values": "null"},
    {"type": "array", "items": {"type": "record", "name": "Empty", "fields": []}},
    {"type": "array", "items": {"type": "fixed", "name": "Zero", "size": 0}},
    {"type": "array", "items": {"type": "array", "items": "null"}},
    [
        "null",
        {
            "type": "record",
            "name": "Tree",
            "fields": [{"name": "kids", "type": {"type": "array", "items": "Tree"}}],
        },
    ],
    {"type": "enum", "name": "One", "symbols": ["A"]},
    "double",
]


def _registry_records(rng: random.Random, ids: list[int]) -> Callable[[], bytes]:
    body = PLAIN.encode(lead("r-1", "signup", clickId="k"))

    def one() -> bytes:
        schema_id = rng.choice([*ids, 424242, 0])  # mostly known, some unknown ids
        tail = rng.choice(
            [
                _long(0),
                _long(rng.choice([1, 3, 2**20, 2**62])) + _long(0),
                _long(1) * rng.choice([10, 1000, 200_000]) + _long(0),
                rng.randbytes(rng.randint(0, 12)),
            ]
        )
        return struct.pack(">bI", 0, schema_id) + rng.choice([body, body[: rng.randrange(len(body))]]) + tail

    return one


def _timed(
    call: Callable[..., Any], args: tuple[Any, ...], slowest: list[tuple[float, str]], label: str
) -> Any:
    started = time.perf_counter()
    result = call(*args)
    took = time.perf_counter() - started
    assert took < BOUND_S, f"{label} took {took:.3f} s"
    if took > slowest[0][0]:
        slowest[0] = (took, label)
    return result


def _campaign(rng: random.Random, ids: list[int]) -> Iterator[tuple[str, bytes]]:
    registry_record = _registry_records(rng, ids)
    kinds: list[tuple[str, Callable[[], bytes]]] = [
        ("random", lambda: _random(rng)),
        ("mutated", lambda: _mutated(rng)),
        ("out-of-range", lambda: _out_of_range(rng)),
        ("valid", lambda: _valid(rng)),
    ]
    for i in range(12_000):
        name, make = kinds[i % len(kinds)]
        yield name, make()
    for _ in range(3_000):
        yield "registry", registry_record()


@pytest.fixture(scope="module")
def registry() -> Iterator[tuple[StandinRegistry, list[int]]]:
    standin = StandinRegistry()
    ids = []
    for extra in _HOSTILE_FIELDS:
        writer = json.loads(schema_text("lead_event"))
        writer["fields"].append({"name": "extra", "type": extra})
        ids.append(standin.add(json.dumps(writer)))
    yield standin, ids
    standin.close()


def test_every_input_ends_as_an_output_or_a_dead_letter_within_the_bound(
    registry: tuple[StandinRegistry, list[int]],
) -> None:
    standin, ids = registry
    rng = random.Random(SEED)
    framed = Codec("lead_event", SchemaRegistry(standin.url))
    codecs = OutputCodecs(Settings())
    plain_batches = BatchProcessor(InMemoryStore(clock=lambda: 1.8e9), WINDOWS, PLAIN, codecs)
    framed_batches = BatchProcessor(InMemoryStore(clock=lambda: 1.8e9), WINDOWS, framed, codecs)
    slowest = [(0.0, "")]
    tried = 0
    batch: list[SourceRecord] = []
    registry_batch: list[SourceRecord] = []
    for offset, (kind, value) in enumerate(_campaign(rng, ids)):
        tried += 1
        source = SourceRecord(
            "leads.raw", offset % 3, offset, rng.choice([None, b"k"]), value, 1_800_000_000_000
        )
        codec = framed if kind == "registry" else PLAIN
        item = _timed(parse, (codec, source), slowest, f"{kind} record #{offset} ({len(value)} bytes)")
        assert isinstance(item, Invalid) or item.customer_external_id
        (registry_batch if kind == "registry" else batch).append(source)
        for processor, pending in ((plain_batches, batch), (framed_batches, registry_batch)):
            if len(pending) == 500:
                _check_batch(processor, pending, slowest)
                pending.clear()
    for processor, pending in ((plain_batches, batch), (framed_batches, registry_batch)):
        _check_batch(processor, pending, slowest)
    print(f"\nfuzz campaign: {tried} inputs, slowest {slowest[0][1]}: {slowest[0][0] * 1000:.2f} ms")
    assert tried == 15_000


def _check_batch(
    processor: BatchProcessor, sources: list[SourceRecord], slowest: list[tuple[float, str]]
) -> None:
    """The batch path: one decision per record, a dead letter for each refused one."""
    started = time.perf_counter()
    result = processor.process(sources)
    per_record = (time.perf_counter() - started) / max(len(sources), 1)
    assert per_record < BOUND_S
    assert len(result.decisions) == len(sources)
    refused = sum(
        1
        for d in result.decisions
        if isinstance(d, Invalid) or (isinstance(d, Decision) and d.dead_letter is not None)
    )
    dead = [o for o in result.outputs if o.topic == "leads.dead-letter"]
    assert len(dead) == refused
    assert all(o.value is not None and len(o.value) < 1_000_000 for o in result.outputs)


def test_mutated_state_blobs_are_read_or_refused_as_corrupt_state() -> None:
    rng = random.Random(SEED)
    item = ("n", "e@example.com", None, {"utm_source": "g", "custom": "v"}, None, 1_000, 5_000, 0)
    state = CustomerState(
        pending=(PendingLead("2b4f0c9e-1c1a-4a57-9a1e-3f0f5b3c9d11", "signup", *item),),
        held=(HeldVerification("email_verified", *item),),
        done={"demo": 9_000},
        verified_until_ms=7_000,
    )
    good = encode_state(state)
    assert decode_state(good) == state
    json_state = b"\x03" + json.dumps([[], [], {}, 0]).encode()
    tried = 0
    for _ in range(20_000):
        blob = bytearray(rng.choice([good, json_state]))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(blob) + 1)
            op = rng.randrange(4)
            if op == 0 and blob:
                blob[min(at, len(blob) - 1)] = rng.randrange(256)
            elif op == 1:
                blob[at:at] = rng.randbytes(rng.randint(1, 6))
            elif op == 2:
                del blob[at : at + rng.randint(1, 6)]
            else:
                blob[at:at] = _long(rng.choice([2**30, 2**62]))
        tried += 1
        try:
            decoded = decode_state(bytes(blob))
        except CorruptState as error:
            assert "example" not in str(error)
        else:
            assert isinstance(decoded, CustomerState)
    assert tried == 20_000
