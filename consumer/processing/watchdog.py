"""What the run loop cannot see for itself: Kafka calls blocked while the broker is away, and the
broker's health and the consumer's lag from librdkafka's statistics.

Readiness says "kafka broker unreachable" when a blocking Kafka call has waited over
KAFKA_STALL_S, when librdkafka reports every broker down, or when a broker with requests in
flight has sent nothing for UNRESPONSIVE_S (a frozen broker keeps its connections open). Liveness
is kept while such a call waits, up to KAFKA_CALL_LIVENESS_S.

Lag: librdkafka's own ``consumer_lag`` is computed from the offsets *it* committed; ours are
committed by the transactional producer (send_offsets_to_transaction), so it stays -1. Lag is
therefore the last stable offset (what a read_committed consumer can reach) minus the fetch
position.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from confluent_kafka import KafkaError

from consumer import metrics
from consumer.health import Health
from consumer.logs import fields

log = logging.getLogger(__name__)

# A transactional call blocked this long means the broker is away (a commit takes milliseconds);
# librdkafka may block for the whole outage, so a watchdog thread reports it to readiness.
KAFKA_STALL_S = 5.0
# While such a call waits for the broker (up to socket.timeout.ms, 60 s by default, plus the abort
# after it), the loop is not stuck: liveness is kept up to this bound. A restart would not bring the
# broker back, only crash-loop on init_transactions until it is. Transactional calls are bounded
# in consumer/delivery/committer.py (CALL_GRACE_S); a call still blocked past this bound is stuck
# for good, and only a restart gets the consumer going again: liveness then fails,
# LIVENESS_TIMEOUT_S later.
KAFKA_CALL_LIVENESS_S = 90.0
# Statistics older than this were queued while the loop was blocked: they describe the past.
STATS_STALE_S = 3.0
# A broker connection with a request in flight and nothing received for this long is not answering
# (a frozen broker keeps its connections open, so librdkafka reports no error for a minute); a
# fetch is answered within fetch.wait.max.ms (10 ms as configured in consumer/app.py) when all is well.
UNRESPONSIVE_S = 8.0
# librdkafka error codes that mean "the broker is unreachable", as opposed to a bad record.
BROKER_DOWN = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})


def partition_lag(stats: dict[str, Any], topic: str) -> dict[str, int]:
    """Records behind, per assigned partition of ``topic``; partitions we do not fetch are left out."""
    lag: dict[str, int] = {}
    for partition, values in stats.get("topics", {}).get(topic, {}).get("partitions", {}).items():
        if partition == "-1" or values.get("fetch_state") != "active":
            continue
        end = values.get("ls_offset", -1)
        if end < 0:
            end = values.get("hi_offset", -1)
        if end < 0:
            continue
        position = next(
            (values[k] for k in ("app_offset", "committed_offset", "lo_offset") if values.get(k, -1) >= 0), 0
        )
        lag[partition] = max(0, end - position)
    return lag


class KafkaWatch:
    """Marks the Kafka calls that may block (``call``), watches them from a daemon thread, and
    takes librdkafka's error and statistics callbacks (``on_error``, ``on_stats``)."""

    def __init__(self, health: Health, input_topic: str) -> None:
        self.health = health
        self.input_topic = input_topic
        self._call_since = 0.0  # monotonic start of the blocking Kafka call in progress, 0 if none
        self._group_state: tuple[str, str] = ("", "")  # librdkafka's view of the group, from stats

    def start(self) -> None:
        threading.Thread(target=self._watch_calls, name="kafka-call-watchdog", daemon=True).start()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Marks a call that may block while the broker is away (see _watch_calls)."""
        self._call_since = time.monotonic()
        try:
            yield
        finally:
            self._call_since = 0.0

    def _watch_calls(self) -> None:
        """The run loop cannot report an outage while librdkafka blocks it in a transactional call
        (for as long as the broker is away, whatever the call's timeout), so readiness is updated
        from here, and liveness kept while the wait is plausible. A call blocked past
        KAFKA_CALL_LIVENESS_S is a stuck loop: liveness then fails, as it should."""
        while True:
            time.sleep(0.5)
            since = self._call_since
            if not since:
                continue
            blocked = time.monotonic() - since
            if blocked > KAFKA_STALL_S and self.health.kafka_ok:
                self.health.report_kafka(False, f"a Kafka call is blocked for over {KAFKA_STALL_S:.0f}s")
            if blocked < KAFKA_CALL_LIVENESS_S:
                self.health.beat()

    def kafka_error(self, error: KafkaError) -> None:
        """An error librdkafka reported (a callback, or an error event among consumed records)."""
        metrics.KAFKA_ERRORS.inc()
        if error.code() in BROKER_DOWN:
            self.health.report_kafka(False, error.name())
        else:
            log.warning("kafka error", extra=fields(error=error.name(), detail=error.str()))

    # Called by librdkafka from consume(): errors and statistics.
    def on_error(self, error: KafkaError) -> None:
        self.kafka_error(error)

    def on_stats(self, stats_json: str) -> None:
        stats = json.loads(stats_json)
        for partition, lag in partition_lag(stats, self.input_topic).items():
            metrics.CONSUMER_LAG.labels(partition=partition).set(lag)
        group = stats.get("cgrp", {})
        group_state = (str(group.get("state", "")), str(group.get("join_state", "")))
        if group_state != self._group_state:
            # One line per change: when an instance sits out of its group, this says where.
            self._group_state = group_state
            log.info(
                "consumer group state",
                extra=fields(
                    state=group_state[0], join_state=group_state[1], partitions=group.get("assignment_size")
                ),
            )
        # "ts" is librdkafka's monotonic clock in microseconds, the same CLOCK_MONOTONIC as
        # time.monotonic on Linux; the wall clock is not compared (it may be skewed or stepped).
        if time.monotonic() - stats.get("ts", 0) / 1_000_000 > STATS_STALE_S:
            return  # queued while the loop was blocked: the broker state it shows is history
        brokers = [b for b in stats.get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        silent = [
            b
            for b in brokers
            if b.get("state") == "UP"
            and b.get("waitresp_cnt", 0) > 0
            and b.get("rxidle", -1) > UNRESPONSIVE_S * 1_000_000
        ]
        if silent:
            idle_s = silent[0]["rxidle"] / 1_000_000
            self.health.report_kafka(
                False, f"broker {silent[0]['nodeid']} has not answered for {idle_s:.0f}s"
            )
        elif any(b.get("state") == "UP" for b in brokers):
            self.health.report_kafka(True)
