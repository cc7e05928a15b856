"""PartitionProgress: when a partition counts as caught up for the watermark (contract rule 8).

The consumer stand-in answers as librdkafka does locally: a position per partition and the end
offset cached from the last fetch, which stays stale after the consumer was cut off. The broker's
end offset comes from ``end_offsets``, as the ListOffsets request in consumer/app.py gives it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import TopicPartition

from consumer.model import SourceRecord
from consumer.processing.progress import PartitionProgress
from consumer.state.customer import PartitionKey

TOPIC = "leads.raw"
P0: PartitionKey = (TOPIC, 0)


class LocalView:
    """What librdkafka knows without asking the broker."""

    def __init__(self, position: int, cached_end: int) -> None:
        self.position_offset = position
        self.cached_end = cached_end

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.position_offset) for tp in partitions]

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool) -> tuple[int, int]:
        assert cached, "the marks must not block on the broker per partition"
        return 0, self.cached_end


def consumed_and_committed(progress: PartitionProgress, offsets: Sequence[int], arrival_ms: int) -> None:
    sources = [SourceRecord(TOPIC, 0, offset, None, b"", arrival_ms) for offset in offsets]
    progress.consumed(sources)
    progress.committed(sources, {P0: offsets[-1] + 1})


def progress_at(offset_after: int, arrival_ms: int) -> PartitionProgress:
    progress = PartitionProgress()
    progress.assigned([P0])
    consumed_and_committed(progress, list(range(offset_after)), arrival_ms)
    return progress


def test_a_partition_consumed_to_the_broker_end_is_caught_up() -> None:
    progress = progress_at(10, arrival_ms=5_000)
    marks = progress.marks(LocalView(position=10, cached_end=10), lambda keys: {k: 10 for k in keys})
    assert marks == {P0: (5_000, True)}


def test_a_stale_cached_end_does_not_make_a_lagging_partition_caught_up() -> None:
    # The consumer was frozen: its cached end is from before the gap, the broker has 500 more.
    progress = progress_at(10, arrival_ms=5_000)
    marks = progress.marks(LocalView(position=10, cached_end=10), lambda keys: {k: 510 for k in keys})
    assert marks == {P0: (5_000, False)}


def test_a_broker_that_cannot_answer_leaves_the_partition_behind() -> None:
    def unreachable(_keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        raise TimeoutError("no broker")

    progress = progress_at(10, arrival_ms=5_000)
    assert progress.marks(LocalView(position=10, cached_end=10), unreachable) == {P0: (5_000, False)}


def test_the_broker_is_asked_only_about_partitions_that_look_caught_up() -> None:
    asked: list[Sequence[PartitionKey]] = []

    def end_offsets(keys: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        asked.append(list(keys))
        return {k: 10 for k in keys}

    progress = progress_at(10, arrival_ms=5_000)
    assert progress.marks(LocalView(position=4, cached_end=10), end_offsets) == {P0: (5_000, False)}
    assert asked == []


def test_records_consumed_but_not_committed_keep_the_partition_behind() -> None:
    progress = progress_at(10, arrival_ms=5_000)
    progress.consumed([SourceRecord(TOPIC, 0, 10, None, b"", 6_000)])
    view: Any = LocalView(position=11, cached_end=11)
    assert progress.marks(view, lambda keys: {k: 11 for k in keys}) == {P0: (5_000, False)}
