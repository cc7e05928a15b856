"""One schema in the configured wire format: plain Avro binary, or Confluent framing.

Plain binary is the default (contract section 2). With LEADS_SCHEMA_REGISTRY_URL set, records are
framed as magic byte 0 + 4-byte big-endian schema id + Avro body; writer schemas are fetched by id
and resolved against the bundled reader schema, so producers may evolve compatibly.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from consumer.avro import lead_reader as hand
from consumer.avro.bounds import Node, check, program
from consumer.avro.registry import SchemaRegistry
from consumer.avro.schemas import decode, encode, has_layout, load_schema, schema_text

_MAGIC = 0
_HEADER = struct.Struct(">bI")


class Codec:
    """Encodes and decodes one schema in the configured wire format."""

    def __init__(self, name: str, registry: SchemaRegistry | None = None, subject: str | None = None) -> None:
        self.schema = load_schema(name)
        self._registry = registry
        # The bounded walk (bounds.py) fastavro's every read is preceded by: of the bundled schema,
        # and of each writer schema id met (as immutable as the registry's schemas).
        self._walk = program(self.schema)
        self._walks: dict[int, Node] = {}
        self._header = b""
        # The hand-written reader of LeadEvent (lead_reader.py), tried before fastavro: only in
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
        """An Avro body encoded elsewhere (attributed_writer.py), in this codec's wire format."""
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
            check(self._walk, data)
            return decode(self.schema, data)
        if len(data) < _HEADER.size or data[0] != _MAGIC:
            raise ValueError("missing the Confluent wire-format header (magic byte 0 + schema id)")
        _, schema_id = _HEADER.unpack_from(data)
        writer = self._registry.writer_schema(schema_id)
        walk = self._walks.get(schema_id)
        if walk is None:
            walk = self._walks[schema_id] = program(writer)
        body = data[_HEADER.size :]
        check(walk, body)
        return decode(self.schema, body, writer)
