"""Upgrading from 0.1.x (README): state written by 0.1.x, as 0.1.x left it in Redis (JSON state
encoding 3 with a TTL, the `<prefix>:deadlines` sorted set), is honoured by this release."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from consumer.state.codec import decode_state, is_current
from harness.kafka import Topics, lead, produce, read_topic
from tests.integration.conftest import StartConsumer
from tests.support.stores import wake_entries

WEEK_MS = 7 * 24 * 3600 * 1000


def _v3(pending: list[Any], done: dict[str, int]) -> bytes:
    """A state as 0.1.x stored it: version byte 3, then [pending, held, done, verified_until]."""
    return b"\x03" + json.dumps([pending, [], done, 0], separators=(",", ":")).encode()


def test_states_and_deadlines_left_by_0_1_are_swept_and_kept(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    prefix = topics.env()["LEADS_REDIS_PREFIX"]
    now = int(time.time() * 1000)
    deadline = now + 4000
    # A pending lead 0.1.x stored: its state key (TTL: deadline + 7 days) and its deadline member.
    pending = [
        "k-old",
        "signup_started",
        "Old Lead",
        None,
        None,
        {"utm_source": "google"},
        None,
        now,
        deadline,
        0,
    ]
    redis_client.set(f"{prefix}:s:{{c-old-pending}}", _v3([pending], {}), px=deadline + WEEK_MS - now)
    redis_client.zadd(f"{prefix}:deadlines", {f"{deadline}:c-old-pending": deadline})
    redis_client.set(f"{prefix}:pending", 1)
    # A customer 0.1.x attributed a direct lead for: only its dedupe mark, with a TTL, no member.
    redis_client.set(f"{prefix}:s:{{c-old-done}}", _v3([], {"signup": now + 600_000}), px=600_000)

    consumer = start_consumer()
    produce(
        topics.input,
        [lead("c-old-done", "signup", clickId="k-again"), lead("c-new", "signup", clickId="k-new")],
    )
    (attributed,) = read_topic(topics.attributed, expected=1)
    assert attributed["customerExternalId"] == "c-new"  # c-old-done's lead is a duplicate: the mark held
    assert consumer.metric("leads_duplicates_total", 'kind="direct"') == 1

    (unlinked,) = read_topic(topics.unlinked, expected=1, timeout_s=20)
    assert (unlinked["customerExternalId"], unlinked["reason"], unlinked["clickId"]) == (
        "c-old-pending",
        "verification_expired",
        "k-old",
    )
    assert unlinked["customerName"] == "Old Lead" and unlinked["metadata"] == {"utm_source": "google"}
    assert unlinked["detectedAt"].timestamp() * 1000 - deadline <= 5000 + 1000  # within 5 s (+ clock slack)
    time.sleep(2)  # released after the transaction: the state goes, the old member was acked
    assert redis_client.exists(f"{prefix}:s:{{c-old-pending}}") == 0
    assert redis_client.zcard(f"{prefix}:deadlines") == 0
    assert consumer.wait_metric("leads_pending", 0) == 0  # the gauge refreshes every 5 s
    # The 0.1.x state the duplicate touched was written again in this release's way: the current
    # encoding, no TTL, an entry in the wake index for its dedupe mark's end.
    blob = redis_client.get(f"{prefix}:s:{{c-old-done}}")
    assert isinstance(blob, bytes) and is_current(blob)
    assert decode_state(blob).done == {"signup": now + 600_000}
    assert redis_client.pttl(f"{prefix}:s:{{c-old-done}}") == -1
    second = (now + 600_000) // 1000
    assert "c-old-done" in wake_entries(redis_client, prefix).get(second, [])
    assert consumer.stop() == 0
