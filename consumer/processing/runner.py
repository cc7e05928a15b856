"""The run loop: consume a batch, process it, commit it, sweep deadlines; survive faults.

Batches overlap (LEADS_OVERLAP_COMMITS): a batch is decided and its Redis write sent while the one
before it commits. The rules that keep that safe, and what the loop does after each fault (never
skipping a batch), are in docs/design.md ("The run loop"). The commit protocol lives in
consumer/delivery/; beside this module: retry.py (a batch's Redis steps, retried), watchdog.py
(blocked Kafka calls, librdkafka's statistics) and timers.py (the expiry sweep, the gauges).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from consumer import metrics
from consumer.avro.outputs import OutputCodecs
from consumer.delivery.committer import Committer
from consumer.delivery.offsets import OffsetKeeper, first_offsets
from consumer.delivery.protocol import Delivery
from consumer.health import Health
from consumer.logs import fields
from consumer.model import SourceRecord
from consumer.processing.batch import AlreadyCommitted, BatchProcessor, Started
from consumer.processing.progress import EndOffsets, PartitionProgress
from consumer.processing.records import source_records
from consumer.processing.retry import Recovering, Retrying, Written
from consumer.processing.sweeper import ExpirySweeper
from consumer.processing.timers import Timers
from consumer.processing.watchdog import KafkaWatch
from consumer.reasons import RebalanceEvent
from consumer.state.recovery import Recovery
from consumer.state.store import StateLost, StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# A batch at least this share of LEADS_BATCH_SIZE overlaps the commit of the one before it (see the
# module docstring); a smaller one is processed and committed alone, for latency.
OVERLAP_MIN_SHARE = 0.5


class Runner:
    def __init__(
        self,
        make_consumer: Callable[[dict[str, Any]], Consumer],
        committer: Committer,
        store: StateStore,
        processor: BatchProcessor,
        sweeper: ExpirySweeper,
        codecs: OutputCodecs,
        health: Health,
        input_topic: str,
        batch_size: int,
        batch_wait_s: float,
        sweep_interval_s: float,
        shutdown_timeout_s: float,
        topic_id: Callable[[str], str] | None = None,
        overlap_commits: bool = True,
        overlap_min_records: int | None = None,
        idle_lag_ms: int = 2000,
        recovery: Recovering | None = None,
        end_offsets: EndOffsets | None = None,
    ) -> None:
        self.watch = KafkaWatch(health, input_topic)
        self.consumer = make_consumer({"error_cb": self.watch.on_error, "stats_cb": self.watch.on_stats})
        self.committer = committer
        self.store = store
        self.health = health
        self.input_topic = input_topic
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.stop_requested = 0.0  # monotonic time of the first SIGTERM, 0 while running
        self.overlap_commits = overlap_commits
        self.overlap_min_records = (
            overlap_min_records
            if overlap_min_records is not None
            else max(1, int(batch_size * OVERLAP_MIN_SHARE))
        )
        self._written: Written | None = None  # its Redis reply not read yet (see module docstring)
        # One thread: commits run one at a time, in batch order.
        self._commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self.offsets = OffsetKeeper(
            self.consumer,
            committer,
            store,
            health,
            self.watch,
            stopping=lambda: bool(self.stop_requested),
            topic_id=topic_id,
        )
        self.progress = PartitionProgress()
        self.delivery = Delivery(
            self.consumer, committer, store, self.offsets, health, self.watch, self.progress
        )
        self.recovery = recovery or _NoRecovery()
        self.steps = Retrying(
            processor, self.offsets, health, lambda: self.stop_requested, shutdown_timeout_s, self.recovery
        )
        self.timers = Timers(
            sweeper,
            codecs,
            committer,
            store,
            health,
            self.watch,
            sweep_interval_s,
            marks=lambda: self.progress.marks(self.consumer, end_offsets),
            input_partitions=self._input_partitions,
            idle_lag_ms=idle_lag_ms,
            recovery=self.recovery,
        )

    # --- lifecycle -------------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        if not self.stop_requested:
            log.info("stop requested: finishing the batch in hand")
            self.stop_requested = time.monotonic()
            self.health.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def _check_state(self) -> None:
        """Before anything is decided: does Redis hold everything the group committed?
        (consumer/state/recovery.py). Not knowing yet (Kafka away) is left to the guards of the
        first writes, which require the committed offsets learnt at assignment."""
        try:
            if self.offsets.topic_id is not None:
                self.store.identify_topic(self.input_topic, self.offsets.topic_id(self.input_topic))
            if isinstance(self.recovery, Recovery):
                self.recovery.check()
        except (KafkaException, TimeoutError, redis.RedisError) as error:
            log.warning(
                "state not checked against the committed offsets at start-up", extra=fields(error=str(error))
            )

    def run(self) -> int:
        self._check_state()
        self.consumer.subscribe(
            [self.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self.health.started = self.health.subscribed = True
        self.watch.start()
        log.info("consumer started", extra=fields(topic=self.input_topic, batch_size=self.batch_size))
        try:
            while not self.stop_requested:
                self.health.beat()
                sources = self._sources(self._next_messages())
                if sources:
                    self._handle_batch(sources)  # runs the timers itself
                else:
                    metrics.CONSUMER_LAG_SECONDS.set(0)
                    self.timers.run_due()
            self.finish_in_flight()  # the batch processed last, before leaving the group
        finally:
            self._close()
        log.info("consumer stopped cleanly")
        return 0

    def _next_messages(self) -> list[Message]:
        """What is queued, up to a batch, without waiting for more; when nothing is, wait up to
        batch_wait for the first record and take it with whatever came along. consume(n, wait)
        alone would hold every batch until it is full or the wait is over, adding up to the whole
        wait to each record's latency; this way batches grow with the load by themselves (what
        arrived while the previous batch was processed) and latency follows processing time."""
        messages = self.consumer.consume(self.batch_size, 0)
        if messages:
            return messages
        self.finish_in_flight()  # caught up: nothing stays uncommitted while the input is quiet
        first = self.consumer.poll(self.batch_wait_s)
        if first is None:
            return []
        return [first, *self.consumer.consume(self.batch_size - 1, 0)] if self.batch_size > 1 else [first]

    def _close(self) -> None:
        self._commits.shutdown(wait=False)
        try:
            self.consumer.close()  # leaves the group: partitions move at once, not after session timeout
        except Exception:
            log.warning("consumer close failed", exc_info=True)
        try:
            self.committer.close()
        except Exception:  # exiting anyway: the exit code must say the stop was clean
            log.warning("producer close failed", exc_info=True)
        try:
            self.store.flush_queued()
        except redis.RedisError:
            log.warning("could not send the committed-offset floor and journal clean-ups at exit")

    def committed_everywhere(self) -> dict[tuple[str, int], int]:
        """The group's committed offset of every input partition, from Kafka (a read_committed
        consumer's committed() waits for offsets still pending in a transaction)."""
        partitions = [TopicPartition(t, p) for t, p in self._input_partitions()]
        with self.watch.call():
            answer = self.consumer.committed(partitions, timeout=10)
        failed = [tp for tp in answer if tp.error is not None]
        if failed:
            raise KafkaException(failed[0].error)
        return {(tp.topic, tp.partition): tp.offset for tp in answer}

    def _input_partitions(self) -> list[tuple[str, int]]:
        """Every partition of the input topic, from the cluster's metadata."""
        metadata = self.consumer.list_topics(self.input_topic, timeout=5).topics[self.input_topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return [(self.input_topic, p) for p in sorted(metadata.partitions)]

    # --- rebalances ------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels(event=RebalanceEvent.ASSIGNED.value).inc()
        metrics.ASSIGNED_PARTITIONS.set(len(partitions))
        log.info("partitions assigned", extra=fields(partitions=sorted(p.partition for p in partitions)))
        starts = self.offsets.committed_starts(consumer, partitions)
        if starts is None:
            consumer.assign([])  # stopping before the coordinator answered: consume nothing, leave
            return
        # Where each partition starts: after a broker crash, the record that shows whether the
        # group's committed offsets went backwards (docs/chaos.md; the floor catches it).
        log.info(
            "starting at the committed offsets",
            extra=fields(offsets={str(tp.partition): tp.offset for tp in starts}),
        )
        try:
            consumer.assign(starts)
        except KafkaException:
            consumer.incremental_assign(starts)  # a cooperative assignor was configured
        keys = [(tp.topic, tp.partition) for tp in starts]
        self.progress.assigned(keys)
        # Fencing: whoever held these partitions before can no longer write for them. And every
        # write from now on requires the state Redis holds of them to reach their committed offsets.
        self.store.claim_partitions(keys)
        self.store.note_progress({(tp.topic, tp.partition): tp.offset for tp in starts if tp.offset >= 0})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Called inside consume(), so no commit is in flight; the batch held is committed now,
        # while this instance still belongs to the generation that owns its partitions. The next
        # owner checks its start against the floor: send what this instance confirmed.
        self.finish_in_flight()
        try:
            self.store.flush_queued()
        except redis.RedisError:
            log.warning("could not send the committed-offset floor before giving up partitions")
        self.progress.revoked((tp.topic, tp.partition) for tp in partitions)
        metrics.REBALANCES.labels(event=RebalanceEvent.REVOKED.value).inc()
        metrics.ASSIGNED_PARTITIONS.set(0)
        for tp in partitions:
            metrics.CONSUMER_LAG.remove(str(tp.partition)) if _has_label(tp.partition) else None
        log.info("partitions revoked", extra=fields(partitions=sorted(p.partition for p in partitions)))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Lost (session expired): another member may own them already, so never commit for them.
        # The batch in flight is dropped: its new owner replays it, and the journal repeats its
        # records. Its Redis reply is still read, so that the connection goes back clean.
        written, self._written = self._written, None
        if written is not None:
            _drain(written.batch)
        self.progress.revoked((tp.topic, tp.partition) for tp in partitions)
        metrics.REBALANCES.labels(event=RebalanceEvent.LOST.value).inc()
        metrics.ASSIGNED_PARTITIONS.set(0)
        log.warning("partitions lost", extra=fields(partitions=sorted(p.partition for p in partitions)))

    # --- one batch -------------------------------------------------------------------------

    def _sources(self, messages: list[Message]) -> list[SourceRecord]:
        sources, events = source_records(messages)
        for event in events:
            error = event.error()
            assert error is not None  # source_records returns the messages that carry one
            topic, partition, offset = event.topic(), event.partition(), event.offset()
            if error.code() == KafkaError._PARTITION_EOF and topic is not None and partition is not None:
                self.progress.reached_end((topic, partition), offset if offset is not None else -1)
            else:
                self.watch.kafka_error(error)
        if sources:
            self.health.report_kafka(True)
            self.progress.consumed(sources)
        return sources

    def _handle_batch(self, sources: list[SourceRecord]) -> None:
        """Read the Redis reply of the batch written last round and start its commit; decide
        ``sources`` and send their write while it runs; keep them in flight for the next round."""
        if not self.overlap_commits or len(sources) < self.overlap_min_records:
            self._handle_alone(sources)
            self.timers.run_due()
            return
        started = time.monotonic()
        # Decoding and validating need no state: done while Redis still runs the last write.
        prepared = self.steps.prepare(sources)
        # The timers' Redis calls queue behind the write in flight, whose reply complete waits for
        # next: here they share that wait. Run after start (as before 0.4.3) they waited for the
        # whole next write, ~3 % of the loop's time in a drain (docs/performance.md). No commit is
        # running: the sweeper may publish.
        self.timers.run_due()
        written, self._written = self._written, None
        held = self.steps.complete(written) if written is not None else None
        if written is not None and held is None:
            self._rewind_past(written.sources, sources)  # given up, and rewound: read past it
            return
        commit = self._commits.submit(self.delivery.commit, held) if held is not None else None
        outcome: Started | AlreadyCommitted | None
        try:
            outcome = self.steps.start(prepared, sources)
        except AlreadyCommitted as behind:
            outcome = behind
        finally:
            # Joined before anything else happens, an exception included: the Kafka calls below
            # must not run while the commit thread uses the producer.
            held_committed = held is None or commit is None or self.delivery.conclude(held, commit.result())
        if not held_committed:
            assert held is not None
            if isinstance(outcome, Started):
                _drain(outcome)
            self._rewind_past(held.sources, sources)
            return
        if isinstance(outcome, AlreadyCommitted):
            self.health.report_redis(True)  # the read that found the floor succeeded
            self.offsets.skip_to_committed(sources, outcome.floors)
        elif outcome is None:
            self.offsets.rewind(sources)  # stopping during an outage: nothing was written
        else:
            self._written = Written(outcome, started)

    def _handle_alone(self, sources: list[SourceRecord]) -> None:
        """One batch at a time: processed, then committed (a small batch, or
        LEADS_OVERLAP_COMMITS=false). A batch still in flight is committed first."""
        in_flight = self._written
        if not self.finish_in_flight():
            assert in_flight is not None
            self._rewind_past(in_flight.sources, sources)  # rewound: read past it
            return
        held = self.steps.whole(sources, time.monotonic())
        if held is not None:
            self.delivery.conclude(held, self.delivery.commit(held))

    def _rewind_past(self, rewound: Sequence[SourceRecord], sources: list[SourceRecord]) -> None:
        """An earlier batch was rewound; ``sources``, read past it, go back too (their partitions
        the earlier batch did not have: the others are rewound already)."""
        done = set(first_offsets(rewound))
        self.offsets.rewind([s for s in sources if (s.topic, s.partition) not in done])

    def finish_in_flight(self) -> bool:
        """Read the reply of the batch in flight, if any, commit it, and wait for the outcome:
        False when it was not committed (given up or rewound, to be replayed)."""
        written, self._written = self._written, None
        if written is None:
            return True
        held = self.steps.complete(written)
        return held is not None and self.delivery.conclude(held, self.delivery.commit(held))


class _NoRecovery:
    """Without a recovery (the run-loop tests): a refused write is only retried."""

    def refused(self, error: StateLost) -> None:
        log.warning("state refused", extra=fields(detail=str(error)))

    def intact(self) -> None:
        pass

    def recheck(self) -> None:
        pass


def _drain(batch: Started) -> None:
    """Read the reply of a write whose batch is dropped (rewound): the connection goes back clean."""
    try:
        batch.reply()
    except Exception:
        log.debug("reply of a dropped batch not read", exc_info=True)


def _has_label(partition: int) -> bool:
    return any(
        sample.labels.get("partition") == str(partition)
        for family in metrics.CONSUMER_LAG.collect()
        for sample in family.samples
    )
