"""The least privilege `leadattr acls` prints: every command the Lua scripts call is in the Redis
rule, the local secured shape grants the same rule, and the Kafka list follows the settings."""

from __future__ import annotations

import re

from consumer.config import Guarantee, Settings
from consumer.tools.acls import REDIS_COMMANDS, kafka_grants, redis_acl_rule
from harness.process import REPO


def test_every_command_of_the_lua_scripts_is_in_the_redis_rule() -> None:
    called = set()
    for script in (REPO / "consumer" / "state" / "lua").glob("*.lua"):
        called |= {name.lower() for name in re.findall(r"redis\.p?call\('([A-Za-z]+)'", script.read_text())}
    assert called, "no script found"
    assert called <= set(REDIS_COMMANDS), sorted(called - set(REDIS_COMMANDS))


def test_the_local_secured_shape_grants_the_same_redis_rule() -> None:
    text = (REPO / "deploy" / "local" / "lib" / "credentials.sh").read_text()
    default = re.search(r"REDIS_SERVICE_ACL_DEFAULT='([^']*)'", text)
    assert default is not None
    local = default.group(1).split()
    ours = redis_acl_rule("leadattr").split()
    assert [w for w in local if not w.startswith("~")] == [w for w in ours if not w.startswith("~")]
    assert "~leadattr:*" in local


def test_the_kafka_grants_follow_the_settings() -> None:
    exactly_once = Settings(_env_file=None, consumer_group="g1", input_topic="in")  # type: ignore[call-arg]
    described = {g.describe("User:x") for g in kafka_grants(exactly_once)}
    assert "ALLOW User:x READ TOPIC LITERAL in" in described
    assert "ALLOW User:x READ GROUP LITERAL g1" in described
    assert "ALLOW User:x WRITE TRANSACTIONAL_ID PREFIXED g1-" in described
    assert "ALLOW User:x DESCRIBE_CONFIGS TOPIC LITERAL leads.dead-letter" in described
    assert "ALLOW User:x WRITE TOPIC LITERAL leads.erasures" in described  # leadattr forget
    assert len(described) == 13
    at_least_once = Settings(_env_file=None, processing_guarantee=Guarantee.AT_LEAST_ONCE)  # type: ignore[call-arg]
    assert all(g.kind.name != "TRANSACTIONAL_ID" for g in kafka_grants(at_least_once))
    fixed = Settings(_env_file=None, transactional_id="leads-0")  # type: ignore[call-arg]
    assert "ALLOW User:x WRITE TRANSACTIONAL_ID LITERAL leads-0" in {
        g.describe("User:x") for g in kafka_grants(fixed)
    }
