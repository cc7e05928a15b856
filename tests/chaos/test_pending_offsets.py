"""A new owner of partitions whose offsets are pending in a dead owner's open transaction, with
a rebalance while it waits for them: it must start at the committed offsets, not replay.

librdkafka 2.16 waits for such offsets (UNSTABLE_OFFSET_COMMIT, KIP-447) but, when a rebalance
interrupts the wait, starts the partition at auto.offset.reset: the whole partition processed and
published again under exactly_once. The consumer therefore asks for the committed offsets itself
(OffsetKeeper.committed_starts). Deterministic version of what the rebalance scenario of `make chaos`
hits by chance; uses the chaos suite's Kafka + Redis pair (docs/chaos.md).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness.kafka import Topics, create_topics, read_all
from harness.services import LocalServices
from tests.chaos.driver import INPUT_PARTITIONS, OUTPUT_PARTITIONS, committed_now
from tests.chaos.fleet import Fleet
from tests.chaos.services import shared

PARTITIONS = 6
RECORDS_PER_PARTITION = 30
COMMITTED = 10  # the previous owner committed this far...
PENDING = 20  # ...and had this in a transaction when it died
ZOMBIE_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def chaos_services() -> LocalServices:
    return shared()  # started here if absent, stopped when the test process exits


def _previous_owner(bootstrap: str, topics: Topics, group: str) -> Producer:
    """Commit COMMITTED on every partition in a transaction, then die with PENDING in an open one."""
    member = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "log_level": 2,
        }
    )
    member.subscribe([topics.input])
    deadline = time.monotonic() + 60
    while len(member.assignment()) < PARTITIONS and time.monotonic() < deadline:
        member.consume(1, 0.5)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"zombie-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": ZOMBIE_TIMEOUT_MS,
            "log_level": 2,
        }
    )
    producer.init_transactions(30)
    for offset in (COMMITTED, PENDING):
        producer.begin_transaction()
        producer.send_offsets_to_transaction(
            [TopicPartition(topics.input, p, offset) for p in range(PARTITIONS)],
            member.consumer_group_metadata(),
            30,
        )
        if offset == COMMITTED:
            producer.commit_transaction(30)
    member.close()
    return producer  # kept referenced, never used again: its transaction stays open until it times out


@pytest.mark.timeout(240)
def test_new_owner_waits_for_pending_offsets_through_a_rebalance(
    chaos_services: LocalServices, tmp_path: Path
) -> None:
    bootstrap = chaos_services.bootstrap
    topics = Topics.fresh()
    create_topics(
        {topics.input: INPUT_PARTITIONS, **dict.fromkeys(topics.outputs(), OUTPUT_PARTITIONS)},
        bootstrap=bootstrap,
    )
    group = topics.env()["LEADS_CONSUMER_GROUP"]
    garbage = Producer({"bootstrap.servers": bootstrap, "log_level": 2})
    for partition in range(PARTITIONS):
        for offset in range(RECORDS_PER_PARTITION):
            garbage.produce(topics.input, value=b"\x00not avro %d" % offset, partition=partition)
    assert garbage.flush(30) == 0
    zombie = _previous_owner(bootstrap, topics, group)

    env = {
        "LEADS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "LEADS_REDIS_URL": chaos_services.redis_url,
        "LEADS_BATCH_WAIT_MS": "50",
        "LEADS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LEADS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        **topics.env(),
    }
    fleet = Fleet(env, tmp_path, lambda _note: None)
    try:
        fleet.start("a", stable_id=False)  # waits for the pending offsets of all six partitions
        time.sleep(2)
        fleet.start("b", stable_id=False, wait=False)  # a rebalance in the middle of that wait
        deadline = time.monotonic() + ZOMBIE_TIMEOUT_MS / 1000 + 60
        while time.monotonic() < deadline:
            if committed_now(chaos_services, group, topics.input) == dict.fromkeys(
                range(PARTITIONS), RECORDS_PER_PARTITION
            ):
                break
            time.sleep(1)
        fleet.stop_all()
    finally:
        fleet.kill_all()
    del zombie
    assert not fleet.unexpected_exits, fleet.unexpected_exits
    assert all(rc == 0 for _, rc, _ in fleet.stops), fleet.stops
    dead, problems = read_all(topics.dead_letter, "dead_letter", timeout_s=60, bootstrap=bootstrap)
    assert not problems
    sources = sorted((d["sourcePartition"], d["sourceOffset"]) for d in dead)
    replayed = [s for s in sources if s[1] < COMMITTED]
    assert not replayed, (
        f"{len(replayed)} records before the committed offset processed again, e.g. {replayed[:3]}"
    )
    # The dead owner's transaction was aborted, so everything from the committed offset on, once.
    assert sources == [(p, o) for p in range(PARTITIONS) for o in range(COMMITTED, RECORDS_PER_PARTITION)]
