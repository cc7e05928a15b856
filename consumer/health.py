"""HTTP endpoints for Prometheus and Kubernetes: /metrics, /healthz (liveness), /readyz (readiness)."""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from consumer.logs import fields
from consumer.metrics import KAFKA_UP, READY, REDIS_UP, REGISTRY, STATE_LOST

log = logging.getLogger(__name__)

# The run loop beats at least once per batch wait; a loop silent this long is stuck (liveness fails).
LIVENESS_TIMEOUT_S = 60.0
# Kafka unreachable for this long fails liveness too. After a broker restart or freeze, librdkafka
# (2.16) sometimes leaves a client out of its group for good, loop running, nothing consumed
# (make chaos, docs/chaos.md): only a new process gets it back. Against a broker that really is
# away, the restarts cost nothing: the pod waits in the kubelet's back-off until it is back.
KAFKA_DOWN_LIVENESS_S = 180.0
# A connection that sends no complete request within this long is closed: each open connection
# holds a thread, and a scraper or probe needs well under a second.
REQUEST_TIMEOUT_S = 5.0


class Health:
    """What the run loop reports and the endpoints read. Updated from the run loop, the commit
    thread and the watchdog; read by the endpoints' threads.

    A change of Redis's or Kafka's reachability is logged once, when it changes (report_redis,
    report_kafka): an outage is one line when it starts and one when it ends, however many
    retries it takes."""

    def __init__(self) -> None:
        self.started = False
        self.stopping = False
        self.redis_ok = True
        self.kafka_down_since = 0.0  # monotonic time Kafka became unreachable, 0 while reachable
        self.subscribed = False
        self.last_beat = time.monotonic()
        self.redis_problem = "redis unreachable"  # what readiness says while redis_ok is False
        self.state_ok = True
        self.registry_problem: str | None = None  # what readiness says while the registry fails
        self.startup_problem: str | None = None  # a dependency failing its start-up check
        self._kafka_lock = threading.Lock()  # reported from the run loop and the watchdog thread

    def report_redis(
        self, ok: bool, error: Exception | None = None, problem: str = "redis unreachable"
    ) -> None:
        if ok != self.redis_ok:
            if ok:
                log.info("redis reachable again")
            else:
                log.error("redis unavailable, pausing and retrying", extra=fields(error=type(error).__name__))
        self.redis_ok = ok
        self.redis_problem = problem
        REDIS_UP.set(1 if ok else 0)

    def report_registry(self, problem: str | None) -> None:
        """The schema registry failed (``problem``: one line without credentials) or answered."""
        if (problem is None) != (self.registry_problem is None):
            if problem is None:
                log.info("schema registry answering again")
            else:
                log.error("schema registry failing, pausing and retrying", extra=fields(error=problem))
        self.registry_problem = problem

    def report_state(self, ok: bool, lost: object = None) -> None:
        """Contract rule 9: the state is known damaged (``lost`` says where) or intact again."""
        if ok != self.state_ok:
            if ok:
                log.info("state intact again: deciding")
            else:
                log.error(
                    "state lost: redis holds less than was committed; deciding nothing until it is restored",
                    extra=fields(partitions=lost),
                )
        self.state_ok = ok
        STATE_LOST.set(0 if ok else 1)

    def report_kafka(self, ok: bool, detail: str = "") -> None:
        with self._kafka_lock:
            if ok != self.kafka_ok:
                if ok:
                    log.info("kafka broker reachable again")
                else:
                    log.error("kafka broker unreachable", extra=fields(error=detail))
            if ok:
                self.kafka_down_since = 0.0
            elif not self.kafka_down_since:
                self.kafka_down_since = time.monotonic()
            KAFKA_UP.set(1 if ok else 0)

    @property
    def kafka_ok(self) -> bool:
        return not self.kafka_down_since

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    def not_alive_reason(self) -> str | None:
        now = time.monotonic()
        if now - self.last_beat >= LIVENESS_TIMEOUT_S:
            return "run loop stalled"
        if self.kafka_down_since and now - self.kafka_down_since > KAFKA_DOWN_LIVENESS_S:
            return f"kafka unreachable for over {KAFKA_DOWN_LIVENESS_S:.0f}s"
        return None

    def alive(self) -> bool:
        return self.not_alive_reason() is None

    def not_ready_reason(self) -> str | None:
        reasons = []
        if self.startup_problem is not None:
            reasons.append(f"starting: {self.startup_problem}")
        if not self.started or not self.subscribed:
            reasons.append("not subscribed to the input topic yet")
        if self.stopping:
            reasons.append("shutting down")
        if not self.state_ok:
            reasons.append("state_lost")
        if not self.redis_ok:
            reasons.append(self.redis_problem)
        if self.registry_problem is not None:
            reasons.append(self.registry_problem)
        if not self.kafka_ok:
            reasons.append("kafka broker unreachable")
        READY.set(0 if reasons else 1)
        REDIS_UP.set(1 if self.redis_ok else 0)
        KAFKA_UP.set(1 if self.kafka_ok else 0)
        return "; ".join(reasons) or None


def serve(health: Health, port: int, host: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S  # the socket's timeout, on every read and write

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                health.not_ready_reason()  # refresh the readiness gauges before each scrape
                self._reply(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                problem = health.not_alive_reason()
                self._reply(503 if problem else 200, f"{problem}\n".encode() if problem else b"ok\n")
            elif path == "/readyz":
                reason = health.not_ready_reason()
                self._reply(
                    503 if reason else 200, f"not ready: {reason}\n".encode() if reason else b"ready\n"
                )
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds would drown the real log lines

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
