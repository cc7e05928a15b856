"""The run loop's timers: the expiry sweep and the cluster-wide gauges read from Redis.

They run between batches (and while the input is quiet), on the run loop: the sweeper's unlinked
records go through the same producer as the batches', and no commit runs at the same time.
"""

from __future__ import annotations

import logging
import time

import redis

from consumer import metrics
from consumer.avro.outputs import OutputCodecs
from consumer.delivery.committer import CommitFailed, Committer
from consumer.health import Health
from consumer.logs import fields
from consumer.processing.sweeper import ExpirySweeper
from consumer.processing.watchdog import KafkaWatch
from consumer.state.store import StateStore

log = logging.getLogger(__name__)

COUNTS_INTERVAL_S = 5.0


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
    ) -> None:
        self.sweeper = sweeper
        self.codecs = codecs
        self.committer = committer
        self.store = store
        self.health = health
        self.watch = watch
        self.sweep_interval_s = sweep_interval_s
        self.next_sweep = 0.0  # monotonic times the timers are due
        self.next_counts = 0.0

    def run_due(self) -> None:
        now = time.monotonic()
        if now >= self.next_sweep:
            more = self._sweep()
            self.next_sweep = now + (0 if more else self.sweep_interval_s)
        if now >= self.next_counts:
            self.next_counts = now + COUNTS_INTERVAL_S
            try:
                pending, held = self.store.counts()
                metrics.PENDING.set(pending)
                metrics.HELD.set(held)
            except redis.RedisError as error:
                metrics.REDIS_ERRORS.inc()
                self.health.report_redis(False, error)

    def _sweep(self) -> bool:
        """One round of the expiry sweeper (consumer/processing/sweeper.py, Steps 1-4): True when
        more may be due at once."""
        started = time.monotonic()
        try:
            claimed = self.sweeper.claim_due()
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
        except redis.RedisError as error:
            metrics.REDIS_ERRORS.inc()
            self.health.report_redis(False, error)
        except CommitFailed as failure:
            log.warning(
                "unlinked records not published; the lease will lapse and retry",
                extra=fields(error=str(failure)),
            )
        finally:
            metrics.SWEEP_DURATION.observe(time.monotonic() - started)
        return False
