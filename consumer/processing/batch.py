"""One batch through decode -> validate -> attribute -> state, producing the records to publish.

In three steps, so that the run loop can overlap batches (consumer/processing/runner.py): prepare (decode and
validate: no state), start (read the states, decide, send the write without waiting for Redis's
reply) and finish (read the reply, decide again the customers another instance changed meanwhile,
build the outputs). process() runs the three in a row.

Replay safety (the part Kafka transactions cannot give us, because they do not cover Redis):
every decision is written to the journal of its input partition, keyed by the input record's
offset, in the same atomic script that changes the state. If the Kafka transaction of a batch
aborts after Redis changed, the replayed records find their journal entries and re-emit the very
same decisions instead of deciding again on state they already changed. The journal fields of a
batch are deleted once its offsets are committed (see consumer/delivery/committer.py), and a reader that
starts past a field's last offset drops it as committed. Input below a confirmed commit is never
processed again (AlreadyCommitted): its journal entries may be gone, so it would be decided anew.
"""

from __future__ import annotations

import itertools
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from consumer import metrics
from consumer.avro.codec import Codec
from consumer.avro.outputs import Output, OutputCodecs
from consumer.model import Decision, Invalid, LeadEvent, SourceRecord
from consumer.processing.quarantine import DETAIL, readable
from consumer.processing.records import parse
from consumer.reasons import DeadLetterReason
from consumer.rules.attribute import Windows, attribute
from consumer.state.codec import (
    MAX_STATE_BYTES,
    CorruptState,
    decode_journal,
    encode_journal,
    frame_journal,
    too_large,
)
from consumer.state.customer import PartitionKey, Write
from consumer.state.keys import journal_field
from consumer.state.store import Reading, StateStore, nothing_applied
from consumer.state.transition import plan_write

STATE_LIMIT_DETAIL: Final = (
    f"the customer's state would exceed {MAX_STATE_BYTES} bytes with this event; the event was not stored"
)

# Compare-and-set conflicts need another instance writing the same customer in the same
# milliseconds; a handful of retries is plenty, and more would hide a bug.
MAX_CONFLICT_RETRIES: Final = 20
JOURNAL_DETAIL: Final = (
    "the journal entry of this record's earlier decision could not be read ({}); not decided again"
)


class ConflictError(Exception):
    """A customer's state kept changing under us; the batch is retried as a whole."""


class AlreadyCommitted(Exception):
    """The batch starts below offsets once confirmed committed (the committed-offset floor,
    consumer/state/store.py): the broker's committed offsets went backwards. Nothing was decided
    or written; the caller seeks the partitions to ``floors`` instead."""

    def __init__(self, floors: dict[PartitionKey, int]) -> None:
        super().__init__(f"batch starts below the committed offsets of {len(floors)} partitions")
        self.floors = floors


@dataclass(slots=True)
class BatchResult:
    outputs: list[Output] = field(default_factory=list)
    decisions: list[Decision | Invalid] = field(default_factory=list)
    journal: dict[PartitionKey, list[str]] = field(default_factory=dict)  # fields to forget once committed
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition
    write_conflicts: int = 0
    # The customers' states as this batch left them (None: deleted), for the state changelog: they
    # go in the batch's transaction with its outputs and offsets (consumer/state/changelog.py).
    changes: dict[str, bytes | None] = field(default_factory=dict)


