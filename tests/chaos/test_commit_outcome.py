"""The run loop after a commit whose outcome is unknown (OffsetKeeper.settle), with fakes.

The fault runs reach this path (a broker frozen mid-commit), but cannot choose which way the
coordinator decided; here both ways are forced: a batch the coordinator did commit must not be
replayed (it would be published twice), one it did not must be replayed from its first offsets.
And the committer itself must not stay wedged after commit_transaction timed out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.avro.outputs import Output
from consumer.delivery import committer as commit
from consumer.delivery import offsets as offsets_module
from consumer.delivery.committer import CommitFailed, TransactionalCommitter
from consumer.model import SourceRecord
from consumer.processing.batch import AlreadyCommitted, BatchResult, Started
from consumer.processing.runner import Runner
from consumer.state.customer import PartitionKey
from tests.support.runner import fake_runner

TOPIC = "leads.raw"


class FakeConsumer:
    def __init__(self, committed: dict[int, int]) -> None:
        self.committed_offsets = committed
        self.seeks: list[tuple[int, int]] = []
        self.committed_calls = 0
        self.ends: dict[int, int] = {}
        self.answers: list[dict[int, int]] = []

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.committed_calls += 1
        if self.answers:  # scripted answers first, one per call
            answer = self.answers.pop(0)
            return [
                TopicPartition(tp.topic, tp.partition, answer.get(tp.partition, -1001)) for tp in partitions
            ]
        return [
            TopicPartition(tp.topic, tp.partition, self.committed_offsets.get(tp.partition, -1001))
            for tp in partitions
        ]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        return 0, self.ends.get(tp.partition, 1_000_000)


class UnknownOutcomeCommitter:
    """commit_transaction timed out and the abort was refused: nobody knows what happened."""

    def __init__(self) -> None:
        self.recovered = 0
        self.commits: list[tuple[int, dict[tuple[str, int], int]]] = []  # (records, offsets) asked

    def commit_batch(
        self, outputs: Sequence[Output], offsets: dict[tuple[str, int], int], consumer: Any
    ) -> None:
        self.commits.append((len(outputs), offsets))
        raise CommitFailed("transaction aborted: _TIMED_OUT", maybe_committed=True, code=-185)

    def publish(self, outputs: Sequence[Output]) -> None:
        return None

    def recover(self) -> None:
        self.recovered += 1

    def close(self) -> None:
        return None


class FakeProcessor:
    def __init__(self, result: BatchResult) -> None:
        self.result = result
        self.refuse: dict[PartitionKey, int] = {}

    def process(self, sources: Sequence[SourceRecord]) -> BatchResult:
        batch = self.prepare(sources)
        self.start(batch)
        return self.finish(batch)

    def prepare(self, sources: Sequence[SourceRecord]) -> Started:
        return Started(sources, [], {}, {}, {}, "token", 0, set())

    def start(self, batch: Started) -> None:
        if self.refuse:
            raise AlreadyCommitted(self.refuse)

    def finish(self, batch: Started) -> BatchResult:
        return self.result


class FakeStore:
    def __init__(self) -> None:
        self.forgotten: list[dict[PartitionKey, list[str]]] = []
        self.floor: list[dict[PartitionKey, int]] = []
        self.calls: list[str] = []
        self.kept_floor: dict[PartitionKey, int] = {}  # the floor as stored, for floors()

    def note_committed(self, offsets: dict[PartitionKey, int]) -> None:
        self.calls.append("note_committed")
        self.floor.append(offsets)

    def forget_journal(self, entries: dict[PartitionKey, list[str]]) -> None:
        self.calls.append("forget_journal")
        self.forgotten.append(entries)

    def forget_committed(self, partitions: list[PartitionKey]) -> None:
        self.calls.append(f"forget_committed {sorted(partitions)}")

    def flush_queued(self) -> None:
        self.calls.append("flush_queued")

    def identify_topic(self, topic: str, topic_id: str) -> None:
        self.calls.append(f"identify_topic {topic} {topic_id}")

    def raise_floor(self, offsets: dict[PartitionKey, int]) -> None:
        self.calls.append("raise_floor")
        self.floor.append(offsets)

    def floors(self, partitions: list[PartitionKey]) -> dict[PartitionKey, int]:
        return {p: self.kept_floor[p] for p in partitions if p in self.kept_floor}


# Every run-loop test runs both ways: each batch committed while the next is processed (the
# default), and one batch at a time (LEADS_OVERLAP_COMMITS=false).
overlapping = pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "alone"])


def _handle(runner: Runner, sources: list[SourceRecord]) -> None:
    """One batch through the run loop, committed before returning (as when the input goes quiet)."""
    runner._handle_batch(sources)
    runner.finish_in_flight()


def _runner(
    consumer: FakeConsumer,
    store: FakeStore,
    result: BatchResult,
    processor: FakeProcessor | None = None,
    overlap: bool = True,
) -> tuple[Runner, UnknownOutcomeCommitter]:
    committer = UnknownOutcomeCommitter()
    runner = fake_runner(consumer, committer, store, processor or FakeProcessor(result), overlap)
    return runner, committer


def _batch() -> tuple[list[SourceRecord], BatchResult]:
    sources = [SourceRecord(TOPIC, p, o, b"k", b"v") for p, o in ((0, 10), (0, 11), (1, 5))]
    result = BatchResult(
        journal={(TOPIC, 0): ["11:a1b2.0"], (TOPIC, 1): ["5:a1b2.0"]}, offsets={(TOPIC, 0): 12, (TOPIC, 1): 6}
    )
    return sources, result


@overlapping
def test_a_batch_the_coordinator_committed_is_not_replayed(overlap: bool) -> None:
    sources, result = _batch()
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    runner, committer = _runner(consumer, store, result, overlap=overlap)
    _handle(runner, sources)
    assert committer.recovered == 1  # the new producer fenced the old one before asking
    assert consumer.seeks == []  # no replay: it would publish the batch a second time
    assert store.forgotten == [result.journal]  # committed, so its journal entries may go
    assert store.floor == [result.offsets]  # ... once the floor covers them
    assert store.calls == ["note_committed", "forget_journal", "flush_queued"]  # sent at once


@overlapping
def test_a_batch_the_coordinator_did_not_commit_is_replayed(overlap: bool) -> None:
    sources, result = _batch()
    consumer, store = FakeConsumer({0: 10, 1: 5}), FakeStore()
    runner, _ = _runner(consumer, store, result, overlap=overlap)
    _handle(runner, sources)
    assert sorted(consumer.seeks) == [(0, 10), (1, 5)]
    assert store.forgotten == []  # the replay needs them
    assert store.floor == []


@overlapping
def test_an_answer_below_the_batch_start_is_asked_again(
    overlap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A coordinator reloaded after a broker crash answered no offset, then an older one: below
    # where this batch started, so certainly not the truth. Replaying on it would publish the
    # batch twice if it had been committed; asking again gets the real answer.
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    sources, result = _batch()
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    consumer.answers = [{}, {0: 3, 1: 6}]  # then the real answer: the batch was committed
    runner, _ = _runner(consumer, store, result, overlap=overlap)
    _handle(runner, sources)
    assert consumer.committed_calls == 3
    assert consumer.seeks == []  # not replayed
    assert store.floor == [result.offsets]


@overlapping
def test_a_stale_answer_that_persists_ends_in_a_replay_from_the_batch_start(
    overlap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(offsets_module, "STALE_ANSWER_LIMIT_S", 0.05)
    sources, result = _batch()
    consumer, store = FakeConsumer({0: 3}), FakeStore()  # partition 0 stays behind the batch start
    runner, _ = _runner(consumer, store, result, overlap=overlap)
    _handle(runner, sources)
    assert consumer.committed_calls > 1
    # Seeks to the answer for partition 0 (the floor check of the next read brings it back up to
    # 10, see test_a_batch_below_the_committed_floor...), and to its batch start for partition 1.
    assert sorted(consumer.seeks) == [(0, 3), (1, 5)]
    assert store.floor == []


@overlapping
def test_stopping_before_the_outcome_is_known_neither_replays_nor_forgets(overlap: bool) -> None:
    sources, result = _batch()
    consumer, store = FakeConsumer({}), FakeStore()

    def unreachable(partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        raise CommitFailed("broker away", code=-185)

    consumer.committed = unreachable  # type: ignore[method-assign]
    runner, _ = _runner(consumer, store, result, overlap=overlap)
    runner.stop_requested = 1.0
    _handle(runner, sources)
    assert consumer.seeks == [] and store.forgotten == []


class WedgedProducer:
    """librdkafka after commit_transaction timed out: abort and begin are refused with _CONFLICT
    until commit_transaction is called again (seen against a frozen broker; see docs/chaos.md)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.committing = False

    def init_transactions(self, timeout: float) -> None:
        self.log.append("init")

    def begin_transaction(self) -> None:
        if self.committing:
            raise KafkaException(KafkaError(KafkaError._CONFLICT, "commit in progress", retriable=True))
        self.log.append("begin")

    def produce(self, *args: Any, **kwargs: Any) -> None:
        return None

    def send_offsets_to_transaction(self, *args: Any) -> None:
        return None

    def commit_transaction(self, timeout: float) -> None:
        if len([e for e in self.log if e == "init"]) == 1:  # the first producer: the broker is frozen
            self.committing = True
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "flush timed out", retriable=True))
        self.log.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        if self.committing:
            raise KafkaException(KafkaError(KafkaError._CONFLICT, "commit in progress", retriable=True))
        self.log.append("abort")

    def flush(self, timeout: float) -> int:
        return 0


