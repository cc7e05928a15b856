"""Start-up checks of each dependency, each bounded, each failure one line that names the
dependency, where it was tried and what failed (unreachable, authentication, TLS, a missing topic
or permission), never a traceback, a password or a customer's data.

``leadattr run`` checks before it builds anything and keeps checking while a dependency fails:
readiness says "starting: <line>", the line is logged when it first appears and every 30 s, and
after LEADS_STARTUP_TIMEOUT_SECONDS the process exits 3 with the line on stderr (a pod then
restarts in the kubelet's back-off, visibly). The other commands check once and exit 3.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import redis as redis_client
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # not re-exported in its type stubs
from confluent_kafka.admin._metadata import ClusterMetadata

from consumer.avro.outputs import DEAD_LETTER_ENVELOPE_BYTES
from consumer.avro.registry import RegistryRefused, RegistryUnavailable, registry_of
from consumer.config import Config
from consumer.state.connection import redis_of
from consumer.tools.topics import replication_factor

CHECK_TIMEOUT_S = 8.0  # each dependency answers, or fails, within this long


class StartupFailure(Exception):
    """One line: which dependency, where, what failed."""


_KAFKA_KINDS = {
    KafkaError._AUTHENTICATION: "authentication failed",
    KafkaError._SSL: "TLS handshake failed",
    KafkaError._RESOLVE: "host name not resolved",
    KafkaError._TRANSPORT: "unreachable",
    KafkaError._ALL_BROKERS_DOWN: "unreachable",
    KafkaError._TIMED_OUT: "unreachable (timed out)",
    KafkaError.SASL_AUTHENTICATION_FAILED: "authentication failed",
}


def kafka_problem(error: KafkaError) -> str:
    """A librdkafka error as an operator reads it: the kind, then librdkafka's own words (they
    name brokers and mechanisms, never a password)."""
    kind = _KAFKA_KINDS.get(error.code(), error.name())
    return f"{kind}: {error.str()}"


def check_kafka(config: Config, base: dict[str, Any], topics: list[str], refuse_unsafe: bool = False) -> None:
    """The cluster answers and each topic exists and is visible to this principal; with
    ``refuse_unsafe`` (`leadattr run`), no output a broker's loss would lose."""
    s = config.settings
    where = f"kafka at {s.kafka_bootstrap_servers}"
    errors: list[KafkaError] = []
    settings: dict[str, Any] = {**base, "error_cb": errors.append, "log_level": 0}
    admin = AdminClient(settings)
    deadline = time.monotonic() + CHECK_TIMEOUT_S
    metadata = None
    while metadata is None and time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            admin.poll(0)  # serves error_cb: librdkafka's own words on why (refused, TLS, SASL)
            if any(e.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL) for e in errors):
                break  # a refusal does not get better by waiting
            if not errors:
                errors.append(exc.args[0])
    admin.poll(0)
    if metadata is None:
        worst = next(
            (e for e in errors if e.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL)),
            next((e for e in errors if e.code() == KafkaError._TRANSPORT), None)
            or (errors[-1] if errors else KafkaError(KafkaError._TIMED_OUT)),
        )
        raise StartupFailure(f"{where}: {kafka_problem(worst)}")
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=CHECK_TIMEOUT_S)
    for topic, future in futures.items():
        try:
            future.result(CHECK_TIMEOUT_S + 2)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise StartupFailure(
                    f"{where}: topic {topic} does not exist (leadattr topics create makes it)"
                ) from None
            if error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                raise StartupFailure(
                    f"{where}: not authorized for topic {topic} (the ACLs it needs: leadattr acls)"
                ) from None
            raise StartupFailure(f"{where}: topic {topic}: {kafka_problem(error)}") from None
    if refuse_unsafe:
        small = dead_letter_room(config, admin)
        if small is not None:
            raise StartupFailure(f"{where}: {small}")
    if refuse_unsafe and not s.allow_unsafe_topics:
        unsafe = unsafe_outputs(config, admin, metadata)
        if unsafe:
            raise StartupFailure(f"{where}: {unsafe[0]}")


def dead_letter_room(config: Config, admin: AdminClient) -> str | None:
    """The dead-letter topic must take the largest dead letter the service makes: one it refused
    would fail its batch, and the batch would be replayed for ever (contract rule 6)."""
    s = config.settings
    needed = s.dead_letter_max_value_bytes + DEAD_LETTER_ENVELOPE_BYTES
    [future] = admin.describe_configs([ConfigResource("topic", s.dead_letter_topic)]).values()
    configs = future.result(CHECK_TIMEOUT_S)
    if "max.message.bytes" not in configs or int(configs["max.message.bytes"].value) >= needed:
        return None
    return (
        f"topic {s.dead_letter_topic}: max.message.bytes {configs['max.message.bytes'].value} cannot take a "
        f"dead letter of LEADS_DEAD_LETTER_MAX_VALUE_BYTES {s.dead_letter_max_value_bytes} (raise it to at "
        f"least {needed}, or lower the setting)"
    )


