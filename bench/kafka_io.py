"""Kafka side of the bench: fresh topics, a fast pre-loading producer, a paced producer and a
read_committed reader that timestamps what becomes visible downstream."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

# The config names are re-exported by confluent_kafka.admin without an __all__, which mypy
# --strict does not take as an export; they are its documented names.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from bench.workload import PUBLISHES_NOW, Event

PARTITIONS = 6


def set_broker_configs(bootstrap: str, changes: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """Dynamic settings on every broker (--broker-config: what a broker setting costs, measured on
    the same broker as the rest), waiting until each broker reports them. Returns per broker the
    dynamic values they replaced (None: none, the static or default one applied), for
    restore_broker_configs. An unknown name raises ValueError, a setting the broker will not change
    at runtime KafkaException; either way no broker is left changed."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    brokers = [str(b) for b in admin.list_topics(timeout=10).brokers]
    replaced: dict[str, dict[str, str | None]] = {}
    dynamic = ConfigSource.DYNAMIC_BROKER_CONFIG.value
    try:
        for broker in brokers:
            current = _broker_configs(admin, broker)
            unknown = sorted(set(changes) - set(current))
            if unknown:
                raise ValueError(f"broker {broker} has no setting named {', '.join(unknown)}")
            previous = {
                name: current[name].value if current[name].source == dynamic else None for name in changes
            }
            _alter_broker(admin, broker, changes)
            replaced[broker] = previous  # changed: to be restored, whatever happens next
            _wait_for_broker(admin, broker, changes)
    except BaseException:
        restore_broker_configs(bootstrap, replaced)
        raise
    return replaced


def restore_broker_configs(bootstrap: str, replaced: dict[str, dict[str, str | None]]) -> None:
    """Undo set_broker_configs: the dynamic values back, or no dynamic value where there was none."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for broker, previous in replaced.items():
        _alter_broker(admin, broker, previous)


def _broker_configs(admin: AdminClient, broker: str) -> dict[str, Any]:
    resource = ConfigResource(ResourceType.BROKER, broker)
    configs: dict[str, Any] = admin.describe_configs([resource])[resource].result(30)
    return configs


def _alter_broker(admin: AdminClient, broker: str, values: Mapping[str, str | None]) -> None:
    """SET each value, or DELETE the dynamic one where the value is None."""
    entries = [
        ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
        if value is not None
        else ConfigEntry(name, "", incremental_operation=AlterConfigOpType.DELETE)
        for name, value in values.items()
    ]
    resource = ConfigResource(ResourceType.BROKER, broker, incremental_configs=entries)
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


def _wait_for_broker(admin: AdminClient, broker: str, expected: dict[str, str]) -> None:
    # The broker applies a dynamic setting asynchronously: describing it right after the change
    # was seen to answer the old value.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        current = _broker_configs(admin, broker)
        if all(current[name].value == value for name, value in expected.items()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"broker {broker} did not report {expected} within 15 s")


def _producer(bootstrap: str, **extra: Any) -> Any:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            **extra,
        }
    )


def preload(bootstrap: str, topic: str, events: Sequence[Event]) -> float:
    """Produce everything as fast as the broker takes it (big lz4 batches); returns the seconds taken."""
    producer = _producer(
        bootstrap,
        **{
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        },
    )
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            failures.append(error.str())

    started = time.monotonic()
    for event in events:
        while True:
            try:
                producer.produce(topic, value=event.value, key=event.key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(f"pre-load failed: {remaining} undelivered, {failures[:1]}")
    return time.monotonic() - started


@dataclass
class PacedRun:
    sent: int = 0
    seconds: float = 0.0
    # key -> input record timestamp (ms) of the event that makes the consumer publish for that key
    sent_ms: dict[bytes, int] = field(default_factory=dict)
    expected_outputs: int = 0
    max_behind: int = 0  # worst shortfall against the schedule, in events


def paced_produce(
    bootstrap: str, topic: str, events: Sequence[Event], rate: float, duration_s: float
) -> PacedRun:
    """Offer ``rate`` events/s for ``duration_s`` seconds, as product services would (linger 5 ms).

    Each record carries an explicit CreateTime taken at produce(); that is the start of its
    end-to-end latency. Sends are scheduled against the clock, so a slow consumer cannot slow the
    offered load down (an open-loop load generator, no coordinated omission).
    """
    producer = _producer(bootstrap, **{"linger.ms": 5})
    run = PacedRun()
    total = min(len(events), int(rate * duration_s))
    started = time.monotonic()
    while run.sent < total:
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        run.max_behind = max(run.max_behind, due - run.sent - 1)
        while run.sent < due:
            event = events[run.sent]
            now_ms = int(time.time() * 1000)
            try:
                producer.produce(topic, value=event.value, key=event.key, timestamp=now_ms)
            except BufferError:
                producer.poll(0.01)
                continue
            if event.kind in PUBLISHES_NOW:
                run.sent_ms[event.key] = now_ms
            run.sent += 1
        producer.poll(0)
        time.sleep(0.002)
    run.seconds = time.monotonic() - started
    producer.flush(30)
    run.expected_outputs = len(run.sent_ms)
    return run


@dataclass(frozen=True, slots=True)
class Seen:
    key: bytes
    record_ms: int  # the output record's timestamp (CreateTime set by the consumer's producer)
    visible_ms: int  # wall clock when this read_committed reader received it


class OutputReader:
    """Reads output topics with isolation.level=read_committed in a background thread, noting
    when each record became visible: what an analytics pipeline downstream would see."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"bench-reader-{time.time_ns()}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                # The broker answers a fetch as soon as committed records are there, so a long
                # wait delays nothing; at 5 ms this reader alone cost the shared broker 0.16 of a
                # core with no traffic at all (measured), CPU the consumer under test then lacked.
                "fetch.wait.max.ms": 100,
                "fetch.min.bytes": 1,
                "enable.partition.eof": False,
            }
        )
        self._consumer.assign(
            [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(PARTITIONS)]
        )
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-output-reader", daemon=True)

    def start(self) -> OutputReader:
        self._thread.start()
        return self

    def _loop(self) -> None:
        # Wait for the first record, then take what else is queued without waiting: consume(n,
        # wait) would hold what arrived until n records or the wait are reached, and so add up to
        # the whole wait (25 ms on average at 50 ms, measured) to every latency seen here.
        while not self._stop.is_set():
            first = self._consumer.poll(0.05)
            if first is None:
                continue
            visible_ms = int(time.time() * 1000)
            for message in [first, *self._consumer.consume(1000, 0)]:
                if message.error() is not None:
                    continue
                self.seen.append(Seen(message.key() or b"", message.timestamp()[1], visible_ms))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()
