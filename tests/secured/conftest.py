"""The secured shape's own tests (least privilege, no secret leaked). They need the SASL_SSL Kafka
and the TLS Redis with ACL users: collected only under SECURE=1 (`SECURE=1 make test`, which
.ci/run runs after the plaintext suite); the integration fixtures are shared."""

from __future__ import annotations

from harness.kafka import SECURE
from tests.integration.conftest import BASE_ENV, redis_client, services, start_consumer, topics

__all__ = ["BASE_ENV", "redis_client", "services", "start_consumer", "topics"]

# Not collected (not skipped) on the plaintext services: there is nothing to prove there.
collect_ignore_glob = [] if SECURE else ["test_*.py"]
