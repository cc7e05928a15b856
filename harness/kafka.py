"""The real broker, for tests, the fault suite, the bench and the demo: topics of their own, lead
events produced as product services do, outputs read back as analytics pipelines do
(read_committed), and the group's committed offsets."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from consumer.avro.codec import Codec
from consumer.avro.schemas import decode, load_schema
from harness.process import REPO

# The ports `make services-up` used (Makefile: KAFKA_PORT, REDIS_PORT), so a second checkout can
# run its suite against servers of its own. SECURE=1: the secured shape (SASL_SSL Kafka, TLS Redis
# with ACL users; deploy/local/services.sh), on its own default ports.
SECURE = os.environ.get("SECURE") == "1"
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9093" if SECURE else "9092"))
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6380" if SECURE else "6379"))
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
SERVICES_DIR = Path(os.environ.get("SERVICES_DIR", str(REPO / ".services")))


def secure_env(user: str) -> dict[str, str]:
    """The LEADS_* settings services.sh wrote for a user of the secured shape: "admin" (a super
    user: tests create topics and ACLs with it), "consumer" (leadattr, no ACL but what is granted)
    or "producer"."""
    name = {"admin": "secure-admin.env", "consumer": "secure.env", "producer": "secure-producer.env"}[user]
    path = SERVICES_DIR / name
    if not path.is_file():
        raise RuntimeError(
            f"SECURE=1: {path} is missing; start the secured services: SECURE=1 make services-up"
        )
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value
    return values


def _client_security() -> dict[str, str]:
    """librdkafka security properties of the harness's own clients (the admin user)."""
    if not SECURE:
        return {}
    return {
        name[len("LEADS_KAFKA_") :].lower().replace("_", "."): value
        for name, value in secure_env("admin").items()
        if name.startswith("LEADS_KAFKA_") and name != "LEADS_KAFKA_BOOTSTRAP_SERVERS"
    }


CLIENT: dict[str, str] = _client_security()


def security(bootstrap: str) -> dict[str, str]:
    """CLIENT for the suite's own broker; nothing for another (the fault suite's, a test's cluster:
    plaintext whatever shape the suite runs on)."""
    return CLIENT if bootstrap == BOOTSTRAP else {}


REDIS_URL = secure_env("admin")["LEADS_REDIS_URL"] if SECURE else f"redis://127.0.0.1:{REDIS_PORT}/0"
if SECURE:
    # Commands and clients the tests start inherit the admin's credentials; the consumer under
    # test gets the service user's instead (tests/integration/conftest.py).
    os.environ.update({k: v for k, v in secure_env("admin").items() if k.startswith("LEADS_")})

LEAD_FIELDS = ("clickId", "mode", "timestamp", "customerName", "customerEmail", "customerAvatar", "metadata")
SCHEMA_OF = {
    "attributed": "attributed_lead",
    "unlinked": "unlinked_lead",
    "dead-letter": "dead_letter",
    "erasures": "erasure",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Topics:
    """One test's (or bench phase's, or fault run's) topics, consumer group and Redis key prefix:
    runs never see each other's data."""

    name: str  # the topics are <name>.raw, <name>.attributed, ...
    group: str
    redis_prefix: str

    @classmethod
    def fresh(cls, tag: str = "t") -> Topics:
        s = uuid.uuid4().hex[:10]
        return cls(f"{tag}{s}", f"g{s}", f"{tag}{s}")

    @property
    def input(self) -> str:
        return f"{self.name}.raw"

    @property
    def attributed(self) -> str:
        return f"{self.name}.attributed"

    @property
    def unlinked(self) -> str:
        return f"{self.name}.unlinked"

    @property
    def dead_letter(self) -> str:
        return f"{self.name}.dead-letter"

    @property
    def changelog(self) -> str:
        return f"{self.name}.state-changelog"

    @property
    def erasures(self) -> str:
        return f"{self.name}.erasures"

    def all(self) -> list[str]:
        """Every topic of the service: the input, the consumer's outputs, the erasure records."""
        return [self.input, *self.outputs(), self.erasures]

    def outputs(self) -> list[str]:
        """Every topic the consumer writes: the three outputs and the state changelog."""
        return [self.attributed, self.unlinked, self.dead_letter, self.changelog]

    def configs(self) -> dict[str, dict[str, str]]:
        """Topic settings create_topics gives them: the changelog is compacted."""
        return {self.changelog: {"cleanup.policy": "compact"}}

    def env(self) -> dict[str, str]:
        return {
            "LEADS_INPUT_TOPIC": self.input,
            "LEADS_ATTRIBUTED_TOPIC": self.attributed,
            "LEADS_UNLINKED_TOPIC": self.unlinked,
            "LEADS_DEAD_LETTER_TOPIC": self.dead_letter,
            "LEADS_CHANGELOG_TOPIC": self.changelog,
            "LEADS_ERASURE_TOPIC": self.erasures,
            "LEADS_CONSUMER_GROUP": self.group,
            "LEADS_REDIS_PREFIX": self.redis_prefix,
        }


def admin(bootstrap: str = BOOTSTRAP, **extra: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 2, **security(bootstrap), **extra})


