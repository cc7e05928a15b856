"""One chaos run: fresh topics, a feeder producing the stream, real consumer processes, checks.

A scenario function receives a ``Run`` and injects faults while the feeder produces; the run then
waits until the group's committed offsets reach the end of the input, stops every consumer with
SIGTERM, reads the COMMITTED outputs (read_committed) and compares them with the expectations of
the generated stream (tests/chaos/stream.py).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from consumer.avro.schemas import decode, load_schema
from consumer.state.codec import unframe_journal
from consumer.state.redis_store import RedisStore
from tests.chaos.services import ChaosServices
from tests.chaos.stream import COMPARED, Stream, epoch_ms
from tests.support.kafka import Topics, set_group_offsets, wake_entries
from tests.support.process import ConsumerProcess
from tests.support.stores import audit

INPUT_PARTITIONS = 6
OUTPUT_PARTITIONS = 3
TRANSACTION_ABORT_S = 75.0  # transaction.timeout.ms (60 s) + the broker's abort scan (10 s) + margin
STOP_LIMIT_S = 30.0  # SIGTERM must end the process, exit 0, within Kubernetes' grace period

# The consumer's state-change log lines: each must alternate with its opposite (one line per change).
STATE_LINES = {
    "redis": ("redis unavailable, pausing and retrying", "redis reachable again"),
    "kafka": ("kafka broker unreachable", "kafka broker reachable again"),
}


class Feeder(threading.Thread):
    """Produces the stream at a steady rate, like product services do, and records where each
    record landed (partition, offset): that is how dead letters are matched to their inputs."""

    def __init__(self, bootstrap: str, topic: str, stream: Stream, rate: float, seed: int = 0) -> None:
        super().__init__(name="chaos-feeder", daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.records = stream.records
        self.rate = rate
        self.due = bursty_schedule(len(self.records), rate, random.Random(seed))
        self.placed: list[tuple[int, int] | None] = [None] * len(self.records)
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


@dataclass
class Incarnation:
    slot: str
    process: ConsumerProcess
    started: float
    ended: str = ""  # "", "killed", "stopped rc=0 in 1.2s", "exited rc=1 by itself"
    terminated: float = 0.0  # monotonic time of SIGTERM
    exited: float = 0.0  # monotonic time of the exit after SIGTERM
    watcher: threading.Thread | None = None
    stable_id: bool = True


LIVENESS_EVERY_S = 2.0


class Fleet:
    """Consumer processes of one group; each slot is a 'pod' that may be restarted."""

    def __init__(self, env: dict[str, str], log_dir: Path, note: Callable[[str], None]) -> None:
        self.env = env
        self.log_dir = log_dir
        self.note = note
        self.slots: dict[str, Incarnation] = {}
        self.history: list[Incarnation] = []
        self.unexpected_exits: list[str] = []
        self.stops: list[tuple[str, int | None, float]] = []  # (slot, rc, seconds)
        self.liveness_restarts: list[str] = []
        self.last_kill = 0.0  # monotonic time of the last kill -9 (its transaction may be open)
        self._liveness_checked = 0.0

    def start(self, slot: str, stable_id: bool = True, wait: bool = True, **env: str) -> ConsumerProcess:
        """Start a consumer in ``slot``. ``stable_id``: the slot keeps its transactional.id across
        restarts (a restarted container of the same pod, which fences its own zombie at once);
        otherwise the default per-process id (a new pod: the zombie's transaction times out)."""
        self.check()
        if slot in self.slots:
            raise RuntimeError(f"slot {slot} is running")
        merged = {**self.env, **env}
        if stable_id:
            merged["LEADS_TRANSACTIONAL_ID"] = f"{merged['LEADS_CONSUMER_GROUP']}-{slot}"
        count = sum(1 for inc in self.history if inc.slot == slot)
        process = ConsumerProcess(merged, self.log_dir / f"{slot}-{count}.log")
        process.start(wait_ready=False)
        incarnation = Incarnation(slot, process, time.monotonic(), stable_id=stable_id)
        self.slots[slot] = incarnation
        self.history.append(incarnation)
        if wait:
            self.wait_assigned(slot)
        return process

    def wait_assigned(self, slot: str, timeout_s: float = 90.0) -> bool:
        """Until the consumer owns partitions (readiness is ignored: Redis may be down on purpose)."""
        process = self.slots[slot].process
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert process.proc is not None
            if process.proc.poll() is not None:
                self.check()
                return False
            try:
                if process.metric("leads_assigned_partitions") > 0:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        self.note(f"{slot} had no partitions {timeout_s:.0f}s after start")
        return False

    # Faults aimed at a slot whose consumer already exited by itself do nothing: check() has
    # recorded that exit as a violation, and the scenario goes on (it restarts the slot later).

    def kill(self, slot: str) -> None:
        self.check()
        incarnation = self.slots.pop(slot, None)
        if incarnation is not None:
            incarnation.process.kill()
            incarnation.ended = "killed"
            self.last_kill = time.monotonic()

    def pause(self, slot: str, seconds: float) -> None:
        """SIGSTOP for ``seconds`` then SIGCONT (CPU throttling, a long GC pause): the input piles
        up, and the consumer then works through full batches back to back."""
        self.check()
        if slot not in self.slots:
            return
        proc = self.slots[slot].process.proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            proc.send_signal(signal.SIGCONT)

    def terminate(self, slot: str) -> Incarnation | None:
        """Send SIGTERM and return at once; ``reap`` waits for the exit."""
        self.check()
        incarnation = self.slots.pop(slot, None)
        if incarnation is None:
            return None
        assert incarnation.process.proc is not None
        proc = incarnation.process.proc
        incarnation.terminated = time.monotonic()
        proc.send_signal(signal.SIGTERM)

        def watch() -> None:  # the exit moment, however late reap() looks
            try:
                proc.wait(STOP_LIMIT_S + 15)
                incarnation.exited = time.monotonic()
            except subprocess.TimeoutExpired:
                pass

        incarnation.watcher = threading.Thread(target=watch, daemon=True)
        incarnation.watcher.start()
        return incarnation

    def reap(self, incarnation: Incarnation) -> tuple[int | None, float]:
        process = incarnation.process
        assert process.proc is not None and incarnation.watcher is not None
        incarnation.watcher.join()
        rc = process.proc.poll()  # None: it did not stop in time
        seconds = (incarnation.exited or time.monotonic()) - incarnation.terminated
        process.kill()  # closes the log (a no-op kill once it exited)
        incarnation.ended = f"stopped rc={rc} in {seconds:.1f}s"
        self.stops.append((incarnation.slot, rc, seconds))
        return rc, seconds

    def stop(self, slot: str) -> tuple[int | None, float]:
        """SIGTERM, as Kubernetes does, and wait: exit code and seconds taken."""
        incarnation = self.terminate(slot)
        return self.reap(incarnation) if incarnation is not None else (None, 0.0)

    def alive(self) -> list[str]:
        self.check()
        return list(self.slots)

    def check_liveness(self) -> None:
        """What the kubelet does: a consumer whose /healthz fails (its run loop stalled) is killed
        and started again. Reported as a note: recovering this way is by design, but it is worth
        seeing (a stall means the consumer stopped working for minutes)."""
        now = time.monotonic()
        if now - self._liveness_checked < LIVENESS_EVERY_S:
            return
        self._liveness_checked = now
        for slot, incarnation in list(self.slots.items()):
            try:
                status, body = incarnation.process.get("/healthz")
            except OSError:
                continue
            if status != 503:
                continue
            del self.slots[slot]
            if os.environ.get("CHAOS_STACKS"):  # with faulthandler registered on SIGUSR1 (debugging)
                assert incarnation.process.proc is not None
                incarnation.process.proc.send_signal(signal.SIGUSR1)
                time.sleep(1)
            incarnation.process.kill()
            incarnation.ended = "killed: liveness failed"
            self.last_kill = time.monotonic()
            self.liveness_restarts.append(slot)
            self.note(
                f"{slot}: /healthz failed ({body.strip()}): killed and started again, as the kubelet would"
            )
            self.start(slot, stable_id=incarnation.stable_id, wait=False)

    def check(self) -> None:
        """A consumer that exits without being told to is a bug: record it (with its log tail)."""
        for slot, incarnation in list(self.slots.items()):
            proc = incarnation.process.proc
            if proc is not None and proc.poll() is not None:
                del self.slots[slot]
                incarnation.ended = f"exited rc={proc.returncode} by itself"
                tail = incarnation.process.logs()[-1500:]
                self.unexpected_exits.append(f"{slot} exited with {proc.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for slot in list(self.slots):
            self.stop(slot)

    def kill_all(self) -> None:
        for slot in list(self.slots):
            self.kill(slot)


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
        services: ChaosServices,
        stream: Stream,
        rate: float,
        log_dir: Path,
        seed: int,
        guarantee: str = "exactly_once",
        drain_timeout_s: float = 300.0,
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
            # Nothing may expire during a run: every deferred lead must be joined, never reported.
            "LEADS_PENDING_TTL_SECONDS": "86400",
            "LEADS_ORPHAN_GRACE_SECONDS": "86400",
            "LEADS_PROCESSING_GUARANTEE": guarantee,
            **self.topics.env(),
        }
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
        committed = committed_offsets(
            self.services.bootstrap, self.env["LEADS_CONSUMER_GROUP"], self.topics.input, stable=False
        )
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
            was = committed_offsets(self.services.bootstrap, group, self.topics.input, stable=False)
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
        end = end_offsets(self.services.bootstrap, self.topics.input)
        group = self.env["LEADS_CONSUMER_GROUP"]
        return committed_offsets(self.services.bootstrap, group, self.topics.input, stable=False) == end

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
        create_topics(self.services.bootstrap, self.topics)
        try:
            scenario(self)
            self.feeder.finished.wait()
            self._drain()
        finally:
            self.fleet.kill_all()  # only left alive when the run failed early
        self.services.ensure()  # a fault at the very end may have left the broker down
        self._verify()
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
        end = end_offsets(self.services.bootstrap, self.topics.input)
        committed: dict[int, int] = {}
        restarts = 0
        while time.monotonic() < deadline:
            committed = committed_offsets(
                self.services.bootstrap, self.env["LEADS_CONSUMER_GROUP"], self.topics.input
            )
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
        self.drained_at = self.elapsed()
        self.fleet.stop_all()
        self.committed, self.end = committed, end

    def _verify(self) -> None:
        out = self.outcome
        stream, exactly_once = self.stream, self.guarantee == "exactly_once"
        out.lines.append(
            f"stream: {len(stream.records)} records sent in {self.feeder.duration:.0f}s "
            f"({', '.join(f'{k} {v}' for k, v in sorted(stream.stories.items()))}; "
            f"bad {sum(stream.bad.values())}, exact duplicates {stream.duplicates}); "
            f"guarantee {self.guarantee}; drained at {self.drained_at:.0f}s"
        )
        for problem in self.fleet.unexpected_exits:
            self.violation(f"consumer exited by itself: {problem}")
        for slot, rc, seconds in self.fleet.stops:
            if rc != 0 or seconds > STOP_LIMIT_S:
                self.violation(
                    f"SIGTERM of {slot}: exit code {rc} after {seconds:.1f}s (want 0 within {STOP_LIMIT_S:.0f}s)"
                )
        stops = self.fleet.stops
        if stops:
            out.lines.append(
                f"SIGTERM stops: {len(stops)}, exit 0: {sum(1 for _, rc, _ in stops if rc == 0)}, "
                f"slowest {max(s for _, _, s in stops):.1f}s"
            )
        if self.fleet.liveness_restarts:
            out.lines.append(
                f"liveness restarts (run loop stalled, killed and started again): "
                f"{', '.join(self.fleet.liveness_restarts)}"
            )
        if self.committed != self.end:
            self.violation(f"committed offsets {self.committed} != end offsets {self.end}")
        else:
            out.lines.append(f"committed offsets == end offsets ({sum(self.end.values())} records)")
        if any(p is None for p in self.feeder.placed):
            self.violation("harness: some records have no delivery report")
            return
        placed = [p for p in self.feeder.placed if p is not None]
        inputs = {p: stream.records[i] for i, p in enumerate(placed)}

        # A consumer killed with a transaction open holds the last stable offset of the output
        # partitions it wrote to until the broker aborts that transaction (transaction.timeout.ms,
        # 60 s, plus the broker's 10 s clean-up interval): read_committed readers see the records
        # after it only then. Read as such a reader would, once that can have happened.
        settled = self.fleet.last_kill + TRANSACTION_ABORT_S - time.monotonic()
        if self.fleet.last_kill and settled > 0:
            out.lines.append(
                f"waited {settled:.0f}s for the last killed instance's transaction to be aborted"
            )
            time.sleep(settled)
        attributed = read_committed(self.services.bootstrap, self.topics.attributed, "attributed_lead")
        dead = read_committed(self.services.bootstrap, self.topics.dead_letter, "dead_letter")
        unlinked = read_committed(self.services.bootstrap, self.topics.unlinked, "unlinked_lead")
        for topic, (_, blocked) in (
            ("attributed", attributed),
            ("dead-letter", dead),
            ("unlinked", unlinked),
        ):
            for problem in blocked:
                self.violation(f"{topic}: {problem}")

        # Attributed: every expected lead exactly once (by leadId), nothing else.
        by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record in attributed[0]:
            by_id[record["leadId"]].append(record)
        expected = stream.attributed
        missing = [lid for lid in expected if lid not in by_id]
        unexpected = [lid for lid in by_id if lid not in expected]
        duplicates = sum(len(v) - 1 for v in by_id.values())
        mismatched = []
        unequal_copies = 0
        for lid, records in by_id.items():
            want = expected.get(lid)
            first = records[0]
            if want is not None and (
                {k: first[k] for k in COMPARED} != want
                or first["_key"] != want["customerExternalId"].encode()
            ):
                mismatched.append(lid)
            unequal_copies += sum(
                1 for r in records[1:] if _without(r, "_partition") != _without(first, "_partition")
            )
        out.lines.append(
            f"attributed: expected {len(expected)}, found {len(by_id)}, duplicates {duplicates}, "
            f"missing {len(missing)}, unexpected {len(unexpected)}, wrong content {len(mismatched)}"
        )
        if missing:
            self.violation(f"{len(missing)} attributed leads missing, e.g. {_describe(expected[missing[0]])}")
        if unexpected:
            self.violation(f"{len(unexpected)} unexpected attributed leads, e.g. {by_id[unexpected[0]][0]}")
        if mismatched:
            lid = mismatched[0]
            self.violation(
                f"{len(mismatched)} attributed leads with wrong content, e.g. got "
                f"{ {k: by_id[lid][0][k] for k in COMPARED} } want {expected[lid]}"
            )
        if duplicates and exactly_once:
            self.violation(f"{duplicates} duplicate attributed records under exactly_once")
        if unequal_copies:
            self.violation(f"{unequal_copies} repeated attributed records differ from the first copy")

        # Dead letters: every bad record exactly once, by (sourcePartition, sourceOffset).
        want_dead = stream.expected_dead_letters(placed)
        by_source: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
        for record in dead[0]:
            by_source[(record["sourcePartition"], record["sourceOffset"])].append(record)
        dead_missing = [s for s in want_dead if s not in by_source]
        dead_unexpected = [s for s in by_source if s not in want_dead]
        dead_duplicates = sum(len(v) - 1 for v in by_source.values())
        wrong = []
        for source, records in by_source.items():
            if source not in want_dead:
                continue
            original = inputs[source]
            for record in records:
                if (
                    record["reason"] != want_dead[source]
                    or record["value"] != original.value
                    or record["key"] != original.key
                    or record["_key"] != original.key
                    or record["sourceTopic"] != self.topics.input
                ):
                    wrong.append(source)
                    break
            unequal_copies = sum(
                1
                for r in records[1:]
                if _without(r, "failedAt", "_partition") != _without(records[0], "failedAt", "_partition")
            )
            if unequal_copies:
                wrong.append(source)
        reasons = Counter(want_dead.values())
        out.lines.append(
            f"dead letters: expected {len(want_dead)} ({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}), "
            f"found {len(by_source)}, duplicates {dead_duplicates}, missing {len(dead_missing)}, "
            f"unexpected {len(dead_unexpected)}, wrong {len(wrong)}"
        )
        if dead_missing:
            self.violation(
                f"{len(dead_missing)} dead letters missing, e.g. input {dead_missing[0]} ({want_dead[dead_missing[0]]})"
            )
        if dead_unexpected:
            src = dead_unexpected[0]
            self.violation(
                f"{len(dead_unexpected)} unexpected dead letters, e.g. {by_source[src][0]['reason']} for input {src}"
            )
        if wrong:
            self.violation(
                f"{len(wrong)} dead letters with wrong reason, bytes or key, e.g. input {wrong[0]}: {by_source[wrong[0]][0]}"
            )
        if dead_duplicates and exactly_once:
            self.violation(f"{dead_duplicates} duplicate dead letters under exactly_once")
        out.lines.append(f"unlinked: found {len(unlinked[0])}, expected 0 (nothing expires during a run)")
        written = sum(
            len(read_committed(self.services.bootstrap, topic, None, 60, committed=False)[0])
            for topic in (self.topics.attributed, self.topics.dead_letter)
        )
        out.lines.append(
            f"records written but never committed (aborted or zombie transactions, or undelivered "
            f"retries): {written - len(attributed[0]) - len(dead[0])}"
        )
        if unlinked[0]:
            self.violation(f"{len(unlinked[0])} unlinked records, e.g. {unlinked[0][0]['reason']}")
        self._check_state()
        self._check_logs()

    def _check_state(self) -> None:
        """What the faults left in Redis: every customer state has its wake entry (states have no
        TTL: one without an entry would never be swept), and the pending/held counters equal the
        items in the states."""
        prefix = self.env["LEADS_REDIS_PREFIX"]
        client = redis.Redis.from_url(self.services.redis_url)
        try:
            entries = {(s, cid) for s, cids in wake_entries(client, prefix).items() for cid in cids}
            keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:s:*", count=1000)]
            blobs: list[bytes | None] = client.mget(keys) if keys else []  # type: ignore[assignment]
            cids = [key[len(prefix) + 4 : -1] for key in keys]  # "<prefix>:s:{<cid>}"
            found = audit(zip(cids, blobs, strict=True), entries)
            counters = [int(v or 0) for v in client.mget(f"{prefix}:pending", f"{prefix}:held")]
        finally:
            client.close()
        unindexed = len(found.unindexed)
        self.outcome.lines.append(
            f"redis: {found.states} states, {len(entries)} wake entries, {found.pending} pending / "
            f"{found.held} held (counters {counters[0]} / {counters[1]}), states without their wake "
            f"entry {unindexed}"
        )
        if unindexed:
            self.violation(f"{unindexed} states without a wake entry: never swept")
        if counters != [found.pending, found.held]:
            self.violation(f"counters {counters} != items in the states {[found.pending, found.held]}")

    def _check_logs(self) -> None:
        """One log line per state change: 'unavailable' and 'reachable again' must alternate."""
        changes = 0
        for incarnation in self.fleet.history:
            state = dict.fromkeys(STATE_LINES, True)
            for line in incarnation.process.logs().splitlines():
                try:
                    message = json.loads(line).get("msg", "")
                except ValueError:
                    continue
                for what, (down, up) in STATE_LINES.items():
                    if message in (down, up):
                        changes += 1
                        now_ok = message == up
                        if now_ok == state[what]:
                            self.violation(
                                f"{incarnation.process.log_path.name}: '{message}' logged twice in a row"
                            )
                        state[what] = now_ok
        self.outcome.lines.append(f"state-change log lines: {changes} (alternating)")


def create_topics(bootstrap: str, topics: Topics) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    futures = admin.create_topics(
        [NewTopic(topics.input, INPUT_PARTITIONS, 1)]
        + [NewTopic(t, OUTPUT_PARTITIONS, 1) for t in topics.all()[1:]]
    )
    for future in futures.values():
        future.result(60)


def _without(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in names}


def _describe(expected: dict[str, Any]) -> str:
    return f"{expected['mode']} lead {expected['leadId']} of {expected['customerExternalId']}"


def _probe_consumer(bootstrap: str, group: str | None = None, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"chaos-probe-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",  # also: committed() waits for pending transactional offsets
            "log_level": 4,  # no INFO chatter from the probes on close
            **extra,
        }
    )


