"""`python -m bench sweep`: how fast the expiry sweeper gets through wake entries, against Redis.

Most entries the sweeper meets were left behind when a batch moved a customer's wake time (a
deferred lead joined: its deadline's entry stays until that second comes; consumer/state/store.py).
This writes ``--leads`` such customers (the state keeps a dedupe mark with its own entry an hour
ahead; the entry its pending deadline left is due now), then times ExpirySweeper.claim_due rounds, as the run loop runs them, until nothing is
left to do, and reports entries per second and Redis CPU per entry.
"""

from __future__ import annotations

import argparse
import time
import uuid

import redis

from bench.phases import delete_prefix, redis_counters
from bench.services import bench_services
from consumer.processing.sweeper import ExpirySweeper
from consumer.state.codec import encode_state
from consumer.state.customer import CustomerState, Write
from consumer.state.redis_store import RedisStore
from harness.process import port_answers


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sweep", description=__doc__)
    parser.add_argument("--leads", type=int, default=50_000)
    args = parser.parse_args(argv)
    services = bench_services()
    if not port_answers(services.redis_port):
        print(
            f"bench sweep: no Redis on {services.redis_url}; start it with `python -m bench` or services.sh"
        )
        return 2
    client = redis.Redis.from_url(services.redis_url)
    prefix = f"bs{uuid.uuid4().hex[:6]}"
    store = RedisStore(client, prefix, journal_ttl_ms=60_000, group="bench")
    now = int(time.time() * 1000)
    try:
        # What a joined deferred lead leaves: its state (a dedupe mark, wake time an hour ahead,
        # with its entry) and the entry of its pending deadline, due now.
        blob = encode_state(CustomerState(done={"signup_started": now + 3_600_000}))
        for start in range(0, args.leads, 1000):
            writes = []
            for i in range(start, min(args.leads, start + 1000)):
                cid = f"usr_{i:016x}"
                writes.append(Write(cid, None, blob, wake_ms=now - 1000))
                writes.append(Write(cid, blob, blob, wake_ms=now + 3_600_000))
            assert all(store.write(writes))
        before = redis_counters(client)
        sweeper = ExpirySweeper(store, lease_ms=30_000)
        partition = ("bench-sweep.raw", 0)  # one input partition, caught up: the watermark is the clock
        store.mark_partitions({partition: (-1, True)}, 0)
        started, rounds, reported = time.perf_counter(), 0, 0
        while True:
            rounds += 1
            claimed = sweeper.claim_due([partition])
            reported += len(claimed.leads)
            if not claimed.more:
                break
        store.flush_queued()
        seconds = time.perf_counter() - started
        after = redis_counters(client)
        cpu = after["cpu_s"] - before["cpu_s"]
        calls = round(sum(v - before.get(k, 0) for k, v in after.items() if k.endswith(".calls")))
        left = sum(client.llen(k) - 1 for k in client.scan_iter(match=f"{prefix}:wake:*"))
        print(
            {
                "entries_due": args.leads,
                "seconds": round(seconds, 3),
                "entries_per_s": round(args.leads / seconds),
                "rounds": rounds,
                "redis_commands": calls,
                "redis_cpu_us_per_entry": round(1e6 * cpu / args.leads, 1),
                "unlinked_reported": reported,
                "entries_left": left,
            },
            flush=True,
        )
        return 0 if left == args.leads and reported == 0 else 1  # the live entries (an hour ahead) stay
    finally:
        delete_prefix(client, prefix)
