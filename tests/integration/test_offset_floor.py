"""The committed-offset floor with the real consumer: group offsets moved back are not replayed,
unless an operator clears the floor first (`leadattr clear-offset-floor`).

Moving the group's offsets back by hand stands in for what make chaos saw the broker do after a
crash (committed() answering no offset, or an older one): the consumer sees the same thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from harness.kafka import (
    BOOTSTRAP,
    CLIENT,
    REDIS_URL,
    Topics,
    committed_offsets,
    create_topics,
    end_offsets,
    lead,
    produce,
    read_topic,
    set_group_offsets,
)
from harness.process import REPO, ConsumerProcess
from tests.integration.conftest import StartConsumer


def _rewind_group(topics: Topics) -> None:
    group = topics.env()["LEADS_CONSUMER_GROUP"]
    set_group_offsets(group, topics.input, dict.fromkeys(range(3), 0))
    assert set(committed_offsets(group, topics.input).values()) == {0}


def _wait_committed(topics: Topics, consumer: ConsumerProcess, timeout_s: float = 30) -> dict[int, int]:
    group, ends = topics.env()["LEADS_CONSUMER_GROUP"], end_offsets(topics.input)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        committed = committed_offsets(group, topics.input)
        if {p: max(o, 0) for p, o in committed.items()} == ends:  # an empty partition has no commit
            return committed
        time.sleep(0.5)
    raise AssertionError(f"committed {committed} never reached {ends}; log:\n{consumer.logs()[-3000:]}")


def test_group_offsets_moved_back_are_not_replayed_until_the_floor_is_cleared(
    topics: Topics, start_consumer: StartConsumer
) -> None:
    inputs = [lead(f"c-floor-{i}", "signup", clickId=f"k{i}") for i in range(6)] + [b"garbage"]
    produce(topics.input, inputs, keys=[*(f"c-floor-{i}".encode() for i in range(6)), b"g"])
    first = start_consumer()
    assert len(read_topic(topics.attributed, expected=6)) == 6
    _wait_committed(topics, first)
    assert first.stop() == 0

    _rewind_group(topics)  # as the broker did after a crash: the group's offsets went back to 0
    second = start_consumer()
    _wait_committed(topics, second)  # the floor, committed to the group again
    assert "input below the offsets this group committed" in second.logs()
    assert second.metric("leads_events_consumed_total") == 0  # nothing processed a second time
    assert len(read_topic(topics.attributed, expected=6, idle_s=2)) == 6
    assert len(read_topic(topics.dead_letter, expected=1, idle_s=1)) == 1
    assert second.stop() == 0

    # A deliberate replay: the operator clears the floor with the consumers stopped.
    _rewind_group(topics)
    cleared = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "clear-offset-floor"],
        env={**os.environ, "LEADS_REDIS_URL": REDIS_URL, **topics.env()},
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert cleared.returncode == 0, cleared.stderr
    assert f"{topics.input}:0@" in cleared.stderr and "cleared" in cleared.stderr
    third = start_consumer()
    _wait_committed(topics, third)
    deadline = time.monotonic() + 20
    while third.metric("leads_events_consumed_total") < 7 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert third.metric("leads_events_consumed_total") == 7  # the input was processed again
    # Processed again on today's state: the same clicks are duplicates now, not new leads.
    assert third.metric("leads_duplicates_total", 'kind="direct"') == 6
    assert len(read_topic(topics.dead_letter, expected=2, idle_s=1)) == 2  # the garbage, twice
    assert third.stop() == 0


def _create_again(topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP, **CLIENT})
    admin.delete_topics([topic])[topic].result(30)
    deadline = time.monotonic() + 60
    while True:  # the broker takes a moment to forget the old topic
        try:
            create_topics([topic])
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_topic_deleted_and_created_again_is_read_from_its_start(
    topics: Topics, start_consumer: StartConsumer
) -> None:
    # The floor of the old topic (its offsets up to ~2 per partition) must not make the consumer
    # skip the new topic's first offsets: the floor is kept per topic id.
    produce(topics.input, [lead(f"c-old-{i}", "signup", clickId=f"k{i}") for i in range(6)])
    first = start_consumer()
    assert len(read_topic(topics.attributed, expected=6)) == 6
    _wait_committed(topics, first)
    assert first.stop() == 0
    _create_again(topics.input)
    produce(topics.input, [lead(f"c-new-{i}", "signup", clickId=f"k{i}") for i in range(12)])
    second = start_consumer()
    deadline = time.monotonic() + 30
    while second.metric("leads_events_consumed_total") < 12 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert second.metric("leads_events_consumed_total") == 12
    assert second.metric("leads_offset_floor_skips_total") == 0
    new = [
        r for r in read_topic(topics.attributed, expected=18) if r["customerExternalId"].startswith("c-new")
    ]
    assert len(new) == 12
    assert second.stop() == 0
