"""The run loop with commits overlapping the next batch (LEADS_OVERLAP_COMMITS, the default), with
fakes: what is committed when, and what is replayed when a commit or a Redis reply fails.

The fault suite (`make chaos`) runs the same loop against real servers; these pin down the
orderings it cannot choose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis
from confluent_kafka import TopicPartition

from consumer.avro.outputs import Output
from consumer.delivery.committer import CommitFailed
from consumer.delivery.offsets import first_offsets
from consumer.model import SourceRecord
from consumer.processing.batch import BatchResult, Started
from consumer.processing.runner import Runner
from consumer.state.customer import PartitionKey
from tests.support.runner import fake_runner

TOPIC = "leads.raw"


def _records(*positions: tuple[int, int]) -> list[SourceRecord]:
    return [SourceRecord(TOPIC, partition, offset, b"k", b"v") for partition, offset in positions]


def _name(sources: Sequence[SourceRecord]) -> str:
    return ",".join(f"{s.partition}:{s.offset}" for s in sources)


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()

    def add(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)


class FakeProcessor:
    """start() 'sends' the write, finish() reads its reply; a reply may be made to fail."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.failing_replies: set[str] = set()  # batches whose first reply raises
        self.on_start: Callable[[str], None] = lambda _name: None

    def prepare(self, sources: Sequence[SourceRecord]) -> Started:
        return Started(sources, [], {}, {}, {}, "token", 0, set())

    def start(self, batch: Started) -> None:
        name = _name(batch.sources)
        self.log.add(f"start {name}")
        self.on_start(name)

        def reply() -> list[bool]:
            self.log.add(f"reply {name}")
            if name in self.failing_replies:
                self.failing_replies.discard(name)
                raise redis.ConnectionError("connection reset while reading the reply")
            return []

        batch.reply = reply

    def finish(self, batch: Started) -> BatchResult:
        batch.reply()
        return _result(batch.sources)

    def process(self, sources: Sequence[SourceRecord]) -> BatchResult:
        self.log.add(f"process {_name(sources)}")
        return _result(sources)


def _result(sources: Sequence[SourceRecord]) -> BatchResult:
    offsets = {(s.topic, s.partition): s.offset + 1 for s in sources}
    outputs = [Output("leads.attributed", s.key or b"", s.value) for s in sources]
    return BatchResult(
        outputs=outputs, offsets=offsets, journal={p: [f"{o - 1}:t.0"] for p, o in offsets.items()}
    )


class FakeCommitter:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.failing: set[str] = set()  # offsets (as "p:o,...") whose commit fails, not committed
        self.before_commit: Callable[[], None] = lambda: None

    def commit_batch(
        self, outputs: Sequence[Output], offsets: dict[tuple[str, int], int], consumer: Any
    ) -> None:
        name = ",".join(f"{p}:{o}" for (_t, p), o in sorted(offsets.items()))
        self.before_commit()
        if name in self.failing:
            self.log.add(f"commit failed {name}")
            raise CommitFailed("transaction aborted: _FENCED", maybe_committed=False)
        self.log.add(f"commit {name} ({len(outputs)} records)")

    def publish(self, outputs: Sequence[Output]) -> None:
        return None

    def recover(self) -> None:
        return None

    def close(self) -> None:
        return None


