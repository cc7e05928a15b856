"""`python -m bench floor`: what Kafka alone costs from Python, as a floor for the consumer.

Drains a pre-loaded topic of the bench workload with confluent-kafka and produces one output per
input, committing every batch with its offsets in a transaction (exactly_once) or by flush and
offset commit (at_least_once), with no decoding, rules or Redis. The consumer cannot be faster
than this; the gap between the two is the consumer's own work.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.kafka_io import preload
from bench.services import bench_services
from bench.workload import generate
from harness.kafka import Topics, create_topics, delete_topics


def drain(bootstrap: str, topics: Topics, events: int, mode: str, batch: int) -> dict[str, Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topics.name}-{mode}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
    }
    if mode == "exactly_once":
        settings["transactional.id"] = f"{topics.name}-{mode}"
    producer = Producer(settings)
    if mode == "exactly_once":
        producer.init_transactions(20)
    consumer.subscribe([topics.input])
    done, first = 0, 0
    started = cpu = 0.0
    deadline = time.monotonic() + 60 + events / 5000
    while done < events and time.monotonic() < deadline:
        messages = consumer.consume(batch, 0.1)
        if not messages:
            continue
        if not started:
            started, cpu, first = time.monotonic(), time.process_time(), len(messages)
        offsets: dict[int, int] = {}
        if mode == "exactly_once":
            producer.begin_transaction()
        for message in messages:
            if message.error() is not None:
                continue
            producer.produce(topics.attributed, value=message.value(), key=message.key())
            offsets[message.partition() or 0] = (message.offset() or 0) + 1
        positions = [TopicPartition(topics.input, p, o) for p, o in offsets.items()]
        if mode == "exactly_once":
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 20)
            producer.commit_transaction(20)
        else:
            producer.flush(20)
            consumer.commit(offsets=positions, asynchronous=False)
        done += len(messages)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    consumer.close()
    counted = max(1, done - first)  # the first batch's wait for the group join is not throughput
    return {
        "mode": mode,
        "events": done,
        "events_per_s": round(counted / seconds) if seconds else None,
        "cpu_us_per_event": round(1e6 * cpu / counted, 1),  # this process, librdkafka threads included
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench floor", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args(argv)
    services = bench_services()
    name = f"bench-floor-{uuid.uuid4().hex[:8]}"
    topics = Topics(name, name, name)
    try:
        services.up()
        create_topics(topics.all(), 6, services.bootstrap, topics.configs())
        preload(services.bootstrap, topics.input, generate(args.events).events)
        for mode in ("exactly_once", "at_least_once"):
            print(drain(services.bootstrap, topics, args.events, mode, args.batch_size), flush=True)
    finally:
        delete_topics(topics.all(), services.bootstrap)
        services.stop_started()
    return 0
