"""Every Prometheus metric of the service, defined once (contract section 7).

Label values are bounded enums only: never a customer id, email or name. Every known label value
is created at import so panels show 0 instead of "no data" on a fresh instance.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from consumer.processing.tally import buckets
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode, RebalanceEvent, UnlinkedReason

# `*_created` samples double the series count and no panel or alert uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

# Input records read from the input topic (valid or not).
EVENTS_CONSUMED = Counter("leads_events_consumed", "Input records consumed.", registry=REGISTRY)
# Attributed leads published, by direct or deferred attribution.
ATTRIBUTED = Counter("leads_attributed", "Attributed leads published.", ["mode"], registry=REGISTRY)
# Unlinked records published by the expiry sweeper, by reason.
UNLINKED = Counter("leads_unlinked", "Unlinked leads published.", ["reason"], registry=REGISTRY)
# Input records sent to the dead-letter topic, by reason.
DEAD_LETTER = Counter("leads_dead_letter", "Records dead-lettered.", ["reason"], registry=REGISTRY)
# Events recognised as repeats: counted, nothing published.
DUPLICATES = Counter("leads_duplicates", "Duplicate events ignored.", ["kind"], registry=REGISTRY)
# Deferred leads waiting for verification; read from Redis, so every instance reports the same total.
PENDING = Gauge("leads_pending", "Deferred leads waiting for verification (cluster-wide).", registry=REGISTRY)
# Early Event 2s held for the grace period, from Redis.
HELD = Gauge("leads_held_verifications", "Verification events waiting for Event 1.", registry=REGISTRY)
# Erasures carried out by `leadattr forget`, cluster-wide (a Redis counter): every instance reports
# the same total.
ERASURES = Counter("leads_erasures", "Customers erased by leadattr forget (cluster-wide).", registry=REGISTRY)
# Where an unreadable state was found: "batch" (an event of its customer) or "sweeper" (its wake time).
STATE_QUARANTINED = Counter(
    "leads_state_quarantined", "Unreadable customer states moved aside.", ["stage"], registry=REGISTRY
)
VERIFICATION_DELAY = Histogram(
    "leads_verification_delay_seconds",
    "Processing time from Event 1 to its verification event.",
    buckets=(1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400),
    registry=REGISTRY,
)
PROCESSING_LATENCY = Histogram(
    "leads_processing_latency_seconds",
    "From the input record's Kafka timestamp to its outputs being committed.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "leads_consumer_lag", "Records behind the high watermark.", ["partition"], registry=REGISTRY
)
CONSUMER_LAG_SECONDS = Gauge(
    "leads_consumer_lag_seconds", "Age of the last processed record while behind, else 0.", registry=REGISTRY
)
BATCH_DURATION = Histogram(
    "leads_batch_duration_seconds",
    "One batch: decode, Redis, publish and commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "leads_batch_size",
    "Records per batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=REGISTRY,
)
COMMITS = Counter("leads_commits", "Successful commits (transactions or offset commits).", registry=REGISTRY)
COMMIT_FAILURES = Counter(
    "leads_commit_failures", "Failed commits; the batch is replayed.", registry=REGISTRY
)
TRANSACTION_ABORTS = Counter("leads_transaction_aborts", "Aborted Kafka transactions.", registry=REGISTRY)
REBALANCES = Counter("leads_rebalances", "Partition assignment changes.", ["event"], registry=REGISTRY)
REDIS_ERRORS = Counter("leads_redis_errors", "Failed Redis round trips.", registry=REGISTRY)
REDIS_RETRIES = Counter(
    "leads_redis_retries", "Redis round trips retried after a failure.", registry=REGISTRY
)
# Schema registry requests that failed, by kind: unavailable, refused (401/403/4xx), unknown_schema.
SCHEMA_REGISTRY_ERRORS = Counter(
    "leads_schema_registry_errors", "Failed schema registry requests.", ["kind"], registry=REGISTRY
)
KAFKA_ERRORS = Counter("leads_kafka_errors", "Producer, consumer and transaction errors.", registry=REGISTRY)
FLOOR_SKIPS = Counter(
    "leads_offset_floor_skips",
    "Batches refused for starting below the committed-offset floor: the group's offsets went back.",
    registry=REGISTRY,
)
REDIS_UP = Gauge("leads_redis_up", "1 when the last Redis round trip succeeded.", registry=REGISTRY)
KAFKA_UP = Gauge("leads_kafka_up", "1 when the broker is reachable.", registry=REGISTRY)
READY = Gauge("leads_ready", "1 when /readyz answers ready.", registry=REGISTRY)
# Contract rule 9: 1 while Redis is known to hold less than was committed (the consumer decides
# nothing until the state is restored from the changelog; consumer/state/recovery.py).
STATE_LOST = Gauge("leads_state_lost", "1 while the state in Redis is known damaged.", registry=REGISTRY)
ASSIGNED_PARTITIONS = Gauge("leads_assigned_partitions", "Input partitions owned.", registry=REGISTRY)
LAST_PROCESSED = Gauge(
    "leads_last_processed_timestamp_seconds", "Unix time of the last processed record.", registry=REGISTRY
)
# Deadlines are reported once every input partition has been processed past them: this is how far
# that point (the watermark, in arrival time) is behind the shared clock. Near the idle lag (2 s)
# when caught up; large after an outage or while a partition lags (expiries wait for it).
WATERMARK_LAG = Gauge(
    "leads_watermark_lag_seconds",
    "How far the expiry watermark is behind the clock: how long deadlines wait past their time.",
    registry=REGISTRY,
)
SWEEP_DURATION = Histogram(
    "leads_expiry_sweep_duration_seconds",
    "One sweep of due deadlines.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
    registry=REGISTRY,
)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """histogram.observe(value) for each of ``values``, with one increment per bucket: the
    Histogram keeps a value per bucket and a sum, and observe() adds to one bucket and the sum
    (tests/unit/test_tally.py checks the exposition is the same as observe()'s, value by value)."""
    if not values:
        return
    # prometheus_client's own attributes: it has no public way to add many observations at once.
    upper_bounds = histogram._upper_bounds
    counts, total = buckets(values, upper_bounds)
    histogram._sum.inc(total)
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(count)


def _initialise() -> None:
    for mode in Mode:
        ATTRIBUTED.labels(mode=mode.value)
    for unlinked in UnlinkedReason:
        UNLINKED.labels(reason=unlinked.value)
    for dead in DeadLetterReason:
        DEAD_LETTER.labels(reason=dead.value)
    for kind in DuplicateKind:
        DUPLICATES.labels(kind=kind.value)
    for event in RebalanceEvent:
        REBALANCES.labels(event=event.value)
    for registry_error in ("unavailable", "refused", "unknown_schema"):
        SCHEMA_REGISTRY_ERRORS.labels(kind=registry_error)
    for stage in ("batch", "sweeper"):
        STATE_QUARANTINED.labels(stage=stage)


_initialise()
