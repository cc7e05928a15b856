"""`leadattr restore-state`: rebuild Redis's state from the state changelog (consumer/state/recovery.py).

For LEADS_STATE_RESTORE=manual, or when the consumers' own restore refused. The consumers may keep
running: they refuse to write until it is done. `--from-redis` does the opposite, once, for a
deployment upgraded from a release without a changelog: it writes every state Redis holds to the
changelog and records the committed offsets as the progress (stop the consumers first).
"""

from __future__ import annotations

import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from consumer.app import cluster_config, topic_id_of
from consumer.config import Config
from consumer.state.changelog import ChangelogReader
from consumer.state.connection import redis_of
from consumer.state.customer import PartitionKey
from consumer.state.recovery import RestoreRefused, restore, set_progress
from consumer.state.redis_store import RedisStore
from consumer.tools.progress import Progress


def committed_offsets(config: Config) -> dict[PartitionKey, int]:
    """The consumer group's committed offset of every input partition (waiting for pending ones)."""
    s = config.settings
    consumer = Consumer(
        {
            **cluster_config(config, "restore"),
            "group.id": s.consumer_group,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(s.input_topic, timeout=10).topics[s.input_topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        wanted = [TopicPartition(s.input_topic, p) for p in sorted(metadata.partitions)]
        answer = consumer.committed(wanted, timeout=30)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in answer}


def restore_state(config: Config, from_redis: bool) -> int:
    s = config.settings
    client = redis_of(s)
    store = RedisStore(client, s.redis_prefix, 0, s.consumer_group)
    store.identify_topic(s.input_topic, topic_id_of(config)(s.input_topic))
    if from_redis:
        written = seed_changelog(config, store)
        set_progress(store, committed_offsets(config))
        print(f"wrote {written} states from Redis to {s.changelog_topic}; progress set", file=sys.stderr)
        return 0
    reader = ChangelogReader(cluster_config(config, "restore"), s.changelog_topic, s.consumer_group)
    progress = Progress(f"restoring from {s.changelog_topic}")
    try:
        done = restore(store, reader, lambda: committed_offsets(config), read=progress.update)
    except RestoreRefused as refusal:
        print(f"leadattr restore-state: refused: {refusal}", file=sys.stderr)
        return 1
    finally:
        progress.done()
        reader.close()
    print(
        f"restored {done.states} customer states from {done.records} changelog records in {done.seconds:.1f}s",
        file=sys.stderr,
    )
    return 0


def seed_changelog(config: Config, store: RedisStore) -> int:
    """Every state Redis holds, to the changelog (keyed by cid, the very bytes)."""
    producer = Producer(
        {**cluster_config(config, "seed"), "enable.idempotence": True, "acks": "all", "linger.ms": 20}
    )
    client, prefix = store.client, store.prefix
    start = len(prefix) + len(":s:{")
    count = 0
    keys: list[bytes] = []

    def flush() -> None:
        for key, blob in zip(keys, client.mget(keys), strict=True):
            if blob is not None:
                producer.produce(
                    config.settings.changelog_topic, value=blob, key=key.decode()[start:-1].encode()
                )
                producer.poll(0)

    for key in client.scan_iter(match=f"{prefix}:s:*", count=1000):
        keys.append(key)
        count += 1
        if len(keys) >= 1000:
            flush()
            keys = []
    if keys:
        flush()
    if producer.flush(60):
        raise RuntimeError("not every state reached the changelog")
    return count
