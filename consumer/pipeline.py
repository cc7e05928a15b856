"""One batch through decode -> validate -> attribute -> state, producing the records to publish.

Replay safety (the part Kafka transactions cannot give us, because they do not cover Redis):
every decision is written to the customer's journal, keyed by the input record's
"partition:offset", in the same atomic script that changes the state. If the Kafka transaction
of a batch aborts after Redis changed, the replayed records find their journal entries and
re-emit the very same decisions instead of deciding again on state they already changed. The
journal entries are deleted once the batch's offsets are committed (see consumer/commit.py).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consumer.attribute import Windows, attribute
from consumer.avro import Codec
from consumer.model import Decision, Invalid, LeadEvent, SourceRecord
from consumer.publish import Output, OutputCodecs
from consumer.reasons import DeadLetterReason
from consumer.state.codec import decode_journal, decode_state, encode_journal
from consumer.state.store import StateStore, Write
from consumer.state.transition import plan_write
from consumer.validate import validate

# Compare-and-set conflicts need another instance writing the same customer in the same
# milliseconds; a handful of retries is plenty, and more would hide a bug.
MAX_CONFLICT_RETRIES = 20


class ConflictError(RuntimeError):
    """A customer's state kept changing under us; the batch is retried as a whole."""


@dataclass(slots=True)
class BatchResult:
    outputs: list[Output] = field(default_factory=list)
    decisions: list[Decision | Invalid] = field(default_factory=list)
    journal: dict[str, list[str]] = field(default_factory=dict)  # to forget once committed
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition
    write_conflicts: int = 0


def parse(decoder: Codec, source: SourceRecord) -> LeadEvent | Invalid:
    try:
        record = decoder.decode(source.value)
    except OSError:
        raise  # a schema registry outage is not the record's fault: let the run loop retry
    except Exception as error:
        return Invalid(DeadLetterReason.UNDECODABLE, f"not Avro of LeadEvent: {type(error).__name__}")
    if not isinstance(record, dict):
        return Invalid(DeadLetterReason.UNDECODABLE, "not an Avro record")
    return validate(record)


class BatchProcessor:
    def __init__(
        self,
        store: StateStore,
        windows: Windows,
        decoder: Codec,
        codecs: OutputCodecs,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._windows = windows
        self._decoder = decoder
        self._codecs = codecs
        self._settings_topic = codecs.settings.attributed_topic
        self._clock = clock

    def process(self, sources: Sequence[SourceRecord]) -> BatchResult:
        now_ms = int(self._clock() * 1000)
        parsed = [parse(self._decoder, source) for source in sources]
        names = [f"{source.partition}:{source.offset}" for source in sources]  # journal fields
        by_cid: dict[str, list[int]] = defaultdict(list)
        for index, item in enumerate(parsed):
            if isinstance(item, LeadEvent):
                by_cid[item.customer_external_id].append(index)

        decisions: dict[int, Decision] = {}
        records: dict[int, bytes] = {}  # attributed record bytes, encoded once, journaled and published
        result = BatchResult()
        todo = dict(by_cid)
        for _ in range(MAX_CONFLICT_RETRIES):
            if not todo:
                break
            fields = {cid: [names[i] for i in indexes] for cid, indexes in todo.items()}
            snapshots = self._store.read(fields)
            writes: list[Write] = []
            for cid, indexes in todo.items():
                snapshot = snapshots[cid]
                old = decode_state(snapshot.blob)
                state, journal = old, {}
                for i in indexes:
                    name = names[i]
                    if name in snapshot.journal:  # replay: decided before, re-emit the same
                        decisions[i], record = decode_journal(
                            snapshot.journal[name], self._codecs.decode_attributed
                        )
                        if record is not None:
                            records[i] = record
                        continue
                    event = parsed[i]
                    assert isinstance(event, LeadEvent)
                    state, decision = attribute(state, event, now_ms, self._windows)
                    record = None
                    if decision.attributed is not None:
                        record = records[i] = self._codecs.attributed_output(decision.attributed, None).value
                    decisions[i] = decision
                    journal[name] = encode_journal(decision, record)
                write = plan_write(cid, snapshot.blob, old, state, journal)
                if write is not None:
                    writes.append(write)
            applied = self._store.write(writes)
            failed = {w.cid for w, ok in zip(writes, applied, strict=True) if not ok}
            result.write_conflicts += len(failed)
            todo = {cid: todo[cid] for cid in failed}
        if todo:
            raise ConflictError(
                f"state of {len(todo)} customers kept changing during {MAX_CONFLICT_RETRIES} tries"
            )

        result.journal = {cid: [names[i] for i in indexes] for cid, indexes in by_cid.items()}
        for index, source in enumerate(sources):
            item = parsed[index]
            outcome: Decision | Invalid = decisions[index] if isinstance(item, LeadEvent) else item
            result.decisions.append(outcome)
            result.outputs.extend(self._outputs(source, outcome, now_ms, records.get(index)))
            result.offsets[(source.topic, source.partition)] = source.offset + 1
        return result

    def _outputs(
        self, source: SourceRecord, outcome: Decision | Invalid, now_ms: int, record: bytes | None
    ) -> list[Output]:
        if isinstance(outcome, Invalid):
            return [self._codecs.dead_letter_output(source, outcome.reason, outcome.detail, now_ms)]
        if outcome.dead_letter is not None:
            return [
                self._codecs.dead_letter_output(
                    source, outcome.dead_letter, outcome.detail, outcome.decided_at_ms
                )
            ]
        if outcome.attributed is not None:
            assert record is not None
            return [
                Output(
                    self._settings_topic,
                    outcome.attributed.customer_external_id.encode(),
                    record,
                    source.timestamp_ms,
                )
            ]
        return []
