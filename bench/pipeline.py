"""`python -m bench pipeline`: the consumer's CPU cost per event, in-process, without Kafka.

Feeds the bench workload through consumer.processing.batch.BatchProcessor (decode, validate, attribute,
state codec, output encoding) in batches, with the in-memory store or the real Redis store, plus
what the run loop does per batch after the commit (metrics), and reports microseconds of CPU per
event. With --profile it runs under cProfile and prints where the time goes. Kafka I/O is left
out on purpose: this is the part that is Python, and the part the consumer can change.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
import zlib
from collections.abc import Sequence
from typing import Any

import redis

from bench.phases import delete_prefix
from bench.services import bench_services
from bench.workload import generate
from consumer import compiled_modules
from consumer.app import tune_gc
from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.config import Settings
from consumer.model import SourceRecord
from consumer.processing.batch import BatchProcessor
from consumer.rules.attribute import Windows
from consumer.state.connection import connect
from consumer.state.memory import InMemoryStore
from consumer.state.redis_store import RedisStore
from consumer.state.store import StateStore
from harness.process import port_answers
from harness.services import LocalServices

WINDOWS = Windows(pending_ttl_ms=604_800_000, orphan_grace_ms=300_000, dedupe_ttl_ms=604_800_000)


def sources(events: int, partitions: int = 6) -> list[SourceRecord]:
    workload = generate(events)
    offsets = [0] * partitions
    records = []
    now_ms = int(time.time() * 1000)
    for event in workload.events:
        partition = zlib.crc32(event.key) % partitions
        records.append(
            SourceRecord("bench.raw", partition, offsets[partition], event.key, event.value, now_ms)
        )
        offsets[partition] += 1
    return records


def _store(kind: str, services: LocalServices) -> tuple[StateStore, Any]:
    if kind == "memory":
        return InMemoryStore(), None
    prefix = f"bp{time.time_ns() % 10**8}"
    store = RedisStore(connect(services.redis_url), prefix, journal_ttl_ms=86_400_000, group="bench")
    return store, prefix


def run_batches(
    processor: BatchProcessor, store: StateStore, records: Sequence[SourceRecord], batch: int
) -> None:
    from consumer.delivery.protocol import count_decisions  # noqa: PLC0415 - the per-decision metrics

    for start in range(0, len(records), batch):
        result = processor.process(records[start : start + batch])
        store.note_committed(result.offsets)  # what the run loop does after each commit
        store.forget_journal(result.journal)
        store.flush_queued()
        count_decisions(result.decisions)


def measure(kind: str, records: Sequence[SourceRecord], batch: int, profile: bool) -> dict[str, Any]:
    services = bench_services()
    store, prefix = _store(kind, services)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    processor = BatchProcessor(store, WINDOWS, Codec("lead_event"), OutputCodecs(settings))
    profiler = cProfile.Profile() if profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    run_batches(processor, store, records, batch)
    if profiler is not None:
        profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    result: dict[str, Any] = {
        "store": kind,
        "events": len(records),
        "batch": batch,
        "cpu_us_per_event": round(1e6 * cpu / len(records), 1),
        "wall_us_per_event": round(1e6 * wall / len(records), 1),
        "events_per_cpu_s": round(len(records) / cpu) if cpu else None,
        "compiled_modules": len(compiled_modules()),
    }
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(35)
        stats.sort_stats("tottime").print_stats(25)
        result["profile"] = out.getvalue()
    if prefix is not None:
        delete_prefix(redis.Redis.from_url(services.redis_url), prefix)
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--store", choices=("memory", "redis", "both"), default="both")
    parser.add_argument(
        "--profile", action="store_true", help="run under cProfile and print the top functions"
    )
    args = parser.parse_args(argv)
    records = sources(args.events)
    tune_gc()  # as `leadattr run` does before its first batch
    kinds = ("memory", "redis") if args.store == "both" else (args.store,)
    services = bench_services()
    if "redis" in kinds and not port_answers(services.redis_port):
        print(
            f"bench pipeline: no Redis on {services.redis_url}; start it with `python -m bench` or services.sh"
        )
        return 2
    for kind in kinds:
        result = measure(kind, records, args.batch_size, args.profile)
        profile = result.pop("profile", None)
        print(result, flush=True)
        if profile:
            print(profile)
    return 0