class FakeGroupConsumer:
    def consumer_group_metadata(self) -> object:
        return object()


def test_a_timed_out_commit_does_not_wedge_the_committer() -> None:
    log: list[str] = []
    producers: list[WedgedProducer] = []

    def make() -> Any:
        producers.append(WedgedProducer(log))
        return producers[-1]

    committer = TransactionalCommitter(make)
    outputs = [Output("leads.attributed", b"k", b"v")]
    try:
        committer.commit_batch(outputs, {(TOPIC, 0): 12}, FakeGroupConsumer())
        raise AssertionError("the commit should have failed")
    except CommitFailed as failure:
        assert failure.maybe_committed  # the caller must read the committed offsets, not replay blindly
    # The next batch gets a new producer (same transactional.id: it fences the wedged one).
    committer.commit_batch(outputs, {(TOPIC, 0): 12}, FakeGroupConsumer())
    assert len(producers) == 2
    assert log == ["init", "begin", "init", "begin", "commit"]


class FencedProducer(WedgedProducer):
    """A producer fenced by a newer instance: every call raises a fatal error."""

    def flush(self, timeout: float) -> int:
        error = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
        raise KafkaException(error)


def test_closing_a_fenced_producer_does_not_fail_the_stop() -> None:
    # Found by `make chaos` (broker scenario): a SIGTERM after the instance was fenced exited 1.
    committer = TransactionalCommitter(lambda: cast(Any, FencedProducer([])))
    committer.close()  # no exception: the exit code of a requested stop stays 0


