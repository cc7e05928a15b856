"""Contract section 3 end to end: every output topic, the expiry timers, restarts and instances."""

from __future__ import annotations

import time

import redis

from harness.kafka import Topics, lead, produce, read_topic
from tests.integration.conftest import StartConsumer
from tests.support.stores import wake_entries


def _prefix(topics: Topics) -> str:
    return topics.env()["LEADS_REDIS_PREFIX"]


def test_early_event2_is_joined_by_a_late_event1(topics: Topics, start_consumer: StartConsumer) -> None:
    consumer = start_consumer(LEADS_ORPHAN_GRACE_SECONDS="60")
    produce(topics.input, [lead("c-early", "email_verified", timestamp="2026-11-26T10:05:00Z")])
    time.sleep(1.5)  # Event 2 is processed (held) before Event 1 arrives
    produce(topics.input, [lead("c-early", "signup_started", clickId="k-1", mode="deferred")])
    (record,) = read_topic(topics.attributed, expected=1)
    assert (record["mode"], record["clickId"], record["verificationEventName"]) == (
        "deferred",
        "k-1",
        "email_verified",
    )
    assert consumer.metric("leads_unlinked_total", 'reason="no_matching_event1"') == 0
    assert consumer.stop() == 0


def test_duplicates_are_counted_and_not_published(topics: Topics, start_consumer: StartConsumer) -> None:
    consumer = start_consumer()
    direct = lead("c-dup", "signup", clickId="k-1")
    event1 = lead("c-dup2", "signup", clickId="k-2", mode="deferred")
    event2 = lead("c-dup2", "email_verified")
    produce(topics.input, [direct, direct, event1, event1, event2, event2])
    records = read_topic(topics.attributed, expected=2, idle_s=3)
    assert sorted(r["customerExternalId"] for r in records) == ["c-dup", "c-dup2"]
    assert consumer.metric("leads_duplicates_total", 'kind="direct"') == 1
    assert consumer.metric("leads_duplicates_total", 'kind="deferred_event1"') == 1
    assert consumer.metric("leads_duplicates_total", 'kind="verification"') == 1
    assert consumer.stop() == 0


def test_second_click_while_pending_is_dead_lettered(topics: Topics, start_consumer: StartConsumer) -> None:
    consumer = start_consumer()
    produce(
        topics.input,
        [
            lead("c-lock", "signup", clickId="k-first", mode="deferred"),
            lead("c-lock", "signup", clickId="k-second", mode="deferred"),
            lead("c-lock", "demo", clickId="k-third"),
            lead("c-lock", "email_verified"),
        ],
    )
    dead = read_topic(topics.dead_letter, expected=2)
    assert [d["reason"] for d in dead] == ["duplicate_attribution", "duplicate_attribution"]
    assert sorted(d["sourceOffset"] for d in dead) == [1, 2]
    (record,) = read_topic(topics.attributed, expected=1)
    assert record["clickId"] == "k-first"  # attribution stays locked to the first click
    assert consumer.stop() == 0


