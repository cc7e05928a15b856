"""The bounded walk before fastavro (consumer/avro/bounds.py): it passes every record fastavro
reads within the bounds, and stops bombs before a single item is read, in milliseconds."""

from __future__ import annotations

import io
import json
import random
import struct
import time
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from consumer.avro.bounds import MAX_DEPTH, MAX_ITEMS, Unbounded, check, program
from consumer.avro.codec import Codec
from consumer.avro.registry import SchemaRegistry
from consumer.avro.schemas import load_schema, schema_text
from consumer.avro.varint import uvarint, zigzag
from consumer.model import Invalid, SourceRecord
from consumer.processing.records import parse
from consumer.reasons import DeadLetterReason
from harness.kafka import lead
from tests.support.standin_registry import StandinRegistry


def _long(n: int) -> bytes:
    """An Avro long: zigzag, then a base-128 varint."""
    return uvarint(zigzag(n))


def _encode(schema: Any, record: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(schema), record)
    return buffer.getvalue()


NULLS = {
    "type": "record",
    "name": "Nulls",
    "fields": [{"name": "a", "type": {"type": "array", "items": "null"}}],
}
NODE = {
    "type": "record",
    "name": "Node",
    "fields": [{"name": "v", "type": "int"}, {"name": "next", "type": ["null", "Node"]}],
}
EVERYTHING = {
    "type": "record",
    "name": "All",
    "namespace": "t",
    "fields": [
        {"name": "b", "type": "boolean"},
        {"name": "i", "type": "int"},
        {"name": "l", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"},
        {"name": "x", "type": {"type": "fixed", "name": "F", "size": 3}},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "m", "type": {"type": "map", "values": {"type": "array", "items": "F"}}},
        {"name": "u", "type": ["null", "E", "string"]},
        {"name": "z", "type": {"type": "array", "items": {"type": "record", "name": "Z", "fields": []}}},
    ],
}


def _everything(rng: random.Random) -> dict[str, Any]:
    return {
        "b": rng.random() < 0.5,
        "i": rng.randint(-(2**31), 2**31 - 1),
        "l": rng.randint(-(2**63), 2**63 - 1),
        "f": rng.random(),
        "d": rng.random(),
        "s": "".join(rng.choice("aé😀") for _ in range(rng.randint(0, 20))),
        "y": rng.randbytes(rng.randint(0, 20)),
        "x": rng.randbytes(3),
        "e": rng.choice("AB"),
        "m": {
            f"k{i}": [rng.randbytes(3) for _ in range(rng.randint(0, 3))] for i in range(rng.randint(0, 5))
        },
        "u": rng.choice([None, "A", "text"]),
        "z": [{} for _ in range(rng.randint(0, 50))],
    }


def test_every_record_within_the_bounds_passes() -> None:
    rng = random.Random(20261204)
    walk = program(parse_schema(EVERYTHING))
    for _ in range(300):
        check(walk, _encode(EVERYTHING, _everything(rng)))
    lead_walk = program(load_schema("lead_event"))
    codec = Codec("lead_event")
    for i in range(300):
        metadata = {f"utm_{j}": "v" * rng.randint(0, 30) for j in range(rng.randint(0, 20))} or None
        check(lead_walk, codec.encode(lead(f"c{i}", "signup", clickId="k", metadata=metadata)))


def test_blocks_written_with_their_byte_size_are_walked() -> None:
    # Avro's other block form: a negative count, then the block's size in bytes.
    schema = {"type": "array", "items": "string"}
    body = _long(-2) + _long(4) + _long(1) + b"a" + _long(1) + b"b" + _long(0)
    check(program(parse_schema(schema)), body)


def test_a_bomb_of_zero_byte_items_is_stopped_before_an_item_is_read() -> None:
    walk = program(parse_schema(NULLS))
    check(walk, _long(MAX_ITEMS) + _long(0))  # at the bound: fine
    started = time.perf_counter()
    with pytest.raises(Unbounded, match="more than 100000 array items"):
        check(walk, _long(2**62) + _long(0))
    with pytest.raises(Unbounded, match="more than 100000 array items"):  # many small blocks
        check(walk, (_long(60_000) * 2) + _long(0))
    assert time.perf_counter() - started < 0.1


def test_a_block_count_beyond_the_bytes_left_is_refused_before_reading() -> None:
    walk = program(parse_schema({"type": "map", "values": "string"}))
    with pytest.raises(Unbounded, match="a block claims 1000 items, more than the 3 bytes left"):
        check(walk, _long(1000) + b"\x02a\x00")


def test_nesting_deeper_than_the_bound_is_refused() -> None:
    walk = program(parse_schema(NODE))

    def chain(levels: int) -> bytes:
        return (_long(7) + _long(1)) * (levels - 1) + _long(7) + _long(0)

    check(walk, chain(MAX_DEPTH // 2 - 1))  # a record and a union per level
    with pytest.raises(Unbounded, match=f"nested deeper than {MAX_DEPTH} levels"):
        check(walk, chain(500_000))


def _framed(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


def test_registry_records_with_hostile_writer_schemas_are_undecodable_with_a_detail() -> None:
    standin = StandinRegistry()
    try:
        codec = Codec("lead_event", SchemaRegistry(standin.url))
        writer = json.loads(schema_text("lead_event"))
        writer["fields"].append({"name": "extra", "type": {"type": "array", "items": "null"}, "default": []})
        schema_id = standin.add(json.dumps(writer))
        fine = Codec("lead_event").encode(lead("c1", "signup", clickId="k"))
        ok = parse(codec, SourceRecord("t", 0, 0, None, _framed(schema_id, fine + _long(3) + _long(0)), 1))
        assert not isinstance(ok, Invalid)
        started = time.perf_counter()
        bomb = parse(
            codec, SourceRecord("t", 0, 1, None, _framed(schema_id, fine + _long(2**62) + _long(0)), 1)
        )
        assert time.perf_counter() - started < 0.1
        assert isinstance(bomb, Invalid) and bomb.reason is DeadLetterReason.UNDECODABLE
        assert bomb.detail == "not decoded: more than 100000 array items and map entries in one record"
    finally:
        standin.close()


def test_a_plain_record_whose_map_claims_more_entries_than_its_bytes_is_undecodable() -> None:
    body = Codec("lead_event").encode(lead("c1", "signup", clickId="k", metadata={"utm_source": "x"}))
    # The map's block count is the byte after its union branch: claim 2^27 entries instead of 1.
    at = body.rindex(_long(1) + _long(len("utm_source")) + b"utm_source")
    hostile = body[:at] + _long(2**27) + body[at + 1 :]
    result = parse(Codec("lead_event"), SourceRecord("t", 0, 0, None, hostile, 1))
    assert isinstance(result, Invalid) and result.reason is DeadLetterReason.UNDECODABLE
    assert result.detail.startswith("not decoded: a block claims 134217728 items")
