"""Faults of a three-broker cluster (replication factor 3, min.insync.replicas 2), and kills of a
fresh group. With two brokers of three up, every write is still acknowledged: the consumers must
keep deciding, exactly once, and say in /readyz when they cannot.

``cluster``: each broker killed (kill -9) in turn and started again, first the leader of input
partition 0, then the transaction coordinator of c1's transactional id, then the third; a rolling
restart of all three (SIGTERM, each waiting for the cluster to be fully in sync again); a broker
frozen (SIGSTOP) past the consumers' session timeout and the clients' request timeout.

``fresh-kills``: static members (LEADS_INSTANCE_ID) killed in the first seconds of a fresh group,
before some partitions' first commit, and again during the replay that follows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient

from tests.chaos.driver import INPUT_PARTITIONS, Run, committed_now

# The longest an instance may stay not ready while two brokers of three answer: a leader moves
# within seconds, a transaction caught by the kill is aborted within the transaction timeout.
UNREADY_BOUND_S = 60.0
REQUEST_TIMEOUT_S = 30.0  # librdkafka's request.timeout.ms (30 s): the freeze outlasts it


def _leaders(run: Run, topic: str) -> dict[int, int]:
    """Partition -> the node id of its leader, as the cluster says now."""
    admin = AdminClient({"bootstrap.servers": run.services.bootstrap, "log_level": 2})
    metadata = admin.list_topics(topic, timeout=10)
    return {p: meta.leader for p, meta in metadata.topics[topic].partitions.items()}


def _java_hash(text: str) -> int:
    """String.hashCode, as Kafka maps a transactional id to its __transaction_state partition."""
    h = 0
    for unit in text.encode("utf-16-be")[::2]:  # ASCII ids: one code unit per character
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _coordinator(run: Run, transactional_id: str) -> int:
    """The node that coordinates the id's transactions: the leader of its partition of
    __transaction_state (abs(hashCode) mod the partition count, Kafka's Utils.abs)."""
    leaders = _leaders(run, "__transaction_state")
    return leaders[(_java_hash(transactional_id) & 0x7FFFFFFF) % len(leaders)]


def _watched(
    run: Run, name: str, inject: Callable[[], float], bound_s: float = UNREADY_BOUND_S, strict: bool = True
) -> None:
    """Run ``inject`` while sampling every instance's readiness; then every instance is ready
    again (``strict``: or it is a violation). Readiness is honest when no instance stays not
    ready longer than ``bound_s`` while the cluster can still take writes; the reasons it gave are
    reported."""
    slots = list(run.fleet.slots)
    for slot in slots:
        run.fleet.wait_assigned(slot, 120)
    longest = dict.fromkeys(slots, 0.0)
    since: dict[str, float] = {}
    reasons: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            now = time.monotonic()
            for slot in slots:
                status, body = run.readiness(slot)
                if status == 200:
                    since.pop(slot, None)
                    continue
                start = since.setdefault(slot, now)
                longest[slot] = max(longest[slot], now - start)
                reasons.add(body.strip().splitlines()[0][:80] if body.strip() else f"status {status}")
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        away = inject()
        run.wait_ready(slots, 120, name, strict=strict)
    finally:
        done.set()
        watcher.join()
    worst = max(longest.values(), default=0.0)
    run.fault(
        f"{name} ({away:.0f}s; longest not ready {worst:.0f}s"
        + (f": {sorted(reasons)}" if reasons else "")
        + ")"
    )
    if worst > bound_s:
        run.violation(
            f"an instance was not ready for {worst:.0f}s during {name}, with two brokers of three up"
        )


def _in_sync(run: Run, timeout_s: float = 90.0) -> None:
    """Until every partition of the run's topics has all three replicas in sync (a rolling restart
    takes the next broker down only then, as an operator does)."""
    admin = AdminClient({"bootstrap.servers": run.services.bootstrap, "log_level": 2})
    deadline = time.monotonic() + timeout_s
    topics = [run.topics.input, *run.topics.outputs()]
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=10)
        if all(
            len(p.isrs) == len(p.replicas)
            for name in topics
            if name in metadata.topics
            for p in metadata.topics[name].partitions.values()
        ):
            return
        time.sleep(0.5)
    run.note(f"replicas not all in sync {timeout_s:.0f}s after a restart")


