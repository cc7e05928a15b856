"""One contract suite for both StateStore implementations: Redis (production) and in-memory (tests)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from consumer.state.memory import InMemoryStore
from consumer.state.store import RedisStore, StateStore, Write, index_member
from tests.support.kafka import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    if request.param == "memory":
        yield InMemoryStore()
        return
    request.getfixturevalue("services")
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    yield RedisStore(client, prefix, journal_ttl_ms=60_000)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def _later(ms: int) -> int:
    return int(time.time() * 1000) + ms


def test_compare_and_set(store: StateStore) -> None:
    first = Write("c1", None, b"v1", _later(60_000), journal={"0:1": b"d1"})
    assert store.write([first]) == [True]
    assert store.write([first]) == [False]  # the key exists now: creating it again conflicts
    snapshot = store.read({"c1": ["0:1", "0:2"]})["c1"]
    assert (snapshot.blob, snapshot.journal) == (b"v1", {"0:1": b"d1"})
    stale = Write("c1", b"something else", b"v2", _later(60_000))
    fresh = Write("c1", b"v1", b"v2", _later(60_000))
    assert store.write([stale, fresh]) == [False, True]
    assert store.read({"c1": []})["c1"].blob == b"v2"
    assert store.write([Write("c1", b"v2", None, 0)]) == [True]  # None deletes
    assert store.read({"c1": []})["c1"].blob is None


def test_index_and_counters_move_with_the_state(store: StateStore) -> None:
    due = int(time.time() * 1000) - 10
    member = index_member(due, "c2")
    add = Write("c2", None, b"p", _later(60_000), index_add=[(due, member)], pending_delta=1)
    assert store.write([add]) == [True]
    assert store.counts() == (1, 0)
    assert store.due(int(time.time() * 1000), 10) == [member]
    assert store.due(due - 1, 10) == []
    remove = Write("c2", b"p", b"h", _later(60_000), index_remove=[member], pending_delta=-1, held_delta=1)
    assert store.write([remove]) == [True]
    assert store.counts() == (0, 1)
    assert store.due(int(time.time() * 1000), 10) == []


def test_a_conflicting_write_changes_nothing(store: StateStore) -> None:
    due = int(time.time() * 1000)
    assert store.write([Write("c3", None, b"a", _later(60_000))]) == [True]
    loser = Write(
        "c3", None, b"b", _later(60_000), journal={"1:1": b"x"}, index_add=[(due, "m")], pending_delta=5
    )
    assert store.write([loser]) == [False]
    assert store.counts() == (0, 0)
    assert store.read({"c3": ["1:1"]})["c3"].journal == {}
    assert store.due(due + 1, 10) == []


def test_forgotten_journal_entries_are_gone_after_the_next_write(store: StateStore) -> None:
    assert store.write([Write("c4", None, b"a", _later(60_000), journal={"0:7": b"d", "0:8": b"e"})]) == [
        True
    ]
    store.forget_journal({"c4": ["0:7"]})
    store.write([])  # the clean-up rides along with the next write (or the sweeper's next round)
    assert store.read({"c4": ["0:7", "0:8"]})["c4"].journal == {"0:8": b"e"}


def test_redis_keys_use_the_customer_hash_tag_and_expire(services: None) -> None:
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    prefix = f"contract-{uuid.uuid4().hex[:8]}"
    store = RedisStore(client, prefix, journal_ttl_ms=60_000)
    cid = "odd:{cid}"
    assert store.write([Write(cid, None, b"a", _later(30_000), journal={"0:1": b"d"})]) == [True]
    state_key, journal_key = store.state_key(cid), store.journal_key(cid)
    assert state_key.split("{", 1)[1].split("}", 1)[0] == journal_key.split("{", 1)[1].split("}", 1)[0]
    assert 0 < client.pttl(state_key) <= 30_000
    assert 0 < client.pttl(journal_key) <= 60_000
    client.delete(state_key, journal_key)


def test_many_customers_in_one_call(store: StateStore) -> None:
    writes = [
        Write(f"m{i}", None, f"v{i}".encode(), _later(60_000), journal={f"0:{i}": b"d"}) for i in range(500)
    ]
    writes.append(Write("m0", None, b"dup", _later(60_000)))  # same customer again: the first write wins
    assert store.write(writes) == [True] * 500 + [False]
    snapshots = store.read({f"m{i}": [f"0:{i}", "9:9"] for i in range(500)})
    assert all(snapshots[f"m{i}"].blob == f"v{i}".encode() for i in range(500))
    assert all(snapshots[f"m{i}"].journal == {f"0:{i}": b"d"} for i in range(500))


def test_script_is_reloaded_after_redis_forgets_it(services: None) -> None:
    client: redis.Redis = redis.Redis.from_url(REDIS_URL)
    store = RedisStore(client, f"contract-{uuid.uuid4().hex[:8]}", journal_ttl_ms=60_000)
    assert store.write([Write("c6", None, b"a", _later(30_000))]) == [True]
    client.script_flush()  # as after a Redis restart
    assert store.write([Write("c6", b"a", b"b", _later(30_000))]) == [True]
    client.delete(store.state_key("c6"))
