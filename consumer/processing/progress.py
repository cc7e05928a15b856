"""How far this instance has processed each of its input partitions, for the watermark.

The expiry sweeper reports a deadline (an arrival time) only once every input partition has been
processed past it (contract rule 8). Each instance marks its own partitions in Redis, once per
sweep (watermark.lua): a partition consumed to its end is caught up, and its mark follows the
shared clock, so a quiet partition never holds expiries back; any other is marked with the newest
arrival time of its committed records, so a partition that is behind (after an outage, or because
it lags the others) holds them back until it has caught up.

Caught up means: the consumer's position has reached the partition's end offset, and every record
consumed from the partition is committed. So a record fetched but not yet consumed, or consumed but
still in a batch in flight, keeps the partition behind, however long the run loop was busy
elsewhere. A partition nothing was consumed from since it was assigned has no position;
librdkafka's end-of-partition event (enable.partition.eof, consumer/app.py) gives the offset it
reached instead.

The end offset librdkafka learnt from its last fetch (a local call) is only a first filter: after
the consumer was stopped or cut off, that cached end is the one from before the gap, and a
partition with records still to come would look caught up and let expiries through early. So a
partition that looks caught up is confirmed with the broker's current end offset (``end_offsets``,
one ListOffsets request per sweep for all of them); when the broker cannot answer, the partition
counts as behind, which only delays expiries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from confluent_kafka import TopicPartition

from consumer.model import SourceRecord
from consumer.state.customer import PartitionKey
from consumer.state.store import PartitionMark

log = logging.getLogger(__name__)

# The broker's end offset (read-committed) of each partition asked for; raises when it cannot answer.
EndOffsets = Callable[[Sequence[PartitionKey]], dict[PartitionKey, int]]


class PartitionProgress:
    def __init__(self) -> None:
        self._owned: set[PartitionKey] = set()
        self._newest: dict[PartitionKey, int] = {}  # newest arrival time committed, per partition
        self._end_seen: dict[PartitionKey, int] = {}  # offset of the last end-of-partition event
        self._consumed: dict[PartitionKey, int] = {}  # offset after the last record consumed
        self._committed: dict[PartitionKey, int] = {}  # offset after the last record committed

    def assigned(self, partitions: Iterable[PartitionKey]) -> None:
        self._owned.update(partitions)

    def revoked(self, partitions: Iterable[PartitionKey]) -> None:
        for partition in partitions:
            self._owned.discard(partition)
            for known in (self._newest, self._end_seen, self._consumed, self._committed):
                known.pop(partition, None)

    def reached_end(self, partition: PartitionKey, offset: int) -> None:
        self._end_seen[partition] = offset

    def consumed(self, sources: Sequence[SourceRecord]) -> None:
        consumed = self._consumed
        for source in sources:
            consumed[(source.topic, source.partition)] = source.offset + 1

    def committed(self, sources: Sequence[SourceRecord], offsets: dict[PartitionKey, int]) -> None:
        """A batch of ``sources`` committed, up to ``offsets`` (the next offset per partition)."""
        newest = self._newest
        for source in sources:
            timestamp = source.timestamp_ms
            if timestamp is not None:
                key = (source.topic, source.partition)
                if timestamp > newest.get(key, -1):
                    newest[key] = timestamp
        for key, offset in offsets.items():
            self._committed[key] = max(offset, self._committed.get(key, offset))

    def marks(
        self, consumer: Any, end_offsets: EndOffsets | None = None
    ) -> dict[PartitionKey, PartitionMark]:
        """Each owned partition's mark: (newest committed arrival time, caught up)."""
        owned = sorted(self._owned)
        if not owned:
            return {}
        positions = consumer.position([TopicPartition(t, p) for t, p in owned])
        reached: dict[PartitionKey, int] = {}
        caught_up: set[PartitionKey] = set()
        for key, position in zip(owned, positions, strict=True):
            _low, end = consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
            at = position.offset if position.offset >= 0 else self._end_seen.get(key, -1)
            reached[key] = at
            settled = self._committed.get(key, -1) >= self._consumed.get(key, -1)
            if settled and 0 <= end <= at:
                caught_up.add(key)
        if caught_up and end_offsets is not None:
            caught_up = self._confirmed(sorted(caught_up), reached, end_offsets)
        return {key: (self._newest.get(key, -1), key in caught_up) for key in owned}

    @staticmethod
    def _confirmed(
        candidates: list[PartitionKey], reached: dict[PartitionKey, int], end_offsets: EndOffsets
    ) -> set[PartitionKey]:
        try:
            ends = end_offsets(candidates)
        except Exception as error:
            log.warning("end offsets unavailable, partitions count as behind: %s", type(error).__name__)
            return set()
        return {key for key in candidates if 0 <= ends.get(key, -1) <= reached[key]}
