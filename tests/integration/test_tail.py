"""`leadattr tail` reads what analytics pipelines read (read_committed), decoded, as JSON lines."""

from __future__ import annotations

import base64
import json
import subprocess
import time

from harness.kafka import Topics, lead, produce, read_topic
from tests.integration.conftest import OPERATOR_ENV, StartConsumer
from tests.support.cli import leadattr


def _tail(topics: Topics, *args: str) -> list[dict[str, object]]:
    result = leadattr(["tail", *args], {**topics.env(), **OPERATOR_ENV})
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_tail_prints_decoded_committed_records_filtered_by_customer(
    topics: Topics, start_consumer: StartConsumer
) -> None:
    consumer = start_consumer()
    produce(
        topics.input,
        [lead(f"tail-{i}", "signup", clickId=f"click-{i}") for i in range(12)] + [b"\x00garbage"],
        keys=[f"tail-{i}".encode() for i in range(12)] + [b"tail-bad"],
    )
    read_topic(topics.attributed, expected=12)
    read_topic(topics.dead_letter, expected=1)
    assert consumer.stop() == 0

    every = _tail(topics, "attributed", "--from-beginning")
    assert sorted(str(r["customerExternalId"]) for r in every) == sorted(f"tail-{i}" for i in range(12))
    assert all(r["_topic"] == topics.attributed and r["_key"] == r["customerExternalId"] for r in every)
    assert len(_tail(topics, "attributed")) == 10  # the last 10 by default
    last = _tail(topics, topics.attributed, "-n", "3")
    assert len(last) == 3
    assert (
        last
        == sorted(
            every, key=lambda r: (int(str(r["_timestamp"])), str(r["_partition"]), int(str(r["_offset"])))
        )[-3:]
    )
    one = _tail(topics, "attributed", "--from-beginning", "--cid", "tail-7")
    assert [(r["customerExternalId"], r["clickId"]) for r in one] == [("tail-7", "click-7")]
    dead = _tail(topics, "dead-letter", "--cid", "tail-bad")
    assert [d["reason"] for d in dead] == ["undecodable"]
    assert base64.b64decode(str(dead[0]["value"])) == b"\x00garbage"
    assert _tail(topics, "unlinked", "--from-beginning") == []


def _inspect(topics: Topics, *args: str) -> subprocess.CompletedProcess[str]:
    return leadattr(["inspect", *args], {**topics.env(), **OPERATOR_ENV})


def test_inspect_shows_a_pending_lead_masked_and_exits_1_without_state(
    topics: Topics, start_consumer: StartConsumer
) -> None:
    consumer = start_consumer(LEADS_PENDING_TTL_SECONDS="3600")
    produce(
        topics.input,
        [lead("insp-1", "signup_started", clickId="click-i", mode="deferred", customerEmail="i@example.com")],
    )
    deadline = time.monotonic() + 20
    while (found := _inspect(topics, "insp-1")).returncode != 0:
        assert time.monotonic() < deadline, found.stderr
    shown = json.loads(found.stdout)
    [pending] = shown["pending"]
    assert (pending["clickId"], pending["eventName"], pending["customerEmail"]) == (
        "click-i",
        "signup_started",
        "***",
    )
    assert pending["fallsDueAt"] > pending["arrivedAt"]
    assert "i@example.com" not in found.stdout
    unmasked = json.loads(_inspect(topics, "insp-1", "--show-pii").stdout)
    assert unmasked["pending"][0]["customerEmail"] == "i@example.com"
    missing = _inspect(topics, "nobody")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no state for this customer" in missing.stderr
    assert consumer.stop() == 0
