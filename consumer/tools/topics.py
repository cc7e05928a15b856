"""`leadattr topics create|check`: the service's topics as it needs them, and the check that an
output can keep an acknowledged record through the loss of a broker.

Every topic gets LEADS_TOPIC_PARTITIONS partitions, LEADS_TOPIC_REPLICATION_FACTOR replicas and
min.insync.replicas LEADS_TOPIC_MIN_INSYNC_REPLICAS (with acks=all, a record is acknowledged once
that many replicas have it). The input takes the broker's clock as each record's time
(LogAppendTime, contract rule 8) and is kept twice the pending TTL, so a consumer outage of a whole
window can still be replayed; the outputs are kept as long; dead letters 30 days (time to fix and
replay them); the state changelog is compacted, one state per customer, kept forever, with every
record compacted within a day (max.compaction.lag.ms: an erased customer's older states are gone
from it by then, docs/operations.md "Erasure"); the erasure records are kept as long as the outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # not re-exported in its type stubs
from confluent_kafka.admin._metadata import TopicMetadata
from confluent_kafka.cimpl import NewTopic

from consumer.config import Settings

_DEAD_LETTER_RETENTION_MS = 30 * 86_400_000
_COMPACTION_LAG_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    role: str
    configs: dict[str, str]


def specs(s: Settings) -> list[TopicSpec]:
    retention = str(int(max(2 * s.pending_ttl_seconds, 86_400) * 1000))
    # No more than the replicas there are: min.insync.replicas 2 on one replica refuses every write.
    durable = {"min.insync.replicas": str(min(s.topic_min_insync_replicas, s.topic_replication_factor))}
    deleted = {**durable, "cleanup.policy": "delete", "retention.ms": retention}
    return [
        TopicSpec(s.input_topic, "input", {**deleted, "message.timestamp.type": "LogAppendTime"}),
        TopicSpec(s.attributed_topic, "attributed", deleted),
        TopicSpec(s.unlinked_topic, "unlinked", deleted),
        TopicSpec(
            s.dead_letter_topic, "dead letters", {**deleted, "retention.ms": str(_DEAD_LETTER_RETENTION_MS)}
        ),
        TopicSpec(
            s.changelog_topic,
            "state changelog",
            {
                **durable,
                "cleanup.policy": "compact",
                "retention.ms": "-1",
                "max.compaction.lag.ms": str(_COMPACTION_LAG_MS),
            },
        ),
        TopicSpec(s.erasure_topic, "erasure records", deleted),
    ]


def replication_factor(topic: TopicMetadata) -> int:
    """The fewest replicas any partition of the topic has."""
    return min(len(p.replicas) for p in topic.partitions.values())


def _admin(base: dict[str, Any]) -> AdminClient:
    return AdminClient({**base, "log_level": 3})


def broker_count(admin: AdminClient) -> int:
    return len(admin.list_topics(timeout=10).brokers)


def create(s: Settings, base: dict[str, Any], say: Callable[[str], None] = print) -> int:
    """Creates what is missing (an existing topic is left as it is: `check` reports on it)."""
    admin = _admin(base)
    brokers = broker_count(admin)
    if s.topic_replication_factor > brokers:
        say(
            f"leadattr topics: LEADS_TOPIC_REPLICATION_FACTOR={s.topic_replication_factor} but the cluster has "
            f"{brokers} broker(s); set it to {brokers} for development"
        )
        return 2
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [spec for spec in specs(s) if spec.name not in existing]
    for spec in specs(s):
        if spec.name in existing:
            say(f"exists: {spec.name} ({spec.role}); `leadattr topics check` compares it")
    if not wanted:
        return 0
    futures = admin.create_topics(
        [
            NewTopic(spec.name, s.topic_partitions, s.topic_replication_factor, config=spec.configs)
            for spec in wanted
        ],
        request_timeout=30,
    )
    failed = 0
    for name, future in futures.items():
        try:
            future.result(40)
            say(f"created: {name}")
        except KafkaException as exc:
            failed += 1
            say(f"leadattr topics: {name} not created: {exc.args[0].str()}")
    return 1 if failed else 0


def differences(s: Settings, base: dict[str, Any]) -> list[str]:
    """One line per difference between the topics as they are and as `create` would make them."""
    admin = _admin(base)
    metadata = admin.list_topics(timeout=10)
    lines: list[str] = []
    present = [spec for spec in specs(s) if spec.name in metadata.topics]
    lines += [f"{spec.name}: missing ({spec.role})" for spec in specs(s) if spec.name not in metadata.topics]
    for spec in present:
        partitions = metadata.topics[spec.name].partitions
        if len(partitions) != s.topic_partitions:
            lines.append(f"{spec.name}: partitions {len(partitions)}, expected {s.topic_partitions}")
        replicas = replication_factor(metadata.topics[spec.name])
        if replicas != s.topic_replication_factor:
            lines.append(f"{spec.name}: replication factor {replicas}, expected {s.topic_replication_factor}")
    if present:
        described = admin.describe_configs([ConfigResource("topic", spec.name) for spec in present])
        for resource, future in described.items():
            spec = next(spec for spec in present if spec.name == resource.name)
            actual = future.result(30)
            for name, expected in spec.configs.items():
                value = actual[name].value if name in actual else None
                if value != expected:
                    lines.append(f"{spec.name}: {name} {value}, expected {expected}")
    return lines


def check(s: Settings, base: dict[str, Any], say: Callable[[str], None] = print) -> int:
    lines = differences(s, base)
    for line in lines:
        say(line)
    if not lines:
        say(f"ok: {len(specs(s))} topics as `leadattr topics create` makes them")
    return 1 if lines else 0
