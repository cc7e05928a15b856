"""Test helpers for the real broker: topics per test, producing lead events, reading outputs."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.avro.codec import Codec
from consumer.avro.schemas import decode, load_schema

# The ports `make services-up` used (Makefile: KAFKA_PORT, REDIS_PORT), so a second checkout can
# run its suite against servers of its own.
BOOTSTRAP = f"127.0.0.1:{os.environ.get('KAFKA_PORT', '9092')}"
REDIS_URL = f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0"

LEAD_FIELDS = ("clickId", "mode", "timestamp", "customerName", "customerEmail", "customerAvatar", "metadata")


@dataclass(frozen=True)
class Topics:
    suffix: str
    input: str
    attributed: str
    unlinked: str
    dead_letter: str

    @classmethod
    def fresh(cls) -> Topics:
        s = uuid.uuid4().hex[:10]
        return cls(s, f"t{s}.raw", f"t{s}.attributed", f"t{s}.unlinked", f"t{s}.dead-letter")

    def all(self) -> list[str]:
        return [self.input, self.attributed, self.unlinked, self.dead_letter]

    def env(self) -> dict[str, str]:
        return {
            "LEADS_INPUT_TOPIC": self.input,
            "LEADS_ATTRIBUTED_TOPIC": self.attributed,
            "LEADS_UNLINKED_TOPIC": self.unlinked,
            "LEADS_DEAD_LETTER_TOPIC": self.dead_letter,
            "LEADS_CONSUMER_GROUP": f"g{self.suffix}",
            "LEADS_REDIS_PREFIX": f"t{self.suffix}",
        }


def create_topics(names: Iterable[str], partitions: int = 3, bootstrap: str = BOOTSTRAP) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
    )
    for future in futures.values():
        future.result(30)


def lead(cid: str, event_name: str, **fields: Any) -> dict[str, Any]:
    return {"customerExternalId": cid, "eventName": event_name, **{f: fields.get(f) for f in LEAD_FIELDS}}


def produce(
    topic: str,
    records: Iterable[dict[str, Any] | bytes],
    keys: Iterable[bytes | None] | None = None,
    bootstrap: str = BOOTSTRAP,
) -> int:
    codec = Codec("lead_event")
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    key_list = list(keys) if keys is not None else None
    count = 0
    for index, record in enumerate(records):
        value = record if isinstance(record, bytes) else codec.encode(record)
        if key_list is not None:
            key = key_list[index]
        elif isinstance(record, dict):
            key = record["customerExternalId"].encode()
        else:
            key = None
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    if producer.flush(60):
        raise RuntimeError("not all test records were delivered")
    return count


SCHEMA_OF = {"attributed": "attributed_lead", "unlinked": "unlinked_lead", "dead-letter": "dead_letter"}


def schema_for(topic: str) -> str:
    return SCHEMA_OF[topic.rsplit(".", 1)[-1]]


def read_topic(
    topic: str,
    expected: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
    bootstrap: str = BOOTSTRAP,
) -> list[dict[str, Any]]:
    """Committed records of a topic (read_committed), decoded; stops at ``expected`` records or when
    nothing new arrived for ``idle_s`` after the timeout... whichever comes first after ``expected``."""
    schema = load_schema(schema_for(topic))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(500, 0.5)
            for message in batch:
                error = message.error()
                if error is not None:
                    if error.code() == -191:  # partition EOF
                        continue
                    raise KafkaException(error)
                value = decode(schema, message.value() or b"")
                value["_key"] = message.key()
                value["_partition"] = message.partition()
                records.append(value)
                last_new = time.monotonic()
            if expected is not None and len(records) >= expected and time.monotonic() - last_new >= idle_s:
                break
            if expected is None and records and time.monotonic() - last_new >= idle_s:
                break
    finally:
        consumer.close()
    return records


def committed_offsets(
    group: str, topic: str, partitions: int = 3, bootstrap: str = BOOTSTRAP
) -> dict[int, int]:
    from confluent_kafka import TopicPartition  # noqa: PLC0415

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed}


def end_offsets(topic: str, partitions: int = 3, bootstrap: str = BOOTSTRAP) -> dict[int, int]:
    from confluent_kafka import TopicPartition  # noqa: PLC0415

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def set_group_offsets(
    group: str, topic: str, offsets: dict[int, int], bootstrap: str = BOOTSTRAP, timeout_s: float = 30
) -> None:
    """Set a group's committed offsets with the admin API (the group must have no live member)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result(timeout_s)


def wake_entries(client: Any, prefix: str) -> dict[int, list[str]]:
    """The wake index as stored (consumer/state/store.py): second -> cids of its list (after the
    list's header)."""
    seconds = [int(s) for s in client.zrange(f"{prefix}:wake", 0, -1)]
    return {s: [c.decode() for c in client.lrange(f"{prefix}:wake:{s}", 1, -1)] for s in seconds}
