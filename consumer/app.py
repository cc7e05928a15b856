"""Wiring: build the consumer, producer, store and pipeline from the configuration."""

from __future__ import annotations

import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # not re-exported in its type stubs

from consumer import compiled_modules, preflight
from consumer.avro.codec import Codec
from consumer.avro.outputs import DEAD_LETTER_ENVELOPE_BYTES, OutputCodecs
from consumer.avro.registry import registry_of
from consumer.config import Config, Guarantee
from consumer.delivery.committer import AtLeastOnceCommitter, Committer, TransactionalCommitter
from consumer.health import Health, serve
from consumer.logs import fields
from consumer.processing.batch import BatchProcessor
from consumer.processing.runner import Runner
from consumer.processing.sweeper import ExpirySweeper
from consumer.rules.attribute import Windows
from consumer.state.changelog import ChangelogReader
from consumer.state.connection import redis_of
from consumer.state.customer import PartitionKey
from consumer.state.recovery import Recovery
from consumer.state.redis_store import RedisStore

log = logging.getLogger(__name__)
STATS_INTERVAL_MS = 5000
# A batch allocates tens of thousands of short-lived objects (records, decisions, states), none in
# reference cycles, so the cyclic collector only costs time: at the default threshold of 700 it
# ran ~30 times per batch and took ~8 % of the CPU (py-spy). One young collection per ~batch.
GC_YOUNG_THRESHOLD = 50_000
# A dependency failing at start-up: checked again this often, its line logged again this often.
STARTUP_RETRY_S = 5.0
STARTUP_LOG_EVERY_S = 30.0


def _librdkafka_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"librdkafka.{name}")


def consumer_config(config: Config, runner_callbacks: dict[str, Any]) -> dict[str, Any]:
    s = config.settings
    return {
        "bootstrap.servers": s.kafka_bootstrap_servers,
        "group.id": s.consumer_group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Inputs produced in transactions must be read only once committed.
        "isolation.level": "read_committed",
        "statistics.interval.ms": STATS_INTERVAL_MS,
        # librdkafka prefetches up to 64 MB per consumer by default; a few batches ahead is enough
        # and keeps the process under its memory budget (make bench: peak RSS 158 -> 108 MB).
        "queued.min.messages": 5000,
        "queued.max.messages.kbytes": 16384,
        # Once a partition holds queued.min.messages, librdkafka looks again only after this long
        # (default 1000 ms). At 17,000+ events/s the queue drained within that second and the loop
        # sat in poll(): 11.6 % of its wall time in a drain (py-spy), 10-21 % in a bare consume loop
        # at 20,000/s (docs/performance.md). Looking again sooner costs a timer, not a request.
        "fetch.queue.backoff.ms": 20,
        # A fetch is answered when 64 KB are there or after 10 ms, not at every record: at 5,000
        # events/s the broker otherwise answers a fetch per producer request (~350/s), and on a
        # broker short of CPU that showed in every latency (make bench, four alternating runs each:
        # broker 0.57-0.62 vs 0.64-0.66 cores, p99 medians 128 vs 138 ms exactly_once, 78 vs 99
        # at_least_once; docs/performance.md). A record waits at most 10 ms more at the broker,
        # mostly while the previous batch is processed anyway. The price is paid when idle: an
        # instance with nothing to read sends ~89 fetches/s instead of 2 (the bench broker then used
        # 0.08-0.10 of a core instead of 0.02-0.03, measured). LEADS_KAFKA_FETCH_WAIT_MAX_MS /
        # LEADS_KAFKA_FETCH_MIN_BYTES override them.
        "fetch.wait.max.ms": 10,
        "fetch.min.bytes": 65536,
        # An event when a partition is consumed to its end: how a partition nothing was consumed
        # from is known to be caught up, for the watermark (consumer/processing/progress.py).
        "enable.partition.eof": True,
        "logger": _librdkafka_logger("consumer"),
        **({"group.instance.id": s.group_instance_id} if s.group_instance_id else {}),
        **config.kafka_extra,
        **runner_callbacks,
    }


