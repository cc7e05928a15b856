"""A stand-in Confluent schema registry over HTTP, for injecting the faults a real one has
(an outage, refused credentials, a schema id it does not know) at a chosen moment. The registry
tests against the real server are in tests/integration/test_schema_registry.py."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

from harness.process import free_port

Mode = Literal["normal", "unavailable", "refused"]


class StandinRegistry:
    """``tls``: (certificate, key) to serve HTTPS with; ``client_ca``: then require a client
    certificate signed by it."""

    def __init__(self, tls: tuple[Path, Path] | None = None, client_ca: Path | None = None) -> None:
        self.port = free_port()
        self.tls = tls is not None
        self.mode: Mode = "normal"
        self.schemas: dict[int, str] = {}  # id -> schema text
        self.requests = 0
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests += 1
                if self._faulted():
                    return
                if self.path == "/subjects":
                    self._json(200, [])
                    return
                prefix = "/schemas/ids/"
                if self.path.startswith(prefix) and self.path[len(prefix) :].isdigit():
                    text = registry.schemas.get(int(self.path[len(prefix) :]))
                    if text is not None:
                        self._json(200, {"schema": text})
                        return
                    self._json(404, {"error_code": 40403, "message": "Schema not found"})
                    return
                self._json(404, {"error_code": 404, "message": "not found"})

            def do_POST(self) -> None:
                registry.requests += 1
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                if self._faulted():
                    return
                self._json(200, {"id": registry.add(body["schema"])})

            def _faulted(self) -> bool:
                if registry.mode == "unavailable":
                    self._json(503, {"error_code": 50003, "message": "backend down"})
                    return True
                if registry.mode == "refused":
                    self._json(401, {"error_code": 401, "message": "Unauthorized"})
                    return True
                return False

            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            if client_ca is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(str(client_ca))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def add(self, text: str) -> int:
        canonical = json.dumps(json.loads(text), sort_keys=True)
        for schema_id, known in self.schemas.items():
            if json.dumps(json.loads(known), sort_keys=True) == canonical:
                return schema_id
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = text
        return schema_id

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
