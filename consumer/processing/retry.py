"""One batch's steps against Redis, retried until they succeed: skipping input is never right.

Redis unreachable or restarting (LOADING), MISCONF or OOM, a read-only replica, a schema registry
that does not answer (OSError), or a customer's state changing under us for too long
(ConflictError): the step is tried again with backoff (0.2 s .. 5 s), readiness says why, and a
SIGTERM gives the batch up after a few tries (it is rewound: nothing of it was published).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import TypeVar

import redis

from consumer import metrics
from consumer.delivery.offsets import BACKOFF_MAX_S, BACKOFF_START_S, OffsetKeeper
from consumer.delivery.protocol import Processed
from consumer.health import Health
from consumer.model import SourceRecord
from consumer.processing.batch import AlreadyCommitted, BatchProcessor, ConflictError, Started

T = TypeVar("T")
_RETRIED = (redis.RedisError, ConflictError, OSError)


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
    ) -> None:
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
        return Processed(sources, result, started)

    def complete(self, written: Written) -> Processed | None:
        """The batch written last round, its reply read (and conflicts retried); when the reply
        is lost, the batch processed again whole: None if it was then given up (see whole)."""
        try:
            result = self.processor.finish(written.batch)
            self.health.report_redis(True)
            return Processed(written.sources, result, written.started)
        except _RETRIED as error:
            metrics.REDIS_ERRORS.inc()
            self.health.report_redis(False, error)
        # Whether the write was applied is unknown: the batch is processed again from the start;
        # if it was, the journal repeats its decisions.
        return self.whole(written.sources, written.started)

    def _until_done(self, step: Callable[[], T]) -> T | None:
        """step() until it succeeds, with backoff; None when a stop comes first."""
        backoff = BACKOFF_START_S
        while True:
            try:
                result = step()
                self.health.report_redis(True)
                return result
            except _RETRIED as error:
                metrics.REDIS_ERRORS.inc()
                self.health.report_redis(False, error)
            stopping = self.stopping()
            overdue = bool(stopping) and time.monotonic() - stopping > self.shutdown_timeout_s
            if overdue or (stopping and backoff >= BACKOFF_MAX_S):
                return None
            metrics.REDIS_RETRIES.inc()
            self.health.beat()
            time.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
