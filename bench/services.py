"""The bench's own Kafka and Redis (harness/services.py): Kafka on 127.0.0.1:29092 and Redis on
127.0.0.1:26379 (BENCH_KAFKA_PORT, BENCH_REDIS_PORT), state in <repo>/.services-bench
(BENCH_SERVICES_DIR), clear of the test suite's servers; `--brokers 3`: a cluster beside them. What already answers is reused and left
alone; what the bench starts, it stops afterwards."""

from __future__ import annotations

from harness.services import LocalServices


def bench_services(brokers: int = 1) -> LocalServices:
    """One broker; or (``brokers`` 3) a three-node cluster on 29192-29194 with a Redis on 26479
    (BENCH_CLUSTER_KAFKA_PORT, BENCH_CLUSTER_REDIS_PORT), in .services-bench/cluster."""
    if brokers == 1:
        return LocalServices.from_env("BENCH", 29092, 26379, ".services-bench")
    services = LocalServices.from_env("BENCH_CLUSTER", 29192, 26479, ".services-bench")
    services.shape = {"KAFKA_BROKERS": str(brokers)}
    return services
