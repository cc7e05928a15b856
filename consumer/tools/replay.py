"""`leadattr replay`: send dead-lettered records back to the input topic, byte for byte.

For after the cause is fixed (a producer bug corrected upstream, a consumer fix deployed). It reads
the dead-letter topic from the start up to its end *at start-up*, so records it produces that get
dead-lettered again are not replayed in a loop, and keeps the original key so ordering per
customer is preserved. It commits nothing: run it with --dry-run first to see what it would send.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from consumer.avro.codec import Codec
from consumer.avro.registry import registry_of
from consumer.config import Config
from consumer.tools.progress import Progress

_POLL_S = 1.0
_IDLE_POLLS = 3  # consecutive empty polls that mean "nothing more to read"


def _reached(consumer: Consumer, topic: str, ends: dict[int, int]) -> bool:
    positions = consumer.position([TopicPartition(topic, p) for p in ends])
    return all(tp.offset >= ends[tp.partition] for tp in positions)


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    scanned: int
    selected: Counter[str]
    truncated: int = 0  # selected, but only a prefix of the original value is here: not replayed


def replay(
    config: Config, reasons: set[str] | None, target: str | None, dry_run: bool, limit: int | None = None
) -> ReplaySummary:
    s = config.settings
    codec = Codec("dead_letter", registry_of(s))  # framed like every output when a registry is set
    consumer = Consumer(
        {
            "bootstrap.servers": s.kafka_bootstrap_servers,
            "group.id": f"leadattr-replay-{uuid.uuid4().hex[:8]}",  # never commits; the id is a formality
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            **config.kafka_extra,
        }
    )
    producer = Producer(
        {"bootstrap.servers": s.kafka_bootstrap_servers, "enable.idempotence": True, **config.kafka_extra}
    )
    topic = s.dead_letter_topic
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {}
    for partition in metadata.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high > 0:
            ends[partition] = high
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
    scanned, truncated, selected = 0, 0, Counter[str]()
    progress = Progress(f"scanning {topic}", sum(ends.values()))
    idle = 0
    try:
        # Transaction markers take offsets too, so "done" is judged by position, not by the last record.
        while idle < _IDLE_POLLS and not _reached(consumer, topic, ends):
            if limit is not None and sum(selected.values()) >= limit:
                break
            messages = consumer.consume(500, _POLL_S)
            idle = 0 if messages else idle + 1
            for message in messages:
                partition, offset = message.partition(), message.offset()
                if message.error() or partition is None or offset is None or offset >= ends.get(partition, 0):
                    continue
                scanned += 1
                progress.update(scanned)
                record = codec.decode(message.value() or b"")
                if reasons and record["reason"] not in reasons:
                    continue
                if record.get("valueTruncated"):
                    truncated += 1  # a prefix of the original: the source holds the whole record
                    continue
                if limit is not None and sum(selected.values()) >= limit:
                    break
                selected[record["reason"]] += 1
                if not dry_run:
                    while True:
                        try:
                            producer.produce(
                                target or record["sourceTopic"], key=record["key"], value=record["value"]
                            )
                            break
                        except BufferError:  # the producer's queue is full: let it drain
                            producer.poll(0.1)
                    producer.poll(0)
        if not dry_run and producer.flush(30):
            raise RuntimeError("not every replayed record was delivered")
    finally:
        progress.done()
        consumer.close()
    return ReplaySummary(scanned, selected, truncated)
