"""The committed-offset floor: input below offsets once confirmed committed is never processed again.

make chaos found the broker's committed offsets going backwards after a broker crash (no offset,
or an older one); the partitions started there and committed input was published a second time,
decided anew because its journal entries were gone. The pipeline now checks each batch's start
against the floor kept next to the state, and refuses before deciding or writing anything.
"""

from __future__ import annotations

import pytest

from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.config import Settings
from consumer.model import SourceRecord
from consumer.processing.batch import AlreadyCommitted, BatchProcessor
from consumer.rules.attribute import Windows
from consumer.state.memory import InMemoryStore
from harness.kafka import lead

TOPIC = "leads.raw"
WINDOWS = Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000)
CODEC = Codec("lead_event")


def _processor(store: InMemoryStore) -> BatchProcessor:
    return BatchProcessor(store, WINDOWS, CODEC, OutputCodecs(Settings()))


def _record(partition: int, offset: int, value: bytes) -> SourceRecord:
    return SourceRecord(TOPIC, partition, offset, b"k", value, 1_000)


def _signup(cid: str) -> bytes:
    return CODEC.encode(lead(cid, "signup", clickId="k1"))


def test_a_committed_batch_processed_again_is_refused_before_anything_is_written() -> None:
    store = InMemoryStore()
    processor = _processor(store)
    batch = [_record(0, 10, _signup("c1")), _record(0, 11, _signup("c2")), _record(1, 5, _signup("c3"))]
    result = processor.process(batch)
    attributed = [o for o in result.outputs if o.topic == "leads.attributed"]
    assert len(attributed) == 3  # three direct leads (and their states, for the changelog)
    changelog = {o.key: o.value for o in result.outputs if o.topic == "leads.state-changelog"}
    assert changelog == {cid.encode(): store.states[cid] for cid in ("c1", "c2", "c3")}
    store.note_committed(result.offsets)  # the run loop, after the commit was confirmed
    store.forget_journal(result.journal)
    states, round_trips = dict(store.states), store.round_trips

    with pytest.raises(AlreadyCommitted) as refused:
        processor.process(batch)  # the broker answered an older committed offset: same input again
    assert refused.value.floors == {(TOPIC, 0): 12, (TOPIC, 1): 6}
    assert store.states == states  # nothing decided, nothing written
    assert store.round_trips == round_trips + 1  # the one read that found the floor


def test_only_partitions_that_start_below_the_floor_are_reported() -> None:
    store = InMemoryStore()
    store.note_committed({(TOPIC, 0): 12, (TOPIC, 1): 6})
    processor = _processor(store)
    with pytest.raises(AlreadyCommitted) as refused:
        processor.process([_record(0, 12, _signup("c1")), _record(1, 4, _signup("c2"))])
    assert refused.value.floors == {(TOPIC, 1): 6}
    result = processor.process([_record(0, 12, _signup("c1")), _record(1, 6, _signup("c2"))])
    assert result.offsets == {(TOPIC, 0): 13, (TOPIC, 1): 7}  # at the floor: processed


def test_a_batch_of_only_bad_records_is_checked_too() -> None:
    # Dead letters need no state, but publishing them again is a duplicate all the same.
    store = InMemoryStore()
    store.note_committed({(TOPIC, 2): 100})
    with pytest.raises(AlreadyCommitted):
        _processor(store).process([_record(2, 98, b"\xff garbage"), _record(2, 99, b"")])


def test_the_floor_only_moves_forward() -> None:
    store = InMemoryStore()
    store.note_committed({(TOPIC, 0): 50})
    store.note_committed({(TOPIC, 0): 20})  # a slower instance noting an older commit late
    with pytest.raises(AlreadyCommitted) as refused:
        _processor(store).process([_record(0, 30, _signup("c1"))])
    assert refused.value.floors == {(TOPIC, 0): 50}
