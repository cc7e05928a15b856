"""All configuration, from LEADS_* environment variables (or a .env file), checked at start-up.

A bad value stops the process with one line naming the variable (``SettingsError``), because a
consumer that starts with a typo'd TTL silently mis-attributes leads for days.
"""

from __future__ import annotations

import os
import socket
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KAFKA_PASSTHROUGH_PREFIX = "LEADS_KAFKA_"
# Variables with the passthrough prefix that are settings of ours, not librdkafka properties.
_OWN_KAFKA_SETTINGS = {"LEADS_KAFKA_BOOTSTRAP_SERVERS"}
# librdkafka properties the consumer manages itself: letting a user override them would break
# the delivery guarantee (arroyo refuses auto commit for the same reason).
_MANAGED_KAFKA_PROPERTIES = {
    "enable.auto.commit": "offsets are committed only after the outputs are delivered",
    "enable.auto.offset.store": "offsets are stored only after the outputs are delivered",
    "isolation.level": "the input is read with read_committed",
    "transactional.id": "set LEADS_TRANSACTIONAL_ID instead",
    "enable.idempotence": "the producer is always idempotent",
    "group.id": "set LEADS_CONSUMER_GROUP instead",
    "group.instance.id": "set LEADS_INSTANCE_ID instead",
}


class SettingsError(Exception):
    """A setting is invalid; the message is one line that names the variable."""


class Guarantee(StrEnum):
    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


PositiveSeconds = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADS_", env_file=".env", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "localhost:9092"
    redis_url: str = "redis://localhost:6379/0"
    input_topic: str = "leads.raw"
    attributed_topic: str = "leads.attributed"
    unlinked_topic: str = "leads.unlinked"
    dead_letter_topic: str = "leads.dead-letter"
    # The customers' states, compacted, written in each batch's transaction: what Redis is rebuilt
    # from when it lost state (consumer/state/changelog.py).
    changelog_topic: str = "leads.state-changelog"
    # `leadattr forget` publishes an erasure record here, for the pipelines downstream.
    erasure_topic: str = "leads.erasures"
    consumer_group: str = "lead-attribution"
    pending_ttl_seconds: PositiveSeconds = 604800
    orphan_grace_seconds: PositiveSeconds = 300
    dedupe_ttl_seconds: PositiveSeconds = 604800
    processing_guarantee: Guarantee = Guarantee.EXACTLY_ONCE
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    # Loopback by default so a laptop run exposes nothing; deployments set 0.0.0.0 for scraping.
    metrics_host: str = "127.0.0.1"
    schema_registry_url: str | None = None
    # "user:password" for HTTP basic auth (else the URL's own user:password@, if any).
    schema_registry_basic_auth_user_info: SecretStr | None = None
    # TLS to the registry: the CA that signed its certificate (else the system's), and a client
    # certificate with its key (PEM) for a registry that asks for one.
    schema_registry_ssl_ca_location: Path | None = None
    schema_registry_ssl_certificate_location: Path | None = None
    schema_registry_ssl_key_location: Path | None = None
    # Redis high availability (contract section 5): the primary found through Sentinel and followed
    # across failovers; credentials, TLS and database still come from redis_url.
    redis_sentinels: str | None = None
    redis_sentinel_master: str | None = None
    # Replicas that must acknowledge a batch's Redis writes (WAIT) before its Kafka commit. Unset:
    # 1 with Sentinel (a failover then never loses an acknowledged batch), 0 without.
    redis_min_replicas: int | None = Field(default=None, ge=0, le=10)
    redis_replica_timeout_ms: int = Field(default=2000, ge=1, le=60_000)
    # What `leadattr topics create` makes and `check` compares (consumer/tools/topics.py).
    topic_partitions: int = Field(default=12, ge=1, le=10_000)
    topic_replication_factor: int = Field(default=3, ge=1, le=10)
    topic_min_insync_replicas: int = Field(default=2, ge=1, le=10)
    # On three or more brokers, start-up refuses outputs with fewer than 2 replicas or
    # min.insync.replicas < 2 (an acknowledged record lost with one broker); true allows them.
    allow_unsafe_topics: bool = False
    # What happens when Redis lost state: restored from the changelog by the first instance that
    # notices (auto), or by an operator running `leadattr restore-state` (manual).
    state_restore: Literal["auto", "manual"] = "auto"

    # Not in the contract's list; documented in the README.
    # The most of an input record's value a dead letter carries (with its key twice). A longer value
    # keeps its first bytes, its length and SHA-256 (consumer/avro/outputs.py). With 10,000 bytes for
    # the envelope it sets the producer's message.max.bytes (at least librdkafka's 1,000,000), and
    # `leadattr run` refuses a dead-letter topic whose max.message.bytes is smaller.
    dead_letter_max_value_bytes: int = Field(default=990_000, ge=1024, le=100_000_000)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    batch_wait_ms: int = Field(default=100, ge=0, le=60_000)
    # Commit each batch while the next one is processed (consumer/processing/runner.py); off: one at a time.
    overlap_commits: bool = True
    expiry_interval_seconds: PositiveSeconds = 1.0
    expiry_lease_seconds: PositiveSeconds = 30.0
    # A caught-up, idle input partition's watermark mark is the shared clock less this: room for the
    # records produced but not fetched yet (consumer/state/lua/watermark.lua).
    idle_partition_lag_seconds: float = Field(default=2.0, ge=0, le=3600)
    redis_prefix: str = Field(default="leadattr", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    transactional_id: str | None = None
    # The stable name of this instance (a StatefulSet pod's name): its static group membership
    # (group.instance.id) and its transactional id, both prefixed by the consumer group.
    instance_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$")
    log_level: str = "INFO"
    shutdown_timeout_seconds: PositiveSeconds = 25.0
    # How long `leadattr run` keeps checking a dependency that fails at start-up (readiness false,
    # a line every 30 s) before it exits 3 (consumer/preflight.py).
    startup_timeout_seconds: PositiveSeconds = 120.0

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value or None

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(":" not in part for part in value.split(","))):
            raise ValueError("must be host:port[,host:port...]")
        return value or None

    @model_validator(mode="after")
    def _sentinel_needs_master(self) -> Settings:
        if self.redis_sentinels and not self.redis_sentinel_master:
            raise ValueError("LEADS_REDIS_SENTINEL_MASTER: required with LEADS_REDIS_SENTINELS")
        return self

    @property
    def min_replicas(self) -> int:
        if self.redis_min_replicas is not None:
            return self.redis_min_replicas
        return 1 if self.redis_sentinels else 0

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _has_servers(cls, value: str) -> str:
        if not value.strip() or any(":" not in part for part in value.split(",")):
            raise ValueError("must be host:port[,host:port...]")
        return value

    @model_validator(mode="after")
    def _client_certificate_with_key(self) -> Settings:
        if self.schema_registry_ssl_certificate_location and not self.schema_registry_ssl_key_location:
            raise ValueError(
                "LEADS_SCHEMA_REGISTRY_SSL_KEY_LOCATION: required with LEADS_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION"
            )
        return self

    @property
    def transaction_id(self) -> str:
        """Prefixed by the consumer group, so two deployments never fence each other. With an
        instance id it is stable: a restarted pod fences its own zombie at once."""
        if self.transactional_id:
            return self.transactional_id
        if self.instance_id:
            return f"{self.consumer_group}-{self.instance_id}"
        return f"{self.consumer_group}-{socket.gethostname()}-{os.getpid()}"

    @property
    def group_instance_id(self) -> str | None:
        """KIP-345 static membership: a restart under the same id gets its partitions back
        without a rebalance. None: dynamic membership."""
        return f"{self.consumer_group}-{self.instance_id}" if self.instance_id else None


