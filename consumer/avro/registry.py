"""A Confluent-compatible schema registry client: writer schemas by id, output subjects registered.

Basic auth (``user:password`` from LEADS_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO, else the URL's
own credentials, which are then taken out of the URL), TLS with a CA and an optional client
certificate, and both lookups cached for the life of the process (a schema id never changes).

Failures come by kind, because each calls for a different answer:

- ``RegistryUnavailable`` (an ``OSError``): no answer, a timeout, 5xx or 429. Not the record's
  fault: the batch is retried, readiness says "schema registry unavailable".
- ``RegistryRefused`` (also an ``OSError``): 401 or 403. Retried the same way (a rotated
  password is put right without losing a batch); readiness says "schema registry refused".
- ``UnknownSchema`` (a ``ValueError``): the registry answers that the record's schema id does
  not exist. The record's fault: it is dead-lettered (the bytes kept), never retried forever.

No message carries the URL's credentials or the password.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastavro import parse_schema

from consumer.avro.schemas import Schema, schema_text

if TYPE_CHECKING:
    from consumer.config import Settings

_REGISTRY_TIMEOUT_S = 10
# A registry reply larger than this is not a schema: reading stops there (a hostile or broken
# server cannot make the consumer hold an unbounded body).
_MAX_REPLY_BYTES = 4 * 1024 * 1024


class RegistryUnavailable(OSError):
    """The registry did not answer usefully (connection, timeout, 5xx, 429): retried."""


class RegistryRefused(OSError):
    """The registry refused the credentials (401) or the operation (403): retried, reported."""


class UnknownSchema(ValueError):
    """The registry has no schema of this id: the record cannot be read."""


def split_credentials(url: str) -> tuple[str, str | None]:
    """``https://user:pw@host/x`` -> (``https://host/x``, ``user:pw``); the URL unchanged without."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    user_info = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), user_info


def _tls_context(ca: Path | None, certificate: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if certificate is not None:
        context.load_cert_chain(str(certificate), str(key) if key else None)
    return context


class SchemaRegistry:
    def __init__(
        self,
        url: str,
        user_info: str | None = None,
        ca_location: Path | None = None,
        certificate_location: Path | None = None,
        key_location: Path | None = None,
    ) -> None:
        base, url_user_info = split_credentials(url.rstrip("/"))
        self._url = base
        credentials = user_info or url_user_info
        self._headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
        if credentials:
            token = base64.b64encode(credentials.encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._context = (
            _tls_context(ca_location, certificate_location, key_location)
            if base.startswith("https://")
            else None
        )
        self._by_id: dict[int, Schema] = {}
        self._registered: dict[tuple[str, str], int] = {}

    def _request(self, path: str, body: dict[str, Any] | None = None, lookup: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's registry setting
            self._url + path, data=data, headers=self._headers, method="POST" if body is not None else "GET"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=_REGISTRY_TIMEOUT_S, context=self._context
            ) as response:
                raw = response.read(_MAX_REPLY_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise self._refusal(error, lookup) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise RegistryUnavailable(f"schema registry unreachable: {type(reason).__name__}") from None
        if len(raw) > _MAX_REPLY_BYTES:
            raise RegistryUnavailable("schema registry reply larger than 4 MiB")
        try:
            return json.loads(raw)
        except ValueError:
            raise RegistryUnavailable("schema registry reply is not JSON") from None

    @staticmethod
    def _refusal(error: urllib.error.HTTPError, lookup: bool) -> Exception:
        status = error.code
        try:
            code = int(json.loads(error.read(65536)).get("error_code", 0))
        except (ValueError, AttributeError, OSError):
            code = 0
        if status in (401, 403):
            return RegistryRefused(f"schema registry refused the request: HTTP {status}")
        if status == 404 and lookup:
            return UnknownSchema(f"schema registry has no such schema: HTTP 404 ({code or 'no error code'})")
        if status in {404, 409, 422}:
            # Subject or version not found, incompatible or invalid schema: an operator's matter
            # (the registry's compatibility rules), retried so that it is seen on readiness.
            return RegistryRefused(f"schema registry refused the request: HTTP {status} ({code})")
        return RegistryUnavailable(f"schema registry unavailable: HTTP {status}")

    @property
    def where(self) -> str:
        return f"schema registry at {self._url}"  # the URL without its credentials

    def probe(self) -> None:
        """One authenticated request (the subject list): raises as any request does."""
        self._request("/subjects")

    def writer_schema(self, schema_id: int) -> Schema:
        if schema_id not in self._by_id:
            try:
                reply = self._request(f"/schemas/ids/{schema_id}", lookup=True)
            except UnknownSchema:
                raise UnknownSchema(f"unknown writer schema id {schema_id}") from None
            try:
                schema = parse_schema(json.loads(reply["schema"]))
            except Exception as error:  # whatever fastavro refuses: the record is unreadable
                raise UnknownSchema(
                    f"schema id {schema_id} is not a usable Avro schema: {type(error).__name__}"
                ) from None
            self._by_id[schema_id] = schema
        return self._by_id[schema_id]

    def register(self, subject: str, name: str) -> int:
        key = (subject, name)
        if key not in self._registered:
            reply = self._request(
                f"/subjects/{urllib.parse.quote(subject, safe='')}/versions", {"schema": schema_text(name)}
            )
            self._registered[key] = int(reply["id"])
        return self._registered[key]


def registry_of(s: Settings) -> SchemaRegistry | None:
    """The registry client of the settings; None for plain Avro (no LEADS_SCHEMA_REGISTRY_URL)."""
    if not s.schema_registry_url:
        return None
    user_info = s.schema_registry_basic_auth_user_info
    return SchemaRegistry(
        s.schema_registry_url,
        user_info.get_secret_value() if user_info else None,
        s.schema_registry_ssl_ca_location,
        s.schema_registry_ssl_certificate_location,
        s.schema_registry_ssl_key_location,
    )
