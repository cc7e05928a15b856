"""One batch's steps against Redis, retried until they succeed: skipping input is never right.

Redis unreachable or restarting (LOADING), MISCONF or OOM, a read-only replica, a schema registry
that does not answer (OSError), or a customer's state changing under us for too long
(ConflictError): the step is tried again with backoff (0.2 s .. 5 s), readiness says why, and a
SIGTERM gives the batch up after a few tries (it is rewound: nothing of it was published). So is
a write that fewer replicas than LEADS_REDIS_MIN_REPLICAS acknowledged (ReplicasBehind: the batch
is not committed until they have it), and one refused because Redis holds less than was committed
(StateLost: consumer/state/recovery.py judges, reports and restores, and the batch waits).
A write refused because the batch's partitions went to another instance (Fenced) is not retried:
the run loop drops the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol, TypeVar

import redis
from confluent_kafka import KafkaException

from consumer import metrics
from consumer.avro.registry import RegistryRefused, RegistryUnavailable
from consumer.delivery.offsets import BACKOFF_MAX_S, BACKOFF_START_S, OffsetKeeper
from consumer.delivery.protocol import Processed
from consumer.health import Health
from consumer.logs import fields
from consumer.model import SourceRecord
from consumer.processing.batch import AlreadyCommitted, BatchProcessor, ConflictError, Started
from consumer.state.store import Fenced, ReplicasBehind, StateLost

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRIED = (redis.RedisError, ConflictError, OSError, ReplicasBehind, StateLost)


class Recovering(Protocol):
    def refused(self, error: StateLost) -> None: ...

    def intact(self) -> None: ...

    def recheck(self) -> None: ...


def report(health: Health, recovery: Recovering, error: Exception) -> None:
    """A failed Redis step, into readiness (and into the recovery of state, when it was refused).
    A schema registry failure (while decoding) is reported as the registry's, not Redis's."""
    if isinstance(error, RegistryUnavailable | RegistryRefused):
        kind = "refused" if isinstance(error, RegistryRefused) else "unavailable"
        metrics.SCHEMA_REGISTRY_ERRORS.labels(kind).inc()
        health.report_registry(f"schema registry {kind}")
        return
    if isinstance(error, StateLost):
        health.report_redis(True)  # Redis answered; what it holds is the problem
        try:
            recovery.refused(error)
        except (redis.RedisError, KafkaException, TimeoutError) as failure:  # judged again next try
            health.report_redis(False, failure)
        return
    metrics.REDIS_ERRORS.inc()
    if isinstance(error, ReplicasBehind):
        health.report_redis(False, error, "redis replicas behind")
    else:
        health.report_redis(False, error)


@dataclass(slots=True)
class Written:
    """A batch decided, its write to Redis sent, the reply not read yet (BatchProcessor.start)."""

    batch: Started
    started: float  # monotonic time it was consumed

    @property
    def sources(self) -> Sequence[SourceRecord]:
        return self.batch.sources


class Retrying:
    """The BatchProcessor's steps as the run loop takes them, each retried while it fails.

    ``stopping`` is the monotonic time of the first SIGTERM (0 while running) and
    ``shutdown_timeout_s`` how long a stop may wait for Redis to come back."""

    def __init__(
        self,
        processor: BatchProcessor,
        offsets: OffsetKeeper,
        health: Health,
        stopping: Callable[[], float],
        shutdown_timeout_s: float,
        recovery: Recovering,
    ) -> None:
        self.recovery = recovery
        self.processor = processor
        self.offsets = offsets
        self.health = health
        self.stopping = stopping
        self.shutdown_timeout_s = shutdown_timeout_s

    def prepare(self, sources: Sequence[SourceRecord]) -> list[Started]:
        """Decoded and validated ahead (no state needed); none when the registry failed: start
        then prepares again, with its retries."""
        prepared: list[Started] = []
        with suppress(OSError):
            prepared.append(self.processor.prepare(sources))
        return prepared

    def start(self, prepared: list[Started], sources: Sequence[SourceRecord]) -> Started | None:
        """The batch decided and its write sent (BatchProcessor.start); None when a stop came
        first. AlreadyCommitted when it starts below the committed-offset floor."""

        def attempt() -> Started:
            batch = prepared.pop() if prepared else self.processor.prepare(sources)
            self.processor.start(batch)
            return batch

        return self._until_done(attempt)

    def whole(self, sources: Sequence[SourceRecord], started: float) -> Processed | None:
        """``sources`` processed in one go; None when the batch was given up (a stop during the
        outage, or input below the floor) and its partitions moved."""
        try:
            result = self._until_done(lambda: self.processor.process(sources))
        except AlreadyCommitted as behind:
            self.health.report_redis(True)  # the read that found the floor succeeded
            self.offsets.skip_to_committed(sources, behind.floors)
            return None
        if result is None:
            self.offsets.rewind(sources)  # stopping during an outage: nothing was published
            return None
        self.recovery.intact()  # its write passed the guards (consumer/state/recovery.py)
        return Processed(sources, result, started)

    def complete(self, written: Written) -> Processed | None:
        """The batch written last round, its reply read (and conflicts retried); when the reply
        is lost, the batch processed again whole: None if it was then given up (see whole)."""
        try:
            result = self.processor.finish(written.batch)
            self._succeeded()
            self.recovery.intact()
            return Processed(written.sources, result, written.started)
        except Fenced as fenced:
            log.warning(
                "batch dropped: its partitions were assigned to another instance",
                extra=fields(error=str(fenced)),
            )
            self.offsets.rewind(written.sources)
            return None
        except _RETRIED as error:
            report(self.health, self.recovery, error)
        # Whether the write was applied is unknown: the batch is processed again from the start;
        # if it was, the journal repeats its decisions.
        return self.whole(written.sources, written.started)

    def _succeeded(self) -> None:
        self.health.report_redis(True)
        self.health.report_registry(None)

    def _until_done(self, step: Callable[[], T]) -> T | None:
        """step() until it succeeds, with backoff; None when a stop comes first, or when the write
        was fenced (the batch's partitions belong to another instance: it is dropped, rewound, and
        the rebalance that took them arrives with the next poll)."""
        backoff = BACKOFF_START_S
        while True:
            try:
                result = step()
                self._succeeded()
                return result
            except Fenced as fenced:
                log.warning(
                    "batch dropped: its partitions were assigned to another instance",
                    extra=fields(error=str(fenced)),
                )
                return None
            except _RETRIED as error:
                report(self.health, self.recovery, error)
            stopping = self.stopping()
            overdue = bool(stopping) and time.monotonic() - stopping > self.shutdown_timeout_s
            if overdue or (stopping and backoff >= BACKOFF_MAX_S):
                return None
            metrics.REDIS_RETRIES.inc()
            self.health.beat()
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