def kafka_passthrough(environ: dict[str, str]) -> dict[str, str]:
    """LEADS_KAFKA_SECURITY_PROTOCOL=SSL -> {"security.protocol": "SSL"}, refusing managed ones."""
    properties: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(KAFKA_PASSTHROUGH_PREFIX) or name in _OWN_KAFKA_SETTINGS:
            continue
        prop = name[len(KAFKA_PASSTHROUGH_PREFIX) :].lower().replace("_", ".")
        if not prop:
            raise SettingsError(f"invalid setting {name}: names no librdkafka property")
        if prop in _MANAGED_KAFKA_PROPERTIES:
            raise SettingsError(f"invalid setting {name}: {_MANAGED_KAFKA_PROPERTIES[prop]}")
        properties[prop] = value
    return properties


def _environment(env_file: Path | None) -> dict[str, str]:
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)  # the real environment wins over the file, as with pydantic-settings
    return merged


# Settings whose value may hold a password or URL credentials: an error line never shows them.
_SECRET_WORDS = ("url", "password", "secret", "user_info", "sentinels", "key")


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    if not first["loc"]:  # a rule across settings: its message names them
        return f"invalid setting {str(first['msg']).removeprefix('Value error, ')}"
    field = str(first["loc"][0])
    value: Any = first.get("input")
    secret = any(word in field for word in _SECRET_WORDS)
    shown = f" (got {value!r})" if isinstance(value, str | int | float) and not secret else ""
    return f"invalid setting LEADS_{field.upper()}: {str(first['msg']).removeprefix('Value error, ')}{shown}"


class Config:
    """Settings plus the librdkafka passthrough, loaded together so both are checked at once."""

    def __init__(self, settings: Settings, kafka_extra: dict[str, str]) -> None:
        self.settings = settings
        self.kafka_extra = kafka_extra

    @classmethod
    def load(cls, env_file: Path | None = Path(".env"), **overrides: Any) -> Config:
        try:
            settings = Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
        except ValidationError as error:
            raise SettingsError(_one_line(error)) from None
        return cls(settings, kafka_passthrough(_environment(env_file)))
