"""The fault suite's own Kafka + Redis pair (harness/services.py): faults are injected into this
pair only, so restarting it never disturbs other work on the machine. Ports CHAOS_KAFKA_PORT
(19092) and CHAOS_REDIS_PORT (16379), state in <repo>/.services-chaos (CHAOS_SERVICES_DIR)."""

from __future__ import annotations

import atexit

from harness.services import LocalServices


def chaos_services() -> LocalServices:
    return LocalServices.from_env("CHAOS", 19092, 16379, ".services-chaos")


def chaos_ha_services() -> LocalServices:
    """The Redis high-availability shape beside the chaos pair: its own Kafka (19192), Redis
    primary and replica (16479, 16480) and Sentinel (16489), in .services-chaos/redis-ha. Every
    port stays below the kernel's ephemeral range (32768-60999), where an outgoing connection on
    the machine may hold it."""
    services = LocalServices.from_env("CHAOS_HA", 19192, 16479, ".services-chaos")
    services.shape = {"REDIS_HA": "1", "REDIS_SENTINEL_PORT": "16489"}
    return services


def chaos_cluster_services() -> LocalServices:
    """Three Kafka nodes beside the chaos pair (clients 19292-19294, controllers 20292-20294) and
    a Redis of their own (16579), in .services-chaos/cluster: the cluster scenarios."""
    services = LocalServices.from_env("CHAOS_CLUSTER", 19292, 16579, ".services-chaos")
    services.shape = {"KAFKA_BROKERS": "3"}
    return services


_shared: LocalServices | None = None


def shared() -> LocalServices:
    """One pair for the whole pytest process: started on first use when it does not answer, and
    then stopped when the process exits (so several test modules share one start)."""
    global _shared  # noqa: PLW0603 - a process-wide singleton on purpose
    if _shared is None:
        _shared = chaos_services()
        _shared.up(require_owned=True)
        atexit.register(_shared.stop_started)
    return _shared