class StuckProducer(WedgedProducer):
    """send_offsets_to_transaction never returns, whatever its timeout (seen after a broker
    restart, make chaos: librdkafka 2.16 blocked in it for minutes with an 8 s timeout)."""

    def __init__(self, log: list[str], release: threading.Event) -> None:
        super().__init__(log)
        self.release = release

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.log.append("send_offsets (stuck)")
        self.release.wait()


def test_a_transactional_call_that_never_returns_abandons_its_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit, "TRANSACTION_TIMEOUT_S", 0.1)
    monkeypatch.setattr(commit, "CALL_GRACE_S", 0.3)
    log: list[str] = []
    release = threading.Event()
    producers: list[Any] = []

    def make() -> Any:
        producers.append(StuckProducer(log, release) if not producers else WedgedProducer(log))
        return producers[-1]

    committer = TransactionalCommitter(make)
    outputs = [Output("leads.attributed", b"k", b"v")]
    started = time.monotonic()
    with pytest.raises(CommitFailed) as failure:
        committer.commit_batch(outputs, {(TOPIC, 0): 12}, FakeGroupConsumer())
    assert time.monotonic() - started < 5  # bounded, not forever
    assert not failure.value.maybe_committed  # stuck before Step 4: replay the batch
    assert failure.value.code == KafkaError._TIMED_OUT  # the run loop reports the broker as away
    # The next batch runs on a new producer (same transactional.id: it fences the stuck one).
    committer.commit_batch(outputs, {(TOPIC, 0): 12}, FakeGroupConsumer())
    assert len(producers) == 2
    assert log == ["init", "begin", "send_offsets (stuck)", "init", "begin", "commit"]
    release.set()


@overlapping
def test_a_batch_below_the_committed_floor_moves_its_partitions_up_to_the_floor(overlap: bool) -> None:
    # Seen in make chaos (broker scenario): right after a broker restart the coordinator answered
    # committed() with no offset (-1001) or an older one; starting there replayed committed input.
    sources, result = _batch()
    processor = FakeProcessor(result)
    processor.refuse = {(TOPIC, 0): 40}  # partition 0 was committed up to 40; partition 1 is fine
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    runner, committer = _runner(consumer, store, result, processor, overlap=overlap)
    _handle(runner, sources)
    assert sorted(consumer.seeks) == [(0, 40), (1, 5)]  # up to the floor; the other from its start
    assert committer.commits == [(0, {(TOPIC, 0): 40})]  # the floor committed again, no records
    assert store.calls == []  # nothing noted or forgotten: the batch was not processed


