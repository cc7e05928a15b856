"""The walking skeleton against the real Kafka and Redis: events in, attributed leads out."""

from __future__ import annotations

import time

import redis

from harness.kafka import Topics, committed_offsets, end_offsets, lead, produce, read_topic
from tests.integration.conftest import StartConsumer
from tests.support.stores import wake_entries


def test_direct_and_deferred_leads_are_attributed(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    consumer = start_consumer()
    produce(
        topics.input,
        [
            lead("cust-direct", "signup", clickId="click-1", customerEmail="d@example.com"),
            lead("cust-deferred", "signup_started", clickId="click-2", mode="deferred", customerName="Dee"),
        ],
    )
    # Event 1 is held in Redis until its verification arrives (or its deadline: the wake index).
    prefix = topics.env()["LEADS_REDIS_PREFIX"]
    state_key = f"{prefix}:s:{{cust-deferred}}"
    deadline = time.monotonic() + 20
    while not redis_client.exists(state_key) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert redis_client.exists(state_key)
    assert any("cust-deferred" in cids for cids in wake_entries(redis_client, prefix).values())

    produce(topics.input, [lead("cust-deferred", "email_verified", timestamp="2026-11-26T10:00:00Z")])
    attributed = read_topic(topics.attributed, expected=2)
    by_cid = {r["customerExternalId"]: r for r in attributed}
    assert len(attributed) == 2
    assert by_cid["cust-direct"]["mode"] == "direct"
    assert by_cid["cust-direct"]["clickId"] == "click-1"
    assert by_cid["cust-direct"]["_key"] == b"cust-direct"
    deferred = by_cid["cust-deferred"]
    assert (deferred["mode"], deferred["clickId"], deferred["eventName"]) == (
        "deferred",
        "click-2",
        "signup_started",
    )
    assert deferred["verificationEventName"] == "email_verified"
    assert deferred["customerName"] == "Dee"
    assert deferred["verifiedTimestamp"].isoformat() == "2026-11-26T10:00:00+00:00"

    assert consumer.metric("leads_attributed_total", 'mode="direct"') == 1
    assert consumer.metric("leads_attributed_total", 'mode="deferred"') == 1
    assert consumer.metric("leads_events_consumed_total") == 3
    assert consumer.stop() == 0
    committed = committed_offsets(topics.env()["LEADS_CONSUMER_GROUP"], topics.input)
    assert {p: o for p, o in committed.items() if o >= 0} == {
        p: o for p, o in end_offsets(topics.input).items() if o
    }


def test_invalid_records_are_dead_lettered_and_consumer_continues(
    topics: Topics, start_consumer: StartConsumer
) -> None:
    consumer = start_consumer()
    produce(topics.input, [b"\x00\x01 not avro"], keys=[b"k-1"])
    produce(
        topics.input,
        [
            lead("cust-1", "signup", clickId="c", mode="later"),
            lead("cust-2", "signup", mode="deferred"),
            lead("cust-3", "signup", clickId="c", customerEmail="nope"),
            lead("cust-4", "signup", clickId="c"),
        ],
    )
    dead = read_topic(topics.dead_letter, expected=4)
    reasons = sorted(d["reason"] for d in dead)
    assert reasons == ["invalid_field", "invalid_mode", "missing_click_id", "undecodable"]
    undecodable = next(d for d in dead if d["reason"] == "undecodable")
    assert (undecodable["key"], undecodable["value"], undecodable["_key"]) == (
        b"k-1",
        b"\x00\x01 not avro",
        b"k-1",
    )
    assert undecodable["sourceTopic"] == topics.input
    field = next(d for d in dead if d["reason"] == "invalid_field")
    assert field["detail"].startswith("customerEmail")
    attributed = read_topic(topics.attributed, expected=1)
    assert [a["customerExternalId"] for a in attributed] == ["cust-4"]
    assert consumer.metric("leads_dead_letter_total", 'reason="undecodable"') == 1
    assert consumer.stop() == 0


def test_sigterm_mid_stream_commits_what_was_published(topics: Topics, start_consumer: StartConsumer) -> None:
    consumer = start_consumer(LEADS_BATCH_SIZE="200")
    produce(topics.input, [lead(f"cust-{i}", "signup", clickId=f"click-{i}") for i in range(5000)])
    deadline = time.monotonic() + 30
    while consumer.metric("leads_events_consumed_total") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert consumer.stop() == 0  # while it works
    group = topics.env()["LEADS_CONSUMER_GROUP"]
    committed = committed_offsets(group, topics.input)
    published = read_topic(topics.attributed, expected=1, idle_s=3)
    # Every published record's input offset is committed and nothing committed is unpublished.
    assert len(published) == sum(max(0, o) for o in committed.values())
    assert len({r["leadId"] for r in published}) == len(published)
    # A restart picks up exactly where it stopped.
    start_consumer()
    everything = read_topic(topics.attributed, expected=5000, timeout_s=60)
    assert len(everything) == 5000
    assert len({r["leadId"] for r in everything}) == 5000
