"""The bundled Avro schemas (schemas/*.avsc) and plain Avro binary through fastavro."""

from __future__ import annotations

import io
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

_REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

Schema = Any  # fastavro's parsed schema is an untyped dict


def schema_text(name: str) -> str:
    """The .avsc text: the repo's schemas/ folder in a checkout, package data when installed."""
    path = _REPO_SCHEMAS / f"{name}.avsc"
    if path.is_file():
        return path.read_text()
    return resources.files("consumer.schemas").joinpath(f"{name}.avsc").read_text()


def has_layout(schema_json: dict[str, Any], layout: tuple[tuple[str, Any], ...]) -> bool:
    """True when a record schema (the .avsc as parsed JSON) has exactly ``layout``'s fields and
    types, in order: the check behind each hand-written codec (attributed_writer.py, lead_reader.py)."""
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