@overlapping
def test_a_floor_past_the_end_of_its_partition_is_dropped_not_obeyed(overlap: bool) -> None:
    # The topic was deleted and created again: its offsets start over, the floor is from before.
    sources, result = _batch()
    processor = FakeProcessor(result)
    processor.refuse = {(TOPIC, 0): 40, (TOPIC, 1): 900}
    consumer, store = FakeConsumer({}), FakeStore()
    consumer.ends = {0: 50, 1: 7}
    runner, committer = _runner(consumer, store, result, processor, overlap=overlap)
    _handle(runner, sources)
    assert store.calls == [f"forget_committed {[(TOPIC, 1)]}"]
    assert sorted(consumer.seeks) == [(0, 40), (1, 5)]  # partition 1 from its batch start: processed next
    assert committer.commits == [(0, {(TOPIC, 0): 40})]


def test_assigned_partitions_start_once_their_topic_id_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    # The floor is kept per topic id; an admin request that times out is asked again, it does
    # not escape the rebalance callback.
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    _sources, result = _batch()
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    runner, _ = _runner(consumer, store, result)
    answers: list[str | Exception] = [TimeoutError(), "AAAA"]

    def topic_id(topic: str) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    runner.offsets.topic_id = topic_id
    starts = runner.offsets.committed_starts(
        cast(Any, consumer), [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    )
    assert starts is not None and [(tp.partition, tp.offset) for tp in starts] == [(0, 12), (1, 6)]
    assert store.calls == [f"identify_topic {TOPIC} AAAA"]


def test_waiting_for_pending_offsets_fences_this_instances_own_abandoned_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # make chaos, broker run: a producer abandoned in a stuck send_offsets_to_transaction kept its
    # transaction open; the partitions came back to the same instance, whose committed() then
    # waited 6 minutes for offsets only its own next producer would fence. Now recover() runs
    # while waiting (a no-op when the producer is sound).
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    _sources, result = _batch()
    consumer = FakeConsumer({0: 12, 1: 6})
    runner, committer = _runner(consumer, FakeStore(), result)
    answer_of = consumer.committed

    def pending_until_fenced(partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if not committer.recovered:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return answer_of(partitions, timeout)

    consumer.committed = pending_until_fenced  # type: ignore[method-assign]
    starts = runner.offsets.committed_starts(
        cast(Any, consumer), [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    )
    assert starts is not None and [(tp.partition, tp.offset) for tp in starts] == [(0, 12), (1, 6)]
    assert committer.recovered == 1


def _starts(runner: Runner, consumer: FakeConsumer) -> list[tuple[int, int]] | None:
    starts = runner.offsets.committed_starts(
        cast(Any, consumer), [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    )
    return None if starts is None else [(tp.partition, tp.offset) for tp in starts]


def test_no_committed_offset_for_a_partition_with_a_floor_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # make chaos, broker run (session 6): right after kafka-kill + start the coordinator answered
    # "no offset" (-1001) for every partition. One instance's last commit had gone through but
    # its outcome was unknown to it (so no floor yet); the other started from the floor, below
    # that commit, and published its records a second time. The coordinator, asked again once
    # recovered, has the real offsets.
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    _sources, result = _batch()
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    consumer.answers = [{}, {}]  # twice nothing, then the real offsets
    store.kept_floor = {(TOPIC, 0): 10}
    runner, _ = _runner(consumer, store, result)
    assert _starts(runner, consumer) == [(0, 12), (1, 6)]
    assert consumer.committed_calls == 3


def test_no_committed_offset_without_a_floor_is_taken_at_once() -> None:
    _sources, result = _batch()
    consumer, store = FakeConsumer({}), FakeStore()  # a new group: nothing committed, no floor
    runner, _ = _runner(consumer, store, result)
    assert _starts(runner, consumer) == [(0, -1001), (1, -1001)]
    assert consumer.committed_calls == 1


def test_no_committed_offset_past_the_wait_is_taken_and_left_to_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(offsets_module, "FORGOTTEN_OFFSETS_WAIT_S", 0.1)
    _sources, result = _batch()
    consumer, store = FakeConsumer({1: 6}), FakeStore()  # partition 0 stays forgotten
    store.kept_floor = {(TOPIC, 0): 10}
    runner, _ = _runner(consumer, store, result)
    started = time.monotonic()
    # Taken as it is; the first batch read then finds its start below the floor and moves up
    # (test_a_batch_below_the_committed_floor_moves_its_partitions_up_to_the_floor).
    assert _starts(runner, consumer) == [(0, -1001), (1, 6)]
    assert consumer.committed_calls > 2 and time.monotonic() - started < 5
