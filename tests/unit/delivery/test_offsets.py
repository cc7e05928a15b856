"""Where newly assigned partitions start (OffsetKeeper.committed_starts), with fakes: the topic id,
pending transactional offsets, and "no committed offset" answers for partitions with a floor."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from consumer.delivery import offsets as offsets_module
from consumer.processing.runner import Runner
from tests.unit.delivery.fakes import FakeConsumer, FakeStore, make_runner, one_batch

TOPIC = "leads.raw"


def test_assigned_partitions_start_once_their_topic_id_is_known(monkeypatch: pytest.MonkeyPatch) -> None:
    # The floor is kept per topic id; an admin request that times out is asked again, it does
    # not escape the rebalance callback.
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    _sources, result = one_batch()
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    runner, _ = make_runner(consumer, store, result)
    answers: list[str | Exception] = [TimeoutError(), "AAAA"]

    def topic_id(topic: str) -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    runner.offsets.topic_id = topic_id
    starts = runner.offsets.committed_starts(
        cast(Any, consumer), [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    )
    assert starts is not None and [(tp.partition, tp.offset) for tp in starts] == [(0, 12), (1, 6)]
    assert store.calls == [f"identify_topic {TOPIC} AAAA"]


def test_waiting_for_pending_offsets_fences_this_instances_own_abandoned_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # make chaos, broker run: a producer abandoned in a stuck send_offsets_to_transaction kept its
    # transaction open; the partitions came back to the same instance, whose committed() then
    # waited 6 minutes for offsets only its own next producer would fence. Now recover() runs
    # while waiting (a no-op when the producer is sound).
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    _sources, result = one_batch()
    consumer = FakeConsumer({0: 12, 1: 6})
    runner, committer = make_runner(consumer, FakeStore(), result)
    answer_of = consumer.committed

    def pending_until_fenced(partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if not committer.recovered:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return answer_of(partitions, timeout)

    consumer.committed = pending_until_fenced  # type: ignore[method-assign]
    starts = runner.offsets.committed_starts(
        cast(Any, consumer), [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    )
    assert starts is not None and [(tp.partition, tp.offset) for tp in starts] == [(0, 12), (1, 6)]
    assert committer.recovered == 1


def _starts(runner: Runner, consumer: FakeConsumer) -> list[tuple[int, int]] | None:
    starts = runner.offsets.committed_starts(
        cast(Any, consumer), [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]
    )
    return None if starts is None else [(tp.partition, tp.offset) for tp in starts]


def test_no_committed_offset_for_a_partition_with_a_floor_is_asked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # make chaos, broker run: right after kafka-kill + start the coordinator answered
    # "no offset" (-1001) for every partition. One instance's last commit had gone through but
    # its outcome was unknown to it (so no floor yet); the other started from the floor, below
    # that commit, and published its records a second time. The coordinator, asked again once
    # recovered, has the real offsets.
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    _sources, result = one_batch()
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    consumer.answers = [{}, {}]  # twice nothing, then the real offsets
    store.kept_floor = {(TOPIC, 0): 10}
    runner, _ = make_runner(consumer, store, result)
    assert _starts(runner, consumer) == [(0, 12), (1, 6)]
    assert consumer.committed_calls == 3


def test_no_committed_offset_without_a_floor_is_taken_at_once() -> None:
    _sources, result = one_batch()
    consumer, store = FakeConsumer({}), FakeStore()  # a new group: nothing committed, no floor
    runner, _ = make_runner(consumer, store, result)
    assert _starts(runner, consumer) == [(0, -1001), (1, -1001)]
    assert consumer.committed_calls == 1


def test_no_committed_offset_past_the_wait_is_taken_and_left_to_the_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(offsets_module, "FORGOTTEN_OFFSETS_WAIT_S", 0.1)
    _sources, result = one_batch()
    consumer, store = FakeConsumer({1: 6}), FakeStore()  # partition 0 stays forgotten
    store.kept_floor = {(TOPIC, 0): 10}
    runner, _ = make_runner(consumer, store, result)
    started = time.monotonic()
    # Taken as it is; the first batch read then finds its start below the floor and moves up
    # (test_a_batch_below_the_committed_floor_moves_its_partitions_up_to_the_floor).
    assert _starts(runner, consumer) == [(0, -1001), (1, 6)]
    assert consumer.committed_calls > 2 and time.monotonic() - started < 5
