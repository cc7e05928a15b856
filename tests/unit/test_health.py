"""The health endpoints (/readyz, /healthz, /metrics) and the states behind their answers."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

import pytest

from consumer import health as health_module
from consumer import metrics
from consumer.health import KAFKA_DOWN_LIVENESS_S, Health, serve
from harness.process import free_port


def sample(name: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, {})
    assert value is not None, f"{name} is not exported"
    return value


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def test_health_endpoints_report_state_and_reason() -> None:
    health = Health()
    port = free_port()
    server = serve(health, port, "127.0.0.1")
    try:
        status, body = _get(port, "/readyz")
        assert status == 503 and "not subscribed" in body
        health.started = health.subscribed = True
        assert _get(port, "/readyz") == (200, "ready\n")
        assert sample("leads_ready") == 1
        health.redis_ok = False
        status, body = _get(port, "/readyz")
        assert status == 503 and "redis unreachable" in body
        assert sample("leads_ready") == 0 and sample("leads_redis_up") == 0
        assert _get(port, "/healthz") == (200, "ok\n")
        health.kafka_down_since = time.monotonic() - 60  # a broker restart: not ready, still alive
        assert _get(port, "/healthz") == (200, "ok\n")
        health.kafka_down_since = time.monotonic() - KAFKA_DOWN_LIVENESS_S - 1  # a wedged client
        assert _get(port, "/healthz") == (503, f"kafka unreachable for over {KAFKA_DOWN_LIVENESS_S:.0f}s\n")
        health.kafka_down_since = 0.0
        health.last_beat -= 3600
        assert _get(port, "/healthz") == (503, "run loop stalled\n")
        status, body = _get(port, "/metrics")
        assert status == 200 and "leads_events_consumed_total" in body
    finally:
        server.shutdown()


def test_an_idle_connection_is_closed_and_the_endpoints_keep_answering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that connects and sends nothing (or half a request) must not hold a thread."""
    monkeypatch.setattr(health_module, "REQUEST_TIMEOUT_S", 0.5)
    health = Health()
    port = free_port()
    server = serve(health, port, "127.0.0.1")
    try:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        idle[0].sendall(b"GET /readyz HTTP/1.1\r\n")  # half a request
        started = time.monotonic()
        for connection in idle:
            assert connection.recv(1024) == b"", "the server answered or kept the connection"
            connection.close()
        assert time.monotonic() - started < 3
        status, _ = _get(port, "/readyz")
        assert status == 503  # not subscribed yet: answered, not hung
    finally:
        server.shutdown()
        server.server_close()
