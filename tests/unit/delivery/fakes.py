"""Fakes of the consumer, committer, processor and store for the commit-protocol tests: they
script what the group coordinator answers, which the fault suite against real servers cannot choose."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from consumer.avro.outputs import Output
from consumer.delivery.committer import CommitFailed
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

    def note_progress(self, offsets: dict[PartitionKey, int]) -> None:
        return None  # the write guards are the store's own (tests/integration/test_store_contract.py)

    def claim_partitions(self, partitions: list[PartitionKey]) -> None:
        return None

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


def handle(runner: Runner, sources: list[SourceRecord]) -> None:
    """One batch through the run loop, committed before returning (as when the input goes quiet)."""
    runner._handle_batch(sources)
    runner.finish_in_flight()


def make_runner(
    consumer: FakeConsumer,
    store: FakeStore,
    result: BatchResult,
    processor: FakeProcessor | None = None,
    overlap: bool = True,
) -> tuple[Runner, UnknownOutcomeCommitter]:
    committer = UnknownOutcomeCommitter()
    runner = fake_runner(consumer, committer, store, processor or FakeProcessor(result), overlap)
    return runner, committer


def one_batch() -> tuple[list[SourceRecord], BatchResult]:
    sources = [SourceRecord(TOPIC, p, o, b"k", b"v") for p, o in ((0, 10), (0, 11), (1, 5))]
    result = BatchResult(
        journal={(TOPIC, 0): ["11:a1b2.0"], (TOPIC, 1): ["5:a1b2.0"]}, offsets={(TOPIC, 0): 12, (TOPIC, 1): 6}
    )
    return sources, result