class FakeConsumer:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.queued: list[list[Any]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.log.add(f"seek {tp.partition}:{tp.offset}")

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return self.queued.pop(0) if self.queued else []

    def poll(self, timeout: float) -> Any:
        self.log.add("wait for input")
        return None


class FakeStore:
    def __init__(self, log: Log) -> None:
        self.log = log

    def note_committed(self, offsets: dict[PartitionKey, int]) -> None:
        return None

    def raise_floor(self, offsets: dict[PartitionKey, int]) -> None:
        self.log.add("floor " + ",".join(f"{p}:{o}" for (_t, p), o in sorted(offsets.items())))

    def forget_journal(self, entries: dict[PartitionKey, list[str]]) -> None:
        self.log.add(f"forget {sorted(p for _t, p in entries)}")

    def flush_queued(self) -> None:
        # Logged: a committed batch must not wait for Redis to send its clean-ups (they ride on
        # the next read); only a revoke (and an outcome settled by asking) sends them at once.
        self.log.add("flush queued")

    def note_progress(self, offsets: dict[PartitionKey, int]) -> None:
        return None  # the write guards are the store's own (tests/integration/test_store_contract.py)

    def claim_partitions(self, partitions: list[PartitionKey]) -> None:
        return None


def _setup(
    overlap_min_records: int | None = 1,
) -> tuple[Runner, Log, FakeProcessor, FakeCommitter, FakeConsumer]:
    log = Log()
    processor, committer, consumer = FakeProcessor(log), FakeCommitter(log), FakeConsumer(log)
    runner = fake_runner(
        consumer, committer, FakeStore(log), processor, overlap_min_records=overlap_min_records
    )
    return runner, log, processor, committer, consumer


def test_a_batch_commits_while_the_next_is_decided() -> None:
    runner, log, processor, committer, _ = _setup()
    next_started = threading.Event()
    processor.on_start = lambda name: next_started.set() if name == "0:12,0:13" else None

    def overlapping() -> None:
        # The commit of the first batch waits until the second has started: one after the
        # other, this would time out.
        assert next_started.wait(5), "the next batch did not start while this one was committing"

    committer.before_commit = overlapping
    runner._handle_batch(_records((0, 10), (0, 11)))
    assert log.lines == ["start 0:10,0:11"]  # written to Redis, not committed yet
    runner._handle_batch(_records((0, 12), (0, 13)))
    assert next_started.is_set()
    assert log.lines == [
        "start 0:10,0:11",
        "reply 0:10,0:11",  # its Redis reply read before the next batch reads any state
        "start 0:12,0:13",
        "commit 0:12 (2 records)",  # meanwhile, on the commit thread,
        "floor 0:12",  # and the floor goes up with it, before the run loop is back
        "forget [0]",
    ]
    runner.finish_in_flight()
    assert log.lines[-4:] == ["reply 0:12,0:13", "commit 0:14 (2 records)", "floor 0:14", "forget [0]"]


def test_a_failed_commit_rewinds_the_batch_decided_meanwhile() -> None:
    runner, log, _, committer, _ = _setup()
    committer.failing = {"0:12"}
    runner._handle_batch(_records((0, 10), (0, 11)))
    runner._handle_batch(_records((0, 12), (1, 5)))
    # The first batch goes back to its start; the second, read past it, goes back too: partition
    # 0 is already at 10, partition 1 to its own start. Its reply is read, but nothing is kept.
    assert [line for line in log.lines if line.startswith(("seek", "commit", "reply 0:12"))] == [
        "commit failed 0:12",
        "seek 0:10",
        "reply 0:12,1:5",
        "seek 1:5",
    ]
    runner.finish_in_flight()
    assert not any(line.startswith("commit 0:") for line in log.lines)  # nothing left to commit


def test_a_reply_lost_on_the_way_processes_the_batch_again() -> None:
    runner, log, processor, _, _ = _setup()
    processor.failing_replies = {"0:10,0:11"}
    runner._handle_batch(_records((0, 10), (0, 11)))
    runner.finish_in_flight()
    # Whether the write was applied is unknown: processed again from the start (the journal
    # repeats the decisions if it was), then committed.
    assert log.lines == [
        "start 0:10,0:11",
        "reply 0:10,0:11",
        "process 0:10,0:11",
        "commit 0:12 (2 records)",
        "floor 0:12",
        "forget [0]",
    ]


def test_revoked_partitions_commit_the_batch_in_flight_first() -> None:
    runner, log, _, _, consumer = _setup()
    runner._handle_batch(_records((0, 10), (0, 11)))
    runner._on_revoke(cast(Any, consumer), [TopicPartition(TOPIC, 0)])
    assert log.lines == [
        "start 0:10,0:11",
        "reply 0:10,0:11",
        "commit 0:12 (2 records)",
        "floor 0:12",
        "forget [0]",
        "flush queued",  # the next owner checks its start against the floor: sent before leaving
    ]


def test_lost_partitions_drop_the_batch_in_flight() -> None:
    runner, log, _, _, consumer = _setup()
    runner._handle_batch(_records((0, 10), (0, 11)))
    runner._on_lost(cast(Any, consumer), [TopicPartition(TOPIC, 0)])
    runner.finish_in_flight()
    # Another member may own them already: never committed here; its reply is read all the same.
    assert log.lines == ["start 0:10,0:11", "reply 0:10,0:11"]


def test_quiet_input_commits_the_batch_in_flight_before_waiting() -> None:
    runner, log, _, _, _ = _setup()
    runner._handle_batch(_records((0, 10), (0, 11)))
    assert runner._next_messages() == []
    assert log.lines[-2:] == ["forget [0]", "wait for input"]
    assert "commit 0:12 (2 records)" in log.lines


def test_a_small_batch_waits_for_the_batch_in_flight_then_commits_alone() -> None:
    # Caught up (a batch under the threshold): its records should not wait for a commit that
    # runs while the next batch is decided; the batch in flight is committed first.
    runner, log, _, _, _ = _setup(overlap_min_records=3)
    runner._handle_batch(_records((0, 10), (0, 11), (0, 12)))
    assert log.lines == ["start 0:10,0:11,0:12"]  # big enough: in flight
    runner._handle_batch(_records((0, 13), (1, 4)))
    assert log.lines == [
        "start 0:10,0:11,0:12",
        "reply 0:10,0:11,0:12",
        "commit 0:13 (3 records)",
        "floor 0:13",
        "forget [0]",
        "process 0:13,1:4",
        "commit 0:14,1:5 (2 records)",
        "floor 0:14,1:5",
        "forget [0, 1]",
    ]
    assert runner._written is None


def test_a_small_batch_read_past_a_failed_commit_is_rewound_too() -> None:
    runner, log, _, committer, _ = _setup(overlap_min_records=3)
    committer.failing = {"0:13"}
    runner._handle_batch(_records((0, 10), (0, 11), (0, 12)))
    runner._handle_batch(_records((0, 13), (1, 4)))
    assert [line for line in log.lines if line.startswith(("seek", "commit", "process"))] == [
        "commit failed 0:13",
        "seek 0:10",
        "seek 1:4",  # never processed: its partition 1 goes back to its start as well
    ]


def test_by_default_batches_of_half_the_batch_size_overlap() -> None:
    runner, log, _, _, _ = _setup(overlap_min_records=None)
    assert runner.batch_size == 100 and runner.overlap_min_records == 50
    runner._handle_batch(_records(*((0, o) for o in range(49))))
    assert log.lines[0].startswith("process ")  # alone
    runner._handle_batch(_records(*((0, o) for o in range(49, 99))))
    assert log.lines[-1].startswith("start ")  # in flight


def test_offsets_of_a_batch_are_its_next_offsets() -> None:
    # The fakes' own arithmetic, which the orderings above rely on.
    sources = _records((0, 10), (1, 5), (0, 11))
    assert first_offsets(sources) == {(TOPIC, 0): 10, (TOPIC, 1): 5}
    assert _result(sources).offsets == {(TOPIC, 0): 12, (TOPIC, 1): 6}