def producer_config(config: Config, transactional: bool) -> dict[str, Any]:
    s = config.settings
    settings: dict[str, Any] = {
        "bootstrap.servers": s.kafka_bootstrap_servers,
        "enable.idempotence": True,  # broker-side dedupe of retried sends, in both modes
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # The largest dead letter must leave (librdkafka refuses a record over this before sending).
        "message.max.bytes": max(1_000_000, s.dead_letter_max_value_bytes + DEAD_LETTER_ENVELOPE_BYTES),
        # Only failed deliveries call back into Python: a callback per record cost ~1 us each, and
        # success is what commit_transaction / flush already establish (consumer/delivery/committer.py).
        "delivery.report.only.error": True,
        # A transaction begun right after the last one committed finds the coordinator still
        # writing that one's markers: AddPartitionsToTxn and AddOffsetsToTxn are refused with
        # CONCURRENT_TRANSACTIONS until it is done (20-60 ms in the debug logs). librdkafka retries the
        # partitions every 20 ms but the offsets after retry.backoff.ms, 100 ms by default: at
        # 5,000 events/s ~5 batches in 20 s stalled 120-130 ms in send_offsets_to_transaction and
        # made the exactly_once p99 (librdkafka debug log; docs/performance.md). Retries start at
        # 10 ms and back off to at most 40 ms; LEADS_KAFKA_RETRY_BACKOFF_MS / _MAX_MS override.
        "retry.backoff.ms": 10,
        "retry.backoff.max.ms": 40,
        "logger": _librdkafka_logger("producer"),
        **config.kafka_extra,
    }
    if transactional:
        settings["transactional.id"] = s.transaction_id
    return settings


def cluster_config(config: Config, name: str) -> dict[str, Any]:
    """What every client of the cluster needs: its servers, its security settings, a logger."""
    return {
        "bootstrap.servers": config.settings.kafka_bootstrap_servers,
        "logger": _librdkafka_logger(name),
        **config.kafka_extra,
    }


def topic_id_of(config: Config) -> Callable[[str], str]:
    """Kafka's id of a topic, asked of the cluster each time (KafkaException when it cannot answer)."""
    admin = AdminClient(cluster_config(config, "admin"))

    def topic_id(topic: str) -> str:
        futures = admin.describe_topics(TopicCollection([topic]), request_timeout=10)
        return str(futures[topic].result(15).topic_id)

    return topic_id