def create_topics(
    names: Iterable[str] | Mapping[str, int],
    partitions: int = 3,
    bootstrap: str = BOOTSTRAP,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create topics (a mapping gives each its own partition count; ``configs`` a topic its own
    settings) and wait until the metadata shows every one of them: it propagates asynchronously,
    even on one broker."""
    counts = dict(names) if isinstance(names, Mapping) else dict.fromkeys(names, partitions)
    settings = configs or {}
    client = admin(bootstrap)
    futures = client.create_topics(
        [
            NewTopic(
                n, num_partitions=p, replication_factor=replication_factor, config=dict(settings.get(n, {}))
            )
            for n, p in counts.items()
        ]
    )
    for future in futures.values():
        future.result(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        known = client.list_topics(timeout=5).topics
        if all(n in known and len(known[n].partitions) == p for n, p in counts.items()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"topics not visible after 30 s: {sorted(counts)}")


SERVICE_PRINCIPAL = "User:leadattr"


def service_settings(topics: Topics, **overrides: Any) -> Any:
    """The consumer's Settings for ``topics`` (what `leadattr acls` derives its list from)."""
    from consumer.config import Settings  # noqa: PLC0415 - only the secured tests need it

    values = {name[len("LEADS_") :].lower(): value for name, value in topics.env().items()}
    return Settings(_env_file=None, **{**values, **overrides})  # type: ignore[call-arg]


def grant_service_acls(topics: Topics, skip: Callable[[Any], bool] = lambda grant: False) -> list[Any]:
    """Grants the service user the ACLs `leadattr acls` lists for ``topics`` (less the grants
    ``skip`` picks) and waits until the authorizer applies them; returns what was granted."""
    from consumer.tools.acls import kafka_grants  # noqa: PLC0415

    grants = [g for g in kafka_grants(service_settings(topics)) if not skip(g)]
    client = admin()
    for future in client.create_acls([g.binding(SERVICE_PRINCIPAL) for g in grants]).values():
        future.result(30)
    time.sleep(0.5)  # the StandardAuthorizer applies new ACLs from the metadata log, asynchronously
    return grants


def delete_topics(names: Sequence[str], bootstrap: str = BOOTSTRAP) -> None:
    if not names:
        return
    client = admin(bootstrap)  # held while the futures run: a destroyed client never answers them
    for future in client.delete_topics(list(names), operation_timeout=30).values():
        try:
            future.result(30)
        except KafkaException as error:
            print(f"harness: could not delete a topic: {error}", flush=True)


def lead(cid: str, event_name: str, **fields: Any) -> dict[str, Any]:
    return {"customerExternalId": cid, "eventName": event_name, **{f: fields.get(f) for f in LEAD_FIELDS}}


def produce(
    topic: str,
    records: Iterable[dict[str, Any] | bytes],
    keys: Iterable[bytes | None] | None = None,
    bootstrap: str = BOOTSTRAP,
) -> int:
    """Lead events (dicts, encoded as Avro) or raw bytes, keyed by cid unless ``keys`` is given."""
    codec = Codec("lead_event")
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, **security(bootstrap)}
    )
    key_list = list(keys) if keys is not None else None
    count = 0
    for index, record in enumerate(records):
        value = record if isinstance(record, bytes) else codec.encode(record)
        if key_list is not None:
            key = key_list[index]
        elif isinstance(record, dict):
            key = record["customerExternalId"].encode()
        else:
            key = None
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    if producer.flush(60):
        raise RuntimeError("not all test records were delivered")
    return count


def schema_for(topic: str) -> str:
    return SCHEMA_OF[topic.rsplit(".", 1)[-1]]


