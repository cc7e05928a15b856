"""The bench's own Kafka and Redis (harness/services.py): Kafka on 127.0.0.1:29092 and Redis on
127.0.0.1:26379 (BENCH_KAFKA_PORT, BENCH_REDIS_PORT), state in <repo>/.services-bench
(BENCH_SERVICES_DIR), clear of the test suite's servers. What already answers is reused and left
alone; what the bench starts, it stops afterwards."""

from __future__ import annotations

from harness.services import LocalServices


def bench_services() -> LocalServices:
    return LocalServices.from_env("BENCH", 29092, 26379, ".services-bench")
