"""The registry over TLS: the consumer trusts the CA it is given (LEADS_SCHEMA_REGISTRY_SSL_CA_LOCATION),
presents a client certificate when the registry asks (..._SSL_CERTIFICATE_LOCATION, ..._SSL_KEY_LOCATION),
and stops start-up with one line when it cannot verify the registry or has no certificate to show.
The server is the stand-in registry with the secured shape's certificate (signed by its local CA)."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path
from typing import Any

from consumer.avro.schemas import decode, encode, load_schema, schema_text
from harness.kafka import SERVICES_DIR, Topics, lead, produce, read_topic
from tests.integration.conftest import StartConsumer
from tests.support.standin_registry import StandinRegistry

TLS = SERVICES_DIR / "secure" / "tls"


def _client_certificate(folder: Path) -> tuple[Path, Path]:
    """A client certificate signed by the secured shape's CA (openssl, as services.sh makes its own)."""
    key, request, certificate = folder / "client.key", folder / "client.csr", folder / "client.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            request,
            "-subj",
            "/CN=leadattr",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *("openssl", "x509", "-req", "-in", request, "-CA", TLS / "ca.pem", "-CAkey", TLS / "ca.key"),
            *("-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-out", certificate, "-days", "1"),
        ],
        check=True,
        capture_output=True,
    )
    return certificate, key


def _unframed(data: bytes) -> dict[str, Any]:
    value = decode(load_schema("attributed_lead"), data[5:])
    assert isinstance(value, dict)
    return value


def test_a_tls_registry_with_client_certificates(
    topics: Topics, start_consumer: StartConsumer, tmp_path: Path
) -> None:
    standin = StandinRegistry(tls=(TLS / "server.pem", TLS / "server.key"), client_ca=TLS / "ca.pem")
    certificate, key = _client_certificate(tmp_path)
    try:
        # Without the CA the registry's certificate cannot be verified; without a client
        # certificate the registry refuses the handshake: one line each, exit 3.
        for missing in (
            {
                "LEADS_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": str(certificate),
                "LEADS_SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(key),
            },
            {"LEADS_SCHEMA_REGISTRY_SSL_CA_LOCATION": str(TLS / "ca.pem")},
        ):
            failing = start_consumer(
                wait_ready=False,
                LEADS_SCHEMA_REGISTRY_URL=standin.url,
                LEADS_STARTUP_TIMEOUT_SECONDS="1",
                **missing,
            )
            assert failing.proc is not None and failing.proc.wait(60) == 3
            lines = [line for line in failing.logs().splitlines() if line.startswith("leadattr: ")]
            assert len(lines) == 1 and lines[0].startswith("leadattr: schema registry unreachable: "), lines
            assert f"schema registry at {standin.url}" in lines[0]

        consumer = start_consumer(
            LEADS_SCHEMA_REGISTRY_URL=standin.url,
            LEADS_SCHEMA_REGISTRY_SSL_CA_LOCATION=str(TLS / "ca.pem"),
            LEADS_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION=str(certificate),
            LEADS_SCHEMA_REGISTRY_SSL_KEY_LOCATION=str(key),
        )
        schema_id = standin.add(schema_text("lead_event"))
        event = lead("tls-1", "signup", clickId="click-t1")
        produce(
            topics.input,
            [struct.pack(">bI", 0, schema_id) + encode(load_schema("lead_event"), event)],
            keys=[b"tls-1"],
        )
        decoded = read_topic(topics.attributed, expected=1, decode_value=_unframed)
        assert [(r["customerExternalId"], r["clickId"]) for r in decoded] == [("tls-1", "click-t1")]
        assert consumer.stop() == 0
    finally:
        standin.close()
