"""Hostile input against the real Kafka and Redis: a record near the broker's size limit becomes a
dead letter that fits (its value's prefix, length and SHA-256), and the partition keeps moving; an
unreadable customer state is moved aside by the batch and by the sweeper, and nothing stops."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
import redis
from confluent_kafka import Producer

from consumer.avro.codec import Codec
from harness.kafka import BOOTSTRAP, Topics, lead, produce, read_topic, security
from tests.integration.conftest import OPERATOR_ENV, StartConsumer
from tests.support.cli import leadattr


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


def test_an_unreadable_state_is_moved_aside_and_every_other_customer_flows(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    consumer = start_consumer(LEADS_PENDING_TTL_SECONDS="5", LEADS_ORPHAN_GRACE_SECONDS="2")
    junk = b"\x04\xff\xff\xffjunk-of-alice@example.com"  # a hand edit, a bad restore
    redis_client.set(f"{topics.redis_prefix}:s:{{corrupt-1}}", junk)
    # swept-1's state goes bad after it was written: the sweeper meets it at its wake time.
    produce(topics.input, [lead("swept-1", "signup", clickId="click-s", mode="deferred")])
    state_key = f"{topics.redis_prefix}:s:{{swept-1}}"
    deadline = time.monotonic() + 4
    while redis_client.get(state_key) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    redis_client.set(state_key, junk)

    produce(
        topics.input,
        [
            lead("corrupt-1", "signup", clickId="click-c", mode="deferred"),
            lead("fine-1", "signup", clickId="click-f"),
        ],
    )
    [dead] = read_topic(topics.dead_letter, expected=1, timeout_s=60)
    assert dead["reason"] == "corrupt_state" and "moved aside" in dead["detail"]
    assert Codec("lead_event").decode(dead["value"])["customerExternalId"] == "corrupt-1"  # replayable
    consumer.wait_metric("leads_state_quarantined_total", 1, 'stage="batch"')
    consumer.wait_metric("leads_state_quarantined_total", 1, 'stage="sweeper"', timeout_s=30)
    for cid in ("corrupt-1", "swept-1"):
        assert redis_client.get(f"{topics.redis_prefix}:s:{{{cid}}}") is None
        kept = redis_client.hgetall(f"{topics.redis_prefix}:q:{{{cid}}}")
        assert list(kept.values()) == [junk], cid

    # The customer's next event starts from no state: attributed (fine-1 is on another partition).
    produce(topics.input, [lead("corrupt-1", "demo", clickId="click-c2")])
    attributed = read_topic(topics.attributed, expected=2, timeout_s=60)
    assert sorted((r["customerExternalId"], r["clickId"]) for r in attributed) == [
        ("corrupt-1", "click-c2"),
        ("fine-1", "click-f"),
    ]
    assert consumer.metric("leads_dead_letter_total", 'reason="corrupt_state"') == 1
    assert consumer.stop() == 0
    logs = consumer.logs()
    assert logs.count("moved aside to its quarantine key") == 2
    assert "corrupt-1" not in logs and "swept-1" not in logs and "alice" not in logs

    # An operator sees what was kept, and an erasure takes it with the rest of the customer.
    seen = leadattr(["inspect", "swept-1"], {**topics.env(), **OPERATOR_ENV})
    assert seen.returncode == 0, seen.stderr
    assert list(json.loads(seen.stdout)["quarantined"].values()) == [len(junk)]
    erased = leadattr(["forget", "swept-1"], {**topics.env(), **OPERATOR_ENV}, timeout_s=120)
    assert erased.returncode == 0, erased.stderr
    assert not redis_client.exists(f"{topics.redis_prefix}:q:{{swept-1}}")
