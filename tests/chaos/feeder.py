"""The feeder: produces the stream as product services do, at a bursty rate, and records where each
record landed (partition, offset): that is how dead letters are matched to their inputs."""

from __future__ import annotations

import functools
import random
import threading
import time

from confluent_kafka import KafkaError, Message, Producer

from tests.chaos.stream import Stream


class Feeder(threading.Thread):
    """Produces the stream at a steady rate, like product services do, and records where each
    record landed (partition, offset) and the timestamp the broker gave it: that is how dead
    letters are matched to their inputs, and unlinked records to their deadlines."""

    def __init__(self, bootstrap: str, topic: str, stream: Stream, rate: float, seed: int = 0) -> None:
        super().__init__(name="chaos-feeder", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = stream.records
        self.rate = rate
        scheduled = [r.due_s for r in self.records]
        self.due = (
            [s for s in scheduled if s is not None]
            if all(s is not None for s in scheduled)
            else bursty_schedule(len(self.records), rate, random.Random(seed))
        )
        self.placed: list[tuple[int, int] | None] = [None] * len(self.records)
        self.stamps: list[int | None] = [None] * len(self.records)
        self.sent = 0
        self.errors: list[str] = []
        self.finished = threading.Event()
        self.duration = 0.0

    @property
    def progress(self) -> float:
        return self.sent / max(1, len(self.records))

    def _delivered(self, index: int, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(f"record {index}: {error.str()}")
        else:
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None  # set on every delivered message
            self.placed[index] = (partition, offset)
            self.stamps[index] = message.timestamp()[1]

    def run(self) -> None:
        started = time.monotonic()
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,  # retries across a broker restart keep order, add no copies
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 600_000,  # outlive any broker outage of the scenarios
                "log_level": 2,  # connection refused while the broker restarts is expected here
            }
        )
        try:
            for index, record in enumerate(self.records):
                lag = started + self.due[index] - time.monotonic()
                if lag > 0:
                    time.sleep(lag)
                while True:
                    try:
                        producer.produce(
                            self.topic,
                            value=record.value,
                            key=record.key,
                            on_delivery=functools.partial(self._delivered, index),
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)
                producer.poll(0)
                self.sent = index + 1
            remaining = producer.flush(600)
            if remaining:
                self.errors.append(f"{remaining} records not delivered")
        except Exception as error:  # the run reports it as a harness error
            self.errors.append(f"feeder crashed: {error!r}")
        finally:
            self.duration = time.monotonic() - started
            self.finished.set()


BURSTS = (0.3, 0.6, 1.0, 2.0, 4.0)  # rate multipliers of the feed's segments


def bursty_schedule(count: int, rate: float, rng: random.Random) -> list[float]:
    """Seconds after the start at which each record is due: segments of ~2 s worth of records at
    0.3x .. 4x the rate, scaled so the whole stream takes count / rate seconds. Bursts give the
    consumers a backlog now and then, so faults often land on a batch in flight."""
    due: list[float] = []
    moment = 0.0
    while len(due) < count:
        step = 1.0 / (rate * rng.choice(BURSTS))
        for _ in range(min(int(2 * rate), count - len(due))):
            due.append(moment)
            moment += step
    scale = (count / rate) / max(moment, 1e-9)
    return [d * scale for d in due]
