"""The group's committed offsets, where the run loop cannot take librdkafka's word for them.

Three moments, one owner (OffsetKeeper, held by the Runner):
  partitions assigned        ask the coordinator for the committed offsets and start there, waiting
                             for offsets a dead owner's open transaction still holds (committed_starts).
  commit outcome unknown     ask again until it answers, and resume from its answer: replaying a
                             batch that was in fact committed would publish it twice (settle).
  committed offsets went     the first batch read finds its start below the committed-offset floor
  back                       in Redis: the partitions move up to the floor (skip_to_committed).
And the seek back to a batch's first offsets, or to committed ones when known (rewind).

The keeper reports Kafka's and Redis's health to Health, marks its calls that may block for the
watchdog (KafkaWatch.call), and asks ``stopping`` whether a stop was requested; it runs with fakes
in the unit tests of the commit protocol (tests/unit/delivery/).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer import metrics
from consumer.delivery.committer import CommitFailed, Committer
from consumer.health import Health
from consumer.logs import fields
from consumer.model import SourceRecord
from consumer.processing.batch import BatchResult
from consumer.processing.watchdog import KafkaWatch
from consumer.state.store import StateStore

log = logging.getLogger(__name__)

# Retry pacing, for the coordinator here and for Redis in the run loop.
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
# Asking the group coordinator for committed offsets, per try (OffsetKeeper.settle).
SETTLE_TIMEOUT_S = 5.0
# How long settle asks again when the coordinator answers offsets below the batch's start.
STALE_ANSWER_LIMIT_S = 60.0
# Waiting this long for the committed offsets of assigned partitions is more than a dead owner's
# open transaction explains (transaction.timeout.ms, 60 s by default).
PENDING_OFFSETS_LIMIT_S = 75.0
# How long an answer of "no committed offset" for partitions that have a floor (so were committed)
# is asked again: a broker just restarted was seen answering that while it recovered (make chaos),
# once for 34 s before it answered the real offsets.
FORGOTTEN_OFFSETS_WAIT_S = 60.0
# librdkafka's OFFSET_INVALID: the group has no committed offset for the partition.
NO_OFFSET = -1001


def first_offsets(sources: Iterable[SourceRecord]) -> dict[tuple[str, int], int]:
    first: dict[tuple[str, int], int] = {}
    for source in sources:
        first.setdefault((source.topic, source.partition), source.offset)
    return first


@dataclass(slots=True)
class OffsetKeeper:
    """Built by the Runner with its own consumer, committer, store, health and watchdog;
    ``stopping`` says whether a stop was requested."""

    consumer: Consumer
    committer: Committer
    store: StateStore
    health: Health
    watch: KafkaWatch
    stopping: Callable[[], bool]
    # Kafka's id of a topic (the committed-offset floor is kept per id).
    topic_id: Callable[[str], str] | None = None

    def committed_starts(
        self, consumer: Consumer, partitions: list[TopicPartition]
    ) -> list[TopicPartition] | None:
        """Where to start the assigned partitions: the group's committed offsets, asked here instead
        of leaving it to librdkafka, which waits for offsets still pending in an open transaction
        (UNSTABLE_OFFSET_COMMIT: a killed previous owner's, until transaction.timeout.ms) but, if a
        rebalance interrupts that wait, starts the partition at auto.offset.reset instead: the
        whole partition replayed and published again (librdkafka 2.16; docs/chaos.md). committed()
        of a read_committed consumer waits for those offsets too (KIP-447) and is retried until it
        answers. No commit yet (OFFSET_INVALID) leaves auto.offset.reset to librdkafka. An answer
        that went backwards (seen after broker crashes) is caught by the first batch read, against
        the committed-offset floor in Redis (pipeline.AlreadyCommitted). None when a stop is
        requested first."""
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        waited = False
        waiting_since = time.monotonic()
        while wanted:
            self.health.beat()
            try:
                if waited:
                    # The open transaction holding these offsets may be this instance's own: a
                    # producer abandoned in a stuck call (make chaos, broker run: 6 minutes stuck
                    # here). A new producer with the same transactional.id fences it, and the
                    # coordinator aborts its transaction; a no-op while the producer is sound.
                    with self.watch.call():
                        self.committer.recover()
                answer = consumer.committed(wanted, timeout=SETTLE_TIMEOUT_S)
                failed = [tp for tp in answer if tp.error is not None]
                if not failed and self.topic_id is not None:
                    # Asked at every assignment: a topic deleted and created again gets a new id.
                    for topic in {tp.topic for tp in wanted}:
                        self.store.identify_topic(topic, self.topic_id(topic))
                forgotten = [] if failed else self._forgotten(answer)
                if not failed and (
                    not forgotten or time.monotonic() - waiting_since > FORGOTTEN_OFFSETS_WAIT_S
                ):
                    if waited:
                        log.info("committed offsets of the assigned partitions known, starting")
                        self.health.report_kafka(True)  # the coordinator answered
                    return answer
                problem = (
                    str(failed[0].error)
                    if failed
                    else f"no committed offset for partitions {forgotten}, below their committed-offset floor"
                )
            except (KafkaException, TimeoutError, CommitFailed) as exc:  # TimeoutError: the topic id's
                problem = str(exc) or type(exc).__name__
            if not waited:
                waited = True
                log.warning(
                    "waiting for the committed offsets (and topic id) of the assigned partitions (a "
                    "previous owner's transaction may still be open)",
                    extra=fields(error=problem),
                )
            if time.monotonic() - waiting_since > PENDING_OFFSETS_LIMIT_S:
                # Longer than any dead owner's transaction may stay open: not ready, and after
                # KAFKA_DOWN_LIVENESS_S the liveness probe restarts the instance.
                self.health.report_kafka(
                    False, f"committed offsets unknown for over {PENDING_OFFSETS_LIMIT_S:.0f}s"
                )
            if self.stopping():
                return None
            time.sleep(BACKOFF_START_S)
        return []

    def _forgotten(self, answer: list[TopicPartition]) -> list[int]:
        """The partitions the coordinator answered "no committed offset" for although this group
        committed them (they have a floor in Redis). Right after a broker crash it was seen to
        answer that for a while, and a commit whose outcome its instance never learnt (so has no
        floor yet) would then be replayed from the floor and published twice; asked again, the
        coordinator gives the real offsets once it has recovered. Past FORGOTTEN_OFFSETS_WAIT_S
        the answer is taken, and the first batch read moves the partitions up to the floor."""
        unknown = [(tp.topic, tp.partition) for tp in answer if tp.offset == NO_OFFSET]
        if not unknown:
            return []
        try:
            floors = self.store.floors(unknown)
        except redis.RedisError:
            return []  # the first batch read checks the floor anyway
        return sorted(partition for (_topic, partition) in floors)

    def settle(
        self, result: BatchResult, first: dict[tuple[str, int], int]
    ) -> dict[tuple[str, int], int] | None:
        """The group's committed offsets for the batch's partitions, after a commit whose outcome is
        unknown; None if a stop is requested before the coordinator answers.

        committer.recover() first: a new producer with the same transactional.id makes the
        coordinator finish the old transaction (commit it if it was prepared, else abort it), and
        a read_committed consumer's committed() waits for pending transactional offsets
        (KIP-447), so the answer is final, not a snapshot taken mid-commit. An answer below the
        batch's first offsets is stale (the batch started where the group's commits had reached:
        a coordinator just reloaded after a broker crash was seen answering that way) and is asked
        again for up to STALE_ANSWER_LIMIT_S; after that it is returned as it is, and the floor
        check of the replay brings the partitions back up to the batch's start."""
        partitions = [TopicPartition(topic, partition) for topic, partition in result.offsets]
        backoff = BACKOFF_START_S
        stale_since = 0.0
        while True:
            self.health.beat()
            problem = ""
            try:
                with self.watch.call():
                    self.committer.recover()
                    answer = self.consumer.committed(partitions, timeout=SETTLE_TIMEOUT_S)
                failed = [tp for tp in answer if tp.error is not None]
                stale = [tp for tp in answer if tp.offset < first.get((tp.topic, tp.partition), -1)]
                stale_since = stale_since or (time.monotonic() if stale else 0.0)
                if not failed and (not stale or time.monotonic() - stale_since > STALE_ANSWER_LIMIT_S):
                    return {(tp.topic, tp.partition): tp.offset for tp in answer}
                problem = (
                    str(failed[0].error) if failed else f"committed offsets behind the batch: {stale[0]}"
                )
            except CommitFailed as failure:
                problem = str(failure)
            except KafkaException as exc:
                problem = str(exc)
            metrics.KAFKA_ERRORS.inc()
            self.health.report_kafka(False, problem)
            if self.stopping():
                log.warning("stopping before the commit outcome was known; the next owner reads it")
                return None
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def skip_to_committed(self, sources: Sequence[SourceRecord], floors: dict[tuple[str, int], int]) -> None:
        """The batch starts below offsets this group had committed (the floor in Redis): the
        broker's committed offsets went backwards, or an operator reset them without clearing the
        floor. That input was published already, so the partitions move up to the floor, and the
        floor is committed to the group again (with no records): the group's offsets and lag are
        right even if no new input comes. A floor past the end of its partition belongs to an
        earlier life of the topic (deleted and created again): it is dropped, not obeyed, or the
        consumer would seek past the end, be reset to the start, and skip the partition for good."""
        first = first_offsets(sources)
        past_end = self._past_end(floors)
        if past_end:
            log.error(
                "the committed-offset floor is past the end of its partitions (topic created again?): "
                "dropping it for them",
                extra=fields(
                    partitions={str(p): {"floor": floors[(t, p)], "end": e} for (t, p), e in past_end.items()}
                ),
            )
            try:
                self.store.forget_committed(list(past_end))
            except redis.RedisError as error:
                self.health.report_redis(False, error)
                self.rewind(sources)  # the next read checks again
                return
            floors = {tp: floor for tp, floor in floors.items() if tp not in past_end}
        metrics.FLOOR_SKIPS.inc()
        if floors:
            log.warning(
                "input below the offsets this group committed: skipping to them (a deliberate replay "
                "needs `leadattr clear-offset-floor` first)",
                extra=fields(
                    partitions={
                        str(p): {"from": first[(t, p)], "committed": o} for (t, p), o in floors.items()
                    }
                ),
            )
        self.rewind(sources, floors)
        if not floors:
            return
        try:
            with self.watch.call():
                self.committer.commit_batch([], floors, self.consumer)
        except CommitFailed as failure:
            log.warning(
                "could not commit the floor offsets again; the next batch commits past them",
                extra=fields(error=str(failure)),
            )

    def _past_end(self, floors: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """The partitions whose floor lies past their end offset, with that end. Unknown (broker
        unreachable) counts as not past: skipping is the safe way to be wrong for a moment."""
        past: dict[tuple[str, int], int] = {}
        for (topic, partition), floor in floors.items():
            try:
                with self.watch.call():
                    _low, high = self.consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=SETTLE_TIMEOUT_S
                    )
            except KafkaException:
                continue
            if floor > high:
                past[(topic, partition)] = high
        return past

    def rewind(
        self, sources: Sequence[SourceRecord], committed: dict[tuple[str, int], int] | None = None
    ) -> None:
        """Seek back to the batch's first offsets, so the batch is consumed and processed again;
        or, when known, to the committed offsets (which are authoritative)."""
        for (topic, partition), start in first_offsets(sources).items():
            known = (committed or {}).get((topic, partition), -1)
            offset = known if known >= 0 else start
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except Exception:
                log.info(
                    "rewind skipped for a partition no longer assigned", extra=fields(partition=partition)
                )
