"""Avro schemas and wire formats: plain binary, or Confluent framing with a schema registry.

Plain binary is the default (contract section 2). With LEADS_SCHEMA_REGISTRY_URL set, records are
framed as magic byte 0 + 4-byte big-endian schema id + Avro body; writer schemas are fetched by id
and resolved against the bundled reader schema, so producers may evolve compatibly.
"""

from __future__ import annotations

import io
import json
import struct
import urllib.request
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from consumer import decode as hand

_REPO_SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
_MAGIC = 0
_HEADER = struct.Struct(">bI")
_REGISTRY_TIMEOUT_S = 10

Schema = Any  # fastavro's parsed schema is an untyped dict


def schema_text(name: str) -> str:
    """The .avsc text: the repo's schemas/ folder in a checkout, package data when installed."""
    path = _REPO_SCHEMAS / f"{name}.avsc"
    if path.is_file():
        return path.read_text()
    return resources.files("consumer.schemas").joinpath(f"{name}.avsc").read_text()


def has_layout(schema_json: dict[str, Any], layout: tuple[tuple[str, Any], ...]) -> bool:
    """True when a record schema (the .avsc as parsed JSON) has exactly ``layout``'s fields and
    types, in order: the check behind each hand-written codec (consumer/wire.py, consumer/decode.py)."""
    return tuple((f["name"], f["type"]) for f in schema_json.get("fields", [])) == layout


@cache
def load_schema(name: str) -> Schema:
    return parse_schema(json.loads(schema_text(name)))


def encode(schema: Schema, record: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def decode(schema: Schema, data: bytes, writer_schema: Schema | None = None) -> Any:
    buffer = io.BytesIO(data)
    value = schemaless_reader(buffer, writer_schema or schema, schema if writer_schema else None)
    if buffer.tell() != len(data):
        # Trailing bytes mean the writer used another schema; accepting them would hide corruption.
        raise ValueError(f"{len(data) - buffer.tell()} trailing bytes after the Avro record")
    return value


class SchemaRegistry:
    """A minimal Confluent schema registry client: fetch schemas by id, register subjects."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")
        self._by_id: dict[int, Schema] = {}

    def _request(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's registry setting
            self._url + path,
            data=data,
            headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            method="POST" if body is not None else "GET",
        )
        with urllib.request.urlopen(request, timeout=_REGISTRY_TIMEOUT_S) as response:  # noqa: S310
            return json.loads(response.read())

    def writer_schema(self, schema_id: int) -> Schema:
        if schema_id not in self._by_id:
            text = self._request(f"/schemas/ids/{schema_id}")["schema"]
            self._by_id[schema_id] = parse_schema(json.loads(text))
        return self._by_id[schema_id]

    def register(self, subject: str, name: str) -> int:
        reply = self._request(f"/subjects/{subject}/versions", {"schema": schema_text(name)})
        return int(reply["id"])


class Codec:
    """Encodes and decodes one schema in the configured wire format."""

    def __init__(self, name: str, registry: SchemaRegistry | None = None, subject: str | None = None) -> None:
        self.schema = load_schema(name)
        self._registry = registry
        self._header = b""
        # The hand-written reader of LeadEvent (consumer/decode.py), tried before fastavro: only in
        # the plain format (with a registry, writer schemas vary) and while the schema is its layout.
        self._hand_read = (
            hand.read_lead_event
            if name == "lead_event"
            and registry is None
            and has_layout(json.loads(schema_text(name)), hand.LAYOUT)
            else None
        )
        # The pipeline then reads the fields itself (hand.read_fields), without a dict.
        self.reads_fields = self._hand_read is not None
        if registry is not None and subject is not None:
            self._header = _HEADER.pack(_MAGIC, registry.register(subject, name))

    def encode(self, record: dict[str, Any]) -> bytes:
        return self._header + encode(self.schema, record)

    def frame(self, body: bytes) -> bytes:
        """An Avro body encoded elsewhere (consumer/wire.py), in this codec's wire format."""
        return self._header + body

    def decode(self, data: bytes) -> Any:
        if self._hand_read is not None:
            try:
                return self._hand_read(data)
            except hand.Unusual:
                pass  # fastavro judges it, as it always did
        return self.decode_generic(data)

    def decode_generic(self, data: bytes) -> Any:
        """fastavro's reading, without the hand-written reader (what it refused goes here)."""
        if self._registry is None:
            return decode(self.schema, data)
        if len(data) < _HEADER.size or data[0] != _MAGIC:
            raise ValueError("missing the Confluent wire-format header (magic byte 0 + schema id)")
        _, schema_id = _HEADER.unpack_from(data)
        return decode(self.schema, data[_HEADER.size :], self._registry.writer_schema(schema_id))
