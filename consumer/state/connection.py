"""The Redis client of the settings: one node, or the primary Sentinel names, followed across
failovers (consumer/state/redis_store.py and the start-up checks use it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis
from redis.connection import SSLConnection, parse_url
from redis.sentinel import Sentinel

if TYPE_CHECKING:
    from consumer.config import Settings

# Short timeouts: an unreachable Redis must surface as an error the run loop can back off on, not as
# a consumer hung past max.poll.interval.ms.
_TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 3}
# Called untyped: redis-py 8.1 leaves them without annotations and 8.2 types Sentinel.master_for
# with positional classes our keyword options do not match; either way a type: ignore would be
# wrong under the other release.
_parse_url: Any = parse_url
_Sentinel: Any = Sentinel


def connect(url: str, sentinels: str | None = None, master: str | None = None) -> redis.Redis:
    """A client of ``url``; with ``sentinels`` ("host:port,..."), of the primary that Sentinel
    names ``master``, followed across failovers: a connection to a primary that went away, or was
    demoted (READONLY), is dropped and the next one asks Sentinel again. Credentials, TLS and the
    database come from ``url`` either way; Sentinel itself is reached over TLS when ``url`` is."""
    if not sentinels:
        return redis.Redis.from_url(url, health_check_interval=30, **_TIMEOUTS)
    options: dict[str, Any] = _parse_url(url)
    options.pop("host", None)
    options.pop("port", None)
    tls = options.pop("connection_class", None) is SSLConnection
    tls_options = {k: v for k, v in options.items() if k.startswith("ssl_")}
    addresses = [
        (host, int(port)) for host, port in (part.strip().rsplit(":", 1) for part in sentinels.split(","))
    ]
    sentinel = _Sentinel(
        addresses, sentinel_kwargs={**_TIMEOUTS, **({"ssl": True, **tls_options} if tls else {})}
    )
    client: redis.Redis = sentinel.master_for(
        master or "", ssl=tls, health_check_interval=30, **_TIMEOUTS, **options
    )
    return client


def redis_of(s: Settings) -> redis.Redis:
    """The client every process of the service uses: through Sentinel when it is configured (a
    command that took LEADS_REDIS_URL alone could talk to a replica after a failover)."""
    return connect(s.redis_url, s.redis_sentinels, s.redis_sentinel_master)