def cluster(run: Run) -> None:
    run.fleet.start("c1")
    run.fleet.start("c2")
    run.begin_feeding()
    leader = _leaders(run, run.topics.input)[0]
    coordinator = _coordinator(run, f"{run.env['LEADS_CONSUMER_GROUP']}-c1")
    order = list(dict.fromkeys([leader, coordinator, 1, 2, 3]))
    roles = {leader: "leader of input partition 0", coordinator: "transaction coordinator of c1"}
    if leader == coordinator:
        roles[leader] = "leader of input partition 0 and transaction coordinator of c1"
    run.note(f"brokers killed in the order {order}")
    for index, node in enumerate(order):
        run.at_progress(0.06 + 0.12 * index)
        run.wait_working()

        def crash(node: int = node) -> float:
            took = run.services.run(f"kafka-kill {node}")
            time.sleep(run.rng.uniform(2.0, 6.0))
            return took + run.services.run(f"kafka-start {node}")

        _watched(run, f"kill -9 broker {node} ({roles.get(node, 'neither')}) and start", crash)
        _in_sync(run)
    run.at_progress(0.45)

    def rolling() -> float:
        started = time.monotonic()
        for node in (1, 2, 3):
            run.services.run(f"kafka-restart {node}")
            _in_sync(run)
        return time.monotonic() - started

    _watched(run, "rolling restart of brokers 1, 2, 3 (SIGTERM)", rolling)
    run.at_progress(0.75)
    frozen = _leaders(run, run.topics.input)[0]
    freeze = REQUEST_TIMEOUT_S + run.rng.uniform(3.0, 8.0)

    def stop() -> float:
        run.services.run(f"kafka-freeze {frozen}")
        try:
            time.sleep(freeze)
        finally:
            run.services.run(f"kafka-thaw {frozen}")
        return freeze

    # While it is frozen its partitions have no leader until the controller fences it (the broker
    # session timeout, 9 s), and requests sent to it wait out the request timeout. After a freeze
    # librdkafka sometimes leaves an instance out of the group (see the broker scenario): a note.
    _watched(
        run,
        f"broker {frozen} (leader of input partition 0) frozen (SIGSTOP)",
        stop,
        bound_s=freeze + UNREADY_BOUND_S,
        strict=False,
    )


def _first_commits(run: Run, timeout_s: float) -> int:
    """Waits until some input partitions have a first commit and others not yet (or the timeout):
    the moment to kill a fresh group. Returns how many have one."""
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        offsets = committed_now(run.services, run.topics.group, run.topics.input, stable=False)
        done = sum(1 for offset in offsets.values() if offset >= 0)
        if 0 < done < INPUT_PARTITIONS:
            return done
        time.sleep(0.05)
    return done


def fresh_kills(run: Run) -> None:
    """The stream is already waiting when the group first forms: the first kill lands once some
    partitions have their first commit and others not yet, the second during the replay of what
    the first left open."""
    run.begin_feeding()
    run.at_progress(0.05)
    pods = {"c1": {"LEADS_INSTANCE_ID": "pod-0"}, "c2": {"LEADS_INSTANCE_ID": "pod-1"}}
    for kill in range(2):
        for slot, env in pods.items():
            run.fleet.start(slot, stable_id=False, wait=False, env=env)
        if kill == 0:
            committed = _first_commits(run, 20.0)
        else:
            run.sleep(run.rng.uniform(0.5, 2.0))
            committed = sum(
                1
                for offset in committed_now(
                    run.services, run.topics.group, run.topics.input, stable=False
                ).values()
                if offset >= 0
            )
        in_flight = len(run.in_flight())
        for slot in pods:
            run.fleet.kill(slot)
        when = "in the first seconds of the group" if kill == 0 else "during the replay"
        run.fault(
            f"kill -9 of both {when}: {committed} of {INPUT_PARTITIONS} partitions committed once, "
            f"{in_flight} journaled decisions uncommitted"
        )
        run.sleep(run.rng.uniform(0.1, 1.0))
    for slot, env in pods.items():
        run.fleet.start(slot, stable_id=False, env=env)
    run.wait_ready(list(pods), 60, "the kills")