def test_unlinked_leads_are_published_within_five_seconds_of_their_deadline(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    consumer = start_consumer(LEADS_PENDING_TTL_SECONDS="3", LEADS_ORPHAN_GRACE_SECONDS="2")
    sent = time.time()
    produce(
        topics.input,
        [
            lead("c-expire", "signup", clickId="k-9", mode="deferred", customerName="Zed"),
            lead("c-orphan", "phone_verified", timestamp="2026-11-26T11:00:00Z"),
        ],
    )
    records = read_topic(topics.unlinked, expected=2, timeout_s=20)
    by_reason = {r["reason"]: r for r in records}
    assert set(by_reason) == {"verification_expired", "no_matching_event1"}
    expired = by_reason["verification_expired"]
    assert (expired["customerExternalId"], expired["clickId"], expired["customerName"]) == (
        "c-expire",
        "k-9",
        "Zed",
    )
    assert expired["detectedAt"].timestamp() - sent <= 3 + 5
    orphan = by_reason["no_matching_event1"]
    assert (orphan["customerExternalId"], orphan["eventName"], orphan["clickId"]) == (
        "c-orphan",
        "phone_verified",
        None,
    )
    assert orphan["detectedAt"].timestamp() - sent <= 2 + 5
    assert consumer.metric("leads_unlinked_total", 'reason="verification_expired"') == 1
    assert consumer.metric("leads_unlinked_total", 'reason="no_matching_event1"') == 1
    # Reported and released: nothing left pending, and with nothing left in them (no dedupe mark:
    # neither was attributed) both states are deleted.
    prefix = _prefix(topics)
    assert redis_client.exists(f"{prefix}:s:{{c-expire}}", f"{prefix}:s:{{c-orphan}}") == 0
    assert consumer.wait_metric("leads_pending", 0) == 0  # the gauge refreshes every 5 s
    assert len(read_topic(topics.unlinked, expected=2, timeout_s=5)) == 2  # still exactly one each
    assert consumer.stop() == 0


def test_deadlines_survive_a_restart_and_are_reported_once_by_several_instances(
    topics: Topics, start_consumer: StartConsumer
) -> None:
    windows = {"LEADS_PENDING_TTL_SECONDS": "6", "LEADS_ORPHAN_GRACE_SECONDS": "6"}
    first = start_consumer(**windows)
    events = [lead(f"p-{i}", "signup", clickId=f"k-{i}", mode="deferred") for i in range(20)]
    events += [lead(f"o-{i}", "email_verified") for i in range(20)]
    produce(topics.input, events)
    deadline = time.monotonic() + 20
    while first.metric("leads_events_consumed_total") < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.stop() == 0  # down before any deadline passes
    assert read_topic(topics.unlinked, timeout_s=2, idle_s=1) == []
    time.sleep(7)  # every deadline passes while no consumer runs
    second = start_consumer(**windows)
    third = start_consumer(**windows)
    records = read_topic(topics.unlinked, expected=40, timeout_s=30, idle_s=4)
    assert len(records) == 40
    assert len({(r["customerExternalId"], r["reason"]) for r in records}) == 40
    reported = sum(
        c.metric("leads_unlinked_total", f'reason="{r}"')
        for c in (second, third)
        for r in ("verification_expired", "no_matching_event1")
    )
    assert reported == 40
    assert second.stop() == 0
    assert third.stop() == 0


def test_redis_keys_share_the_customer_hash_tag_and_all_are_in_the_wake_index(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    consumer = start_consumer()
    produce(
        topics.input,
        [lead("c-keys", "signup", clickId="k", mode="deferred"), lead("c-direct", "x", clickId="k")],
    )
    deadline = time.monotonic() + 20
    while consumer.metric("leads_events_consumed_total") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # one more round trip flushes the committed journal entries
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{_prefix(topics)}:*")]
    customer_keys = [k for k in keys if "{" in k]
    assert sorted(customer_keys) == sorted(
        [f"{_prefix(topics)}:s:{{c-keys}}", f"{_prefix(topics)}:s:{{c-direct}}"]
    )
    for key in customer_keys:
        assert redis_client.pttl(key) == -1, (
            key
        )  # no TTL: the sweeper deletes them (consumer/processing/sweeper.py)
    assert redis_client.get(f"{_prefix(topics)}:pending") == b"1"
    # Each has an entry in the wake list of its wake time's second: the pending lead's deadline
    # (a week ahead by default), the direct lead's dedupe window (a week too).
    wakes = wake_entries(redis_client, _prefix(topics))
    assert sorted(cid for cids in wakes.values() for cid in cids) == ["c-direct", "c-keys"]
    assert min(wakes) > time.time() + 6 * 86_400
    assert consumer.stop() == 0
