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
  On a failure before Step 4 the transaction is aborted and the caller rewinds to the batch's first
  offsets. A failure *in* Step 4 (e.g. commit_transaction timing out while the broker restarts)
  leaves the outcome unknown: the coordinator may still complete the commit. The caller must not
  replay blindly (that would publish the batch twice); ``CommitFailed.maybe_committed`` tells it to
  ask the group coordinator for the committed offsets first (see OffsetKeeper.settle).

Errors (confluent-kafka raises KafkaException carrying a KafkaError):
  fatal            the producer is unusable (e.g. fenced): it is retired, and the next transaction
                   starts with a new producer whose init_transactions (same transactional.id)
                   fences the old one; the coordinator then completes or aborts its transaction.
  txn_requires_abort / anything else before Step 4: abort_transaction. If the abort itself fails
                   (broker away, wrong state), the producer is retired as above.
  retriable in Step 4: commit_transaction is called again (the documented way to learn the
                   outcome), COMMIT_RETRIES times; then as "anything else".
Every failure surfaces as CommitFailed, never as a raw KafkaException, so the run loop survives it.

at_least_once, per batch:
  Step 1. Produce every output.  Step 2. Flush; any failed delivery (only failures are reported)
          fails the batch.
  Step 3. Commit the input offsets synchronously.  Step 4. Forget the journal entries.
  A crash between 2 and 3 replays the batch: the journal makes it repeat the same records.

Timer-driven unlinked records go in their own transaction (or flush) without offsets.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from consumer.avro.outputs import Output
from consumer.logs import fields
from consumer.metrics import COMMIT_FAILURES, COMMITS, KAFKA_ERRORS, TRANSACTION_ABORTS

log = logging.getLogger(__name__)

# Per blocking transactional call. A broker restart may take longer; then the batch is aborted (or,
# in Step 4, settled from the committed offsets) and retried by the run loop, which meanwhile
# keeps beating, logs the outage once and notices SIGTERM. Short enough that a SIGTERM in the
# middle of a commit still exits within Kubernetes' 30 s grace period.
TRANSACTION_TIMEOUT_S = 8.0
# The first init_transactions, at start-up, may wait for the coordinator to load its state.
INIT_TIMEOUT_S = 30.0
COMMIT_RETRIES = 2
# librdkafka does not always honour a transactional call's timeout: after a broker restart,
# send_offsets_to_transaction was seen blocking for minutes with an 8 s timeout (make chaos,
# docs/chaos.md). So each such call runs in a helper thread, and one still running this long past
# its own timeout is given up together with its producer (see _bounded).
CALL_GRACE_S = 12.0


class CommitFailed(Exception):
    """The batch was not committed, or maybe it was: see ``maybe_committed``.

    ``maybe_committed`` False: nothing of the batch is visible; rewind and process it again.
    ``maybe_committed`` True: the outcome is unknown; look at the committed offsets before replaying.
    ``code``: the KafkaError code behind it, when there is one (the run loop tells an unreachable
    broker from, say, a rebalance by it).
    """

    def __init__(
        self, message: str, fatal: bool = False, maybe_committed: bool = False, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.fatal = fatal
        self.maybe_committed = maybe_committed
        self.code = code


class CallStuck(Exception):
    """A librdkafka call did not return within its bound."""


def _bounded(call: Callable[..., Any], *args: Any, limit_s: float) -> Any:
    """call(*args) in a daemon thread: its result or its exception, or CallStuck after limit_s.
    A stuck call keeps its thread (librdkafka cannot be interrupted); the caller abandons the
    producer, and a new one with the same transactional.id fences it."""
    outcome: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            outcome.append((True, call(*args)))
        except BaseException as exc:  # handed to the caller's thread as it is
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="kafka-transaction-call", daemon=True)
    thread.start()
    thread.join(limit_s)
    if not outcome:
        raise CallStuck(f"{getattr(call, '__name__', 'call')} did not return within {limit_s:.0f}s")
    ok, value = outcome[0]
    if ok:
        return value
    raise value


class Committer(Protocol):
    def commit_batch(
        self, outputs: Sequence[Output], offsets: dict[tuple[str, int], int], consumer: Any
    ) -> None: ...

    def publish(self, outputs: Sequence[Output]) -> None: ...

    def recover(self) -> None:
        """Make the producer usable again after a failure; CommitFailed while it cannot be."""
        ...

    def close(self) -> None: ...


def _error_of(exc: KafkaException) -> KafkaError | None:
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, KafkaError) else None


def _describe(exc: KafkaException) -> str:
    error = _error_of(exc)
    return f"{error.name()}: {error.str()}" if error is not None else str(exc)


class _Base:
    def __init__(self, make_producer: Callable[[], Producer]) -> None:
        self._make_producer = make_producer
        self._delivery_errors: list[str] = []
        self.producer = make_producer()

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(err.str())

    def _produce(self, outputs: Sequence[Output]) -> None:
        produce, on_delivery = self.producer.produce, self._on_delivery
        for out in outputs:
            while True:
                try:
                    # Positional (topic, value, key, partition -1 = by key, callback): keyword
                    # arguments cost about 1 us more per record (measured), ~1,500 per batch.
                    produce(out.topic, out.value, out.key, -1, on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.05)  # local queue full: serve delivery reports, then retry

    def recover(self) -> None:
        return None

    def close(self) -> None:
        try:
            self.producer.flush(5)
        except KafkaException as error:
            # A fenced or otherwise fatal producer cannot flush. Nothing is lost: what it did not
            # commit is aborted, and the partitions' next owner replays from the committed offsets.
            log.warning("producer not flushed at close", extra=fields(error=str(error.args[0])))


