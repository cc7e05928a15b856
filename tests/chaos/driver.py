"""One chaos run: fresh topics, a feeder producing the stream, real consumer processes, checks.

A scenario function receives a ``Run`` and injects faults while the feeder produces; the run then
waits until the group's committed offsets reach the end of the input, stops every consumer with
SIGTERM, reads the COMMITTED outputs (read_committed) and compares them with the expectations of
the generated stream (tests/chaos/stream.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from consumer.state.codec import unframe_journal
from consumer.state.redis_store import RedisStore
from harness.kafka import Topics, committed_offsets, create_topics, end_offsets, set_group_offsets
from harness.services import LocalServices
from tests.chaos.checks import verify
from tests.chaos.feeder import Feeder
from tests.chaos.fleet import Fleet
from tests.chaos.services import chaos_services
from tests.chaos.stream import Stream

INPUT_PARTITIONS = 6
OUTPUT_PARTITIONS = 3


@dataclass
class Outcome:
    name: str
    events: int
    faults: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def render(self) -> str:
        status = "OK" if self.ok else f"FAILED ({len(self.violations)} violations)"
        out = [f"== {self.name}: {status}, {self.events} events, {self.seconds:.0f}s"]
        out.append(f"  faults ({len(self.faults)}): " + ("; ".join(self.faults) or "none"))
        out += [f"  {line}" for line in self.lines]
        out += [f"  note: {note}" for note in self.notes]
        out += [f"  VIOLATION: {v}" for v in self.violations]
        return "\n".join(out)


class Run:
    """Everything one scenario run needs; scenario functions use the helpers below."""

    def __init__(
        self,
        name: str,
        services: LocalServices,
        stream: Stream,
        rate: float,
        log_dir: Path,
        seed: int,
        guarantee: str = "exactly_once",
        drain_timeout_s: float = 300.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.services = services
        self.stream = stream
        self.rate = rate
        self.rng = random.Random(seed)
        self.guarantee = guarantee
        self.drain_timeout_s = drain_timeout_s
        self.outcome = Outcome(name, len(stream.records))
        self.started = time.monotonic()
        self.topics = Topics.fresh()
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            # As tests/integration/conftest.py BASE_ENV, on the chaos pair.
            "LEADS_KAFKA_BOOTSTRAP_SERVERS": services.bootstrap,
            "LEADS_REDIS_URL": services.redis_url,
            "LEADS_BATCH_WAIT_MS": "50",
            "LEADS_LOG_LEVEL": "INFO",
            "LEADS_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "LEADS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            # Nothing may expire during a run of the default stream: every deferred lead must be joined,
            # never reported. The windowed stream (tests/chaos/windows.py) runs on short windows.
            **(
                {
                    "LEADS_PENDING_TTL_SECONDS": str(stream.windowed.ttl_ms / 1000),
                    "LEADS_ORPHAN_GRACE_SECONDS": str(stream.windowed.grace_ms / 1000),
                }
                if stream.windowed is not None
                else {"LEADS_PENDING_TTL_SECONDS": "86400", "LEADS_ORPHAN_GRACE_SECONDS": "86400"}
            ),
            "LEADS_PROCESSING_GUARANTEE": guarantee,
            **self.topics.env(),
            **(
                {"LEADS_REDIS_SENTINELS": services.sentinels, "LEADS_REDIS_SENTINEL_MASTER": "leadattr"}
                if services.redis_ha
                else {}
            ),
            **(env or {}),
        }
        self.restores = 0  # state restores seen in the consumers' logs (tests/chaos/state_faults.py)
        self.fleet = Fleet(self.env, log_dir, self.note)
        self.feeder = Feeder(services.bootstrap, self.topics.input, stream, rate, seed)

    # -- helpers for scenarios ------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fault(self, text: str) -> None:
        entry = f"{text} @{self.elapsed():.0f}s/{100 * self.feeder.progress:.0f}%"
        self.outcome.faults.append(entry)
        print(f"    [{self.name}] {entry}", flush=True)

    def note(self, text: str) -> None:
        self.outcome.notes.append(text)

    def violation(self, text: str) -> None:
        self.outcome.violations.append(text)
        print(f"    [{self.name}] VIOLATION: {text}", flush=True)

    def at_progress(self, fraction: float) -> None:
        """Wait until the feeder has sent ``fraction`` of the stream (or finished)."""
        while self.feeder.progress < fraction and not self.feeder.finished.is_set():
            self.fleet.check()
            self.fleet.check_liveness()
            time.sleep(0.05)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.fleet.check()
            self.fleet.check_liveness()
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def consumed(self) -> float:
        """Events consumed by the live consumers (since their start), for "is it working" checks."""
        total = 0.0
        for incarnation in list(self.fleet.slots.values()):
            with contextlib.suppress(OSError):
                total += incarnation.process.metric("leads_events_consumed_total")
        return total

    def in_flight(self) -> set[tuple[int, int]]:
        """Right after a kill -9, with no other consumer alive: decisions journaled in Redis for
        input offsets the group has not committed, i.e. the kill hit a batch between its Redis
        write and its commit, and the restart must replay it from the journal. (Committed offsets
        are read without require_stable, so the killed instance's open transaction does not
        block the answer.) The (partition, offset) of each; empty when it could not be told."""
        committed = committed_now(self.services, self.topics.group, self.topics.input, stable=False)
        if not committed:
            return set()
        client = redis.Redis.from_url(self.services.redis_url)
        try:
            # One journal hash per input partition, its fields the framed decisions of one batch
            # write each (consumer/state/store.py).
            store = RedisStore(
                client,
                self.env["LEADS_REDIS_PREFIX"],
                journal_ttl_ms=0,
                group=self.env["LEADS_CONSUMER_GROUP"],
            )
            partitions = range(INPUT_PARTITIONS)
            pipe = client.pipeline(transaction=False)
            for partition in partitions:
                pipe.hvals(store.journal_key((self.topics.input, partition)))
            found: set[tuple[int, int]] = set()
            for partition, values in zip(partitions, pipe.execute(), strict=True):
                for value in values:
                    for offset, _entry in unframe_journal(value):
                        if offset >= committed.get(partition, 0):
                            found.add((partition, offset))
            return found
        except redis.RedisError:
            return set()
        finally:
            client.close()

    def move_group_back(self, share: float) -> dict[int, tuple[int, int]]:
        """With every instance stopped: move the group's committed input offsets back to ``share``
        of where they are (0: the start, as if nothing was committed), as the broker was seen to
        answer after a crash. Returns {partition: (was, now)}."""
        group = self.env["LEADS_CONSUMER_GROUP"]
        deadline = time.monotonic() + 90  # killed members stay in the group for the session timeout
        while True:
            # stable=False: a killed member's open transaction must not block the read; the
            # numbers only say where to move back to.
            was = committed_now(self.services, group, self.topics.input, stable=False)
            moved = {p: (offset, int(max(offset, 0) * share)) for p, offset in was.items()}
            try:
                set_group_offsets(
                    group,
                    self.topics.input,
                    {p: now for p, (_, now) in moved.items()},
                    self.services.bootstrap,
                    timeout_s=60,
                )
                return moved
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def caught_up(self) -> bool:
        end = end_offsets(self.topics.input, INPUT_PARTITIONS, self.services.bootstrap)
        return committed_now(self.services, self.topics.group, self.topics.input, stable=False) == end

    def wait_working(self, timeout_s: float = 60.0) -> None:
        """Until the live consumers have consumed something (or there is nothing left to consume):
        a fault then hits a working consumer, not one still joining the group."""
        deadline = time.monotonic() + timeout_s
        while self.consumed() <= 0 and time.monotonic() < deadline:
            if self.feeder.finished.is_set() and self.caught_up():
                return
            self.sleep(0.3)

    def readiness(self, slot: str) -> tuple[int, str]:
        try:
            return self.fleet.slots[slot].process.get("/readyz")
        except OSError as error:
            return 0, str(error)

    def wait_ready(self, slots: list[str], timeout_s: float, what: str, strict: bool = True) -> None:
        """Every slot answers /readyz 200 within ``timeout_s`` (recovery after a fault). Not
        ``strict``: a slot still not ready is a note, not a violation (see the broker scenario)."""
        deadline = time.monotonic() + timeout_s
        pending = list(slots)
        while pending and time.monotonic() < deadline:
            self.fleet.check()
            pending = [s for s in pending if s in self.fleet.slots and self.readiness(s)[0] != 200]
            time.sleep(0.25)
        for slot in pending:
            text = f"{slot} not ready {timeout_s:.0f}s after {what}: {self.readiness(slot)[1].strip()}"
            if strict:
                self.violation(text)
            else:
                self.note(text)

    # -- the run ---------------------------------------------------------------------------------

    def execute(self, scenario: Callable[[Run], None]) -> Outcome:
        self.services.ensure()
        # On the cluster as production runs it: three replicas, two of them in sync for a write.
        durable = {"min.insync.replicas": "2"} if self.services.brokers >= 3 else {}
        configs = {**self.topics.configs(), self.topics.input: {"message.timestamp.type": "LogAppendTime"}}
        create_topics(
            {self.topics.input: INPUT_PARTITIONS, **dict.fromkeys(self.topics.outputs(), OUTPUT_PARTITIONS)},
            bootstrap=self.services.bootstrap,
            # The records' timestamps are the broker's, as the README recommends: arrival time.
            configs={name: {**durable, **configs.get(name, {})} for name in self.topics.all()},
            replication_factor=min(3, self.services.brokers),
        )
        try:
            scenario(self)
            self.feeder.finished.wait()
            self._drain()
        finally:
            self.fleet.kill_all()  # only left alive when the run failed early
        self.services.ensure()  # a fault at the very end may have left the broker down
        verify(self)
        self.outcome.seconds = self.elapsed()
        return self.outcome

    def begin_feeding(self) -> None:
        self.feeder.start()

    def _drain(self) -> None:
        """Until everything is committed; then SIGTERM every consumer (exit 0 within 30 s)."""
        if self.feeder.errors:
            self.violation(f"harness: the feeder failed: {self.feeder.errors[:3]}")
        if not self.fleet.alive():
            self.note("no consumer alive after the scenario: starting one to drain")
            self.fleet.start("drain")
        deadline = time.monotonic() + self.drain_timeout_s
        end = end_offsets(self.topics.input, INPUT_PARTITIONS, self.services.bootstrap)
        committed: dict[int, int] = {}
        restarts = 0
        while time.monotonic() < deadline:
            committed = committed_now(self.services, self.topics.group, self.topics.input)
            if committed == end:
                break
            self.sleep(1.0)
            if not self.fleet.alive():
                if restarts == 3:
                    self.violation("consumers keep exiting during the drain: giving up")
                    break
                restarts += 1
                self.note("every consumer exited during the drain: starting one")
                self.fleet.start("drain")
        if self.stream.windowed is not None:
            # The last deadlines fall due after the last record: give the sweepers time to report them
            # (within about 4 s of the deadline when caught up) before the consumers stop.
            windows = self.stream.windowed
            arrived = max((s for s in self.feeder.stamps if s is not None), default=0) / 1000
            until = arrived + max(windows.ttl_ms, windows.grace_ms) / 1000 + 12
            self.sleep(max(0.0, until - time.time()))
            self._wait_swept()
        self.drained_at = self.elapsed()
        self.fleet.stop_all()
        self.committed, self.end = committed, end

    def _wait_swept(self, timeout_s: float = 60.0) -> None:
        """Every deadline of the windowed stream has passed: wait until the pending and held
        counters are 0 (each item reported, published and released). A fault near the end of the
        feed (an outage) brings the consumers back after the fixed wait, and stopping them then
        cut their burst of expiries short."""
        prefix = self.env["LEADS_REDIS_PREFIX"]
        deadline = time.monotonic() + timeout_s
        counts: list[int] = []
        while time.monotonic() < deadline:
            client = redis.Redis.from_url(self.services.redis_url)
            try:
                counts = [int(v or 0) for v in client.mget(f"{prefix}:pending", f"{prefix}:held")]
            except redis.RedisError:
                counts = []
            finally:
                client.close()
            if counts == [0, 0]:
                return
            self.sleep(1.0)
        self.note(f"pending / held still {counts} {timeout_s:.0f}s after the last deadline")


def committed_now(services: LocalServices, group: str, topic: str, stable: bool = True) -> dict[int, int]:
    """The group's committed offsets of ``topic``, or {} while the broker is busy or restarting."""
    try:
        return committed_offsets(group, topic, INPUT_PARTITIONS, services.bootstrap, stable)
    except Exception:
        return {}


def log_root() -> Path:
    root = Path(os.environ.get("CHAOS_LOG_DIR", str(chaos_services().directory / "runs")))
    return root / time.strftime("%Y%m%d-%H%M%S")