class Started:
    """A batch decided, its first write sent (``reply`` waits for the outcome): BatchProcessor.start."""

    def __init__(
        self,
        sources: Sequence[SourceRecord],
        parsed: list[LeadEvent | Invalid],
        todo: dict[str, list[int]],
        first: dict[PartitionKey, int],
        last: dict[PartitionKey, int],
        token: str,
        now_ms: int,
        lead_partitions: set[PartitionKey],
    ) -> None:
        self.sources = sources
        self.parsed = parsed
        self.todo = todo  # customers not written yet -> indexes of their records, in order
        self.first = first
        self.last = last
        self.lead_partitions = lead_partitions  # todo_partitions() of the first round
        self.token = token
        self.now_ms = now_ms
        self.decisions: dict[int, Decision] = {}
        self.records: dict[int, bytes] = {}  # attributed record bytes, by index
        self.result = BatchResult()
        self.writes: list[Write] = []  # the last round's, matching what reply returns
        self.changes: dict[str, bytes | None] = {}  # see BatchResult.changes
        self.reply: Callable[[], list[bool]] = nothing_applied

    def todo_partitions(self) -> set[PartitionKey]:
        """The input partitions of the records of the customers still to write."""
        sources = self.sources
        return {(sources[i].topic, sources[i].partition) for ix in self.todo.values() for i in ix}


