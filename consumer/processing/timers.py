"""The run loop's timers: the partitions' watermark marks, the expiry sweep, and the cluster-wide
gauges read from Redis.

They run between batches (and while the input is quiet), on the run loop: the sweeper's unlinked
records go through the same producer as the batches', and no commit runs at the same time. Before
each sweep this instance marks its own partitions (consumer/processing/progress.py), so that a
sweep anywhere sees how far every partition has been processed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis
from confluent_kafka import KafkaException

from consumer import metrics
from consumer.avro.outputs import OutputCodecs
from consumer.delivery.committer import CommitFailed, Committer
from consumer.health import Health
from consumer.logs import fields
from consumer.processing.retry import Recovering, report
from consumer.processing.sweeper import ExpirySweeper
from consumer.processing.watchdog import KafkaWatch
from consumer.state.customer import PartitionKey
from consumer.state.store import PartitionMark, ReplicasBehind, StateLost, StateStore

log = logging.getLogger(__name__)

COUNTS_INTERVAL_S = 5.0
# The input topic's partitions (the watermark needs every one) are looked up this often: a topic
# whose partitions were added is seen within this long.
PARTITIONS_INTERVAL_S = 60.0


class Timers:
    def __init__(
        self,
        sweeper: ExpirySweeper,
        codecs: OutputCodecs,
        committer: Committer,
        store: StateStore,
        health: Health,
        watch: KafkaWatch,
        sweep_interval_s: float,
        marks: Callable[[], dict[PartitionKey, PartitionMark]],
        input_partitions: Callable[[], Sequence[PartitionKey]],
        idle_lag_ms: int,
        recovery: Recovering,
    ) -> None:
        self.recovery = recovery
        self.marks = marks
        self.input_partitions = input_partitions
        self.idle_lag_ms = idle_lag_ms
        self._partitions: Sequence[PartitionKey] = ()
        self._next_partitions = 0.0
        self._unknown_since = 0.0  # monotonic time the watermark was first seen unknown, 0 if known
        self.sweeper = sweeper
        self.codecs = codecs
        self.committer = committer
        self.store = store
        self.health = health
        self.watch = watch
        self.sweep_interval_s = sweep_interval_s
        self.next_sweep = 0.0  # monotonic times the timers are due
        self.next_counts = 0.0
        self.erasures_seen = 0

    def run_due(self) -> None:
        now = time.monotonic()
        if now >= self.next_sweep:
            more = self._sweep()
            self.next_sweep = now + (0 if more else self.sweep_interval_s)
        if now >= self.next_counts:
            self.next_counts = now + COUNTS_INTERVAL_S
            self.recovery.recheck()  # a lost state restored meanwhile by another instance or an operator
            try:
                pending, held = self.store.counts()
                metrics.PENDING.set(pending)
                metrics.HELD.set(held)
                erasures = self.store.erasures()
                if erasures > self.erasures_seen:  # a counter: raised by what was added since
                    metrics.ERASURES.inc(erasures - self.erasures_seen)
                    self.erasures_seen = erasures
            except redis.RedisError as error:
                metrics.REDIS_ERRORS.inc()
                self.health.report_redis(False, error)

    def _report_watermark(self, watermark_ms: int | None, now_ms: int) -> None:
        """How far the watermark is behind the shared clock: how long a deadline waits past its
        time. While a partition has no mark at all, the time since that was first seen."""
        if watermark_ms is not None:
            self._unknown_since = 0.0
            metrics.WATERMARK_LAG.set(max(0.0, (now_ms - watermark_ms) / 1000))
            return
        self._unknown_since = self._unknown_since or time.monotonic()
        metrics.WATERMARK_LAG.set(time.monotonic() - self._unknown_since)

    def _partitions_now(self) -> Sequence[PartitionKey]:
        now = time.monotonic()
        if now >= self._next_partitions or not self._partitions:
            try:
                self._partitions = self.input_partitions()
                self._next_partitions = now + PARTITIONS_INTERVAL_S
            except KafkaException as error:
                log.debug("input partitions not known yet", extra=fields(error=str(error)))
        return self._partitions

    def _sweep(self) -> bool:
        """This instance's partition marks, then one round of the expiry sweeper
        (consumer/processing/sweeper.py, Steps 1-4): True when more may be due at once."""
        started = time.monotonic()
        try:
            marks = self.marks()
            if marks:
                self.store.mark_partitions(marks, self.idle_lag_ms)
            claimed = self.sweeper.claim_due(self._partitions_now())
            self._report_watermark(claimed.watermark_ms, claimed.now_ms)
            if claimed.leads:
                outputs = [self.codecs.unlinked_output(lead) for lead in claimed.leads]
                with self.watch.call():
                    self.committer.publish(outputs)  # Step 3
                self.sweeper.release(claimed)  # Step 4
                for lead in claimed.leads:
                    metrics.UNLINKED.labels(reason=lead.reason.value).inc()
                log.info("expired leads reported", extra=fields(count=len(claimed.leads)))
            self.health.report_redis(True)
            return claimed.more
        except (redis.RedisError, ReplicasBehind, StateLost) as error:
            report(self.health, self.recovery, error)
        except CommitFailed as failure:
            log.warning(
                "unlinked records not published; the lease will lapse and retry",
                extra=fields(error=str(failure)),
            )
        finally:
            metrics.SWEEP_DURATION.observe(time.monotonic() - started)
        return False
