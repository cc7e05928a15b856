"""A minimal Confluent schema registry client: fetch writer schemas by id, register subjects."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from fastavro import parse_schema

from consumer.avro.schemas import Schema, schema_text

_REGISTRY_TIMEOUT_S = 10


class SchemaRegistry:
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