class TransactionalCommitter(_Base):
    def __init__(self, make_producer: Callable[[], Producer]) -> None:
        super().__init__(make_producer)
        # At start-up, so that a restarted instance with the same transactional.id fences its
        # predecessor's open transaction at once (it would otherwise block the partitions until
        # transaction.timeout.ms). A broker that is away at start-up fails the start.
        self._abandoned: list[Producer] = []  # stuck in a call: kept, never destroyed (it would block)
        self._call("init_transactions", INIT_TIMEOUT_S)
        self._retired = False  # the producer must be replaced before the next transaction
        self._initialised = True

    def _call(self, name: str, timeout_s: float | None, *args: Any) -> Any:
        """A transactional call of the current producer, bounded (see CALL_GRACE_S). A stuck
        call retires the producer and raises CallStuck."""
        producer = self.producer
        call_args = (*args, timeout_s) if timeout_s is not None else args
        limit_s = (timeout_s or TRANSACTION_TIMEOUT_S) + CALL_GRACE_S
        try:
            return _bounded(getattr(producer, name), *call_args, limit_s=limit_s)
        except CallStuck as stuck:
            self._abandoned.append(producer)
            self._retired = True
            log.warning("abandoning the transactional producer", extra=fields(reason=str(stuck)))
            raise

    def _retire(self, reason: str) -> None:
        if not self._retired:
            log.warning("recreating the transactional producer", extra=fields(reason=reason))
        self._retired = True

    def recover(self) -> None:
        """A new producer after a fatal error or a failed abort, then init_transactions.

        With the same transactional.id, init_transactions bumps the epoch: the old producer is
        fenced and the coordinator completes (if it was prepared) or aborts its transaction, so
        the committed offsets read after this are the final ones."""
        if not self._retired and self._initialised:
            return
        try:
            if self._retired:
                self._initialised = False
                self.producer = self._make_producer()  # the old one is destroyed with its last reference
                self._retired = False
            self._call("init_transactions", TRANSACTION_TIMEOUT_S)
            self._initialised = True
        except CallStuck as stuck:
            KAFKA_ERRORS.inc()
            raise CommitFailed(
                f"transactional producer not ready: {stuck}", code=KafkaError._TIMED_OUT
            ) from None
        except KafkaException as exc:
            error = _error_of(exc)
            fatal = error is not None and error.fatal()
            if fatal:
                self._retire(f"init_transactions: {_describe(exc)}")
            KAFKA_ERRORS.inc()
            raise CommitFailed(
                f"transactional producer not ready: {_describe(exc)}",
                fatal=fatal,
                code=error.code() if error is not None else None,
            ) from None

    def _fail(self, exc: KafkaException, committing: bool) -> CommitFailed:
        """Turn a failed step into CommitFailed, leaving the producer ready for the next batch."""
        COMMIT_FAILURES.inc()
        KAFKA_ERRORS.inc()
        error = _error_of(exc)
        code = error.code() if error is not None else None
        detail = _describe(exc)
        if error is not None and error.fatal():
            self._retire(f"fatal: {detail}")
            return CommitFailed(f"fatal transaction error: {detail}", True, committing, code)
        TRANSACTION_ABORTS.inc()
        try:
            self._call("abort_transaction", TRANSACTION_TIMEOUT_S)
        except CallStuck:
            pass  # the producer is retired: the next one fences it, and its transaction is aborted
        except KafkaException as abort_exc:
            # Broker away, or a commit in flight (abort is not allowed then): only a new producer
            # gets out of this state without waiting for the old transaction to time out.
            self._retire(f"abort failed: {_describe(abort_exc)}")
        return CommitFailed(f"transaction aborted: {detail}", False, committing, code)

    def _transaction(self, outputs: Sequence[Output], offsets: list[TopicPartition], consumer: Any) -> None:
        self.recover()
        self._delivery_errors.clear()
        committing = False
        try:
            self._call("begin_transaction", None)  # Step 1
            self._produce(outputs)  # Step 2
            if offsets:
                self._call(  # Step 3
                    "send_offsets_to_transaction",
                    TRANSACTION_TIMEOUT_S,
                    offsets,
                    consumer.consumer_group_metadata(),
                )
            committing = True
            self._commit()  # Step 4
        except KafkaException as exc:
            raise self._fail(exc, committing) from None
        except CallStuck as stuck:
            # The producer is abandoned (retired): the next transaction starts with a new one, whose
            # init_transactions fences it and has the coordinator finish its transaction.
            COMMIT_FAILURES.inc()
            KAFKA_ERRORS.inc()
            raise CommitFailed(
                f"transaction abandoned: {stuck}", maybe_committed=committing, code=KafkaError._TIMED_OUT
            ) from None
        if self._delivery_errors:
            # commit_transaction succeeded, which it does only once every record is delivered; a
            # report saying otherwise is trusted neither way: let the caller read the offsets.
            COMMIT_FAILURES.inc()
            raise CommitFailed(f"delivery failed: {self._delivery_errors[0]}", maybe_committed=True)
        COMMITS.inc()

    def _commit(self) -> None:
        for attempt in range(COMMIT_RETRIES):
            try:
                self._call("commit_transaction", TRANSACTION_TIMEOUT_S)
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
        try:
            self._produce(outputs)  # Step 1
        except KafkaException as exc:  # refused before it left (unknown topic, too large): retried
            COMMIT_FAILURES.inc()
            KAFKA_ERRORS.inc()
            raise CommitFailed(f"delivery failed: {_describe(exc)}") from None
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
