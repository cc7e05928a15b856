"""Hostile input against the real Kafka and Redis: a record near the broker's size limit becomes a
dead letter that fits (its value's prefix, length and SHA-256), and the partition keeps moving."""

from __future__ import annotations

import hashlib
import os

import pytest
from confluent_kafka import Producer

from consumer.avro.codec import Codec
from harness.kafka import BOOTSTRAP, Topics, lead, read_topic, security
from tests.integration.conftest import StartConsumer


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_record_near_the_size_limit_is_dead_lettered_truncated_and_the_partition_moves_on(
    topics: Topics, start_consumer: StartConsumer, guarantee: str
) -> None:
    consumer = start_consumer(LEADS_PROCESSING_GUARANTEE=guarantee)
    big = os.urandom(1_040_000)  # not Avro; the broker takes it (max.message.bytes 1,048,588)
    producer = Producer(
        {"bootstrap.servers": BOOTSTRAP, "message.max.bytes": 1_048_000, **security(BOOTSTRAP)}
    )
    producer.produce(topics.input, key=b"huge-1", value=big, partition=0)
    # Behind it on the same partition: an ordinary lead, which must come out.
    behind = Codec("lead_event").encode(lead("huge-1", "signup", clickId="click-h"))
    producer.produce(topics.input, key=b"huge-1", value=behind, partition=0)
    assert producer.flush(30) == 0

    [dead] = read_topic(topics.dead_letter, expected=1, timeout_s=60)
    assert dead["reason"] == "undecodable"
    assert dead["valueTruncated"] is True
    assert dead["originalValueLength"] == len(big)
    assert dead["originalValueSha256"] == hashlib.sha256(big).hexdigest()
    assert big.startswith(dead["value"]) and 900_000 < len(dead["value"]) < len(big)
    assert "value truncated" in dead["detail"]
    [attributed] = read_topic(topics.attributed, expected=1, timeout_s=60)
    assert (attributed["customerExternalId"], attributed["clickId"]) == ("huge-1", "click-h")
    assert consumer.metric("leads_dead_letter_total", 'reason="undecodable"') == 1
    assert consumer.stop() == 0
