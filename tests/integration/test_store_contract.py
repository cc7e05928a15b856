"""One contract suite for both StateStore implementations: Redis (production) and in-memory (tests)."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from consumer.state.codec import frame_journal
from consumer.state.customer import Write
from consumer.state.memory import InMemoryStore
from consumer.state.redis_store import RedisStore
from consumer.state.store import LEGACY, Fenced, ReplicasBehind, StateLost, StateStore, Wake
from harness.kafka import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    request.getfixturevalue("services")
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    yield RedisStore(client, prefix, journal_ttl_ms=60_000, group="contract")
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


P0 = ("leads.raw", 0)
P1 = ("leads.raw", 1)


_marked = itertools.count()


def due_at(store: StateStore, watermark_ms: int, limit: int) -> list[Wake]:
    """The wake entries due once the watermark is at ``watermark_ms``: one input partition, marked
    there (marks only move forward, so each reading marks a partition of its own)."""
    partition = ("marks", next(_marked))
    store.mark_partitions({partition: (watermark_ms, False)}, 0)
    due = store.due(limit, [partition])
    assert due.watermark_ms == watermark_ms
    return due.wakes


def test_the_watermark_is_the_lowest_mark_and_marks_only_move_forward(store: StateStore) -> None:
    a, b = ("wm", 0), ("wm", 1)
    assert store.due(10, [a, b]).watermark_ms is None  # no mark yet: nothing may be due
    clock = store.mark_partitions({a: (5_000, False)}, 0)
    assert abs(clock - time.time() * 1000) < 60_000  # the shared clock comes back
    assert store.due(10, [a, b]).watermark_ms is None  # b has no mark: it holds everything back
    store.mark_partitions({b: (7_000, False)}, 0)
    assert store.due(10, [a, b]).watermark_ms == 5_000  # the lowest
    store.mark_partitions({a: (4_000, False)}, 0)  # a stale owner's late mark: a no-op
    assert store.due(10, [a, b]).watermark_ms == 5_000
    store.mark_partitions({a: (-1, True)}, 2_000)  # caught up and idle: the clock less the idle lag
    due = store.due(10, [a])
    assert due.watermark_ms is not None and 0 <= due.now_ms - due.watermark_ms - 2_000 < 5_000


def _entries(*pairs: tuple[int, bytes]) -> bytes:
    return b"".join(frame_journal(offset, entry) for offset, entry in pairs)


def test_compare_and_set(store: StateStore) -> None:
    first = Write("c1", None, b"v1", journal={P0: _entries((1, b"d1"))})
    assert store.write([first], {P0: "1:t.0"}) == [True]
    assert store.write([first], {P0: "1:t.1"}) == [False]  # the key exists now: creating it again conflicts
    reading = store.read(["c1"], {P0: 0})
    assert (reading.states, reading.journal) == ({"c1": b"v1"}, {("leads.raw", 0, 1): b"d1"})
    stale = Write("c1", b"something else", b"v2")
    fresh = Write("c1", b"v1", b"v2")
    assert store.write([stale, fresh]) == [False, True]
    assert store.read(["c1"], {}).states == {"c1": b"v2"}
    assert store.write([Write("c1", b"v2", None)]) == [True]  # None deletes
    assert store.read(["c1"], {}).states == {"c1": None}


def test_a_customer_written_twice_in_one_call_is_compared_and_set_in_order(store: StateStore) -> None:
    # apply.lua reads every state up front and writes the last value of each at the end: a customer
    # that appears twice still sees its own earlier write, whichever way (set, delete) it went.
    assert store.write([Write("d1", None, b"a"), Write("d2", None, b"x")]) == [True, True]
    calls = [
        Write("d1", b"a", None),  # delete ...
        Write("d1", None, b"b"),  # ... then create again: b
        Write("d2", b"x", b"y"),  # set ...
        Write("d2", b"y", None),  # ... then delete
        Write("d3", None, b"c"),  # create ...
        Write("d3", None, b"lost"),  # ... the second create conflicts
    ]
    assert store.write(calls) == [True, True, True, True, True, False]
    assert store.read(["d1", "d2", "d3"], {}).states == {"d1": b"b", "d2": None, "d3": b"c"}


def test_a_write_sent_ahead_applies_as_a_write(store: StateStore) -> None:
    # BatchProcessor.start sends the first write of a batch and reads its reply later (finish).
    reply = store.send_write([Write("c9", None, b"v1", journal={P0: _entries((4, b"d4"))})], {P0: "4:t.0"})
    assert reply() == [True]
    conflict = store.send_write([Write("c9", None, b"v2"), Write("c10", None, b"w")], {})
    assert conflict() == [False, True]  # compare-and-set, customer by customer, as write()
    reading = store.read(["c9", "c10"], {P0: 0})
    assert (reading.states, reading.journal) == ({"c9": b"v1", "c10": b"w"}, {("leads.raw", 0, 4): b"d4"})
    assert store.send_write([], {})() == []


def test_the_floor_raised_at_once_only_goes_up(store: StateStore) -> None:
    # Raised by the commit thread the moment a commit is confirmed (consumer/processing/runner.py).
    assert store.floors([P0, P1]) == {}
    store.raise_floor({P0: 10})
    store.raise_floor({P0: 5})  # a late, lower note never lowers it
    assert store.floors([P0, P1]) == {P0: 10}
    store.raise_floor({P0: 12, P1: 3})
    assert store.floors([P0, P1]) == {P0: 12, P1: 3}
    assert store.read([], {P0: 0, P1: 0}).committed == {P0: 12, P1: 3}  # what every batch read checks


def _heads(wakes: list[Wake]) -> list[tuple[int, tuple[str, ...]]]:
    return [(wake.second, wake.cids) for wake in wakes]


def _now_ms() -> int:
    return int(time.time() * 1000)


def test_wake_entries_and_counters_move_with_the_state(store: StateStore) -> None:
    second = int(time.time()) - 5
    add = Write("c2", None, b"p", wake_ms=second * 1000 + 999, pending_delta=1)
    assert store.write([add]) == [True]
    assert store.counts() == (1, 0)
    assert _heads(due_at(store, second * 1000, 10)) == [(second, ("c2",))]  # due once its second has come
    assert due_at(store, second * 1000 - 1, 10) == []
    move = Write("c2", b"p", b"h", wake_ms=(second + 2) * 1000, pending_delta=-1, held_delta=1)
    assert store.write([move, Write("c9", None, b"q", wake_ms=second * 1000)]) == [True, True]
    assert store.counts() == (0, 1)
    # An entry stays until acked, in order of writing, oldest second first.
    wakes = due_at(store, _now_ms(), 10)
    assert _heads(wakes) == [(second, ("c2", "c9")), (second + 2, ("c2",))]
    assert _heads(due_at(store, _now_ms(), 2)) == _heads(wakes[:1])  # the limit counts entries
    store.ack(wakes[0], 1)
    (rest, later) = due_at(store, _now_ms(), 10)
    assert _heads([rest, later]) == [(second, ("c9",)), (second + 2, ("c2",))]
    store.ack(rest, 1)
    store.ack(later, 1)
    assert due_at(store, _now_ms(), 10) == []


def test_acks_remove_only_entries_read_whatever_happened_since(store: StateStore) -> None:
    """Two sweepers read the same head, or an ack is sent twice, or the list empties and fills
    again with the same cids: no ack removes an entry its sweeper did not read."""
    second = int(time.time()) - 5
    writes = [Write(cid, None, b"s", wake_ms=second * 1000) for cid in ("a", "b", "c", "d")]
    assert store.write(writes) == [True] * 4
    (first,) = due_at(store, _now_ms(), 2)
    (wider,) = due_at(store, _now_ms(), 3)
    assert (first.cids, wider.cids) == (("a", "b"), ("a", "b", "c"))
    store.ack(first, 2)  # sweeper 1
    store.ack(first, 2)  # the same ack again: nothing more goes
    store.ack(wider, 3)  # sweeper 2 read one entry more: only that one goes
    (left,) = due_at(store, _now_ms(), 10)
    assert left.cids == ("d",)
    store.ack(left, 1)
    assert due_at(store, _now_ms(), 10) == []
    # The list of that second is made again (a write whose wake time had already passed), with
    # the same cid: an ack of the old list, sent late, must not remove the new entry.
    assert store.write([Write("d", b"s", b"t", wake_ms=second * 1000)]) == [True]
    store.ack(left, 1)
    assert _heads(due_at(store, _now_ms(), 10)) == [(second, ("d",))]


def test_a_round_reads_up_to_its_limit_across_many_seconds(store: StateStore) -> None:
    """After an outage, hundreds of seconds are due: a round takes entries, not seconds, as its
    limit (a cap on seconds would sweep a backlog a few dozen seconds per round)."""
    first = int(time.time()) - 400
    writes = [Write(f"c{i}", None, b"s", wake_ms=(first + i // 2) * 1000) for i in range(600)]
    assert store.write(writes) == [True] * 600
    wakes = due_at(store, _now_ms(), 500)
    assert sum(len(w.cids) for w in wakes) == 500 and len(wakes) == 250


def test_old_index_members_are_read_and_acked(services: None) -> None:
    """Members of the deadline index of releases before 0.2.0 are swept until it is empty."""
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    store = RedisStore(client, prefix, journal_ttl_ms=60_000, group="contract")
    now = int(time.time() * 1000)
    client.zadd(
        f"{prefix}:deadlines",
        {f"{now - 5}:c1": now - 5, f"{now - 3}:c:2": now - 3, f"{now + 9999}:c3": now + 9999},
    )
    (wake,) = due_at(store, now, 10)
    assert wake == Wake(LEGACY, ("c1", "c:2"), members=(f"{now - 5}:c1", f"{now - 3}:c:2"))
    store.ack(wake, 1)
    store.flush_queued()
    assert client.zrange(f"{prefix}:deadlines", 0, -1) == [
        f"{now - 3}:c:2".encode(),
        f"{now + 9999}:c3".encode(),
    ]
    client.delete(f"{prefix}:deadlines")


def test_a_conflicting_write_changes_nothing(store: StateStore) -> None:
    due = int(time.time() * 1000)
    assert store.write([Write("c3", None, b"a")]) == [True]
    loser = Write(
        "c3",
        None,
        b"b",
        wake_ms=due,
        journal={P1: _entries((1, b"x"))},
        pending_delta=5,
    )
    assert store.write([loser], {P1: "1:t.0"}) == [False]
    assert store.counts() == (0, 0)
    assert store.read(["c3"], {P1: 0}).journal == {}
    assert due_at(store, due + 1000, 10) == []


def test_journal_fields_of_applied_customers_share_one_field_per_partition(store: StateStore) -> None:
    writes = [
        Write("c7", None, b"a", journal={P0: _entries((4, b"d4")), P1: _entries((2, b"e2"))}),
        Write("c8", None, b"b", journal={P0: _entries((5, b"d5"), (6, b"d6"))}),
        Write("c7", None, b"lost", journal={P0: _entries((7, b"never"))}),
    ]
    assert store.write(writes, {P0: "7:t.0", P1: "2:t.0"}) == [True, True, False]
    assert store.read([], {P0: 4, P1: 0}).journal == {
        ("leads.raw", 0, 4): b"d4",
        ("leads.raw", 0, 5): b"d5",
        ("leads.raw", 0, 6): b"d6",
        ("leads.raw", 1, 2): b"e2",
    }


def test_forgotten_and_committed_journal_fields_are_dropped(store: StateStore) -> None:
    assert store.write([Write("c4", None, b"a", journal={P0: _entries((7, b"d"))})], {P0: "7:t.0"})
    assert store.write([Write("c5", None, b"a", journal={P0: _entries((8, b"e"))})], {P0: "8:t.1"})
    assert store.write([Write("c9", None, b"a", journal={P1: _entries((3, b"f"))})], {P1: "3:t.1"})
    store.forget_journal({P0: ["7:t.0"]})  # committed: rides along with the next command
    assert store.read([], {P0: 0}).journal == {("leads.raw", 0, 8): b"e"}
    # A reader starting at offset 4 of P1 does not need what is before it...
    assert store.read([], {P1: 4}).journal == {}
    # ... but deletes it only where the floor covers it: the floor may not have reached Redis.
    assert store.read([], {P1: 0}).journal == {("leads.raw", 1, 3): b"f"}
    store.note_committed({P1: 4})
    store.flush_queued()
    assert store.read([], {P1: 4}).journal == {}
    assert store.read([], {P1: 0}).journal == {}  # deleted now, not just skipped


def test_the_committed_floor_is_read_with_the_journal_and_only_moves_forward(store: StateStore) -> None:
    assert store.read([], {P0: 0, P1: 0}).committed == {}
    store.note_committed({P0: 12, P1: 6})
    store.note_committed({P0: 9})  # older: ignored
    assert store.read([], {P0: 0, P1: 0}).committed == {P0: 12, P1: 6}
    store.note_committed({P0: 20})
    store.flush_queued()
    assert store.read(["c1"], {P0: 0}).committed == {P0: 20}  # only the partitions asked for
    store.forget_committed([P1])  # the topic was created again: its floor is dropped
    assert store.read([], {P0: 0, P1: 0}).committed == {P0: 20}


def test_the_floor_is_kept_per_topic_id(services: None) -> None:
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    store = RedisStore(client, prefix, journal_ttl_ms=60_000, group="g1")
    store.identify_topic("leads.raw", "AAAA")
    store.note_committed({P0: 500})
    store.flush_queued()
    assert store.read([], {P0: 0}).committed == {P0: 500}
    assert store.committed_floor() == {"leads.raw:0@AAAA": 500}
    store.identify_topic("leads.raw", "BBBB")  # deleted and created again: its offsets start over
    assert store.read([], {P0: 0}).committed == {}
    client.delete(store.committed_key)


def test_the_journal_clean_up_happens_only_with_the_floor(services: None) -> None:
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    store = RedisStore(client, prefix, journal_ttl_ms=60_000, group="g1")
    assert store.write([Write("c1", None, b"a", journal={P0: _entries((4, b"d"))})], {P0: "4:t.0"})
    store.note_committed({P0: 5})
    store.forget_journal({P0: ["4:t.0"]})
    # A refused ZADD (here: the key has the wrong type; in production, out of memory) must stop the
    # journal clean-up too, or entries would go that no floor covers.
    client.set(f"{prefix}:committed:g1", b"not a zset")
    with pytest.raises(redis.ResponseError):
        store.flush_queued()
    assert client.hkeys(store.journal_key(P0)) == [b"4:t.0"]
    client.delete(f"{prefix}:committed:g1")
    store.flush_queued()  # still queued: sent again
    assert client.zrange(f"{prefix}:committed:g1", 0, -1, withscores=True) == [(b"leads.raw:0@", 5.0)]
    assert client.exists(store.journal_key(P0)) == 0
    # GT in Redis itself: another instance noting an older commit later does not lower the floor.
    late = RedisStore(client, prefix, journal_ttl_ms=60_000, group="g1")
    late.note_committed({P0: 3})
    late.flush_queued()
    assert store.committed_floor() == {"leads.raw:0@": 5}
    # Another group has its own floor; clearing one leaves the other.
    other = RedisStore(client, prefix, journal_ttl_ms=60_000, group="g2")
    assert other.committed_floor() == {}
    assert store.committed_floor() == {"leads.raw:0@": 5}
    store.clear_committed_floor()
    assert store.read([], {P0: 0}).committed == {}
    client.delete(store.state_key("c1"))


def test_redis_keys_and_no_state_ttl(services: None) -> None:
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    store = RedisStore(client, prefix, journal_ttl_ms=60_000, group="contract")
    cid = "odd:{cid}"
    assert store.write([Write(cid, None, b"a", journal={P0: _entries((1, b"d"))})], {P0: "1:t"})
    state_key, journal_key = store.state_key(cid), store.journal_key(P0)
    assert (state_key, journal_key) == (f"{prefix}:s:{{odd:{{cid}}}}", f"{prefix}:j:leads.raw:0")
    assert (
        client.pttl(state_key) == -1
    )  # no TTL: the expiry sweeper deletes states (consumer/processing/sweeper.py)
    assert 0 < client.pttl(journal_key) <= 60_000
    assert client.hkeys(journal_key) == [b"1:t"]
    client.delete(state_key, journal_key)


def test_many_customers_in_one_call(store: StateStore) -> None:
    due = int(time.time() * 1000)
    writes = [
        Write(
            f"m{i}",
            None,
            f"v{i}".encode(),
            wake_ms=due,
            journal={P0: _entries((i, b"d"))},
            pending_delta=1,
        )
        for i in range(5000)
    ]
    writes.append(Write("m0", None, b"dup"))  # same customer again: the first write wins
    assert store.write(writes, {P0: "4999:t"}) == [True] * 5000 + [False]
    reading = store.read([f"m{i}" for i in range(5000)], {P0: 0})
    assert reading.states == {f"m{i}": f"v{i}".encode() for i in range(5000)}
    assert reading.journal == {("leads.raw", 0, i): b"d" for i in range(5000)}
    assert store.counts() == (5000, 0)
    # One second's list of 5000 entries: more than one RPUSH chunk, in order.
    assert _heads(due_at(store, due + 1000, 10_000)) == [(due // 1000, tuple(f"m{i}" for i in range(5000)))]


def test_script_is_reloaded_after_redis_forgets_it(services: None) -> None:
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    store = RedisStore(client, f"contract-{uuid.uuid4().hex[:8]}", journal_ttl_ms=60_000, group="contract")
    assert store.write([Write("c6", None, b"a")]) == [True]
    client.script_flush()  # as after a Redis restart
    assert store.write([Write("c6", b"a", b"b")]) == [True]
    client.script_flush()
    assert store.send_write([Write("c6", b"b", b"c")], {})() == [True]  # the same when sent ahead
    assert store.read(["c6"], {}).states == {"c6": b"c"}
    client.delete(store.state_key("c6"))


def test_a_write_raises_its_partitions_progress_and_never_lowers_it(store: StateStore) -> None:
    reply = store.send_write([Write("p1", None, b"v")], {P0: "1:t.0"}, {P0: 12, P1: 4})
    assert reply() == [True]
    assert store.progress([P0, P1]) == {P0: 12, P1: 4}
    store.send_write([], {}, {P0: 7})()  # a replay of an earlier batch: progress stays
    assert store.progress([P0]) == {P0: 12}


def test_a_write_is_refused_when_redis_holds_less_than_was_committed(store: StateStore) -> None:
    store.send_write([], {}, {P0: 10})()
    store.note_progress({P0: 10})  # Kafka says offsets up to 10 were committed
    assert store.write([Write("g1", None, b"v")]) == [True]
    store.note_progress({P0: 25})  # committed further on, but Redis never got those writes
    with pytest.raises(StateLost):
        store.write([Write("g2", None, b"v")])
    with pytest.raises(StateLost):
        store.send_write([Write("g2", None, b"v")], {P0: "30:t.0"}, {P0: 31})()
    assert store.read(["g2"], {}).states == {"g2": None}  # nothing written
    store.trust_progress()  # e.g. after a restore set the progress: what is stored counts now
    assert store.write([Write("g2", None, b"v")]) == [True]


def test_a_write_requires_the_progress_it_has_read(store: StateStore) -> None:
    """Redis going back in time (a failover to a stale replica) is refused even for partitions
    whose committed offsets this instance never asked: it has read the higher progress."""
    store.send_write([], {}, {P1: 40})()
    store.read(["x"], {})  # reads the progress too
    _set_progress(store, P1, 20)  # the stale replica
    with pytest.raises(StateLost):
        store.write([Write("x", None, b"v")])


def test_a_write_for_partitions_taken_over_is_fenced(store: StateStore) -> None:
    store.claim_partitions([P0])
    assert store.send_write([Write("f1", None, b"v")], {P0: "3:t.0"}, {P0: 4})() == [True]
    _claim_elsewhere(store, P0)  # another instance was assigned P0
    with pytest.raises(Fenced):
        store.send_write([Write("f2", None, b"v")], {P0: "5:t.0"}, {P0: 6})()
    assert store.read(["f2"], {}).states == {"f2": None}
    store.claim_partitions([P0])  # assigned back: this instance's writes count again
    assert store.send_write([Write("f2", None, b"v")], {P0: "5:t.0"}, {P0: 6})() == [True]


def _set_progress(store: StateStore, partition: tuple[str, int], offset: int) -> None:
    if isinstance(store, InMemoryStore):
        store.stored_progress[partition] = offset
    else:
        assert isinstance(store, RedisStore)
        store.client.hset(store.progress_key, store.member(partition), offset)


def _claim_elsewhere(store: StateStore, partition: tuple[str, int]) -> None:
    if isinstance(store, InMemoryStore):
        store.owners[partition] = store.owners.get(partition, 0) + 1
    else:
        assert isinstance(store, RedisStore)
        store.client.hincrby(store.owners_key, store.member(partition), 1)


def test_the_replication_barrier_refuses_a_write_no_replica_has(services: None) -> None:
    """LEADS_REDIS_MIN_REPLICAS=1 against a Redis with no replica: WAIT answers 0, the write is on
    the primary but must not be committed."""
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    prefix = f"barrier-{uuid.uuid4().hex[:8]}"
    store = RedisStore(
        client, prefix, journal_ttl_ms=60_000, group="contract", min_replicas=1, replica_timeout_ms=100
    )
    try:
        with pytest.raises(ReplicasBehind):
            store.send_write([Write("b1", None, b"v")], {P0: "1:t.0"}, {P0: 2})()
        assert client.get(store.state_key("b1")) == b"v"  # applied on the primary all the same
    finally:
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
