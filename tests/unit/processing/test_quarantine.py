"""An unreadable state is moved aside, counted once, and its customer's events dead-lettered, while
every other customer flows; a replay of the batch re-emits the same decisions (from the journal)."""

from __future__ import annotations

from consumer import metrics
from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.config import Settings
from consumer.model import Decision, SourceRecord
from consumer.processing.batch import BatchProcessor
from consumer.processing.sweeper import ExpirySweeper
from consumer.reasons import DeadLetterReason
from consumer.rules.attribute import Windows
from consumer.state.codec import frame_journal, unframe_journal
from consumer.state.customer import CustomerState, PendingLead
from consumer.state.memory import InMemoryStore
from harness.kafka import lead
from tests.unit.processing.test_sweeper import LEASE_MS, T0, Clock, store_state, sweep

CODEC = Codec("lead_event")
WINDOWS = Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000)
CORRUPT = b"\x04\xff\xff\xffalice@example.com"  # the version byte of the binary encoding, then junk


def _quarantined(stage: str) -> float:
    return metrics.REGISTRY.get_sample_value("leads_state_quarantined_total", {"stage": stage}) or 0.0


def _record(offset: int, cid: str, **fields: str) -> SourceRecord:
    return SourceRecord("leads.raw", 0, offset, cid.encode(), CODEC.encode(lead(cid, "signup", **fields)), T0)


def test_the_batch_moves_an_unreadable_state_aside_and_dead_letters_its_events() -> None:
    store = InMemoryStore(clock=lambda: T0 / 1000)
    store.states["bad"] = CORRUPT
    processor = BatchProcessor(store, WINDOWS, CODEC, OutputCodecs(Settings()))
    before = _quarantined("batch")
    sources = [
        _record(0, "bad", clickId="k1", mode="deferred"),
        _record(1, "good", clickId="k2"),
        _record(2, "bad", clickId="k1"),
    ]
    first = processor.process(sources)
    assert [(type(d).__name__, getattr(d, "dead_letter", None)) for d in first.decisions] == [
        ("Decision", DeadLetterReason.CORRUPT_STATE),
        ("Decision", None),
        ("Decision", DeadLetterReason.CORRUPT_STATE),
    ]
    good = first.decisions[1]
    assert isinstance(good, Decision) and good.attributed is not None  # the other customer flows
    topics = [o.topic for o in first.outputs]
    assert topics.count("leads.dead-letter") == 2 and topics.count("leads.attributed") == 1
    assert store.quarantined == {"bad": [CORRUPT]}  # kept for an operator ...
    assert "bad" not in store.states  # ... and the state deleted
    assert first.changes["bad"] is None  # a tombstone on the state changelog
    assert _quarantined("batch") == before + 1
    detail = next(d for d in first.decisions if isinstance(d, Decision) and d.dead_letter).detail
    assert "alice" not in detail and "moved aside" in detail

    # The batch is replayed (its Kafka transaction aborted): the journal gives the same decisions,
    # although the state is gone now.
    again = BatchProcessor(store, WINDOWS, CODEC, OutputCodecs(Settings())).process(sources)
    assert [getattr(d, "dead_letter", None) for d in again.decisions] == [
        getattr(d, "dead_letter", None) for d in first.decisions
    ]
    assert _quarantined("batch") == before + 1

    # The customer's next event starts from no state.
    later = processor.process([_record(3, "bad", clickId="k3")])
    decision = later.decisions[0]
    assert isinstance(decision, Decision) and decision.attributed is not None


def test_a_blob_kept_already_is_not_counted_again() -> None:
    store = InMemoryStore(clock=lambda: T0 / 1000)
    store.states["bad"] = CORRUPT
    store.quarantined["bad"] = [CORRUPT]  # an earlier attempt kept it and died before its write
    before = _quarantined("batch")
    result = BatchProcessor(store, WINDOWS, CODEC, OutputCodecs(Settings())).process([_record(0, "bad")])
    assert getattr(result.decisions[0], "dead_letter", None) == DeadLetterReason.CORRUPT_STATE
    assert store.quarantined == {"bad": [CORRUPT]} and "bad" not in store.states
    assert _quarantined("batch") == before


def test_the_sweeper_moves_an_unreadable_state_aside_and_sweeps_the_others() -> None:
    clock = Clock()
    store = InMemoryStore(clock)
    sweeper = ExpirySweeper(store, LEASE_MS)
    due = PendingLead("click-1", "signup", None, None, None, None, None, T0 - 1000, T0 + 100)
    store_state(store, "bad", CustomerState(pending=(due,)))
    store_state(store, "good", CustomerState(pending=(due,)))
    store.states["bad"] = CORRUPT  # damaged after it was written: its wake entry is there
    before = _quarantined("sweeper")
    clock.ms = T0 + 1000
    claimed = sweep(sweeper, store)
    assert [lead.customer_external_id for lead in claimed.leads] == ["good"]
    assert store.quarantined == {"bad": [CORRUPT]} and "bad" not in store.states
    assert _quarantined("sweeper") == before + 1
    assert all(cid != "bad" for _, cid in store.wake_entries())


def test_an_unreadable_journal_entry_dead_letters_its_record_and_the_batch_goes_on() -> None:
    """A replay finds the journal entry of a decision it made before, but the entry is damaged:
    that record is dead-lettered as corrupt_state (not decided again on the state it already
    changed, and not an error that would fail the batch for ever); the others replay as before."""
    store = InMemoryStore(clock=lambda: T0 / 1000)
    sources = [_record(0, "c1", clickId="k1"), _record(1, "c2", clickId="k2")]
    first = BatchProcessor(store, WINDOWS, CODEC, OutputCodecs(Settings())).process(sources)
    assert [o.topic for o in first.outputs].count("leads.attributed") == 2
    [(field_name, framed)] = store.journals[("leads.raw", 0)].items()
    entries = list(unframe_journal(framed))
    damaged = frame_journal(entries[0][0], b"\x07not a journal entry") + frame_journal(*entries[1])
    store.journals[("leads.raw", 0)][field_name] = damaged
    before = _quarantined("batch")

    again = BatchProcessor(store, WINDOWS, CODEC, OutputCodecs(Settings())).process(sources)  # a replay
    assert [getattr(d, "dead_letter", None) for d in again.decisions] == [
        DeadLetterReason.CORRUPT_STATE,
        None,
    ]
    assert [o.topic for o in again.outputs if o.topic != "leads.state-changelog"] == [
        "leads.dead-letter",
        "leads.attributed",
    ]
    replayed = [o for o in again.outputs if o.topic == "leads.attributed"]
    assert replayed[0].value == next(o.value for o in first.outputs if o.key == b"c2")  # byte for byte
    assert _quarantined("batch") == before + 1
    detail = next(d for d in again.decisions if isinstance(d, Decision) and d.dead_letter).detail
    assert "journal entry" in detail and "c1" not in detail