def probe(bootstrap: str = BOOTSTRAP, group: str | None = None, **extra: Any) -> Consumer:
    """A consumer that commits nothing; read_committed, so its committed() waits for pending
    transactional offsets (KIP-447)."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"probe-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "log_level": 3,  # errors only: a reader's retries ("Coordinator load in progress") are noise
            **security(bootstrap),
            **extra,
        }
    )


def read_topic(
    topic: str,
    expected: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
    bootstrap: str = BOOTSTRAP,
    decode_value: Callable[[bytes], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Committed records of an output topic, decoded (plain Avro of its schema, or by
    ``decode_value``), with ``_key`` and ``_partition``; stops once ``expected`` records arrived and
    nothing new came for ``idle_s``, or at the timeout."""
    schema = load_schema(schema_for(topic))
    decoded = decode_value or (lambda data: decode(schema, data))
    consumer = probe(bootstrap, **{"auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(error)
                value = decoded(message.value() or b"")
                value["_key"] = message.key()
                value["_partition"] = message.partition()
                records.append(value)
                last_new = time.monotonic()
            if expected is not None and len(records) >= expected and time.monotonic() - last_new >= idle_s:
                break
            if expected is None and records and time.monotonic() - last_new >= idle_s:
                break
    finally:
        consumer.close()
    return records


def read_all(
    topic: str,
    schema_name: str | None,
    timeout_s: float = 120.0,
    committed: bool = True,
    bootstrap: str = BOOTSTRAP,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every record of ``topic`` to its end, decoded (timestamps as epoch milliseconds), plus
    problems: a partition whose committed data does not reach its high watermark in time (an open,
    never-finished transaction). ``committed=False``: every record written, aborted ones too,
    undecoded (schema_name None)."""
    schema = load_schema(schema_name) if schema_name else None
    settings: dict[str, Any] = {
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed" if committed else "read_uncommitted",
    }
    consumer = probe(bootstrap, None, **settings)
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        partitions = sorted(metadata.topics[topic].partitions)
        high = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        reached: dict[int, int] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(reached.get(p, -1) < high[p] for p in partitions):
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    partition, offset = message.partition(), message.offset()
                    if error.code() == KafkaError._PARTITION_EOF and partition is not None:
                        reached[partition] = offset if offset is not None else -1
                        continue
                    raise RuntimeError(f"reading {topic}: {error.str()}")
                if schema is None:
                    records.append({})
                    continue
                value = decode(schema, message.value() or b"")
                value["_key"] = message.key()
                value["_partition"] = message.partition()
                records.append({k: _millis(v) if isinstance(v, datetime) else v for k, v in value.items()})
        for p in partitions:
            if reached.get(p, -1) < high[p]:
                problems.append(
                    f"partition {p}: committed data ends at {reached.get(p)} below the high watermark "
                    f"{high[p]} after {timeout_s:.0f}s (a transaction left open?)"
                )
    finally:
        consumer.close()
    return records, problems


def _millis(moment: datetime) -> int:
    """Exact (integer) epoch milliseconds; float arithmetic could be off by one."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def partitions_of(topic: str, bootstrap: str = BOOTSTRAP) -> list[int]:
    return sorted(admin(bootstrap).list_topics(topic, timeout=30).topics[topic].partitions)


def committed_offsets(
    group: str,
    topic: str,
    partitions: int | None = None,
    bootstrap: str = BOOTSTRAP,
    stable: bool = True,
) -> dict[int, int]:
    """The group's committed offsets of ``topic``. ``stable``: wait for pending transactional
    offsets (KIP-447) instead of ignoring them."""
    numbers = range(partitions) if partitions is not None else partitions_of(topic, bootstrap)
    consumer = probe(
        bootstrap, group, **{"isolation.level": "read_committed" if stable else "read_uncommitted"}
    )
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in numbers], timeout=15)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in committed}


def end_offsets(topic: str, partitions: int | None = None, bootstrap: str = BOOTSTRAP) -> dict[int, int]:
    numbers = range(partitions) if partitions is not None else partitions_of(topic, bootstrap)
    consumer = probe(bootstrap)
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in numbers}
    finally:
        consumer.close()


def set_group_offsets(
    group: str, topic: str, offsets: dict[int, int], bootstrap: str = BOOTSTRAP, timeout_s: float = 30
) -> None:
    """Set a group's committed offsets with the admin API (the group must have no live member)."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, o) for p, o in offsets.items()])
    client = admin(bootstrap)  # held while the futures run: a destroyed client never answers them
    for future in client.alter_consumer_group_offsets([request]).values():
        future.result(timeout_s)