def unsafe_outputs(config: Config, admin: AdminClient, metadata: ClusterMetadata) -> list[str]:
    """On a cluster of three or more brokers, the outputs whose replication factor or
    min.insync.replicas cannot keep an acknowledged record (acks=all) through the loss of a
    broker: one line each. A smaller cluster is a development one: nothing to refuse."""
    s = config.settings
    if len(metadata.brokers) < 3:
        return []
    outputs = [s.attributed_topic, s.unlinked_topic, s.dead_letter_topic, s.changelog_topic]
    lines = []
    described = admin.describe_configs([ConfigResource("topic", name) for name in outputs])
    for resource, future in described.items():
        topic = metadata.topics.get(resource.name)
        if topic is None:
            continue
        replicas = replication_factor(topic)
        configs = future.result(CHECK_TIMEOUT_S)
        insync = int(configs["min.insync.replicas"].value) if "min.insync.replicas" in configs else 1
        if replicas < 2 or insync < 2:
            lines.append(
                f"topic {resource.name}: replication factor {replicas}, min.insync.replicas {insync}: an "
                "acknowledged record would not survive the loss of a broker (both must be >= 2; "
                "LEADS_ALLOW_UNSAFE_TOPICS=true allows it for development)"
            )
    return lines


def _redis_where(url: str, sentinels: str | None) -> str:
    if sentinels:
        return f"redis through sentinels {sentinels}"
    parts = urllib.parse.urlsplit(url)
    return f"redis at {parts.hostname or parts.path}:{parts.port or 6379}" if parts.hostname else "redis"


def check_redis(config: Config) -> None:
    """Redis answers, accepts the credentials, and lets this user run the service's commands on
    its key prefix (a probe key that is never written)."""
    s = config.settings
    where = _redis_where(s.redis_url, s.redis_sentinels)
    probe = f"{s.redis_prefix}:preflight"
    try:
        client = redis_of(s)
    except (TypeError, ValueError) as error:  # redis-py's URL parsing: options the scheme does not take
        raise StartupFailure(
            f"{where}: LEADS_REDIS_URL refused by the client: {_first_line(error)}"
        ) from None
    try:
        client.ping()
        client.exists(probe)
        client.eval("return redis.call('EXISTS', KEYS[1])", 1, probe)
    except redis_client.AuthenticationError:
        raise StartupFailure(f"{where}: authentication failed (user or password refused)") from None
    except redis_client.exceptions.NoPermissionError as error:
        raise StartupFailure(f"{where}: permission refused: {_first_line(error)}") from None
    except redis_client.ConnectionError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, ssl.SSLError) or "SSL" in str(error):
            raise StartupFailure(f"{where}: TLS handshake failed: {_first_line(error)}") from None
        raise StartupFailure(f"{where}: unreachable: {_first_line(error)}") from None
    except redis_client.RedisError as error:
        raise StartupFailure(f"{where}: {type(error).__name__}: {_first_line(error)}") from None
    finally:
        client.close()


def _first_line(error: Exception) -> str:
    # redis-py's messages name the host, the command and the key pattern: no password, no cid.
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__


def check_registry(config: Config) -> None:
    registry = registry_of(config.settings)
    if registry is None:
        return
    try:
        registry.probe()
    except (RegistryUnavailable, RegistryRefused) as error:
        raise StartupFailure(f"{error} ({registry.where})") from None


def failures(
    config: Config,
    kafka_base: dict[str, Any],
    topics: list[str] | None,
    redis: bool = True,
    registry: bool = True,
    refuse_unsafe: bool = False,
) -> list[str]:
    """The dependencies asked for (Kafka with ``topics`` unless None, Redis, the registry when one is
    set) checked in parallel, so the slowest bounds the wait; each failure one line."""
    checks: list[tuple[str, Callable[[], None]]] = []
    if topics is not None:
        checks.append(("kafka", lambda: check_kafka(config, kafka_base, topics, refuse_unsafe)))
    if redis:
        checks.append(("redis", lambda: check_redis(config)))
    if registry:
        checks.append(("schema registry", lambda: check_registry(config)))
    found: list[str | None] = [None] * len(checks)

    def run(index: int) -> None:
        try:
            checks[index][1]()
        except StartupFailure as failure:
            found[index] = str(failure)
        except Exception as error:
            found[index] = f"start-up check failed: {type(error).__name__}: {_first_line(error)}"

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(checks))]
    for thread in threads:
        thread.start()
    for index, thread in enumerate(threads):
        thread.join(CHECK_TIMEOUT_S + 4)
        if thread.is_alive():
            found[index] = f"{checks[index][0]}: no answer within {CHECK_TIMEOUT_S + 4:.0f} s"
    return [line for line in found if line]