def end_offsets(bootstrap: str, topic: str, partitions: int = INPUT_PARTITIONS) -> dict[int, int]:
    consumer = _probe_consumer(bootstrap)
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int = INPUT_PARTITIONS, stable: bool = True
) -> dict[int, int]:
    """``stable``: wait for pending transactional offsets (KIP-447) instead of ignoring them."""
    consumer = _probe_consumer(
        bootstrap, group, **{"isolation.level": "read_committed" if stable else "read_uncommitted"}
    )
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
        return {tp.partition: tp.offset for tp in committed}
    except Exception:  # broker busy or restarting: "not yet"
        return {}
    finally:
        consumer.close()


def read_committed(
    bootstrap: str, topic: str, schema_name: str | None, timeout_s: float = 120.0, committed: bool = True
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every committed record of ``topic``, decoded, plus problems: a partition whose committed data
    does not reach its high watermark in time (an open, never-finished transaction).
    ``committed=False``: every record written, aborted ones too, undecoded (schema_name None)."""
    schema = load_schema(schema_name) if schema_name else None
    settings: dict[str, Any] = {
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if committed else "read_uncommitted",
    }
    consumer = _probe_consumer(bootstrap, None, **settings)
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = sorted(metadata.topics[topic].partitions)
        high = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        reached: dict[int, int] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(reached.get(p, -1) < high[p] for p in partitions):
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    partition, offset = message.partition(), message.offset()
                    if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                        reached[partition] = offset if offset is not None else -1
                        continue
                    raise RuntimeError(f"reading {topic}: {error.str()}")
                if schema is None:
                    records.append({})
                    continue
                value = decode(schema, message.value() or b"")
                value["_key"] = message.key()
                value["_partition"] = message.partition()
                records.append(_plain(value))
        for p in partitions:
            if reached.get(p, -1) < high[p]:
                problems.append(
                    f"partition {p}: committed data ends at {reached.get(p)} below the high watermark "
                    f"{high[p]} after {timeout_s:.0f}s (a transaction left open?)"
                )
    finally:
        consumer.close()
    return records, problems


def _plain(value: dict[str, Any]) -> dict[str, Any]:
    """Datetimes (timestamp-millis) as epoch milliseconds, as the expectations are written."""
    return {k: epoch_ms(v) if isinstance(v, datetime) else v for k, v in value.items()}


def log_root() -> Path:
    root = Path(os.environ.get("CHAOS_LOG_DIR", str(ChaosServices.from_env().directory / "runs")))
    return root / time.strftime("%Y%m%d-%H%M%S")
