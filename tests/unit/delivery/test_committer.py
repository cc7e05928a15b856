"""The transactional committer against producers that misbehave as librdkafka was seen to: a
commit that timed out, a fenced producer, a call that never returns."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumer.avro.outputs import Output
from consumer.delivery import committer as commit
from consumer.delivery.committer import CommitFailed, TransactionalCommitter

TOPIC = "leads.raw"


class WedgedProducer:
    """librdkafka after commit_transaction timed out: abort and begin are refused with _CONFLICT
    until commit_transaction is called again (seen against a frozen broker; see docs/chaos.md)."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.committing = False

    def init_transactions(self, timeout: float) -> None:
        self.log.append("init")

    def begin_transaction(self) -> None:
        if self.committing:
            raise KafkaException(KafkaError(KafkaError._CONFLICT, "commit in progress", retriable=True))
        self.log.append("begin")

    def produce(self, *args: Any, **kwargs: Any) -> None:
        return None

    def send_offsets_to_transaction(self, *args: Any) -> None:
        return None

    def commit_transaction(self, timeout: float) -> None:
        if len([e for e in self.log if e == "init"]) == 1:  # the first producer: the broker is frozen
            self.committing = True
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "flush timed out", retriable=True))
        self.log.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        if self.committing:
            raise KafkaException(KafkaError(KafkaError._CONFLICT, "commit in progress", retriable=True))
        self.log.append("abort")

    def flush(self, timeout: float) -> int:
        return 0


class FakeGroupConsumer:
    def consumer_group_metadata(self) -> object:
        return object()


def test_a_timed_out_commit_does_not_wedge_the_committer() -> None:
    log: list[str] = []
    producers: list[WedgedProducer] = []

    def make() -> Any:
        producers.append(WedgedProducer(log))
        return producers[-1]

    committer = TransactionalCommitter(make)
    outputs = [Output("leads.attributed", b"k", b"v")]
    try:
        committer.commit_batch(outputs, {(TOPIC, 0): 12}, FakeGroupConsumer())
        raise AssertionError("the commit should have failed")
    except CommitFailed as failure:
        assert failure.maybe_committed  # the caller must read the committed offsets, not replay blindly
    # The next batch gets a new producer (same transactional.id: it fences the wedged one).
    committer.commit_batch(outputs, {(TOPIC, 0): 12}, FakeGroupConsumer())
    assert len(producers) == 2
    assert log == ["init", "begin", "init", "begin", "commit"]


class FencedProducer(WedgedProducer):
    """A producer fenced by a newer instance: every call raises a fatal error."""

    def flush(self, timeout: float) -> int:
        error = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
        raise KafkaException(error)


def test_closing_a_fenced_producer_does_not_fail_the_stop() -> None:
    # Found by `make chaos` (broker scenario): a SIGTERM after the instance was fenced exited 1.
    committer = TransactionalCommitter(lambda: cast(Any, FencedProducer([])))
    committer.close()  # no exception: the exit code of a requested stop stays 0


class StuckProducer(WedgedProducer):
    """send_offsets_to_transaction never returns, whatever its timeout (seen after a broker
    restart, make chaos: librdkafka 2.16 blocked in it for minutes with an 8 s timeout)."""

    def __init__(self, log: list[str], release: threading.Event) -> None:
        super().__init__(log)
        self.release = release

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self.log.append("send_offsets (stuck)")
        self.release.wait()


def test_a_transactional_call_that_never_returns_abandons_its_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commit, "TRANSACTION_TIMEOUT_S", 0.1)
    monkeypatch.setattr(commit, "CALL_GRACE_S", 0.3)
    log: list[str] = []
    release = threading.Event()
    producers: list[Any] = []

    def make() -> Any:
        producers.append(StuckProducer(log, release) if not producers else WedgedProducer(log))
        return producers[-1]

    committer = TransactionalCommitter(make)
    outputs = [Output("leads.attributed", b"k", b"v")]
    started = time.monotonic()
    with pytest.raises(CommitFailed) as failure:
        committer.commit_batch(outputs, {(TOPIC, 0): 12}, FakeGroupConsumer())
    assert time.monotonic() - started < 5  # bounded, not forever
    assert not failure.value.maybe_committed  # stuck before Step 4: replay the batch
    assert failure.value.code == KafkaError._TIMED_OUT  # the run loop reports the broker as away
    # The next batch runs on a new producer (same transactional.id: it fences the stuck one).
    committer.commit_batch(outputs, {(TOPIC, 0): 12}, FakeGroupConsumer())
    assert len(producers) == 2
    assert log == ["init", "begin", "send_offsets (stuck)", "init", "begin", "commit"]
    release.set()


class RefusingProducer:
    """produce() refusing a record before it leaves, as librdkafka does for one over
    message.max.bytes or for a topic it knows does not exist."""

    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large"))

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_at_least_once_turns_a_refused_produce_into_a_retried_commit_failure() -> None:
    # Before, the KafkaException escaped the run loop and the process crash-looped.
    committer = commit.AtLeastOnceCommitter(lambda: cast(Any, RefusingProducer()))
    with pytest.raises(CommitFailed, match="delivery failed: MSG_SIZE_TOO_LARGE"):
        committer.commit_batch([Output("leads.attributed", b"k", b"v", None)], {(TOPIC, 0): 1}, None)
