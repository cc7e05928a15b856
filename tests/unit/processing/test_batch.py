"""BatchProcessor.prepare: the per-partition bounds and the partitions with lead events, read once per
run of one partition's records, are what a record-by-record walk gives, however the partitions
interleave (consume() mostly returns runs, but not always)."""

from __future__ import annotations

import random

from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.config import Settings
from consumer.model import LeadEvent, SourceRecord
from consumer.processing.batch import BatchProcessor
from consumer.rules.attribute import Windows
from consumer.state.customer import PartitionKey
from consumer.state.memory import InMemoryStore
from harness.kafka import lead

CODEC = Codec("lead_event")
WINDOWS = Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000)
VALID = CODEC.encode(lead("c1", "signup", clickId="k1"))
BAD = b"\x00not avro"


def _batch(rng: random.Random) -> list[SourceRecord]:
    partitions = [(topic, p) for topic in ("leads.raw", "leads.raw.b") for p in range(rng.randint(1, 3))]
    offsets = {key: rng.randrange(0, 1_000) for key in partitions}
    records = []
    key = rng.choice(partitions)
    for _ in range(rng.randint(0, 40)):
        if rng.random() < 0.3:  # a new run, sometimes of a partition seen earlier in the batch
            key = rng.choice(partitions)
        offsets[key] += rng.randint(1, 3)
        value = VALID if rng.random() < 0.6 else BAD
        records.append(SourceRecord(key[0], key[1], offsets[key], b"k", value, 1_000))
    return records


def test_bounds_and_lead_partitions_match_a_record_by_record_walk() -> None:
    processor = BatchProcessor(InMemoryStore(clock=lambda: 1e9), WINDOWS, CODEC, OutputCodecs(Settings()))
    rng = random.Random(20261127)
    for _ in range(500):
        sources = _batch(rng)
        started = processor.prepare(sources)
        first: dict[PartitionKey, int] = {}
        last: dict[PartitionKey, int] = {}
        for source in sources:
            first.setdefault((source.topic, source.partition), source.offset)
            last[(source.topic, source.partition)] = source.offset
        assert (started.first, started.last) == (first, last)
        assert started.lead_partitions == started.todo_partitions()
        leads = [i for i, item in enumerate(started.parsed) if isinstance(item, LeadEvent)]
        assert sorted(i for ix in started.todo.values() for i in ix) == leads