def end_offsets_of(config: Config) -> Callable[[Sequence[PartitionKey]], dict[PartitionKey, int]]:
    """The broker's current read-committed end offset of partitions (for the watermark's caught-up
    test, consumer/processing/progress.py); raises when the cluster cannot answer within seconds."""
    admin = AdminClient(cluster_config(config, "admin"))

    def end_offsets(partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        asked = {TopicPartition(topic, partition): latest for topic, partition in partitions}
        futures = admin.list_offsets(asked, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=5)
        return {(tp.topic, tp.partition): future.result(6).offset for tp, future in futures.items()}

    return end_offsets


def build_runner(config: Config, health: Health | None = None) -> Runner:
    s = config.settings
    registry = registry_of(s)
    windows = Windows(
        pending_ttl_ms=int(s.pending_ttl_seconds * 1000),
        orphan_grace_ms=int(s.orphan_grace_seconds * 1000),
        dedupe_ttl_ms=int(s.dedupe_ttl_seconds * 1000),
    )
    # The journal must outlive any replay of an uncommitted batch; deleted after commit anyway.
    store = RedisStore(
        redis_of(s),
        s.redis_prefix,
        journal_ttl_ms=max(windows.pending_ttl_ms, 86_400_000),
        group=s.consumer_group,
        min_replicas=s.min_replicas,
        replica_timeout_ms=s.redis_replica_timeout_ms,
    )
    codecs = OutputCodecs(s, registry)
    processor = BatchProcessor(store, windows, Codec("lead_event", registry), codecs)
    sweeper = ExpirySweeper(store, lease_ms=int(s.expiry_lease_seconds * 1000))
    transactional = s.processing_guarantee is Guarantee.EXACTLY_ONCE
    committer: Committer = (
        TransactionalCommitter(lambda: Producer(producer_config(config, True)))
        if transactional
        else AtLeastOnceCommitter(lambda: Producer(producer_config(config, False)))
    )
    health = health or Health()
    recovery = Recovery(
        store,
        health,
        reader=lambda: ChangelogReader(
            cluster_config(config, "changelog"), s.changelog_topic, s.consumer_group, health.beat
        ),
        auto=s.state_restore == "auto",
    )
    runner = Runner(
        make_consumer=lambda callbacks: Consumer(consumer_config(config, callbacks)),
        committer=committer,
        store=store,
        processor=processor,
        sweeper=sweeper,
        codecs=codecs,
        health=health,
        input_topic=s.input_topic,
        batch_size=s.batch_size,
        batch_wait_s=s.batch_wait_ms / 1000,
        sweep_interval_s=s.expiry_interval_seconds,
        shutdown_timeout_s=s.shutdown_timeout_seconds,
        topic_id=topic_id_of(config),
        overlap_commits=s.overlap_commits,
        idle_lag_ms=int(s.idle_partition_lag_seconds * 1000),
        recovery=recovery,
        end_offsets=end_offsets_of(config),
    )
    recovery.committed = runner.committed_everywhere  # asked of the runner's own consumer
    return runner


def tune_gc() -> None:
    """Collect young objects once per ~batch, and never walk the objects built at start-up
    (modules, schemas, settings) again: gc.freeze moves them out of the collector's reach."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def topics_of(config: Config) -> list[str]:
    s = config.settings
    return [s.input_topic, s.attributed_topic, s.unlinked_topic, s.dead_letter_topic, s.changelog_topic]


def wait_for_dependencies(config: Config, health: Health, stop: threading.Event) -> bool:
    """preflight's checks until all pass (True) or LEADS_STARTUP_TIMEOUT_SECONDS ran out (False,
    the failures printed on stderr) or ``stop`` is set (False). Readiness says what is failing."""
    deadline = time.monotonic() + config.settings.startup_timeout_seconds
    logged: dict[str, float] = {}
    while not stop.is_set():
        problems = preflight.failures(
            config, cluster_config(config, "preflight"), topics_of(config), refuse_unsafe=True
        )
        health.startup_problem = "; ".join(problems) or None
        if not problems:
            return True
        now = time.monotonic()
        for line in problems:
            if now - logged.get(line, -STARTUP_LOG_EVERY_S) >= STARTUP_LOG_EVERY_S:
                log.error("start-up check failed, retrying", extra=fields(problem=line))
                logged[line] = now
        if now >= deadline:
            for line in problems:
                print(f"leadattr: {line}", file=sys.stderr)
            return False
        stop.wait(min(STARTUP_RETRY_S, max(0.0, deadline - now)))
    return False


def run(config: Config) -> int:
    s = config.settings
    health = Health()
    # Serving first: while a dependency fails its check, /readyz says which and why.
    server = serve(health, s.metrics_port, s.metrics_host)
    # A SIGTERM while a dependency is awaited: nothing consumed yet, nothing to drain.
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        if not wait_for_dependencies(config, health, stop):
            if stop.is_set():
                log.info("stopped before start-up completed")
                return 0
            return 3
        try:
            runner = build_runner(config, health)
        except KafkaException as exc:  # init_transactions: the transactional id refused, or the cluster gone
            print(
                f"leadattr: kafka at {s.kafka_bootstrap_servers}: transactional id {s.transaction_id}: "
                f"{preflight.kafka_problem(exc.args[0])}",
                file=sys.stderr,
            )
            return 3
        # Says whether the mypyc build (setup.py) is what runs: a pure-Python install needs ~1.8x
        # the CPU per event (docs/performance.md).
        log.info("per-event path", extra=fields(compiled_modules=len(compiled_modules())))
        tune_gc()
        runner.install_signal_handlers()
        return runner.run()
    finally:
        server.shutdown()
