"""A customer's state never grows past MAX_STATE_BYTES: its changelog record would not fit the
topic, and its batch would fail for ever. The event that would pass it is dead-lettered; the
customer's earlier leads and every other customer are decided as always."""

from __future__ import annotations

from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.config import Settings
from consumer.model import Decision, SourceRecord
from consumer.processing.batch import STATE_LIMIT_DETAIL, BatchProcessor
from consumer.reasons import DeadLetterReason
from consumer.rules.attribute import Windows
from consumer.state.codec import MAX_STATE_BYTES
from consumer.state.memory import InMemoryStore
from harness.kafka import lead

CODEC = Codec("lead_event")
WINDOWS = Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=86_400_000)
T0 = 1_800_000_000_000


def test_the_event_that_would_grow_a_state_past_the_limit_is_dead_lettered() -> None:
    store = InMemoryStore(clock=lambda: T0 / 1000)
    processor = BatchProcessor(store, WINDOWS, CODEC, OutputCodecs(Settings()))
    decisions: list[Decision] = []
    offset = 0
    for _ in range(5):  # 2,500 direct leads of distinct 255-character names: a dedupe mark each
        sources = []
        for _ in range(500):
            name = f"{offset:06d}".ljust(255, "e")
            value = CODEC.encode(lead("hoarder", name, clickId=f"k{offset}"))
            sources.append(SourceRecord("leads.raw", 0, offset, b"hoarder", value, T0))
            offset += 1
        value = CODEC.encode(lead(f"other-{offset}", "signup", clickId="k"))
        sources.append(SourceRecord("leads.raw", 0, offset, b"other", value, T0))
        offset += 1
        result = processor.process(sources)
        decisions += [d for d in result.decisions if isinstance(d, Decision)]
        others = [d for d in result.decisions[-1:] if isinstance(d, Decision)]
        assert others and others[0].attributed is not None  # every other customer flows
        assert len(store.states["hoarder"]) <= MAX_STATE_BYTES
        assert all(o.value is None or len(o.value) < 1_000_000 for o in result.outputs)
    attributed = [
        d for d in decisions if d.attributed is not None and d.attributed.customer_external_id == "hoarder"
    ]
    limited = [d for d in decisions if d.dead_letter is DeadLetterReason.STATE_LIMIT]
    assert 1_800 < len(attributed) < 2_000  # ~262 bytes a mark: the limit falls after ~1,900 of them
    assert len(attributed) + len(limited) == 2_500
    assert {d.detail for d in limited} == {STATE_LIMIT_DETAIL}
