"""`leadattr forget CID` against the real Kafka and Redis, with a consumer running: the customer's
state, wake entries and changelog state go, an erasure record is published, the count reaches the
consumers' metric, and a customer written to while it runs keeps Redis and the changelog equal."""

from __future__ import annotations

import subprocess
import threading
import time

import redis
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from consumer.state.codec import decode_state
from harness.kafka import BOOTSTRAP, Topics, lead, probe, produce, read_topic
from tests.integration.conftest import OPERATOR_ENV, StartConsumer
from tests.support.cli import leadattr


def _forget(topics: Topics, *args: str) -> subprocess.CompletedProcess[str]:
    return leadattr(["forget", *args], {**topics.env(), **OPERATOR_ENV}, timeout_s=120)


def _changelog(topic: str) -> dict[bytes, bytes | None]:
    """The last committed record of every key: what a restore would rebuild."""
    consumer = probe(BOOTSTRAP, None, **{"enable.partition.eof": True})
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        last: dict[bytes, bytes | None] = {}
        ended: set[int] = set()
        deadline = time.monotonic() + 30
        while len(ended) < len(partitions) and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition() or 0)
                elif error is None and message.key() is not None:
                    last[message.key() or b""] = message.value()
        assert len(ended) == len(partitions), "the changelog was not read to its end"
        return last
    finally:
        consumer.close()


def _wake_entries(client: redis.Redis, prefix: str) -> list[bytes]:
    entries: list[bytes] = []
    seconds: list[bytes] = client.zrange(f"{prefix}:wake", 0, -1)  # type: ignore[assignment]
    for second in seconds:
        listed: list[bytes] = client.lrange(f"{prefix}:wake:{second.decode()}", 1, -1)  # type: ignore[assignment]
        entries += listed
    return entries


def test_forget_erases_state_wake_entries_and_changelog_and_publishes_an_erasure_record(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    consumer = start_consumer(LEADS_PENDING_TTL_SECONDS="3600", LEADS_ORPHAN_GRACE_SECONDS="2")
    produce(
        topics.input,
        [
            lead(
                "erase-me",
                "signup_started",
                clickId="click-e",
                mode="deferred",
                customerEmail="e@example.com",
            ),
            lead(
                "keep-me", "signup_started", clickId="click-k", mode="deferred", customerEmail="k@example.com"
            ),
        ],
    )
    key = f"{topics.redis_prefix}:s:{{erase-me}}"
    deadline = time.monotonic() + 20
    while not (redis_client.exists(key) and consumer.metric("leads_pending") == 2):
        assert time.monotonic() < deadline, "the two pending leads never showed"
        time.sleep(0.25)
    assert b"erase-me" in _wake_entries(redis_client, topics.redis_prefix)

    done = _forget(topics, "erase-me", "--request-id", "DSR-17")
    assert done.returncode == 0, done.stderr
    assert "its state erased" in done.stderr and "erase-me" not in done.stderr

    assert not redis_client.exists(key)
    assert redis_client.exists(f"{topics.redis_prefix}:s:{{keep-me}}")
    entries = _wake_entries(redis_client, topics.redis_prefix)
    assert b"erase-me" not in entries and b"keep-me" in entries
    changelog = _changelog(topics.changelog)
    assert changelog[b"erase-me"] is None  # a tombstone
    assert changelog[b"keep-me"] is not None
    [erasure] = read_topic(topics.erasures, expected=1)
    assert erasure["_key"] == b"erase-me"
    assert (erasure["customerExternalId"], erasure["requestId"], erasure["heldState"]) == (
        "erase-me",
        "DSR-17",
        True,
    )
    assert consumer.wait_metric("leads_erasures_total", 1) == 1
    assert consumer.wait_metric("leads_pending", 1) == 1  # the counter follows the deleted state
    inspected = leadattr(["inspect", "erase-me"], {**topics.env(), **OPERATOR_ENV})
    assert inspected.returncode == 1

    # A later event of the customer meets no state: its verification matches nothing.
    produce(topics.input, [lead("erase-me", "email_verified")])
    unlinked = read_topic(topics.unlinked, expected=1, timeout_s=30)
    assert [(u["customerExternalId"], u["reason"]) for u in unlinked] == [("erase-me", "no_matching_event1")]
    assert read_topic(topics.attributed, expected=0, timeout_s=3, idle_s=1) == []

    # Idempotent: once more, nothing held, another erasure record.
    again = _forget(topics, "erase-me")
    assert again.returncode == 0, again.stderr
    assert "no state held" in again.stderr
    records = read_topic(topics.erasures, expected=2)
    assert [r["heldState"] for r in records] == [True, False]
    assert consumer.wait_metric("leads_erasures_total", 2) == 2
    assert consumer.stop() == 0


def test_forget_while_the_consumer_writes_the_customer_keeps_redis_and_changelog_equal(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    consumer = start_consumer(LEADS_PENDING_TTL_SECONDS="3600")
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            produce(
                topics.input,
                [
                    lead(
                        "busy", f"step_{n}", clickId=f"click-{n}", mode="deferred", customerName="Busy Person"
                    ),
                    lead("busy", f"verified_{n}"),
                    lead(f"other-{n}", "signup", clickId=f"o-{n}"),
                ],
            )
            n += 1
            time.sleep(0.01)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(1.5)
        done = _forget(topics, "busy")
    finally:
        stop.set()
        sender.join()
    assert done.returncode == 0, done.stderr

    # Once the consumer has caught up, Redis and the changelog hold the same for the customer, and
    # the pending counter equals the pending leads the states hold.
    deadline = time.monotonic() + 60
    agreed = 0
    while agreed < 2:  # twice in a row, two seconds apart: the consumer has nothing left to write
        blob = redis_client.get(f"{topics.redis_prefix}:s:{{busy}}")
        agreed = agreed + 1 if _changelog(topics.changelog).get(b"busy") == blob else 0
        assert time.monotonic() < deadline, "Redis and the changelog disagree on the customer"
        time.sleep(2)
    states = [redis_client.get(k) for k in redis_client.scan_iter(f"{topics.redis_prefix}:s:*")]
    held = sum(len(decode_state(s).pending) for s in states if isinstance(s, bytes))
    assert int(redis_client.get(f"{topics.redis_prefix}:pending") or 0) == held
    [erasure] = read_topic(topics.erasures, expected=1)
    assert erasure["customerExternalId"] == "busy"
    assert consumer.stop() == 0
