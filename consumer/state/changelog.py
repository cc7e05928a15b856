"""The state changelog: a compacted Kafka topic of every customer's state, keyed by cid.

Each batch produces the states it left (the very bytes Redis holds, or a tombstone) in its own
Kafka transaction, together with its outputs and input offsets (consumer/processing/batch.py,
BatchResult.changes). So the changelog holds exactly the state of the committed input: what a
Redis that lost state is rebuilt from (consumer/state/recovery.py), as Kafka Streams and Quix
Streams do with their stores. Redis stays the fast view every instance shares.

What the expiry sweeper changes (leases, released items, deleted empty states) is not in it: after
a rebuild, an expiry already reported is reported again with the same leadId (unlinked records
are at least once), and a lapsed state is deleted again. Records older than the longest window
are of no use: the topic is compacted and deleted after its retention (leadattr topics).

This module reads it: to its end, once no transaction is open on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

# How long a restore waits for the transactions open on the changelog to end: a little more than
# the producers' transaction.timeout.ms (60 s), after which the broker aborts them.
SETTLE_LIMIT_S = 75.0
READ_BATCH = 1000


class ChangelogReader:
    """``settings``: librdkafka settings of the cluster (bootstrap servers, security). ``group``:
    the service's consumer group: the readers only assign partitions (they never join it or
    commit), and the service's principal may use no other group (consumer/tools/acls.py)."""

    def __init__(
        self, settings: Mapping[str, Any], topic: str, group: str, beat: Callable[[], None] = lambda: None
    ) -> None:
        self.topic = topic
        self._beat = beat
        base = {
            **settings,
            "group.id": group,
            "enable.auto.commit": False,
        }
        self._committed = Consumer(
            {**base, "isolation.level": "read_committed", "enable.partition.eof": True}
        )
        self._uncommitted = Consumer({**base, "isolation.level": "read_uncommitted"})

    def close(self) -> None:
        self._committed.close()
        self._uncommitted.close()

    def partitions(self) -> list[int]:
        metadata = self._committed.list_topics(self.topic, timeout=10).topics[self.topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return sorted(metadata.partitions)

    def settled_ends(self) -> dict[int, int]:
        """The end of each partition once no transaction is open on it (its last stable offset is
        its high watermark): every committed batch's states are then below it."""
        deadline = time.monotonic() + SETTLE_LIMIT_S
        while True:
            self._beat()
            ends: dict[int, int] = {}
            open_ = False
            for partition in self.partitions():
                tp = TopicPartition(self.topic, partition)
                _, stable = self._committed.get_watermark_offsets(tp, timeout=10)
                _, high = self._uncommitted.get_watermark_offsets(tp, timeout=10)
                ends[partition] = stable
                open_ = open_ or stable < high
            if not open_:
                return ends
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"a transaction on {self.topic} stayed open for over {SETTLE_LIMIT_S:.0f}s"
                )
            time.sleep(0.5)

    def states(self, ends: Mapping[int, int]) -> Iterator[list[tuple[str, bytes | None]]]:
        """Every record up to ``ends``, in chunks, in order per partition (a cid's records are on
        one partition): (cid, state or None for a tombstone)."""
        todo = {p: end for p, end in ends.items() if end > 0}
        if not todo:
            return
        self._committed.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in todo])
        reached: dict[int, int] = {}
        while any(reached.get(p, -1) < end for p, end in todo.items()):
            self._beat()
            chunk: list[tuple[str, bytes | None]] = []
            for message in self._committed.consume(READ_BATCH, 1.0):
                partition, offset = message.partition(), message.offset()
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                        reached[partition] = max(
                            reached.get(partition, -1), offset if offset is not None else -1
                        )
                        continue
                    raise KafkaException(error)
                assert partition is not None and offset is not None  # set on every record
                if offset >= todo.get(partition, 0):
                    continue  # written after the restore began: not this restore's
                reached[partition] = max(reached.get(partition, -1), offset + 1)
                key = message.key()
                if key is not None:
                    chunk.append((key.decode(), message.value()))
            if chunk:
                yield chunk
        self._committed.unassign()
