"""The commit protocol after a commit whose outcome is unknown (OffsetKeeper.settle), through the
run loop, with fakes.

The fault runs reach this path (a broker frozen mid-commit), but cannot choose which way the
coordinator decided; here both ways are forced: a batch the coordinator did commit must not be
replayed (it would be published twice), one it did not must be replayed from its first offsets.
And a batch below the committed-offset floor moves its partitions up to the floor.
"""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition

from consumer.delivery import offsets as offsets_module
from consumer.delivery.committer import CommitFailed
from tests.unit.delivery.fakes import (
    FakeConsumer,
    FakeProcessor,
    FakeStore,
    handle,
    make_runner,
    one_batch,
    overlapping,
)

TOPIC = "leads.raw"


@overlapping
def test_a_batch_the_coordinator_committed_is_not_replayed(overlap: bool) -> None:
    sources, result = one_batch()
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    runner, committer = make_runner(consumer, store, result, overlap=overlap)
    handle(runner, sources)
    assert committer.recovered == 1  # the new producer fenced the old one before asking
    assert consumer.seeks == []  # no replay: it would publish the batch a second time
    assert store.forgotten == [result.journal]  # committed, so its journal entries may go
    assert store.floor == [result.offsets]  # ... once the floor covers them
    assert store.calls == ["note_committed", "forget_journal", "flush_queued"]  # sent at once


@overlapping
def test_a_batch_the_coordinator_did_not_commit_is_replayed(overlap: bool) -> None:
    sources, result = one_batch()
    consumer, store = FakeConsumer({0: 10, 1: 5}), FakeStore()
    runner, _ = make_runner(consumer, store, result, overlap=overlap)
    handle(runner, sources)
    assert sorted(consumer.seeks) == [(0, 10), (1, 5)]
    assert store.forgotten == []  # the replay needs them
    assert store.floor == []


@overlapping
def test_an_answer_below_the_batch_start_is_asked_again(
    overlap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A coordinator reloaded after a broker crash answered no offset, then an older one: below
    # where this batch started, so certainly not the truth. Replaying on it would publish the
    # batch twice if it had been committed; asking again gets the real answer.
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    sources, result = one_batch()
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    consumer.answers = [{}, {0: 3, 1: 6}]  # then the real answer: the batch was committed
    runner, _ = make_runner(consumer, store, result, overlap=overlap)
    handle(runner, sources)
    assert consumer.committed_calls == 3
    assert consumer.seeks == []  # not replayed
    assert store.floor == [result.offsets]


@overlapping
def test_a_stale_answer_that_persists_ends_in_a_replay_from_the_batch_start(
    overlap: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offsets_module, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(offsets_module, "STALE_ANSWER_LIMIT_S", 0.05)
    sources, result = one_batch()
    consumer, store = FakeConsumer({0: 3}), FakeStore()  # partition 0 stays behind the batch start
    runner, _ = make_runner(consumer, store, result, overlap=overlap)
    handle(runner, sources)
    assert consumer.committed_calls > 1
    # Seeks to the answer for partition 0 (the floor check of the next read brings it back up to
    # 10, see test_a_batch_below_the_committed_floor...), and to its batch start for partition 1.
    assert sorted(consumer.seeks) == [(0, 3), (1, 5)]
    assert store.floor == []


@overlapping
def test_stopping_before_the_outcome_is_known_neither_replays_nor_forgets(overlap: bool) -> None:
    sources, result = one_batch()
    consumer, store = FakeConsumer({}), FakeStore()

    def unreachable(partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        raise CommitFailed("broker away", code=-185)

    consumer.committed = unreachable  # type: ignore[method-assign]
    runner, _ = make_runner(consumer, store, result, overlap=overlap)
    runner.stop_requested = 1.0
    handle(runner, sources)
    assert consumer.seeks == [] and store.forgotten == []


@overlapping
def test_a_batch_below_the_committed_floor_moves_its_partitions_up_to_the_floor(overlap: bool) -> None:
    # Seen in make chaos (broker scenario): right after a broker restart the coordinator answered
    # committed() with no offset (-1001) or an older one; starting there replayed committed input.
    sources, result = one_batch()
    processor = FakeProcessor(result)
    processor.refuse = {(TOPIC, 0): 40}  # partition 0 was committed up to 40; partition 1 is fine
    consumer, store = FakeConsumer({0: 12, 1: 6}), FakeStore()
    runner, committer = make_runner(consumer, store, result, processor, overlap=overlap)
    handle(runner, sources)
    assert sorted(consumer.seeks) == [(0, 40), (1, 5)]  # up to the floor; the other from its start
    assert committer.commits == [(0, {(TOPIC, 0): 40})]  # the floor committed again, no records
    assert store.calls == []  # nothing noted or forgotten: the batch was not processed


@overlapping
def test_a_floor_past_the_end_of_its_partition_is_dropped_not_obeyed(overlap: bool) -> None:
    # The topic was deleted and created again: its offsets start over, the floor is from before.
    sources, result = one_batch()
    processor = FakeProcessor(result)
    processor.refuse = {(TOPIC, 0): 40, (TOPIC, 1): 900}
    consumer, store = FakeConsumer({}), FakeStore()
    consumer.ends = {0: 50, 1: 7}
    runner, committer = make_runner(consumer, store, result, processor, overlap=overlap)
    handle(runner, sources)
    assert store.calls == [f"forget_committed {[(TOPIC, 1)]}"]
    assert sorted(consumer.seeks) == [(0, 40), (1, 5)]  # partition 1 from its batch start: processed next
    assert committer.commits == [(0, {(TOPIC, 0): 40})]
