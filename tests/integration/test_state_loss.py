"""Contract rule 9 against the real Kafka and Redis: a Redis that lost state is noticed before a
record is decided on it, and the state is restored from the changelog without losing a lead."""

from __future__ import annotations

import subprocess
import sys
import time

import redis

from harness.kafka import Topics, committed_offsets, create_topics, lead, produce, read_topic
from harness.process import REPO, ConsumerProcess
from tests.integration.conftest import OPERATOR_ENV, StartConsumer

CUSTOMERS = 30


def _event1s() -> list[dict[str, object]]:
    return [
        lead(f"c-loss-{i}", "signup_started", clickId=f"k-{i}", mode="deferred") for i in range(CUSTOMERS)
    ]


def _event2s() -> list[dict[str, object]]:
    return [lead(f"c-loss-{i}", "email_verified") for i in range(CUSTOMERS)]


def _flush(client: redis.Redis, topics: Topics) -> int:
    """Everything this deployment holds in Redis gone, as after a flush or a new empty instance."""
    keys = list(client.scan_iter(match=f"{topics.redis_prefix}:*"))
    if keys:
        client.delete(*keys)
    return len(keys)


def _wait_committed(topics: Topics, records: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(max(o, 0) for o in committed_offsets(topics.group, topics.input).values()) >= records:
            return
        time.sleep(0.3)
    raise AssertionError(f"fewer than {records} input records committed after {timeout_s:.0f}s")


def _wait_metric(consumer: ConsumerProcess, name: str, value: float, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while consumer.metric(name) != value:
        assert time.monotonic() < deadline, f"{name} never became {value}:\n{consumer.logs()[-3000:]}"
        time.sleep(0.2)


def test_a_flushed_redis_is_noticed_and_restored_without_losing_a_lead(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    consumer = start_consumer()
    produce(topics.input, _event1s())
    _wait_committed(topics, CUSTOMERS)
    assert _flush(redis_client, topics) > CUSTOMERS  # every pending lead, the progress, the floor
    produce(topics.input, _event2s())  # verifications of leads that only the changelog still has
    attributed = read_topic(topics.attributed, expected=CUSTOMERS, timeout_s=60)
    assert sorted(r["customerExternalId"] for r in attributed) == sorted(
        f"c-loss-{i}" for i in range(CUSTOMERS)
    )
    assert {r["mode"] for r in attributed} == {"deferred"}
    assert read_topic(topics.unlinked, timeout_s=3, idle_s=1) == []
    logs = consumer.logs()
    assert "state lost: redis holds less than was committed" in logs
    assert "state restored from the changelog" in logs
    assert consumer.metric("leads_state_lost") == 0
    assert consumer.stop() == 0


def test_with_manual_restore_the_consumer_waits_for_restore_state(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    consumer = start_consumer(LEADS_STATE_RESTORE="manual")
    produce(topics.input, _event1s())
    _wait_committed(topics, CUSTOMERS)
    _flush(redis_client, topics)
    produce(topics.input, _event2s())
    _wait_metric(consumer, "leads_state_lost", 1)
    status, body = consumer.get("/readyz")
    assert status == 503 and "state_lost" in body
    time.sleep(2)
    assert read_topic(topics.attributed, timeout_s=2, idle_s=1) == []  # nothing decided on the damage
    done = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "restore-state"],
        env={**consumer.env, **OPERATOR_ENV},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"restored {CUSTOMERS} customer states" in done.stderr
    attributed = read_topic(topics.attributed, expected=CUSTOMERS, timeout_s=60)
    assert len({r["leadId"] for r in attributed}) == CUSTOMERS
    _wait_metric(consumer, "leads_state_lost", 0)
    assert consumer.stop() == 0


def test_a_redis_with_states_and_an_empty_changelog_is_never_restored_over(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    """An upgrade from a release without a changelog: the states in Redis are the only copy.
    The automatic restore refuses; `restore-state --from-redis` seeds the changelog from them."""
    consumer = start_consumer()
    produce(topics.input, _event1s())
    _wait_committed(topics, CUSTOMERS)
    assert consumer.stop() == 0
    redis_client.delete(f"{topics.redis_prefix}:progress:{topics.group}")  # as a release without it left
    empty = f"{topics.name}.empty-changelog"  # the changelog a new release starts with
    create_topics([empty], configs={empty: {"cleanup.policy": "compact"}})
    env = {**consumer.env}
    refused = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "restore-state"],
        env={**env, **OPERATOR_ENV, "LEADS_CHANGELOG_TOPIC": empty},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1 and "--from-redis" in refused.stderr, refused.stderr
    assert len(list(redis_client.scan_iter(match=f"{topics.redis_prefix}:s:*"))) == CUSTOMERS  # untouched
    seeded = subprocess.run(
        [sys.executable, "-m", "consumer.cli", "restore-state", "--from-redis"],
        env={**env, **OPERATOR_ENV},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    again = start_consumer()
    produce(topics.input, _event2s())
    assert len(read_topic(topics.attributed, expected=CUSTOMERS, timeout_s=60)) == CUSTOMERS
    assert "state lost" not in again.logs()
    assert again.stop() == 0


def _wait_assigned(consumers: list[ConsumerProcess], partitions: int = 3, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(c.metric("leads_assigned_partitions") for c in consumers) != partitions or any(
        c.metric("leads_assigned_partitions") == 0 for c in consumers
    ):
        assert time.monotonic() < deadline, "the two consumers never shared the input's partitions"
        time.sleep(0.3)


def test_an_instance_that_did_not_restore_reports_ready_once_another_did(
    topics: Topics, start_consumer: StartConsumer, redis_client: redis.Redis
) -> None:
    """Redis back in time as after a failover to a stale replica (states and progress gone, the
    partition owners kept): both instances notice; the one that may restore does, the other
    (manual) must learn it from its next write and say ready again, not state_lost for ever."""
    restorer = start_consumer()
    waiter = start_consumer(LEADS_STATE_RESTORE="manual")
    _wait_assigned([restorer, waiter])
    produce(topics.input, _event1s())
    _wait_committed(topics, CUSTOMERS)
    lock = f"{topics.redis_prefix}:restore-lock"
    assert redis_client.set(lock, "another-restorer", nx=True, px=120_000)  # a restore under way elsewhere
    states = list(redis_client.scan_iter(match=f"{topics.redis_prefix}:s:*"))
    assert len(states) == CUSTOMERS
    redis_client.delete(*states, f"{topics.redis_prefix}:progress:{topics.group}")
    produce(topics.input, _event2s())  # Event 2s on every partition: both instances write, and are refused
    _wait_metric(restorer, "leads_state_lost", 1)
    _wait_metric(waiter, "leads_state_lost", 1)
    assert read_topic(topics.attributed, timeout_s=2, idle_s=1) == []
    redis_client.delete(lock)  # the other restore gave up: the automatic instance restores
    attributed = read_topic(topics.attributed, expected=CUSTOMERS, timeout_s=60)
    assert sorted(r["customerExternalId"] for r in attributed) == sorted(
        f"c-loss-{i}" for i in range(CUSTOMERS)
    )
    assert read_topic(topics.unlinked, timeout_s=3, idle_s=1) == []
    _wait_metric(waiter, "leads_state_lost", 0)
    for consumer in (restorer, waiter):
        status, body = consumer.get("/readyz")
        assert status == 200, body
    assert waiter.logs().count("state lost: redis holds less than was committed") == 1
    assert restorer.logs().count("state not restored here") == 1  # refused while the lock was held, once
    for consumer in (restorer, waiter):
        assert consumer.stop() == 0
