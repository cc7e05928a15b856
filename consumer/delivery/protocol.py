"""The commit protocol of one processed batch: what the run loop asks for, and what it gets back.

A batch arrives here processed: its decisions are written to Redis (state and journal, one atomic
script) and its outputs built. Delivery.commit runs on the commit thread, Delivery.conclude on the
run loop once the commit is joined:

  Step 1-4. Publish the outputs and commit the input offsets (consumer/delivery/committer.py): one
            Kafka transaction under exactly_once (outputs and offsets visible together or not at
            all), produce + flush + offset commit under at_least_once.
  Step 5.   The moment Kafka confirms, raise the committed-offset floor in Redis (ZADD GT, sent
            without waiting; a failure here is covered by Step 6's copy).
  Step 6.   Back on the run loop: queue the floor again and the batch's journal clean-up; they ride
            on the next Redis read as one script, floor first, so a journal entry is never deleted
            unless the floor covering its offset is stored. Until then the journal is what makes a
            replay of the same offsets publish the same records.
  Step 7.   Note how far its partitions are committed (the watermark, processing/progress.py) and
            count the batch in the metrics.

When Kafka did not commit (an abort before Step 4), the batch's partitions are rewound to its first
offsets and it is processed again: the journal repeats its decisions. When the outcome is unknown
(commit_transaction failed), the group's committed offsets decide (OffsetKeeper.settle): a batch
the coordinator did commit is not replayed, which would publish it twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

import redis
from confluent_kafka import Consumer, KafkaError

from consumer import metrics
from consumer.delivery.committer import CommitFailed, Committer
from consumer.delivery.offsets import OffsetKeeper, first_offsets
from consumer.health import Health
from consumer.logs import fields
from consumer.model import Decision, Invalid, SourceRecord
from consumer.processing.batch import BatchResult
from consumer.processing.progress import PartitionProgress
from consumer.processing.tally import latencies_s, tally
from consumer.processing.watchdog import BROKER_DOWN, KafkaWatch
from consumer.state.store import StateStore

log = logging.getLogger(__name__)

# Codes of a failed commit that also mean the broker (or its coordinator) is away or restarting.
_BROKER_AWAY = BROKER_DOWN | {
    KafkaError._TIMED_OUT,
    KafkaError._WAIT_COORD,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
}


@dataclass(slots=True)
class Processed:
    """A batch processed (its state and journal written to Redis) whose commit is still to come."""

    sources: Sequence[SourceRecord]
    result: BatchResult
    started: float  # monotonic time it was consumed


class Delivery:
    def __init__(
        self,
        consumer: Consumer,
        committer: Committer,
        store: StateStore,
        offsets: OffsetKeeper,
        health: Health,
        watch: KafkaWatch,
        progress: PartitionProgress,
    ) -> None:
        self.progress = progress
        self.consumer = consumer
        self.committer = committer
        self.store = store
        self.offsets = offsets
        self.health = health
        self.watch = watch

    def commit(self, batch: Processed) -> CommitFailed | None:
        """Steps 1-5 (on the commit thread when batches overlap): None once Kafka committed."""
        try:
            with self.watch.call():
                self.committer.commit_batch(batch.result.outputs, batch.result.offsets, self.consumer)
        except CommitFailed as failure:
            return failure
        # The floor goes up the moment the commit is confirmed, not once the run loop is back from
        # the next batch: a crash in between, with a broker that forgets its committed offsets,
        # would replay the batch past the floor and publish it twice (make chaos, docs/chaos.md).
        # Should Redis fail here, conclude sends it again, queued with the journal clean-up.
        with suppress(redis.RedisError):
            self.store.raise_floor(batch.result.offsets)  # Step 5
        return None

    def conclude(self, batch: Processed, failure: CommitFailed | None) -> bool:
        """Steps 6-7 after the commit of ``batch``: True when it was committed; else its partitions
        are rewound, to its first offsets or to the committed ones when the outcome was unknown,
        and it is replayed (False)."""
        result, sources = batch.result, batch.sources
        if failure is not None:
            if failure.code in _BROKER_AWAY:
                self.health.report_kafka(False, str(failure))
            if not failure.maybe_committed:
                log.warning(
                    "batch not committed, replaying it", extra=fields(error=str(failure), fatal=failure.fatal)
                )
                self.offsets.rewind(sources)
                return False
            log.warning(
                "batch commit outcome unknown, reading the committed offsets",
                extra=fields(error=str(failure), fatal=failure.fatal),
            )
            committed = self.offsets.settle(result, first_offsets(sources))
            if committed is None:
                return False  # stopping first: whoever owns the partitions next starts from the committed offsets
            if any(committed.get(tp, -1) < end for tp, end in result.offsets.items()):
                log.warning("batch not committed, replaying it", extra=fields(error=str(failure)))
                self.offsets.rewind(sources, committed)
                return False
            log.info("batch was committed after all", extra=fields(records=len(sources)))
        self.health.report_kafka(True)
        # Step 6. Queued, not sent: waiting here for Redis, busy with the next batch's write, held up
        # every batch (make bench). A batch found committed only by asking the coordinator (settle,
        # above) had no Step 5: its floor goes now.
        self.store.note_committed(result.offsets)
        self.store.forget_journal(result.journal)
        # From now on Redis must hold at least this (consumer/state/recovery.py): a write that finds
        # less is refused as lost state.
        self.store.note_progress(result.offsets)
        if failure is not None:
            try:
                self.store.flush_queued()
            except redis.RedisError as error:
                self.health.report_redis(False, error)
        self.progress.committed(sources, result.offsets)  # for the watermark (processing/progress.py)
        _record(sources, result, batch.started)  # Step 7
        return True


def _record(sources: Sequence[SourceRecord], result: BatchResult, started: float) -> None:
    now = time.time()
    metrics.EVENTS_CONSUMED.inc(len(sources))
    metrics.BATCH_SIZE.observe(len(sources))
    count_decisions(result.decisions)
    metrics.observe_many(metrics.PROCESSING_LATENCY, latencies_s(result.outputs, now))
    metrics.LAST_PROCESSED.set(now)
    oldest = min((s.timestamp_ms for s in sources if s.timestamp_ms is not None), default=None)
    metrics.CONSUMER_LAG_SECONDS.set(max(0.0, now - oldest / 1000) if oldest is not None else 0)
    metrics.BATCH_DURATION.observe(time.monotonic() - started)


def count_decisions(decisions: Sequence[Decision | Invalid]) -> None:
    """A batch's decisions into the counters, summed per label first (consumer/processing/tally.py):
    a labelled increment costs more than the sum (it looks up and locks the child)."""
    counts = tally(decisions)
    for reason, n in counts.dead_letters.items():
        metrics.DEAD_LETTER.labels(reason=reason.value).inc(n)
    for kind, n in counts.duplicates.items():
        metrics.DUPLICATES.labels(kind=kind.value).inc(n)
    for mode, n in counts.attributed.items():
        metrics.ATTRIBUTED.labels(mode=mode.value).inc(n)
    metrics.observe_many(metrics.VERIFICATION_DELAY, counts.verification_delays_s)
