"""Runs generated steps through the real BatchProcessor, ExpirySweeper and a store, and checks
every output against the reference model (tests/unit/processing/reference_model.py)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from consumer.avro.outputs import Output
from consumer.model import Decision, SourceRecord
from consumer.processing.batch import BatchProcessor, BatchResult
from consumer.processing.sweeper import Claimed, ExpirySweeper
from consumer.reasons import Mode, UnlinkedReason
from consumer.rules.attribute import Windows
from consumer.state.codec import decode_state
from tests.support.stores import InterleavingStore, audit
from tests.unit.processing.reference_model import (
    Attributed,
    DeadLetter,
    Input,
    Record,
    ReferenceModel,
    Unlinked,
    freeze_metadata,
)
from tests.unit.processing.scenarios import (
    ATTRIBUTED,
    CODECS,
    DEAD_LETTER,
    DECODER,
    INPUT_REASONS,
    INPUT_TOPIC,
    LEASE_MS,
    T0_MS,
    UNLINKED,
    WINDOWS,
    Advance,
    Batch,
    Send,
    Step,
    at_ms,
    decode_record,
    encode_lead,
    millis,
    outcome_of,
    without_detected_at,
)

CHANGELOG = CODECS.settings.changelog_topic


class Harness:
    def __init__(self, replay_delay_ms: int = 0, crashes: bool = False, windows: Windows = WINDOWS) -> None:
        self.now_ms = T0_MS
        self.replay_delay_ms = replay_delay_ms
        self.crashes = crashes
        self.windows = windows
        self.store = InterleavingStore(clock=self.clock)  # the shared clock: every stamp, every lease
        self.codecs = CODECS
        self.processor = BatchProcessor(self.store, windows, DECODER, self.codecs)
        self.sweeper = ExpirySweeper(self.store, LEASE_MS)
        self.newest = [-1, -1]  # per partition: newest arrival time committed (the watermark marks)
        self.model = ReferenceModel(windows.pending_ttl_ms, windows.orphan_grace_ms, windows.dedupe_ttl_ms)
        self.next_offset = [0, 0]
        self.sources: dict[tuple[int, int], SourceRecord] = {}
        self.reported: list[Unlinked] = []  # unlinked records committed by sweeps
        self.expected_reported: list[Unlinked] = []
        self.stored = Counter[str]()  # model-independent accounting for property (b)
        self.outcomes = Counter[str]()  # what the scenario exercised

    def clock(self) -> float:
        return self.now_ms / 1000

    def run(self, steps: Sequence[Step]) -> None:
        for step in steps:
            if isinstance(step, Batch):
                self.batch(step)
            else:
                self.advance(step)
        self.finish()

    # batches

    def sources_for(self, records: Sequence[Send]) -> tuple[list[SourceRecord], list[Input]]:
        sources, inputs = [], []
        for send in records:
            offset = self.next_offset[send.partition]
            self.next_offset[send.partition] += 1
            value = send.payload if isinstance(send.payload, bytes) else encode_lead(send.payload)
            # Records reach Kafka when they are processed here (the outage case, records processed
            # long after they arrived, is test_time.py's): arrival time = the clock.
            source = SourceRecord(INPUT_TOPIC, send.partition, offset, send.key, value, self.now_ms)
            self.sources[(send.partition, offset)] = source
            sources.append(source)
            inputs.append(Input(send.partition, offset, send.key, send.payload, self.now_ms))
        return sources, inputs

    def batch(self, step: Batch) -> None:
        sources, inputs = self.sources_for(step.records)
        expected = self.model.batch(self.now_ms, inputs)
        claimed: list[tuple[int, Claimed]] = []
        busy = {s.partition for s in sources}  # consumed, not committed: not caught up
        if step.interleave_sweep:
            self.store.before_next_write = lambda: claimed.append((self.now_ms, self.claim(busy)))
        result = self.processor.process(sources)
        self.check_changelog(result.outputs)
        for source in sources:  # committed
            self.newest[source.partition] = max(self.newest[source.partition], source.timestamp_ms or -1)
        if step.replay is not None:
            result = self.replay(sources, result, step.replay)
        self.store.forget_journal(result.journal)  # the batch's transaction committed
        if step.interleave_sweep:
            self.store.before_next_write = None
            self.sweep(claimed)
        actual = Counter(self.project(o) for o in result.outputs if o.topic != CHANGELOG)
        assert self.comparable(actual) == self.comparable(Counter(expected.records))
        duplicates = Counter(
            d.duplicate for d in result.decisions if isinstance(d, Decision) and d.duplicate is not None
        )
        assert duplicates == expected.duplicates
        self.account(step.records, result.decisions)
        self.outcomes.update(f"duplicate:{kind.value}" for kind in duplicates.elements())
        self.outcomes.update(outcome_of(r) for r in actual.elements())
        self.check_store()

    def replay(self, sources: list[SourceRecord], first: BatchResult, split: int) -> BatchResult:
        """Property (a): the same sources again, as after an aborted transaction, possibly later
        and possibly cut in two batches: the same outputs, byte for byte, and no change to state,
        journal, index or counters."""
        before = self.snapshot()
        self.now_ms += self.replay_delay_ms  # re-polled after the abort; no sweep in between
        parts = [sources[:split], sources[split:]] if split else [sources]
        results = [self.processor.process(part) for part in parts]
        assert self.snapshot() == before
        again = BatchResult(
            outputs=[o for r in results for o in r.outputs],
            decisions=[d for r in results for d in r.decisions],
            offsets={k: v for r in results for k, v in r.offsets.items()},
        )
        for r in results:
            for cid, fields in r.journal.items():
                again.journal.setdefault(cid, []).extend(fields)
        assert again.decisions == first.decisions
        assert again.offsets == first.offsets
        # The replay's transaction carries the states again (the first one's aborted): every
        # customer the first attempt changed, as the store holds it now.
        self.check_changelog(again.outputs)
        first_changes = {o.key for o in first.outputs if o.topic == CHANGELOG}
        assert first_changes <= {o.key for o in again.outputs if o.topic == CHANGELOG}
        first_outputs = [o for o in first.outputs if o.topic != CHANGELOG]
        again_outputs = [o for o in again.outputs if o.topic != CHANGELOG]
        assert [o.topic for o in again_outputs] == [o.topic for o in first_outputs]
        for a, b in zip(first_outputs, again_outputs, strict=True):
            assert a.key == b.key and a.value is not None and b.value is not None
            if self.replay_delay_ms == 0:
                assert a.value == b.value
            else:
                x, y = self.project(a), self.project(b)
                assert self.comparable(Counter([x])) == self.comparable(Counter([y]))
        return again

    def check_changelog(self, outputs: Sequence[Output]) -> None:
        """The state changelog records of a batch are the states it left in the store, keyed by
        cid (None where it deleted one): what a restore would load."""
        records = {o.key: o.value for o in outputs if o.topic == CHANGELOG}
        assert records == {key: self.store.states.get(key.decode()) for key in records if key is not None}

    def comparable(self, records: Counter[Record]) -> Counter[Record]:
        """Documented behaviour: a later replay re-stamps failedAt of invalid input (not journaled)."""
        if self.replay_delay_ms == 0:
            return records
        return Counter(
            {
                replace(r, failed_at=0) if isinstance(r, DeadLetter) and r.reason in INPUT_REASONS else r: n
                for r, n in records.items()
            }
        )

    def snapshot(self) -> tuple[object, ...]:
        store = self.store
        journals = {cid: dict(entries) for cid, entries in store.journals.items()}
        wakes = {second: list(cids) for second, cids in store.wakes.items()}
        return dict(store.states), journals, wakes, store.counts()

    def account(self, records: Sequence[Send], decisions: Sequence[object]) -> None:
        for send, decision in zip(records, decisions, strict=True):
            if not isinstance(decision, Decision):
                continue
            assert isinstance(send.payload, Mapping)
            verification = not send.payload.get("clickId")
            if decision.attributed is not None and decision.attributed.mode == Mode.DEFERRED:
                self.stored["pending_joined" if verification else "held_joined"] += 1
            elif decision.attributed is None and decision.dead_letter is None and decision.duplicate is None:
                self.stored["held" if verification else "pending"] += 1

    def project(self, output: Output) -> Record:
        """Decode an output with fastavro and check what the model does not track (keys, bytes)."""
        settings_ = self.codecs.settings
        if output.topic == settings_.dead_letter_topic:
            r = decode_record(DEAD_LETTER, output.value or b"")
            source = self.sources[(r["sourcePartition"], r["sourceOffset"])]
            assert (r["sourceTopic"], r["key"], r["value"]) == (INPUT_TOPIC, source.key, source.value)
            assert output.key == source.key
            return DeadLetter(
                r["reason"], r["sourcePartition"], r["sourceOffset"], r["key"], at_ms(r["failedAt"])
            )
        if output.topic == settings_.attributed_topic:
            r = decode_record(ATTRIBUTED, output.value or b"")
            assert output.key == r["customerExternalId"].encode()
            return Attributed(
                lead_id=r["leadId"],
                cid=r["customerExternalId"],
                click_id=r["clickId"],
                event_name=r["eventName"],
                mode=r["mode"],
                verification_event_name=r["verificationEventName"],
                customer_name=r["customerName"],
                customer_email=r["customerEmail"],
                customer_avatar=r["customerAvatar"],
                metadata=freeze_metadata(r["metadata"]),
                event_timestamp=millis(r["eventTimestamp"]),
                verified_timestamp=millis(r["verifiedTimestamp"]),
                attributed_at=at_ms(r["attributedAt"]),
            )
        assert output.topic == settings_.unlinked_topic
        r = decode_record(UNLINKED, output.value or b"")
        assert output.key == r["customerExternalId"].encode()
        return Unlinked(
            lead_id=r["leadId"],
            cid=r["customerExternalId"],
            reason=r["reason"],
            event_name=r["eventName"],
            click_id=r["clickId"],
            customer_name=r["customerName"],
            customer_email=r["customerEmail"],
            customer_avatar=r["customerAvatar"],
            metadata=freeze_metadata(r["metadata"]),
            event_timestamp=millis(r["eventTimestamp"]),
            detected_at=at_ms(r["detectedAt"]),
        )

    # time and sweeps

    def advance(self, step: Advance) -> None:
        upcoming = sorted({d for d in self.model.deadlines() if d > self.now_ms})
        if step.to_deadline is None or not upcoming:
            self.now_ms += step.ms if step.to_deadline is None else 250
        else:
            target = upcoming[min(step.to_deadline, len(upcoming) - 1)] + step.ms
            self.now_ms = max(self.now_ms, target)
        if step.crash:
            self.claim()  # claimed, then the process died: nothing published or released
        if step.sweep:
            self.sweep()
        self.check_store()

    def sweep(self, already_claimed: Sequence[tuple[int, Claimed]] = ()) -> None:
        """What the run loop does: claim, publish, release, until a round claims nothing."""
        reported: list[Unlinked] = []
        expected: list[Unlinked] = []
        for claimed_at_ms, claimed in already_claimed:
            self.publish_and_release(claimed, reported)
            if claimed.watermark_ms is not None:  # None: a partition had no mark yet, nothing was due
                expected += self.model.sweep(claimed.watermark_ms, claimed_at_ms)
        for _ in range(50):
            claimed = self.claim()
            if not claimed.leads:
                break
            self.publish_and_release(claimed, reported)
        else:
            pytest.fail("the sweeper keeps claiming items")
        assert claimed.watermark_ms == self.now_ms  # every partition caught up: the clock
        expected += self.model.sweep(self.now_ms, self.now_ms)
        if not self.crashes:
            assert Counter(reported) == Counter(expected)
        self.reported += reported
        self.outcomes.update(outcome_of(r) for r in reported)
        self.expected_reported += expected

    def claim(self, busy: set[int] | frozenset[int] = frozenset()) -> Claimed:
        """The run loop's timer: mark the partitions (those with records in a batch not yet
        committed are behind, the others caught up), then let the sweeper claim what is due."""
        marks = {(INPUT_TOPIC, p): (self.newest[p], p not in busy) for p in (0, 1)}
        self.store.mark_partitions(marks, 0)
        return self.sweeper.claim_due([(INPUT_TOPIC, 0), (INPUT_TOPIC, 1)])

    def publish_and_release(self, claimed: Claimed, reported: list[Unlinked]) -> None:
        for lead in claimed.leads:
            record = self.project(self.codecs.unlinked_output(lead))
            assert isinstance(record, Unlinked)
            reported.append(record)
        self.sweeper.release(claimed)

    def check_store(self) -> None:
        """Property (c): counters and index agree with the states they describe."""
        found = audit(self.store.states.items(), self.store.wake_entries())
        assert found.unindexed == [], "stored states the sweeper would never visit (or empty ones)"
        assert self.store.counts() == (found.pending, found.held)
        if not self.crashes:  # a crashed claim keeps its items until the lease runs out
            assert (found.pending, found.held) == self.model.outstanding()

    def finish(self) -> None:
        """Property (b): past every deadline and lease, everything was reported exactly once."""
        self.now_ms += max(self.windows.pending_ttl_ms, self.windows.orphan_grace_ms) + LEASE_MS + 1_000
        self.sweep()
        self.check_store()
        assert self.store.counts() == (0, 0)
        assert self.model.outstanding() == (0, 0)
        assert all(not decode_state(blob).items() for blob in self.store.states.values())
        self.now_ms += LEASE_MS + 1_000
        assert not self.claim().leads
        self.now_ms += self.windows.dedupe_ttl_ms + 1_000  # every dedupe mark lapses too
        for _ in range(10):
            assert not self.claim().leads
        assert self.store.states == {}
        assert self.store.wakes == {}

        by_reason = Counter(r.reason for r in self.reported)
        expired = self.stored["pending"] - self.stored["pending_joined"]
        orphans = self.stored["held"] - self.stored["held_joined"]
        assert by_reason[UnlinkedReason.VERIFICATION_EXPIRED.value] == expired
        assert by_reason[UnlinkedReason.NO_MATCHING_EVENT1.value] == orphans
        assert without_detected_at(self.reported) == without_detected_at(self.expected_reported)
