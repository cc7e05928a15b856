"""`leadattr acls`: the least privilege the service needs, for Kafka (ACL bindings) and Redis (an
ACL rule), from the same settings it runs with. Printed for an operator to grant; the tests grant
exactly these and nothing else (tests/integration/test_secured.py).

Kafka, for the principal the service authenticates as:
  Topic  LEADS_INPUT_TOPIC                           READ   (implies DESCRIBE)
  Group  LEADS_CONSUMER_GROUP                        READ   (join, commit, fetch offsets)
  Topic  attributed, unlinked and dead-letter topics WRITE  (implies DESCRIBE)
  Topic  LEADS_CHANGELOG_TOPIC                       WRITE, READ (restored from when Redis lost state)
  Topic  the four outputs                            DESCRIBE_CONFIGS (start-up checks min.insync.replicas)
  Topic  LEADS_ERASURE_TOPIC                         WRITE  (`leadattr forget`'s erasure records)
  TransactionalId  "<group>-" prefixed (or LEADS_TRANSACTIONAL_ID literally)  WRITE  (exactly_once)
No cluster-level permission: idempotent producers need only WRITE on a topic (KIP-679).

Redis: the commands the service and its Lua scripts run (a script's calls are checked against the
user's rule too), on keys of LEADS_REDIS_PREFIX only; no other key, channel or command.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where they are defined: confluent_kafka.admin does not re-export them in its type stubs.
from confluent_kafka.admin._acl import AclBinding, AclOperation, AclPermissionType
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from consumer.config import Guarantee, Settings

# Every command the consumer, restore-state, forget and the Lua scripts (consumer/state/lua) send.
REDIS_COMMANDS = (
    "ping",
    "auth",
    "select",
    "eval",
    "evalsha",
    "script|load",
    "wait",
    "time",
    "exists",
    "get",
    "set",
    "mget",
    "mset",
    "del",
    "incrby",
    "pexpire",
    "hget",
    "hmget",
    "hset",
    "hdel",
    "hgetall",
    "hsetnx",
    "zadd",
    "zrange",
    "zrangebyscore",
    "zrem",
    "zmscore",
    "unlink",
    "multi",
    "exec",
    "discard",
    "lpush",
    "rpush",
    "lrange",
    "lindex",
    "ltrim",
    "lpos",
    "lset",
    "scan",
    "zscan",
)


def redis_acl_rule(prefix: str) -> str:
    """The rule after ``ACL SETUSER <user> on ><password>``."""
    return " ".join(
        ["resetkeys", f"~{prefix}:*", "resetchannels", "-@all", *(f"+{c}" for c in REDIS_COMMANDS)]
    )


@dataclass(frozen=True)
class Grant:
    """One ALLOW for the service's principal, from any host."""

    kind: ResourceType
    name: str
    pattern: ResourcePatternType
    operation: AclOperation

    def binding(self, principal: str) -> AclBinding:
        return AclBinding(
            self.kind, self.name, self.pattern, principal, "*", self.operation, AclPermissionType.ALLOW
        )

    def describe(self, principal: str) -> str:
        return f"ALLOW {principal} {self.operation.name} {self.kind.name} {self.pattern.name} {self.name}"


def kafka_grants(s: Settings) -> list[Grant]:
    topic, literal = ResourceType.TOPIC, ResourcePatternType.LITERAL
    grants = [
        Grant(topic, s.input_topic, literal, AclOperation.READ),
        Grant(ResourceType.GROUP, s.consumer_group, literal, AclOperation.READ),
        *(
            Grant(topic, name, literal, AclOperation.WRITE)
            for name in (s.attributed_topic, s.unlinked_topic, s.dead_letter_topic, s.changelog_topic)
        ),
        Grant(topic, s.changelog_topic, literal, AclOperation.READ),
        Grant(topic, s.erasure_topic, literal, AclOperation.WRITE),
        # Start-up reads the outputs' min.insync.replicas (the refusal of unsafe outputs).
        *(
            Grant(topic, name, literal, AclOperation.DESCRIBE_CONFIGS)
            for name in (s.attributed_topic, s.unlinked_topic, s.dead_letter_topic, s.changelog_topic)
        ),
    ]
    if s.processing_guarantee is Guarantee.EXACTLY_ONCE:
        transactional = ResourceType.TRANSACTIONAL_ID
        if s.transactional_id:
            grants.append(Grant(transactional, s.transactional_id, literal, AclOperation.WRITE))
        else:
            prefixed = ResourcePatternType.PREFIXED
            grants.append(Grant(transactional, f"{s.consumer_group}-", prefixed, AclOperation.WRITE))
    return grants


def kafka_acls(s: Settings, principal: str) -> list[AclBinding]:
    return [grant.binding(principal) for grant in kafka_grants(s)]


def print_acls(s: Settings, principal: str, user: str) -> int:
    print(f"# Kafka ACLs for {principal} (kafka-acls.sh --add --allow-principal {principal} ...):")
    for grant in kafka_grants(s):
        print(grant.describe(principal))
    print(f"# Redis (ACL SETUSER {user} on >PASSWORD <rule>):")
    print(redis_acl_rule(s.redis_prefix))
    return 0