class BatchProcessor:
    def __init__(
        self,
        store: StateStore,
        windows: Windows,
        decoder: Codec,
        codecs: OutputCodecs,
    ) -> None:
        self._store = store
        self._windows = windows
        self._decoder = decoder
        self._codecs = codecs
        # Journal fields written by this process: unique across processes and batches.
        self._token = os.urandom(4).hex()
        self._batches = itertools.count()

    def process(self, sources: Sequence[SourceRecord]) -> BatchResult:
        batch = self.prepare(sources)
        self.start(batch)
        return self.finish(batch)

    def prepare(self, sources: Sequence[SourceRecord]) -> Started:
        """Decode and validate, grouped by customer: no state is read yet."""
        parsed = [parse(self._decoder, source) for source in sources]
        by_cid: dict[str, list[int]] = defaultdict(list)
        first: dict[PartitionKey, int] = {}  # offsets before these are committed
        last: dict[PartitionKey, int] = {}
        with_leads: set[PartitionKey] = set()
        # consume() returns records in runs of one partition: a partition's key is built and
        # looked up once per run, not per record (a tuple and three hashes per record; with the
        # first round's partitions read here too, prepare went 9.2 -> 7.7 us per event).
        key: PartitionKey = ("", -1)
        last_offset = 0
        leads_in_run = False
        for index, source in enumerate(sources):
            if index == 0 or source.partition != key[1] or source.topic != key[0]:
                if index:
                    last[key] = last_offset  # the run ends; a later run of it moves it on
                key = (source.topic, source.partition)
                first.setdefault(key, source.offset)
                leads_in_run = False
            last_offset = source.offset
            item = parsed[index]
            if isinstance(item, LeadEvent):
                by_cid[item.customer_external_id].append(index)
                if not leads_in_run:
                    with_leads.add(key)
                    leads_in_run = True
        if sources:
            last[key] = last_offset
        token = f"{self._token}{next(self._batches)}"
        return Started(sources, parsed, dict(by_cid), first, last, token, 0, with_leads)

    def start(self, batch: Started) -> None:
        """Read the states and journal, decide, and send the first write without waiting for its
        reply (finish reads it). Nothing else may read the states of these customers before
        finish: the run loop calls finish first (consumer/processing/runner.py). Once per prepared batch."""
        # The first read covers every partition of the batch, with or without lead events: its
        # committed-offset floor is checked before anything is decided or written.
        reading = self._store.read(batch.todo.keys(), batch.first)
        behind = {p: floor for p, floor in reading.committed.items() if floor > batch.first[p]}
        if behind:
            raise AlreadyCommitted(behind)
        writes, fields = self._round(batch, reading, 0, batch.lead_partitions)
        # Sent for every batch, with or without writes: its partitions' progress goes up with its
        # decisions, and the write's guards refuse a Redis that lost state, or a zombie's write.
        progress = {partition: offset + 1 for partition, offset in batch.last.items()}
        batch.reply = self._store.send_write(writes, fields, progress)
        batch.writes = writes

    def finish(self, batch: Started) -> BatchResult:
        """The reply of the first write; customers whose state changed since it was read (another
        instance wrote it) are read, decided and written again; then the records to publish."""
        applied = batch.reply()
        for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
            for write, ok in zip(batch.writes, applied, strict=True):
                if ok:
                    batch.changes[write.cid] = write.new_blob
            failed = {w.cid for w, ok in zip(batch.writes, applied, strict=True) if not ok}
            batch.result.write_conflicts += len(failed)
            batch.todo = {cid: batch.todo[cid] for cid in failed}
            if not batch.todo or attempt == MAX_CONFLICT_RETRIES:
                break
            partitions = batch.todo_partitions()
            reading = self._store.read(batch.todo.keys(), {p: batch.first[p] for p in partitions})
            writes, fields = self._round(batch, reading, attempt, partitions)
            applied = self._store.write(writes, fields)
            batch.writes = writes
        if batch.todo:
            raise ConflictError(
                f"state of {len(batch.todo)} customers kept changing during {MAX_CONFLICT_RETRIES} tries"
            )
        result = batch.result
        sources = batch.sources
        for index, source in enumerate(sources):
            item = batch.parsed[index]
            outcome: Decision | Invalid = batch.decisions[index] if isinstance(item, LeadEvent) else item
            result.decisions.append(outcome)
            output = self._output(source, outcome, batch.now_ms, batch.records.get(index))
            if output is not None:
                result.outputs.append(output)
        result.offsets = {partition: offset + 1 for partition, offset in batch.last.items()}
        result.changes = batch.changes
        changelog = self._codecs.changelog_output
        result.outputs.extend(changelog(cid, blob) for cid, blob in batch.changes.items())
        return result

    def _round(
        self, batch: Started, reading: Reading, attempt: int, partitions: set[PartitionKey]
    ) -> tuple[list[Write], dict[PartitionKey, str]]:
        """Decide every customer still to do on ``reading``: the writes, and the journal field
        each of their ``partitions``' entries go to (recorded for forgetting once committed)."""
        # Every round decides at the clock of its own read: a customer read again after a conflict
        # is stamped with the time it was decided at, not the first round's.
        batch.now_ms = reading.now_ms
        fields = {p: journal_field(batch.last[p], f"{batch.token}.{attempt}") for p in partitions}
        writes: list[Write] = []
        for cid, indexes in batch.todo.items():
            write = self._decide(
                cid,
                indexes,
                batch.sources,
                batch.parsed,
                reading,
                batch.now_ms,
                batch.decisions,
                batch.records,
                batch.changes,
            )
            if write is not None:
                writes.append(write)
        for partition, name in fields.items():
            batch.result.journal.setdefault(partition, []).append(name)
        return writes, fields

    def _decide(
        self,
        cid: str,
        indexes: list[int],
        sources: Sequence[SourceRecord],
        parsed: list[LeadEvent | Invalid],
        reading: Reading,
        now_ms: int,
        decisions: dict[int, Decision],
        records: dict[int, bytes],
        changes: dict[str, bytes | None],
    ) -> Write | None:
        """One customer's records of the batch, in order: fills ``decisions`` and ``records`` (the
        attributed record bytes, encoded once, journaled and published) and plans the write. A
        customer whose records were all decided before (replayed from the journal) has no write:
        its state as read goes to ``changes``, since the transaction that carried it to the state
        changelog is the one that did not commit."""
        blob = reading.states.get(cid)
        old = readable(self._store, cid, blob, "batch")
        if isinstance(old, CorruptState):
            assert blob is not None
            return self._set_aside(cid, blob, old, indexes, sources, reading, now_ms, decisions, records)
        state = old
        journal: dict[PartitionKey, list[bytes]] = {}
        replayed = False
        for i in indexes:
            source = sources[i]
            entry = reading.journal.get((source.topic, source.partition, source.offset))
            if entry is not None:  # replay: decided before, re-emit the same
                replayed = True
                self._replay(i, entry, decisions, records, now_ms)
                continue
            event = parsed[i]
            assert isinstance(event, LeadEvent)
            # When the record reached Kafka: every window runs on it (contract rule 8). A record
            # without a timestamp (a client too old to set one) is taken as arriving now.
            at_ms = source.timestamp_ms if source.timestamp_ms is not None else now_ms
            before = state
            state, decision = attribute(state, event, at_ms, now_ms, self._windows)
            if state is not before and too_large(state):  # its changelog record would not fit
                state, decision = (
                    before,
                    Decision(
                        dead_letter=DeadLetterReason.STATE_LIMIT,
                        detail=STATE_LIMIT_DETAIL,
                        decided_at_ms=now_ms,
                    ),
                )
            record = None
            if decision.attributed is not None:
                record = records[i] = self._codecs.attributed_value(decision.attributed)
            decisions[i] = decision
            journal.setdefault((source.topic, source.partition), []).append(
                frame_journal(source.offset, encode_journal(decision, record))
            )
        write = plan_write(cid, blob, old, state, {p: b"".join(e) for p, e in journal.items()})
        if write is None and replayed:
            changes[cid] = blob  # replayed: see above (None: a tombstone, harmless if there was nothing)
        return write

    def _replay(
        self, i: int, entry: bytes, decisions: dict[int, Decision], records: dict[int, bytes], now_ms: int
    ) -> None:
        """Record ``i`` was decided before (its journal ``entry``): the same decision and record
        bytes. An entry that cannot be read (Redis damaged, or edited by hand) dead-letters the
        record as corrupt_state: deciding it again on the state it already changed could publish
        it twice, and failing the batch would stop its partition for ever."""
        try:
            decisions[i], record = decode_journal(entry, self._codecs.decode_attributed)
        except Exception as error:  # any damage to the entry is the same case
            metrics.STATE_QUARANTINED.labels(stage="batch").inc()
            detail = JOURNAL_DETAIL.format(type(error).__name__)
            decisions[i] = Decision(
                dead_letter=DeadLetterReason.CORRUPT_STATE, detail=detail, decided_at_ms=now_ms
            )
            return
        if record is not None:
            records[i] = record

    def _set_aside(
        self,
        cid: str,
        blob: bytes,
        error: CorruptState,
        indexes: list[int],
        sources: Sequence[SourceRecord],
        reading: Reading,
        now_ms: int,
        decisions: dict[int, Decision],
        records: dict[int, bytes],
    ) -> Write:
        """A customer whose state cannot be read (kept aside by readable()): its events of this
        batch are dead-lettered, journaled as any decision, and the state deleted in the same write."""
        journal: dict[PartitionKey, list[bytes]] = {}
        for i in indexes:
            source = sources[i]
            entry = reading.journal.get((source.topic, source.partition, source.offset))
            if entry is not None:  # decided before the state went bad: re-emit the same
                self._replay(i, entry, decisions, records, now_ms)
                continue
            decision = Decision(
                dead_letter=DeadLetterReason.CORRUPT_STATE, detail=DETAIL.format(error), decided_at_ms=now_ms
            )
            decisions[i] = decision
            journal.setdefault((source.topic, source.partition), []).append(
                frame_journal(source.offset, encode_journal(decision, None))
            )
        return Write(cid, blob, None, journal={p: b"".join(e) for p, e in journal.items()})

    def _output(
        self, source: SourceRecord, outcome: Decision | Invalid, now_ms: int, record: bytes | None
    ) -> Output | None:
        if isinstance(outcome, Invalid):
            return self._codecs.dead_letter_output(source, outcome.reason, outcome.detail, now_ms)
        if outcome.dead_letter is not None:
            return self._codecs.dead_letter_output(
                source, outcome.dead_letter, outcome.detail, outcome.decided_at_ms
            )
        if outcome.attributed is not None:
            assert record is not None
            return self._codecs.attributed_output(outcome.attributed, record, source.timestamp_ms)
        return None
