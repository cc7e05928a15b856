"""Publishing outputs and committing input offsets: the delivery guarantee lives here.

exactly_once (default), per batch:
  Step 1. Begin a Kafka transaction.
  Step 2. Produce every output of the batch (attributed, dead-letter) into it.
  Step 3. Add the input offsets to it, with the consumer's group metadata, so that a zombie whose
          partitions were reassigned is fenced by the group coordinator (KIP-447).
  Step 4. Commit the transaction: outputs and offsets become visible together or not at all.
  Step 5. Only after that may the batch's journal entries in Redis be forgotten (the caller queues
          them for its next round trip). Until Step 4 succeeds they are what makes a replay of
          the same offsets publish the same records.
  On any failure the transaction is aborted and the caller rewinds to the batch's first offsets.

at_least_once, per batch:
  Step 1. Produce every output.  Step 2. Flush and check every delivery report.
  Step 3. Commit the input offsets synchronously.  Step 4. Forget the journal entries.
  A crash between 2 and 3 replays the batch: the journal makes it repeat the same records.

Timer-driven unlinked records go in their own transaction (or flush) without offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from consumer.metrics import COMMIT_FAILURES, COMMITS, KAFKA_ERRORS, TRANSACTION_ABORTS
from consumer.publish import Output

log = logging.getLogger(__name__)

# Longer than a broker restart on this single-node setup, shorter than Kubernetes' 30 s grace period.
TRANSACTION_TIMEOUT_S = 20.0
COMMIT_RETRIES = 3


class CommitFailed(Exception):
    """The batch was not committed; the caller must rewind and process it again."""

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class Committer(Protocol):
    def commit_batch(
        self, outputs: Sequence[Output], offsets: dict[tuple[str, int], int], consumer: Any
    ) -> None: ...

    def publish(self, outputs: Sequence[Output]) -> None: ...

    def close(self) -> None: ...


def _error_of(exc: KafkaException) -> KafkaError | None:
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, KafkaError) else None


class _Base:
    def __init__(self, make_producer: Callable[[], Producer]) -> None:
        self._make_producer = make_producer
        self._delivery_errors: list[str] = []
        self.producer = make_producer()

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(err.str())

    def _produce(self, outputs: Sequence[Output]) -> None:
        for out in outputs:
            while True:
                try:
                    self.producer.produce(
                        out.topic, value=out.value, key=out.key, on_delivery=self._on_delivery
                    )
                    break
                except BufferError:
                    self.producer.poll(0.05)  # local queue full: serve delivery reports, then retry

    def close(self) -> None:
        self.producer.flush(5)


class TransactionalCommitter(_Base):
    def __init__(self, make_producer: Callable[[], Producer]) -> None:
        super().__init__(make_producer)
        self.producer.init_transactions(TRANSACTION_TIMEOUT_S)

    def _renew(self) -> None:
        # A fatal error (e.g. fenced by a newer instance with our transactional.id) ends this producer.
        log.warning("recreating the transactional producer after a fatal error")
        self.producer = self._make_producer()
        self.producer.init_transactions(TRANSACTION_TIMEOUT_S)

    def _abort(self, reason: str) -> CommitFailed:
        TRANSACTION_ABORTS.inc()
        COMMIT_FAILURES.inc()
        KAFKA_ERRORS.inc()
        fatal = False
        try:
            self.producer.abort_transaction(TRANSACTION_TIMEOUT_S)
        except KafkaException as exc:
            error = _error_of(exc)
            fatal = error is None or error.fatal()
        if fatal:
            self._renew()
        return CommitFailed(reason, fatal)

    def _transaction(self, outputs: Sequence[Output], offsets: list[TopicPartition], consumer: Any) -> None:
        self._delivery_errors.clear()
        try:
            self.producer.begin_transaction()  # Step 1
            self._produce(outputs)  # Step 2
            if offsets:
                self.producer.send_offsets_to_transaction(  # Step 3
                    offsets, consumer.consumer_group_metadata(), TRANSACTION_TIMEOUT_S
                )
            self._commit()  # Step 4
        except KafkaException as exc:
            error = _error_of(exc)
            if error is not None and error.fatal():
                COMMIT_FAILURES.inc()
                KAFKA_ERRORS.inc()
                self._renew()
                raise CommitFailed(f"fatal transaction error: {error.str()}", fatal=True) from None
            raise self._abort(f"transaction aborted: {exc}") from None
        if self._delivery_errors:
            # Cannot happen after a successful commit, but never trust it silently.
            raise CommitFailed(f"delivery failed: {self._delivery_errors[0]}")
        COMMITS.inc()

    def _commit(self) -> None:
        for attempt in range(COMMIT_RETRIES):
            try:
                self.producer.commit_transaction(TRANSACTION_TIMEOUT_S)
                return
            except KafkaException as exc:
                error = _error_of(exc)
                retriable = error is not None and error.retriable() and not error.txn_requires_abort()
                if not retriable or attempt == COMMIT_RETRIES - 1:
                    raise
                KAFKA_ERRORS.inc()  # outcome unknown: committing again is the documented way to learn it

    def commit_batch(
        self, outputs: Sequence[Output], offsets: dict[tuple[str, int], int], consumer: Any
    ) -> None:
        self._transaction(outputs, [TopicPartition(t, p, o) for (t, p), o in offsets.items()], consumer)

    def publish(self, outputs: Sequence[Output]) -> None:
        self._transaction(outputs, [], None)


class AtLeastOnceCommitter(_Base):
    def _deliver(self, outputs: Sequence[Output]) -> None:
        self._delivery_errors.clear()
        self._produce(outputs)  # Step 1
        remaining = self.producer.flush(TRANSACTION_TIMEOUT_S)  # Step 2
        if remaining or self._delivery_errors:
            COMMIT_FAILURES.inc()
            KAFKA_ERRORS.inc()
            detail = self._delivery_errors[0] if self._delivery_errors else f"{remaining} records undelivered"
            raise CommitFailed(f"delivery failed: {detail}")

    def commit_batch(
        self, outputs: Sequence[Output], offsets: dict[tuple[str, int], int], consumer: Any
    ) -> None:
        self._deliver(outputs)
        try:
            consumer.commit(  # Step 3
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            COMMIT_FAILURES.inc()
            KAFKA_ERRORS.inc()
            raise CommitFailed(f"offset commit failed: {exc}") from None
        COMMITS.inc()

    def publish(self, outputs: Sequence[Output]) -> None:
        self._deliver(outputs)
